"""Accuracy gates on the real multilingual stand-in, all 31 STS tasks (fixed dev subset).

* fp32 ONNX vs torch fp32: per task |delta Spearman| <= 0.001.
* int8 ONNX vs torch fp32: mean delta >= -0.005 and no task below -0.01.
And the stand-in exports against sentence-transformers on the probes (fp32 max abs diff, int8 cosine, size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder
from mstsb_onnx.eval import sts
from mstsb_onnx.export import parity
from mstsb_onnx.probes import edge_cases, probe_set

from conftest import row_cosines, torch_vectors

PER_TASK = 160  # >= 100 pairs in each of the 31 tasks, evenly spaced over the dev split


@pytest.fixture(scope="module")
def tasks(sts_data: Path) -> dict:
    t = sts.subset(sts.read_sts_csv(sts_data), PER_TASK)
    assert len(t) == 31 and min(len(p) for p in t.values()) >= 100
    return t


@pytest.fixture(scope="module")
def scores(tasks: dict, standin: Path, standin_exports: dict[str, Path]) -> dict[str, dict]:
    from mstsb_onnx.export.reference import TorchReference
    from mstsb_onnx.export.source import resolve_source

    sentences = sts.unique_sentences(tasks)
    ref = TorchReference(resolve_source(str(standin)))
    out = {"torch": sts.score_tasks(tasks, sts.vector_map(sentences, ref.encode(sentences, batch_size=32)))}
    for mode, folder in standin_exports.items():
        vectors = Embedder(folder).encode(sentences, batch_size=32)
        out[mode] = sts.score_tasks(tasks, sts.vector_map(sentences, vectors))
    return out


def _deltas(scores: dict, mode: str) -> dict[str, float]:
    return {t: scores[mode][t]["spearman"] - scores["torch"][t]["spearman"] for t in scores["torch"]}


def test_fp32_matches_torch_on_every_task(scores: dict) -> None:
    deltas = _deltas(scores, "none")
    worst = max(deltas, key=lambda t: abs(deltas[t]))
    assert abs(deltas[worst]) <= 0.001, f"{worst}: {deltas[worst]:+.5f}"


@pytest.mark.parametrize("mode", ["int8", "int8-rows"], ids=["per-tensor", "per-row"])
def test_int8_keeps_accuracy(scores: dict, mode: str) -> None:
    deltas = _deltas(scores, mode)
    worst = min(deltas, key=deltas.get)
    mean = float(np.mean(list(deltas.values())))
    fisher = sts.summary(scores[mode])["avg_spearman"] - sts.summary(scores["torch"])["avg_spearman"]
    assert mean >= -0.005, f"mean delta {mean:+.5f}"
    assert fisher >= -0.005, f"Fisher-z average delta {fisher:+.5f}"
    assert deltas[worst] >= -0.01, f"{worst}: {deltas[worst]:+.5f}"


def test_standin_is_a_real_model(scores: dict) -> None:
    # A random or broken checkpoint scores near 0; multilingual-e5-small scores far above.
    assert sts.summary(scores["torch"])["avg_spearman"] > 0.6


def test_standin_exports_match_sentence_transformers(standin: Path, standin_exports: dict[str, Path]) -> None:
    """The probes through the written folders vs sentence-transformers run here (not the manifest's figures)."""
    texts = [t for group in probe_set().values() for t in group] + list(edge_cases().values())
    ref = torch_vectors(standin, texts)
    fp32 = Embedder(standin_exports["none"]).encode(texts, batch_size=8)
    assert np.abs(fp32 - ref).max() <= parity.FP32_MAX_ABS_DIFF
    for mode in ("int8", "int8-rows"):
        int8 = Embedder(standin_exports[mode]).encode(texts, batch_size=8)
        assert row_cosines(int8, ref).min() >= parity.INT8_MIN_COSINE, mode
    size = {m: sum(f.stat().st_size for f in p.glob("model.onnx*")) for m, p in standin_exports.items()}
    assert size["int8"] < 0.4 * size["none"]
