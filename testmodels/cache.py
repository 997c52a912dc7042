"""Where built test models live between runs, and how a folder is built there atomically.

A model is built into a hidden sibling and renamed into place (``mstsb_onnx.export.folder``), so
an interrupted build never leaves a folder that looks finished.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mstsb_onnx.export.folder import atomic_folder


def default_cache_dir() -> Path:
    """Where built models live between runs: ``$MSTSB_CACHE`` or ``~/.cache/mstsb-onnx``."""
    return Path(os.environ.get("MSTSB_CACHE", Path.home() / ".cache" / "mstsb-onnx"))


@contextmanager
def building(out_dir: Path) -> Iterator[Path]:
    """Yield a work folder that replaces ``out_dir`` (a cache entry, never a user's folder) on success."""
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an older or unfinished build of the same entry
    with atomic_folder(out_dir, force=False) as tmp:
        yield tmp
