"""Sequence-first tracing: same function as transformers' own forward, and only where it applies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder, ExportError
from mstsb_onnx.export import export_model, seqfirst

from conftest import _quiet, tiny_lines

import torch
import transformers

SMALL = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64, pad_token_id=1)


def _model(kind: str, **extra: object):
    torch.manual_seed(0)
    if kind == "xlmr":
        model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**SMALL, **extra))
    else:
        model = transformers.BertModel(transformers.BertConfig(**{**SMALL, "pad_token_id": 0}, **extra))
    return model.eval()


def _padded_batch(pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Rows of different lengths, so the additive mask matters; one row of a single real token.
    lengths = [7, 3, 1, 5]
    ids = torch.full((len(lengths), max(lengths)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    gen = torch.Generator().manual_seed(1)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, 99, (n,), generator=gen)
        mask[row, :n] = 1
    return ids, mask


@pytest.mark.parametrize("kind", ["xlmr", "bert"])
def test_same_hidden_states_as_transformers(kind: str) -> None:
    model = _model(kind)
    ids, mask = _padded_batch(model.config.pad_token_id)
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask)[0]
        got = seqfirst.encode(model, ids, mask)
    assert got.shape == expected.shape
    real = mask.bool()
    # Same operations in the same order; only GEMM blocking may differ: measured max 1.2e-7 (XLM-R)
    # and 3.6e-7 (BERT) on these models, padded positions included; 1e-5 leaves room for other BLAS.
    assert torch.max(torch.abs(got[real] - expected[real])).item() < 1e-5


@pytest.mark.parametrize("extra, supported", [
    ({}, True),
    ({"position_embedding_type": "relative_key"}, False),
    ({"is_decoder": True}, False),
], ids=["absolute", "relative-positions", "decoder"])
def test_supports_only_what_it_rewrites(extra: dict, supported: bool) -> None:
    assert seqfirst.supports(_model("bert", **extra)) is supported


def test_supports_refuses_other_structures() -> None:
    assert not seqfirst.supports(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kind", ["xlmr", "bert"])
def test_agrees_on_the_models_it_rewrites(kind: str) -> None:
    model = _model(kind)
    assert seqfirst.agrees(model, *_padded_batch(model.config.pad_token_id))


def _raises(*args: object) -> None:
    raise AttributeError("'XLayer' object has no attribute 'intermediate'")


@pytest.mark.parametrize("broken", [
    lambda model, ids, mask: model(input_ids=ids, attention_mask=mask)[0] + 1e-3,
    _raises,
], ids=["off-by-1e-3", "other-interface"])
def test_agrees_catches_a_forward_that_differs(broken, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a transformers release that changed these modules would look like to the check.
    model = _model("xlmr")
    monkeypatch.setattr(seqfirst, "encode", broken)
    assert not seqfirst.agrees(model, *_padded_batch(model.config.pad_token_id))


def test_layouts_export_the_same_model(tiny_src: Path, tmp_path: Path) -> None:
    folders = {layout: export_model(str(tiny_src), tmp_path / layout, quantize="none", layout=layout, log=_quiet).path
               for layout in ("sequence-first", "batch-first")}
    for layout, folder in folders.items():
        assert json.loads((folder / "manifest.json").read_text())["onnx"]["layout"] == layout
    texts = tiny_lines()[:12] + ["", "a much longer line " * 20]
    a, b = (Embedder(f, threads=1).encode(texts) for f in folders.values())
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("refuse", ["supports", "agrees"])
def test_auto_layout_falls_back_and_explicit_layout_is_checked(tiny_src: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, refuse: str) -> None:
    # As for an encoder this module does not know, or one whose modules changed behaviour.
    monkeypatch.setattr(seqfirst, refuse, lambda *args: False)
    with pytest.raises(ExportError, match="sequence-first layout does not apply"):
        export_model(str(tiny_src), tmp_path / "out", quantize="none", layout="sequence-first", log=_quiet)
    out = export_model(str(tiny_src), tmp_path / "out", quantize="none", log=_quiet).path
    assert json.loads((out / "manifest.json").read_text())["onnx"]["layout"] == "batch-first"


def test_auto_layout_is_sequence_first_for_xlmr(tiny_int8: Path) -> None:
    assert json.loads((tiny_int8 / "manifest.json").read_text())["onnx"]["layout"] == "sequence-first"


def test_unknown_layout_is_refused(tiny_src: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--layout must be one of"):
        export_model(str(tiny_src), tmp_path / "out", layout="sideways", log=_quiet)
