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


def interleaved(calls: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call for each variant, variants alternating within every round."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name].append(time_once(fn))
    return times


def stats(seconds: list[float]) -> dict[str, float]:
    arr = np.asarray(seconds)
    return {"median": float(statistics.median(seconds)), "p99": float(np.percentile(arr, 99)),
            "min": float(arr.min()), "n": len(seconds)}


def latency_table(variants: dict[str, EncodeFn], texts_by_len: dict[int, list[str]], rounds: int) -> dict:
    """Batch-1 latency per token length: {length: {variant: stats (seconds)}}."""
    out = {}
    for length, texts in texts_by_len.items():
        calls = {name: (lambda fn=fn, t=texts[:1]: fn(t, 1)) for name, fn in variants.items()}
        out[length] = {name: stats(t) for name, t in interleaved(calls, rounds).items()}
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
