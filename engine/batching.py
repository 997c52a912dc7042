"""Plan batches: sort by token length, then cut into batches bounded in items and in tokens.

Sorting (longest first) keeps padding small, and the token budget keeps a batch of long texts
from being as large in memory as a batch of short ones. It returns index slices into the sorted
order; it does not tokenize or run anything.
"""

from __future__ import annotations

import numpy as np


def plan_batches(sorted_lengths: np.ndarray, batch_size: int, max_batch_tokens: int | None) -> list[slice]:
    """Slices over lengths sorted in descending order.

    Each batch holds at most ``batch_size`` items and, when ``max_batch_tokens`` is set, at most
    that many padded tokens (rows x longest row); a single over-long row still gets its batch.
    """
    n = len(sorted_lengths)
    out: list[slice] = []
    start = 0
    while start < n:
        stop = min(n, start + batch_size)
        if max_batch_tokens is not None:
            rows = max(1, max_batch_tokens // max(1, int(sorted_lengths[start])))
            stop = min(stop, start + rows)
        out.append(slice(start, stop))
        start = stop
    return out
