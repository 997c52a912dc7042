"""Beyond XLM-R: tiny random encoders of other transformers families export and pass parity.

Each is a plain transformers checkpoint (mean pooling) with a WordPiece tokenizer, built in code.
The export's own parity check (torch vs ONNX, fp32 and int8 tolerances) is the assertion; the
manifest records that it ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mstsb_onnx import Embedder
from mstsb_onnx.export import export_model
from mstsb_onnx.manifest import MANIFEST_NAME

from conftest import _quiet

LETTERS = "abcdefghijklmnopqrstuvwxyz"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS, *("##" + c for c in LETTERS), "hello", "world"]
SMALL = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=130)


def _config(family: str):
    import transformers

    if family == "distilbert":
        return transformers.DistilBertConfig(vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                             max_position_embeddings=130)
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
    import torch
    import transformers
    from transformers import BertTokenizerFast

    src = tmp_path / family
    src.mkdir()
    (src / "vocab.txt").write_text("\n".join(VOCAB), encoding="utf-8")
    BertTokenizerFast(vocab_file=str(src / "vocab.txt")).save_pretrained(str(src))
    config = _config(family)
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config).save_pretrained(str(src))
    out = export_model(str(src), tmp_path / "out", quantize=quantize, log=_quiet).path
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["parity"]["model"], "the export recorded no parity run"
    assert Embedder(out).encode(["hello world", "abc"]).shape == (2, manifest["dim"])
