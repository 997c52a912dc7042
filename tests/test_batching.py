"""Batch planning: constraints hold, and the cuts cost no more than the largest-batches cut."""

from __future__ import annotations

import numpy as np
import pytest

from mstsb_onnx.batching import plan_batches


def _greedy(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[slice]:
    """The previous planner: the largest batch allowed, again and again."""
    out, start = [], 0
    while start < len(lengths):
        stop = min(len(lengths), start + batch_size, start + max(1, max_tokens // int(lengths[start])))
        out.append(slice(start, stop))
        start = stop
    return out


def _padded(lengths: np.ndarray, plan: list[slice]) -> int:
    """Tokens the session computes: every row of a batch padded to its longest (first) row."""
    return sum(int(lengths[s].max()) * (s.stop - s.start) for s in plan)


CASES = {
    "equal": [20] * 70,
    "mixed-server-batch": [88, 61, 47, 40, 33, 30, 28, 25, 22, 21, 19, 17, 15, 14, 12, 11, 10, 9, 8, 7],
    "one-long-many-short": [500] + [12] * 40,
    "over-long-rows": [3000, 2000, 10, 10],
    "single": [7],
}


@pytest.mark.parametrize("lengths", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("batch_size, max_tokens", [(32, 1024), (8, 256), (1, 1024)], ids=["b32", "b8", "b1"])
def test_plan_respects_limits_and_pads_no_more_than_greedy(lengths: list[int], batch_size: int,
                                                           max_tokens: int) -> None:
    arr = np.sort(np.array(lengths))[::-1]
    plan = plan_batches(arr, batch_size, max_tokens)
    covered = [i for s in plan for i in range(s.start, s.stop)]
    assert covered == list(range(len(arr)))  # every row once, in order
    for s in plan:
        rows = s.stop - s.start
        assert 1 <= rows <= batch_size
        assert rows == 1 or rows * arr[s.start] <= max_tokens
    assert _padded(arr, plan) <= _padded(arr, _greedy(arr, batch_size, max_tokens))


# Counted by hand: (sorted lengths, batch_size, max_tokens) -> (calls, padded tokens) of the best plan.
HAND_COUNTED = {
    # 500 alone, then 32 + 8 rows of 12: no padding at all. Greedy: 2 calls, 16,108 padded tokens.
    "one-long-many-short": ([500] + [12] * 40, 32, 100_000, 3, 980),
    # Equal rows: the largest batches, 32 + 32 + 6 (padding is zero either way; fewest calls).
    "equal": ([20] * 70, 32, 1024, 3, 1400),
    # Two clusters: 4 x 60 and 20 x 10 are two calls with no padding; one call would pad 24 x 60.
    "two-clusters": ([60] * 4 + [10] * 20, 32, 10_000, 2, 440),
    # One 11 among 10s is not worth a call of its own: one batch, 3 x 11 = 33 (1 padded token).
    "near-equal": ([11, 10, 10], 32, 1024, 1, 33),
}


@pytest.mark.parametrize("case", HAND_COUNTED.values(), ids=HAND_COUNTED.keys())
def test_plan_calls_and_padding_as_counted_by_hand(case: tuple) -> None:
    lengths, batch_size, max_tokens, calls, padded = case
    arr = np.sort(np.array(lengths))[::-1]
    plan = plan_batches(arr, batch_size, max_tokens)
    assert (len(plan), _padded(arr, plan)) == (calls, padded)


def test_empty() -> None:
    assert plan_batches(np.array([], dtype=np.int64), 32, 1024) == []
