"""A one-line progress bar on stderr, and chunked encoding that drives it.

Dependency-free on purpose (the runtime stays slim); ``batch_bar`` uses tqdm when it is installed
(as sentence-transformers' ``show_progress_bar`` does) and this bar otherwise. On a terminal it
redraws one line with count, percent and rate; elsewhere (CI logs, pipes) it prints only the
final line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

import numpy as np


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "sent", stream: TextIO | None = None,
                 live: bool | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def _line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%) "
                f"{self.done / elapsed:.1f} {self.unit}/s, {elapsed:.1f}s")

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.live and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self.stream.write("\r" + self._line())
            self.stream.flush()

    def close(self) -> None:
        self.stream.write(("\r" if self.live else "") + self._line() + "\n")
        self.stream.flush()


def encode_with_progress(encode: Callable[[list[str]], np.ndarray], texts: Sequence[str], desc: str,
                         chunk: int = 1024, stream: TextIO | None = None) -> np.ndarray:
    """``encode`` in chunks, reporting progress; returns the stacked result."""
    bar = Progress(len(texts), desc, stream=stream)
    parts = []
    for start in range(0, len(texts), chunk):
        part = list(texts[start : start + chunk])
        parts.append(np.asarray(encode(part), dtype=np.float32))
        bar.update(len(part))
    bar.close()
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


@contextmanager
def batch_bar(total: int, enabled: bool, desc: str = "Batches") -> Iterator[Callable[[int], None]]:
    """An ``update(n)`` callable for ``total`` items: tqdm's when installed, else ``Progress``; a no-op when off."""
    if not enabled:
        yield lambda n: None
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        bar = Progress(total, desc)
        yield bar.update
        bar.close()
        return
    with tqdm(total=total, desc=desc, unit="sent") as t:
        yield t.update
