"""The execution layout: defaults, limits, which session and thread runs what, and same vectors.

Speed is measured by ``benchmarks/many_core.py``; these tests check behaviour only.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder, runners
from mstsb_onnx.manifest import Manifest
from mstsb_onnx.runners import Layout, resolve_layout

TEXTS = ["Hello world", "Hola mundo, ¿qué tal?", "你好，世界", "مرحبا بالعالم", "Grüß Gott", "a", "",
         "Un hombre está tocando la guitarra en el parque con sus amigos de siempre.",
         "Кошка сидит на окне и смотрит на улицу.", "Le chat dort.", "Der Hund bellt laut im Garten.",
         "Bir adam gitar çalıyor."] * 4


class _Arg:
    def __init__(self, name: str) -> None:
        self.name = name


class ThreadRecordingSession:
    """Per row [real tokens, 0, 0, 0]; records the thread of every call and the rows it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def get_inputs(self):
        return [_Arg("input_ids"), _Arg("attention_mask")]

    def get_outputs(self):
        return [_Arg("sentence_embedding")]

    def run(self, names, feeds):
        with self._lock:
            self.calls.append((threading.current_thread().name, feeds["input_ids"].shape[0]))
        out = np.zeros((feeds["input_ids"].shape[0], 4), np.float32)
        out[:, 0] = feeds["attention_mask"].sum(axis=1)
        return [out]


class CharTokenizer:
    pad_id = 0

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [[1] + [2] * len(t) + [1] for t in texts]


def _manifest() -> Manifest:
    return Manifest(dim=4, max_seq_length=512, pooling="mean", normalize=False, prompts={},
                    default_prompt_name=None, files={}, raw={})


def _expected(texts: list[str]) -> list[float]:
    return [len(t) + 2.0 for t in texts]


# --- the layout ----------------------------------------------------------------------------------


def test_defaults_are_every_available_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runners, "available_cpus", lambda: 6)
    assert resolve_layout() == Layout(threads=6, runners=6)
    assert resolve_layout(threads=1) == Layout(threads=1, runners=6)
    assert resolve_layout(runners=2) == Layout(threads=6, runners=2)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    (dict(threads=10**9), "more than 4 x the 2 core"), (dict(runners=9), "runners=9"),
    (dict(threads=0), "positive int"), (dict(runners=True), "positive int"), (dict(threads=1.5), "positive int"),
], ids=["threads-billion", "runners-above-4x", "zero", "bool", "float"])
def test_impossible_counts_are_refused_with_the_cause(monkeypatch: pytest.MonkeyPatch, kwargs: dict,
                                                      fragment: str) -> None:
    monkeypatch.setattr(runners, "available_cpus", lambda: 2)
    with pytest.raises(ValueError, match=fragment):
        resolve_layout(**kwargs)


def test_embedder_refuses_a_billion_threads_before_loading(tiny_int8: Path) -> None:
    with pytest.raises(ValueError, match="threads=1000000000"):
        Embedder(tiny_int8, threads=10**9)


# --- who runs what -------------------------------------------------------------------------------


def test_many_batches_go_to_the_runners_on_their_own_session() -> None:
    latency, shared = ThreadRecordingSession(), ThreadRecordingSession()
    emb = Embedder.from_parts(CharTokenizer(), latency, _manifest(), runners=3, runner_session=shared)
    out = emb.encode(TEXTS, batch_size=4)
    assert out[:, 0].tolist() == _expected(TEXTS)  # order restored across runners
    assert latency.calls == []
    assert sum(rows for _, rows in shared.calls) == len(TEXTS)
    names = {name for name, _ in shared.calls}
    assert all(n.startswith("mstsb-runner") for n in names) and len(names) >= 2


def test_one_batch_runs_in_the_caller_on_the_threads_session() -> None:
    latency, shared = ThreadRecordingSession(), ThreadRecordingSession()
    emb = Embedder.from_parts(CharTokenizer(), latency, _manifest(), runners=3, runner_session=shared)
    emb.encode(["just one"])
    assert latency.calls == [(threading.current_thread().name, 1)] and shared.calls == []


def test_fewer_batches_than_runners_are_cut_so_each_runner_gets_one() -> None:
    session = ThreadRecordingSession()
    emb = Embedder.from_parts(CharTokenizer(), session, _manifest(), runners=4)
    texts = ["abc", "abcd", "ab", "abcde", "a", "abcdef", "abcdefg", "x"]
    out = emb.encode(texts, batch_size=32)  # one batch of 8 for a single runner
    assert out[:, 0].tolist() == _expected(texts)
    assert len(session.calls) == 4 and sorted(rows for _, rows in session.calls) == [2, 2, 2, 2]


