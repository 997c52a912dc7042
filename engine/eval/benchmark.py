"""Timing harness shared by ``mstsb-onnx bench`` and ``benchmarks/bench.py``.

Rules it enforces: every variant runs the same inputs, warm-up first, variants interleaved
round by round (so machine noise hits all alike), medians and p99 reported, never a single
run. It times callables ``encode(texts, batch_size)``; it knows nothing of torch or onnxruntime.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

EncodeFn = Callable[[list[str], int], object]


def texts_with_tokens(count_tokens: Callable[[str], int], words: Sequence[str], n_tokens: int, n_texts: int,
                      seed: int = 0) -> list[str]:
    """``n_texts`` texts of exactly ``n_tokens`` tokens (specials included), built from ``words``.

    Real words, so the tokenizer works as on real text; topped up with one-token filler words.
    """
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for _ in range(50 * n_texts):
        if len(out) == n_texts:
            return out
        parts: list[str] = []
        for word in rng.choice(np.asarray(words, dtype=object), size=4 * n_tokens):
            if count_tokens(" ".join(parts + [word])) > n_tokens:
                break
            parts.append(word)
        while count_tokens(" ".join(parts)) < n_tokens:
            parts.append("a")
        text = " ".join(parts)
        if count_tokens(text) == n_tokens:
            out.append(text)
    raise ValueError(f"could not build {n_texts} texts of exactly {n_tokens} tokens from the given words")


def time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(calls: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, settle: int = 0,
                per_round: int = 1, pause: float = 0.0) -> dict[str, list[float]]:
    """Seconds per call for each variant, variants alternating within every round.

    Thread pools of the variant that just ran (OpenMP, onnxruntime) keep spinning for a while,
    and on few cores that would be billed to whoever runs next: each variant's turn opens with
    ``pause`` seconds of sleep (the other pools go idle) and ``settle`` untimed calls (its own
    pool wakes up). ``per_round`` timed calls follow.
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            time.sleep(pause)
            for _ in range(settle):
                fn()
            times[name] += [time_once(fn) for _ in range(per_round)]
    return times


def stats(seconds: list[float]) -> dict[str, float]:
    arr = np.asarray(seconds)
    return {"median": float(statistics.median(seconds)), "p99": float(np.percentile(arr, 99)),
            "min": float(arr.min()), "n": len(seconds)}


# A sleep long enough for OpenMP's and onnxruntime's idle workers to stop spinning (a few ms to
# ~200 ms depending on the runtime): without it, at batch 1 on 2 cores, the variant that ran
# before was measured slowing ours from 6.3 to 10.3 ms.
LATENCY_PAUSE_S = 0.25


def latency_table(variants: dict[str, EncodeFn], texts_by_len: dict[int, list[str]], rounds: int) -> dict:
    """Batch-1 latency per token length: {length: {variant: stats (seconds)}}."""
    out = {}
    for length, texts in texts_by_len.items():
        calls = {name: (lambda fn=fn, t=texts[:1]: fn(t, 1)) for name, fn in variants.items()}
        timed = interleaved(calls, rounds, settle=1, per_round=5, pause=LATENCY_PAUSE_S)
        out[length] = {name: stats(t) for name, t in timed.items()}
    return out


def throughput_table(variants: dict[str, EncodeFn], texts: list[str], batch_sizes: Sequence[int], rounds: int,
                     batch1_texts: int | None = None) -> dict:
    """Sentences per second per batch size: {batch: {variant: {"median": s/s, ...}}}."""
    out = {}
    for bs in batch_sizes:
        sample = texts[:batch1_texts] if bs == 1 and batch1_texts else texts
        calls = {name: (lambda fn=fn, s=sample, b=bs: fn(s, b)) for name, fn in variants.items()}
        res = interleaved(calls, rounds, warmup=0 if len(sample) > 256 else 1)
        out[bs] = {name: {"median": len(sample) / statistics.median(t), "n_texts": len(sample), "rounds": len(t)}
                   for name, t in res.items()}
    return out


def run_cli_bench(model_dir: str, reference: str | None, threads: int | None, rounds: int = 20,
                  lengths: Sequence[int] = (8, 16, 32, 64, 128), batch_sizes: Sequence[int] = (1, 8, 32)) -> dict:
    """``mstsb-onnx bench``: batch-1 latency per length and throughput on the built-in multilingual
    texts, for the exported model and (with ``reference``) the torch reference, interleaved."""
    from mstsb_onnx.embedder import Embedder

    emb = Embedder(model_dir, threads=threads)
    variants: dict[str, EncodeFn] = {"onnx": lambda t, b: emb.encode(t, batch_size=b)}
    if reference:
        from mstsb_onnx.export.reference import TorchReference
        from mstsb_onnx.export.source import resolve_source

        ref = TorchReference(resolve_source(reference, max_seq_length=emb.max_seq_length), threads=threads)
        variants["torch fp32"] = lambda t, b: ref.encode(t, batch_size=b)  # runs under inference_mode
    words = _builtin_words()
    count = lambda text: len(emb.tokenize([text], prompt="")[0])  # noqa: E731
    by_len = {n: texts_with_tokens(count, words, n, 1) for n in lengths if n <= emb.max_seq_length}
    sentences = _builtin_sentences() * 8
    result = {
        "latency_ms": {n: {k: {"p50": 1000 * v["median"], "p99": 1000 * v["p99"]} for k, v in row.items()}
                       for n, row in latency_table(variants, by_len, rounds).items()},
        "throughput": {b: {k: v["median"] for k, v in row.items()}
                       for b, row in throughput_table(variants, sentences, batch_sizes, 3).items()},
    }
    print(f"batch-1 latency, ms (p50 / p99), {emb.session.get_session_options().intra_op_num_threads} threads:")
    for n, row in result["latency_ms"].items():
        print(f"  {n:>4} tokens  " + "  ".join(f"{k}: {v['p50']:.1f} / {v['p99']:.1f}" for k, v in row.items()))
    print(f"throughput, sentences/s ({len(sentences)} multilingual sentences):")
    for b, row in result["throughput"].items():
        print(f"  batch {b:>3}  " + "  ".join(f"{k}: {v:.1f}" for k, v in row.items()))
    return result


def _builtin_sentences() -> list[str]:
    from mstsb_onnx.probes import probe_set  # pure data, no heavy import

    return [s for sentences in probe_set().values() for s in sentences[:-1]]  # the short ones


def _builtin_words() -> list[str]:
    return [w for s in _builtin_sentences() for w in s.split()]
