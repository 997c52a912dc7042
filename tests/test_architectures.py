"""Beyond XLM-R: tiny random encoders of other transformers families export and pass parity.

Each is a plain transformers checkpoint (mean pooling) with a WordPiece tokenizer, built in code.
The export's own parity check (torch vs ONNX, fp32 and int8 tolerances) is the assertion; the
manifest records that it ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mstsb_onnx import Embedder
from mstsb_onnx.export import export_model

from conftest import WORDPIECE_VOCAB, _quiet, build_wordpiece_checkpoint, manifest_of

SMALL = dict(vocab_size=len(WORDPIECE_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=130)


def _config(family: str):
    import transformers

    if family == "distilbert":
        return transformers.DistilBertConfig(vocab_size=len(WORDPIECE_VOCAB), dim=32, n_layers=2, n_heads=4,
                                             hidden_dim=64, max_position_embeddings=130)
    if family == "modernbert":
        if not hasattr(transformers, "ModernBertConfig"):
            pytest.skip("this transformers has no ModernBERT")
        return transformers.ModernBertConfig(**SMALL, pad_token_id=0)
    configs = {"roberta": transformers.RobertaConfig, "mpnet": transformers.MPNetConfig,
               "electra": transformers.ElectraConfig, "deberta-v2": transformers.DebertaV2Config}
    return configs[family](**SMALL, pad_token_id=0)


FAMILIES = ["roberta", "distilbert", "mpnet", "electra", "deberta-v2", "modernbert"]


@pytest.mark.parametrize("quantize", ["none", "int8"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_exports_with_parity(family: str, quantize: str, tmp_path: Path) -> None:
    src = build_wordpiece_checkpoint(tmp_path / family, _config(family))
    out = export_model(str(src), tmp_path / "out", quantize=quantize, log=_quiet).path
    manifest = manifest_of(out)
    assert manifest["parity"]["model"], "the export recorded no parity run"
    assert Embedder(out).encode(["hello world", "abc"]).shape == (2, manifest["dim"])
