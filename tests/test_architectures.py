"""Beyond XLM-R: tiny random encoders of other transformers families export and pass parity.

Each is a plain transformers checkpoint (mean pooling) with a WordPiece tokenizer, built in code.
The exported folder's vectors are compared here with the card's code run on the source checkpoint
(``conftest.torch_vectors``), independently of the exporter's own parity check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder
from mstsb_onnx.export import export_model
from mstsb_onnx.export.parity import FP32_MAX_ABS_DIFF, INT8_MIN_COSINE

from conftest import WORDPIECE_VOCAB, _quiet, build_wordpiece_checkpoint, manifest_of, row_cosines, torch_vectors

SMALL = dict(vocab_size=len(WORDPIECE_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=130)


def _config(family: str):
    import transformers

    if family == "distilbert":
        return transformers.DistilBertConfig(vocab_size=len(WORDPIECE_VOCAB), dim=32, n_layers=2, n_heads=4,
                                             hidden_dim=64, max_position_embeddings=130)
    configs = {"roberta": transformers.RobertaConfig, "mpnet": transformers.MPNetConfig,
               "electra": transformers.ElectraConfig, "deberta-v2": transformers.DebertaV2Config,
               "modernbert": transformers.ModernBertConfig}
    return configs[family](**SMALL, pad_token_id=0)


FAMILIES = ["roberta", "distilbert", "mpnet", "electra", "deberta-v2", "modernbert"]


@pytest.mark.parametrize("quantize", ["none", "int8"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_exports_with_parity(family: str, quantize: str, tmp_path: Path) -> None:
    src = build_wordpiece_checkpoint(tmp_path / family, _config(family))
    out = export_model(str(src), tmp_path / "out", quantize=quantize, log=_quiet).path
    texts = ["hello world", "abc", "world hello hello", "z", "naive cafe"]
    ours = Embedder(out).encode(texts)
    ref = torch_vectors(src, texts)
    assert ours.shape == ref.shape == (len(texts), manifest_of(out)["dim"])
    if quantize == "none":  # the export's fp32 tolerance; measured here well below it
        assert np.abs(ours - ref).max() <= FP32_MAX_ABS_DIFF
    else:  # the export's int8 tolerance, per text
        assert row_cosines(ours, ref).min() >= INT8_MIN_COSINE
