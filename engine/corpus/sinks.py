"""Write embeddings as they come, to ``.npy`` or Parquet, atomically.

Both sinks write to hidden temporary files next to the output, named uniquely per run, and rename
into place only when ``close()`` succeeds, so an interrupted run never leaves a file that looks
complete. While a sink is open it holds a lock on ``.<name>.lock`` beside the output: a second
writer to the same output is refused, not mixed in. Memory
stays flat: rows are appended chunk by chunk. ``.npy`` holds float32 [n, dim] (plus
``<name>.ids.npy`` with the source line numbers when rows were skipped); Parquet holds ``id``,
``text`` and ``embedding`` (needs ``pyarrow``: ``pip install "mstsb-onnx[parquet]"``).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import numpy as np

from mstsb_onnx.errors import InputError, MissingExtraError
from mstsb_onnx.files import make_parent

_COPY_ROWS = 65536


def _partial(path: Path, suffix: str = ".partial") -> Path:
    """A new, unique hidden file beside ``path`` (same filesystem, so the final rename is atomic)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


class _WriterLock:
    """An exclusive lock on ``.<name>.lock`` beside the output, held while one sink writes it.

    ``flock`` ends with the process, so a crashed run blocks nobody; the file is removed on release.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(f".{path.name}.lock")
        self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise InputError(f"another run is writing {path} (it holds {self.path}); wait for it to finish or write "
                             "to another file") from None

    def release(self) -> None:
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1


def ids_path_for(path: Path) -> Path:
    """``out.npy`` -> ``out.ids.npy``: the source line of each row, written when rows were skipped."""
    return path.with_name(path.name[: -len(".npy")] + ".ids.npy")


class NpySink:
    def __init__(self, path: Path, dim: int) -> None:
        self.path, self.dim, self.n = path, dim, 0
        self.lock = _WriterLock(path)
        self.raw = _partial(path, ".raw")
        self.tmp = _partial(path)
        self._f = open(self.raw, "wb")
        self.ids: list[int] = []

    def write(self, ids: list[int], texts: list[str], vectors: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        self.ids += ids
        self.n += len(ids)

    def close(self, skipped: int) -> None:
        self._f.close()
        tmp = self.tmp
        # The row count is known only now: stream the raw rows into a proper .npy.
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n, self.dim))
        raw = np.memmap(self.raw, dtype=np.float32, mode="r", shape=(self.n, self.dim)) if self.n else None
        for start in range(0, self.n, _COPY_ROWS):
            out[start : start + _COPY_ROWS] = raw[start : start + _COPY_ROWS]  # type: ignore[index]
        out.flush()
        del out, raw
        self.raw.unlink()
        # The row map exists exactly when rows were skipped; one left by an earlier run would
        # describe another output.
        ids_path = ids_path_for(self.path)
        if skipped:
            ids_tmp = _partial(ids_path)
            with open(ids_tmp, "wb") as f:
                np.save(f, np.asarray(self.ids, dtype=np.int64))
            os.replace(ids_tmp, ids_path)
        else:
            ids_path.unlink(missing_ok=True)
        os.replace(tmp, self.path)
        self.lock.release()

    def abort(self) -> None:
        self._f.close()
        for p in (self.raw, self.tmp):
            p.unlink(missing_ok=True)
        self.lock.release()


class ParquetSink:
    def __init__(self, path: Path, dim: int) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:
            raise MissingExtraError('Parquet output needs pyarrow: pip install "mstsb-onnx[parquet]"') from e
        self.pa, self.path, self.dim = pa, path, dim
        self.schema = pa.schema([("id", pa.int64()), ("text", pa.string()),
                                 ("embedding", pa.list_(pa.float32(), dim))])
        self.lock = _WriterLock(path)
        self.tmp = _partial(path)
        self._w = pq.ParquetWriter(self.tmp, self.schema)

    def write(self, ids: list[int], texts: list[str], vectors: np.ndarray) -> None:
        pa = self.pa
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        emb = pa.FixedSizeListArray.from_arrays(flat, self.dim)
        self._w.write_table(pa.table([pa.array(ids, pa.int64()), pa.array(texts, pa.string()), emb],
                                     schema=self.schema))

    def close(self, skipped: int) -> None:
        self._w.close()
        os.replace(self.tmp, self.path)
        self.lock.release()

    def abort(self) -> None:
        self._w.close()
        self.tmp.unlink(missing_ok=True)
        self.lock.release()


def open_sink(path: Path, dim: int) -> NpySink | ParquetSink:
    if path.suffix not in (".npy", ".parquet"):
        raise InputError(f"output {path} must end in .npy or .parquet")
    if path.is_dir():
        raise InputError(f"output {path} is a folder; name a .npy or .parquet file")
    make_parent(path)
    try:
        return NpySink(path, dim) if path.suffix == ".npy" else ParquetSink(path, dim)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from e
