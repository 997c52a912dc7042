"""Embed on a Ray cluster: one onnxruntime session per actor, loaded once for the whole input.

    import ray
    from mstsb_onnx.corpus.ray import embed_dataset
    ds = ray.data.read_parquet("s3://bucket/texts/")
    embed_dataset(ds, "models/mstsb-int8", column="text", workers=8).write_parquet("s3://bucket/emb/")

``embed_dataset`` is ``Dataset.map_batches`` with a callable class: each actor builds one
``Embedder`` (explicit threads per actor) in its constructor and reuses it for every batch, so
vectors equal the single-process path's. ``embed_file_ray`` (``mstsb-onnx embed --ray``) reads and
checks rows on the driver and streams chunks through one pool of actors, writing in input order.
Bad rows follow the single-process rules on both paths: a cell that is not text or is blank, or
whose tokens the model has no embedding for, stops the run (``on_error="fail"``) or is left out
(``"skip"``). The model folder must be readable at the same path on every node (a shared
filesystem, or copy it first). Needs the ``ray`` extra; imported only when used.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from mstsb_onnx.corpus.bulk import EmbedStats, check_on_error, chunks, report_refused, split_embeddable
from mstsb_onnx.corpus.readers import BadRow, Row, check_text, read_rows
from mstsb_onnx.corpus.sinks import open_sink
from mstsb_onnx.errors import InputError, MissingExtraError


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise MissingExtraError('Ray support needs the ray extra: pip install "mstsb-onnx[ray]"') from e
    return ray


def _embedder(model_dir: str, threads: int) -> Any:
    from mstsb_onnx.embedder import Embedder

    # An actor's cores go to runners over one one-thread session: its batches are many, and a
    # second, many-thread session would only add memory.
    return Embedder(model_dir, threads=1, runners=threads)


class EmbedBatch:
    """The per-actor callable of ``embed_dataset``: loads the model once, embeds one column of each batch."""

    def __init__(self, model_dir: str, column: str, output_column: str, threads: int, batch_size: int,
                 normalize: bool, on_error: str) -> None:
        self.embedder = _embedder(model_dir, threads)
        self.column, self.output_column = column, output_column
        self.batch_size, self.normalize, self.on_error = batch_size, normalize, on_error

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        checked = [check_text(i, v, f"column {self.column!r}") for i, v in enumerate(batch[self.column].tolist())]
        kept, seqs, refused = split_embeddable(self.embedder, [r for r in checked if isinstance(r, Row)])
        bad = [r for r in checked if isinstance(r, BadRow)] + refused
        if bad and self.on_error == "fail":
            value = batch[self.column][bad[0].id]
            raise InputError(f"a row whose {self.column!r} is {str(value)[:80]!r}: {bad[0].reason} "
                             "(pass on_error='skip' to leave such rows out)")
        keep = np.asarray([r.id for r in kept], dtype=np.int64)
        out = {name: np.asarray(values)[keep] for name, values in batch.items()}
        out[self.output_column] = self.embedder.encode_tokens(seqs, self.batch_size, self.normalize)
        return out


def embed_dataset(ds: Any, model_dir: str | os.PathLike[str], column: str = "text", *, workers: int = 2,
                  threads: int = 1, batch_size: int = 32, rows_per_task: int = 1024,
                  output_column: str = "embedding", normalize: bool = False, on_error: str = "fail") -> Any:
    """Add ``output_column`` (float32 [dim] per row) to ``ds`` using ``workers`` actors."""
    _ray()
    check_on_error(on_error)
    return ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs=dict(model_dir=str(Path(model_dir).resolve()), column=column,
                                   output_column=output_column, threads=threads,
                                   batch_size=batch_size, normalize=normalize, on_error=on_error),
        batch_size=rows_per_task, batch_format="numpy", concurrency=workers, num_cpus=threads,
    )


class ChunkEmbedder:
    """The actor of ``embed_file_ray``: one Embedder for every chunk it is sent."""

    def __init__(self, model_dir: str, threads: int, batch_size: int, normalize: bool) -> None:
        self.embedder = _embedder(model_dir, threads)
        self.batch_size, self.normalize = batch_size, normalize

    def embed(self, chunk: list[Row]) -> tuple[list[Row], np.ndarray, list[BadRow], int]:
        """Embeddable rows, their vectors, the rows refused, and this process's id."""
        kept, seqs, refused = split_embeddable(self.embedder, chunk)
        return kept, self.embedder.encode_tokens(seqs, self.batch_size, self.normalize), refused, os.getpid()


def embed_file_ray(model_dir: str, source: str, output: Path, fmt: str | None = None, field: str = "text",
                   on_error: str = "fail", address: str | None = None, workers: int = 2,
                   threads: int = 1, batch_size: int = 32, normalize: bool = False,
                   chunk_size: int = 4096, rows_per_task: int = 512, log: TextIO | None = None) -> EmbedStats:
    """The CLI's ``--ray``: rows read and checked on the driver ``chunk_size`` at a time, sent to
    ``workers`` actors (created once) in tasks of ``rows_per_task`` rows, at most two tasks queued
    per actor, and written in input order by the same sinks."""
    ray = _ray()
    log = log or sys.stderr
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else workers * threads,
                 include_dashboard=False, log_to_driver=False)
    from mstsb_onnx.manifest import read_manifest

    folder = str(Path(model_dir).resolve())
    stats = EmbedStats()
    rows = chunks(read_rows(source, fmt, field), chunk_size, on_error, stats, log)
    sink = open_sink(output, read_manifest(Path(folder)).dim)
    actor = ray.remote(num_cpus=threads)(ChunkEmbedder)
    pool = [actor.remote(folder, threads, batch_size, normalize) for _ in range(workers)]
    pending: deque = deque()
    pids: set[int] = set()

    def write_oldest() -> None:
        kept, vectors, refused, pid = ray.get(pending.popleft())
        pids.add(pid)
        report_refused(refused, on_error, stats, log)
        if kept:
            sink.write([r.id for r in kept], [r.text for r in kept], vectors)
            stats.rows += len(kept)

    try:
        tasks = (chunk[i : i + rows_per_task] for chunk in rows for i in range(0, len(chunk), rows_per_task))
        for n, task in enumerate(tasks):
            pending.append(pool[n % workers].embed.remote(task))
            if len(pending) >= 2 * workers:
                write_oldest()
        while pending:
            write_oldest()
        sink.close(stats.skipped)
    except BaseException:
        sink.abort()
        raise
    finally:
        for a in pool:
            ray.kill(a)
    stats.processes = len(pids)
    return stats