def test_runners_1_keeps_every_call_in_the_calling_thread() -> None:
    session = ThreadRecordingSession()
    emb = Embedder.from_parts(CharTokenizer(), session, _manifest(), runners=4)
    seqs = CharTokenizer().encode(TEXTS)
    emb.encode_tokens(seqs, batch_size=4, runners=1)
    assert {name for name, _ in session.calls} == {threading.current_thread().name}
    assert len(session.calls) == len(TEXTS) // 4


# --- same vectors from every layout ------------------------------------------------------------

# Measured: on the tiny per-row export every case below is bit-identical to one runner; on the
# XLM-R-base-shaped per-row export, cutting 5 texts into runner-sized batches moved vectors by
# 4.8e-7 (batch shapes change the float reductions), same batches on either session by 0.0.
SAME_VECTOR_ATOL = 1e-6


@pytest.mark.parametrize(("threads", "n_runners", "batch_size"), [
    (2, 1, 32), (1, 2, 4), (2, 2, 4), (1, 3, 32), (2, 4, 1),
], ids=["2-threads", "2-runners", "2x2", "3-runners-cut-batches", "4-runners-batch-1"])
def test_a_text_gets_the_same_vector_from_any_layout(tiny_int8: Path, threads: int, n_runners: int,
                                                     batch_size: int) -> None:
    single = Embedder(tiny_int8, threads=1, runners=1).encode(TEXTS, batch_size=batch_size)
    other = Embedder(tiny_int8, threads=threads, runners=n_runners).encode(TEXTS, batch_size=batch_size)
    assert np.abs(other - single).max() <= SAME_VECTOR_ATOL


def test_runners_called_from_many_threads_at_once_stay_correct(tiny_int8: Path) -> None:
    emb = Embedder(tiny_int8, threads=1, runners=2)
    want = Embedder(tiny_int8, threads=1, runners=1).encode(TEXTS, batch_size=4)
    got: list[np.ndarray] = []

    def call() -> None:
        got.append(emb.encode(TEXTS, batch_size=4))

    callers = [threading.Thread(target=call) for _ in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(120)
    assert len(got) == 4 and all(np.abs(g - want).max() <= SAME_VECTOR_ATOL for g in got)


# --- the server and embed use them ----------------------------------------------------------------


def test_the_server_shares_a_merged_batch_among_idle_workers() -> None:
    from mstsb_onnx.serve.batcher import Batcher
    from mstsb_onnx.serve.config import ServeConfig
    from mstsb_onnx.serve.metrics import Metrics

    class RecordingEmbedder:
        dim = 4

        def __init__(self) -> None:
            self.calls: list[tuple[str, int, int | None]] = []
            self.barrier = threading.Barrier(3, timeout=10)  # every worker must be inside at once

        def encode_tokens(self, seqs, runners=None):
            self.calls.append((threading.current_thread().name, len(seqs), runners))
            self.barrier.wait()
            out = np.zeros((len(seqs), 4), np.float32)
            out[:, 0] = [len(s) for s in seqs]
            return out

    embedder = RecordingEmbedder()

    async def scenario() -> list:
        batcher = Batcher(embedder, ServeConfig(model_dir="-", workers=3, max_wait_ms=200), Metrics())
        batcher.start()
        jobs = [[[7] * (n + 1) for n in range(k, k + 2)] for k in range(0, 12, 2)]  # 6 requests, 12 texts
        results = await asyncio.gather(*(batcher.submit(job) for job in jobs))
        await batcher.stop()
        return [(job, r.vectors) for job, r in zip(jobs, results)]

    for job, vectors in asyncio.run(scenario()):
        assert vectors[:, 0].tolist() == [len(s) for s in job]
    assert len({name for name, _, _ in embedder.calls}) == 3
    assert sum(n for _, n, _ in embedder.calls) == 12 and {r for _, _, r in embedder.calls} == {1}


def test_embed_uses_the_configured_runners(tiny_int8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mstsb_onnx.cli import main
    from mstsb_onnx.corpus import bulk

    seen: list[Layout] = []

    class Spy(Embedder):
        def encode_tokens(self, *args, **kwargs):
            seen.append(self.layout)
            return super().encode_tokens(*args, **kwargs)

    monkeypatch.setattr(bulk, "Embedder", Spy)
    monkeypatch.setattr(runners, "available_cpus", lambda: 3)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(t for t in TEXTS if t) + "\n", encoding="utf-8")
    assert main(["embed", str(tiny_int8), str(src), "-o", str(tmp_path / "a.npy"), "--runners", "2"]) == 0
    assert main(["embed", str(tiny_int8), str(src), "-o", str(tmp_path / "b.npy")]) == 0
    assert seen[0] == Layout(threads=1, runners=2) and seen[-1] == Layout(threads=1, runners=3)
    assert np.abs(np.load(tmp_path / "a.npy") - np.load(tmp_path / "b.npy")).max() <= SAME_VECTOR_ATOL
