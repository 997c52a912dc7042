"""Batch planning: constraints hold, and the cuts cost no more than the largest-batches cut."""

from __future__ import annotations

import numpy as np
import pytest

from mstsb_onnx.batching import CALL_COST_TOKENS, plan_batches


def _greedy(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[slice]:
    """The previous planner: the largest batch allowed, again and again."""
    out, start = [], 0
    while start < len(lengths):
        stop = min(len(lengths), start + batch_size, start + max(1, max_tokens // int(lengths[start])))
        out.append(slice(start, stop))
        start = stop
    return out


def _cost(lengths: np.ndarray, plan: list[slice]) -> int:
    return sum(CALL_COST_TOKENS + (s.stop - s.start) * int(lengths[s.start]) for s in plan)


CASES = {
    "equal": [20] * 70,
    "mixed-server-batch": [88, 61, 47, 40, 33, 30, 28, 25, 22, 21, 19, 17, 15, 14, 12, 11, 10, 9, 8, 7],
    "one-long-many-short": [500] + [12] * 40,
    "over-long-rows": [3000, 2000, 10, 10],
    "single": [7],
}


@pytest.mark.parametrize("lengths", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("batch_size, max_tokens", [(32, 1024), (8, 256), (1, 1024)], ids=["b32", "b8", "b1"])
def test_plan_respects_limits_and_beats_greedy(lengths: list[int], batch_size: int, max_tokens: int) -> None:
    arr = np.sort(np.array(lengths))[::-1]
    plan = plan_batches(arr, batch_size, max_tokens)
    covered = [i for s in plan for i in range(s.start, s.stop)]
    assert covered == list(range(len(arr)))  # every row once, in order
    for s in plan:
        rows = s.stop - s.start
        assert 1 <= rows <= batch_size
        assert rows == 1 or rows * arr[s.start] <= max_tokens
    assert _cost(arr, plan) <= _cost(arr, _greedy(arr, batch_size, max_tokens))


def test_long_row_is_not_padded_onto_short_ones() -> None:
    arr = np.array([500] + [12] * 40)
    plan = plan_batches(arr, 32, 100_000)
    assert plan[0] == slice(0, 1)  # the greedy cut would pad 31 short rows to 500 tokens
    assert _cost(arr, plan) < _cost(arr, _greedy(arr, 32, 100_000)) / 5


def test_equal_lengths_use_the_largest_batches() -> None:
    assert plan_batches(np.full(70, 20), 32, 1024) == [slice(0, 32), slice(32, 64), slice(64, 70)]


def test_empty() -> None:
    assert plan_batches(np.array([], dtype=np.int64), 32, 1024) == []
