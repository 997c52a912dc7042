"""``mstsb-onnx embed``: stream a corpus through an Embedder into a .npy or Parquet file.

Reads rows (``readers``), checks that the model can embed them, streams them through
``Embedder.embed`` with a progress bar (sentences/s) and appends to an atomic sink (``sinks``).
Bad rows are reported on stderr with their line number; with
``on_error="skip"`` they are left out (and counted), with ``"fail"`` the run stops and no
output is written. Memory stays flat for any input size.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice, tee
from pathlib import Path
from typing import TextIO

import numpy as np

from mstsb_onnx.corpus.readers import BadRow, Row, read_rows
from mstsb_onnx.embedder import Embedder
from mstsb_onnx.errors import InputError
from mstsb_onnx.progress import Progress
from mstsb_onnx.corpus.sinks import open_sink

ON_ERROR = ("fail", "skip")


@dataclass
class EmbedStats:
    rows: int = 0
    skipped: int = 0
    processes: int = 1  # processes that loaded the model (Ray: one per actor)


def chunks(rows: Iterable[Row | BadRow], size: int, on_error: str, stats: EmbedStats,
           log: TextIO) -> Iterator[list[Row]]:
    """Good rows in chunks of ``size``; bad rows reported and skipped, or raised.

    ``on_error`` is checked here, at the call, so every caller (with or without Ray) gets it.
    """
    check_on_error(on_error)
    return _chunks(rows, size, on_error, stats, log)


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise InputError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def _chunks(rows: Iterable[Row | BadRow], size: int, on_error: str, stats: EmbedStats,
            log: TextIO) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        if isinstance(row, BadRow):
            if on_error == "fail":
                raise InputError(f"line {row.id}: {row.reason} (pass --on-error skip to leave such rows out)")
            stats.skipped += 1
            print(f"skipped line {row.id}: {row.reason}", file=log)
            continue
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def split_embeddable(embedder: Embedder, chunk: list[Row]) -> tuple[list[Row], list[list[int]], list[BadRow]]:
    """Tokenize a chunk: the rows the model can embed with their ids, and the rest as bad rows
    (``Embedder.unembeddable`` says why). Shared by the single-process and the Ray path."""
    kept: list[Row] = []
    seqs: list[list[int]] = []
    refused: list[BadRow] = []
    for row, seq in zip(chunk, embedder.tokenize([r.text for r in chunk])):
        why = embedder.unembeddable(seq)
        if why is None:
            kept.append(row)
            seqs.append(seq)
        else:
            refused.append(BadRow(row.id, why))
    return kept, seqs, refused


def report_refused(refused: list[BadRow], on_error: str, stats: EmbedStats, log: TextIO) -> None:
    """Rows the model cannot embed go as bad rows do: the first one raises, or all are logged and counted."""
    for bad in refused:
        if on_error == "fail":
            raise InputError(f"line {bad.id} {bad.reason} (pass --on-error skip to leave such rows out)")
        stats.skipped += 1
        print(f"skipped line {bad.id}: {bad.reason}", file=log)


def _checked(embedder: Embedder, rows: Iterable[list[Row]], on_error: str, stats: EmbedStats,
             log: TextIO) -> Iterator[Row]:
    """Rows the model can embed, lazily; the others reported (or raised) as bad rows."""
    for chunk in rows:
        kept, _, refused = split_embeddable(embedder, chunk)
        report_refused(refused, on_error, stats, log)
        yield from kept


def corpus_embedder(model_dir: str | Path, threads: int | None = None, runners: int | None = None) -> Embedder:
    """The Embedder ``mstsb-onnx embed`` uses: all throughput, so one-thread runners on every core
    by default (``mstsb_onnx.runners``) and no many-thread session beside them."""
    return Embedder(model_dir, threads=threads or 1, runners=runners)


def embed_file(embedder: Embedder, source: str, output: Path, fmt: str | None = None, field: str = "text",
               on_error: str = "fail", chunk_size: int = 4096, batch_size: int = 32, normalize: bool = False,
               log: TextIO | None = None) -> EmbedStats:
    """Rows -> checked rows -> ``Embedder.embed`` (streaming) -> the sink, ``chunk_size`` rows at a time."""
    log = log or sys.stderr
    stats = EmbedStats()
    rows = chunks(read_rows(source, fmt, field), chunk_size, on_error, stats, log)
    sink = open_sink(output, embedder.dim)
    bar = Progress(0, "embedding", stream=log)
    # One stream of checked rows feeds both the embedder and the sink; tee holds at most a chunk.
    for_texts, for_sink = tee(_checked(embedder, rows, on_error, stats, log))
    vectors = embedder.embed((r.text for r in for_texts), batch_size=batch_size, chunk_size=chunk_size,
                             normalize_embeddings=normalize)
    pairs = zip(for_sink, vectors)
    try:
        while block := list(islice(pairs, chunk_size)):
            sink.write([r.id for r, _ in block], [r.text for r, _ in block], np.stack([v for _, v in block]))
            stats.rows += len(block)
            bar.total = stats.rows
            bar.update(len(block))
        sink.close(stats.skipped)
    except BaseException:
        sink.abort()
        raise
    bar.close()
    if stats.skipped:
        print(f"{stats.skipped} bad row(s) skipped", file=log)
    return stats
