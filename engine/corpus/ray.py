"""Embed on a Ray cluster with Ray Data: one onnxruntime session per actor, loaded once.

    import ray
    from mstsb_onnx.corpus.ray import embed_dataset
    ds = ray.data.read_parquet("s3://bucket/texts/")
    embed_dataset(ds, "models/mstsb-int8", column="text", workers=8).write_parquet("s3://bucket/emb/")

``embed_dataset`` is ``Dataset.map_batches`` with a callable class: each actor builds one
``Embedder`` (explicit threads per actor) in its constructor and reuses it for every batch, so
vectors equal the single-process path's. The model folder must be readable at the same path on
every node (a shared filesystem, or copy it first). Point it at a cluster with ``ray.init(address=...)``
or ``mstsb-onnx embed --ray ADDRESS``; without an address a local cluster is started. Needs the
``ray`` extra; imported only when used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mstsb_onnx.corpus.bulk import EmbedStats, chunks
from mstsb_onnx.corpus.readers import read_rows
from mstsb_onnx.errors import MissingExtraError
from mstsb_onnx.corpus.sinks import open_sink


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise MissingExtraError('Ray support needs the ray extra: pip install "mstsb-onnx[ray]"') from e
    return ray


class EmbedBatch:
    """The per-actor callable: loads the model once, embeds one column of each batch."""

    def __init__(self, model_dir: str, column: str, output_column: str, threads: int, batch_size: int,
                 normalize: bool) -> None:
        from mstsb_onnx.embedder import Embedder

        self.embedder = Embedder(model_dir, threads=threads)
        self.column, self.output_column = column, output_column
        self.batch_size, self.normalize = batch_size, normalize

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch[self.column].tolist()]
        batch[self.output_column] = self.embedder.encode(texts, batch_size=self.batch_size, normalize=self.normalize)
        return batch


def embed_dataset(ds: Any, model_dir: str | os.PathLike[str], column: str = "text", *, workers: int = 2,
                  threads_per_worker: int = 1, batch_size: int = 32, rows_per_task: int = 1024,
                  output_column: str = "embedding", normalize: bool = False) -> Any:
    """Add ``output_column`` (float32 [dim] per row) to ``ds`` using ``workers`` actors."""
    _ray()
    return ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs=dict(model_dir=str(Path(model_dir).resolve()), column=column,
                                   output_column=output_column, threads=threads_per_worker,
                                   batch_size=batch_size, normalize=normalize),
        batch_size=rows_per_task, batch_format="numpy", concurrency=workers, num_cpus=threads_per_worker,
    )


def embed_file_ray(model_dir: str, source: str, output: Path, fmt: str | None = None, field: str = "text",
                   on_error: str = "fail", address: str | None = None, workers: int = 2,
                   threads_per_worker: int = 1, batch_size: int = 32, normalize: bool = False,
                   chunk_size: int = 65536) -> EmbedStats:
    """The CLI's ``--ray``: rows are read and checked on the driver (bad rows reported as without
    Ray), embedded by the actors chunk by chunk, and written in input order by the same sinks."""
    import sys

    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else workers * threads_per_worker,
                 include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = sys.stderr.isatty()
    from mstsb_onnx.manifest import read_manifest

    stats = EmbedStats()
    rows = chunks(read_rows(source, fmt, field), chunk_size, on_error, stats, sys.stderr)
    sink = open_sink(output, read_manifest(Path(model_dir)).dim)
    try:
        for chunk in rows:
            ds = ray.data.from_items([{"id": r.id, "text": r.text} for r in chunk])
            ds = embed_dataset(ds, model_dir, "text", workers=workers, threads_per_worker=threads_per_worker,
                               batch_size=batch_size, normalize=normalize)
            for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                sink.write(batch["id"].tolist(), batch["text"].tolist(), np.asarray(batch["embedding"]))
            stats.rows += len(chunk)
        sink.close(stats.skipped)
    except BaseException:
        sink.abort()
        raise
    return stats
