"""The execution layout: how an Embedder spreads its onnxruntime calls over the cores.

Two ways to use cores, each best at one thing (measured, docs/performance.md "Many cores"):

- **threads**: onnxruntime's intra-op threads split one call. They shorten one batch (one short
  text: the latency path) but stop paying after a few threads, because the int8 graph is many
  small operators.
- **runners**: Python threads that each make one-thread calls on the *same* session at once
  (``InferenceSession.run`` is thread-safe and releases the GIL). They reach the throughput of as
  many one-thread processes while the weights are held once.

So a call with one batch runs in the caller's thread on the ``threads``-thread session, and a
call with several batches hands them, longest first, to ``runners`` threads sharing a one-thread
session (the same session when ``threads`` is 1). The defaults, every core for both, live here
and only here; ``Embedder``, ``embed``, the server and Ray take them from ``resolve_layout``.
This module neither tokenizes nor plans batches (``batching`` does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from mstsb_onnx.cpus import available_cpus
from mstsb_onnx.inputs import is_count

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Layout:
    """``threads`` intra-op threads for a single batch; ``runners`` concurrent one-thread calls for many."""

    threads: int
    runners: int


def resolve_layout(threads: int | None = None, runners: int | None = None, cores: int | None = None) -> Layout:
    """The layout for explicit values, each default being the cores this process may use.

    A value above the available cores is refused: more threads than cores only queue (and
    ``threads=10**9`` would ask onnxruntime for a billion threads).
    """
    cores = cores or available_cpus()
    for name, value in (("threads", threads), ("runners", runners)):
        if value is None:
            continue
        if not is_count(value):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if value > max(cores, MAX_OVERSUBSCRIBE * cores):
            raise ValueError(f"{name}={value} is more than {MAX_OVERSUBSCRIBE} x the {cores} core(s) this process may "
                             f"use (affinity mask and cgroup quota); leave it unset to use every core")
    return Layout(threads=threads or cores, runners=runners or cores)


# Explicit counts above the cores are allowed up to this factor (a test may oversubscribe on
# purpose); beyond it a value is a mistake.
MAX_OVERSUBSCRIBE = 4


class RunnerPool:
    """``runners`` threads, started on first use, that run one function over many items at once."""

    def __init__(self, runners: int) -> None:
        self.runners = runners
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn`` over ``items``, results in order; items are taken by idle runners as they free up."""
        items = list(items)
        if self.runners == 1 or len(items) <= 1:
            return map(fn, items)
        return self._executor().map(fn, items)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.runners, thread_name_prefix="mstsb-runner")
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
