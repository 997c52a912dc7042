"""``Batcher``: merge concurrent requests into token-budgeted batches, run them off the loop.

A request's token ids become a job on an asyncio queue; the collector takes jobs while a worker
is free, up to ``max_batch_tokens`` or ``max_wait_ms``, and shares the merged batch among all the
workers idle at that moment (contiguous pieces of the length-sorted batch, about equal in tokens):
one large batch on one worker while the others wait was the server's bottleneck. Workers are
threads that share one ``Embedder`` (one onnxruntime session). A full queue refuses with 503 +
Retry-After instead of growing. It neither parses HTTP nor tokenizes.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mstsb_onnx.batching import split_even
from mstsb_onnx.serve.api import ApiError
from mstsb_onnx.serve.config import ServeConfig
from mstsb_onnx.serve.metrics import Metrics


@dataclass
class _Job:
    seqs: list[list[int]]  # token ids, from the request handler (tokenized once)
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    finished: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(map(len, self.seqs))


@dataclass(frozen=True)
class Done:
    """A job's vectors and where its time went: waiting for a batch and a worker, then computing."""

    vectors: np.ndarray
    queue_s: float
    compute_s: float


def timed_out(config: ServeConfig, metrics: Metrics) -> ApiError:
    metrics.inc("mstsb_rejected_total", reason="timeout")
    return ApiError(503, f"request not answered within {config.timeout_s:g}s (--timeout); retry later", "timeout",
                    headers={"Retry-After": "1"})


class Batcher:
    """Merges jobs into batches of up to ``max_batch_tokens`` and runs them on worker threads."""

    def __init__(self, embedder: Any, config: ServeConfig, metrics: Metrics) -> None:
        self.embedder, self.config, self.metrics = embedder, config, metrics
        self.workers = config.resolved_workers()
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embed")
        self.idle = self.workers
        self.freed = asyncio.Event()
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.pending_inputs = 0
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.pool.shutdown(wait=True)

    def admit(self, n: int) -> None:
        """Take room for ``n`` texts in the queue, or refuse: called before any work is spent on them."""
        limit = self.config.max_queue_inputs
        if n > limit:
            raise ApiError(413, f"{n} inputs in one request; this server queues at most {limit}", "too_many_inputs",
                           "input")
        if self.pending_inputs + n > limit:
            self.metrics.inc("mstsb_rejected_total", reason="queue_full")
            raise ApiError(503, f"server busy: {self.pending_inputs} inputs queued (limit {limit}); retry shortly",
                           "queue_full", headers={"Retry-After": "1"})
        self.pending_inputs += n
        self.metrics.set("mstsb_queue_inputs", self.pending_inputs)

    def release(self, n: int) -> None:
        """Give back room taken by ``admit`` for texts that will not be (or have been) embedded."""
        self.pending_inputs -= n
        self.metrics.set("mstsb_queue_inputs", self.pending_inputs)

    async def submit(self, seqs: list[list[int]], deadline: float | None = None, admitted: bool = False) -> Done:
        """Embed ``seqs`` in a merged batch; 503 once ``deadline`` (loop time) passes.

        Room is taken here unless the caller ``admitted`` them already; it is given back when
        their batch has run, even if the caller stopped waiting.
        """
        loop = asyncio.get_running_loop()
        if not admitted:
            self.admit(len(seqs))
        job = _Job(seqs, loop.create_future())
        await self.queue.put(job)
        if deadline is None:
            deadline = loop.time() + self.config.timeout_s
        try:
            vectors = await asyncio.wait_for(asyncio.shield(job.future), max(0.0, deadline - loop.time()))
            return Done(vectors, job.started - job.enqueued, job.finished - job.started)
        except asyncio.TimeoutError:
            raise timed_out(self.config, self.metrics) from None

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # A free worker first, then the batch: under load everything that queued while the
            # workers were busy joins this batch, instead of a batch formed early waiting stale.
            while self.idle == 0:
                self.freed.clear()
                await self.freed.wait()
            first = await self.queue.get()
            batch, tokens = [first], first.tokens
            deadline = loop.time() + self.config.max_wait_ms / 1000
            while tokens < self.config.max_batch_tokens:
                remaining = deadline - loop.time()
                if remaining <= 0 and self.queue.empty():
                    break
                try:
                    job = self.queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self.queue.get(), remaining)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(job)
                tokens += job.tokens
            seqs = [ids for job in batch for ids in job.seqs]
            order, pieces = self._pieces(seqs)
            self.idle -= len(pieces)  # before the next batch is collected
            loop.create_task(self._run(batch, seqs, order, pieces))

    def _pieces(self, seqs: list[list[int]]) -> tuple[np.ndarray, list[slice]]:
        """The batch in length order, cut into one piece per idle worker (fewer for few texts)."""
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        order = np.argsort(-lengths, kind="stable")
        return order, split_even(lengths[order], self.idle)

    async def _piece(self, seqs: list[list[int]]) -> np.ndarray:
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._encode, seqs)
        finally:
            self.idle += 1
            self.freed.set()

    def _encode(self, seqs: list[list[int]]) -> np.ndarray:
        # runners=1: this worker thread is the runner; the embedder must not fan out again.
        return self.embedder.encode_tokens(seqs, runners=1)

    async def _run(self, batch: list[_Job], seqs: list[list[int]], order: np.ndarray, pieces: list[slice]) -> None:
        start = time.perf_counter()
        for job in batch:
            job.started = start
        vectors: np.ndarray | None = np.empty((len(seqs), self.embedder.dim), dtype=np.float32)
        try:
            parts = [order[p] for p in pieces]
            done = await asyncio.gather(*(self._piece([seqs[i] for i in idx]) for idx in parts))
            for idx, part in zip(parts, done):
                vectors[idx] = part
        except Exception as e:  # report to every waiting request rather than kill the batcher
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(ApiError(500, f"embedding failed: {e}", "internal_error"))
            vectors = None
        finally:
            self.release(len(seqs))
        end = time.perf_counter()
        for job in batch:
            job.finished = end
        self.metrics.observe("mstsb_batch_inputs", len(seqs))
        self.metrics.observe("mstsb_batch_seconds", end - start)
        self.metrics.observe("mstsb_batch_workers", len(pieces))
        if vectors is None:
            return
        at = 0
        for job in batch:
            if not job.future.done():
                job.future.set_result(vectors[at : at + len(job.seqs)])
            at += len(job.seqs)
