"""Output files the commands write: their folder created, failures as one-line ``InputError``s.

``write_report`` writes the small JSON / Markdown reports (eval-sts, bench); ``corpus.sinks``
uses ``make_parent`` for its streamed outputs. No formats live here.
"""

from __future__ import annotations

import os
from pathlib import Path

from mstsb_onnx.errors import InputError


def make_parent(path: Path) -> None:
    """Create ``path``'s folder (as export does for its output folder)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder for {path}: {e.strerror}") from e


def write_report(path: str | os.PathLike[str], text: str) -> None:
    """Write a report file, its folder created."""
    path = Path(path)
    make_parent(path)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from e
