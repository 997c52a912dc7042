"""Which code made a file: the package version and, in a git checkout, the commit (and whether
the work tree had uncommitted changes). Recorded in every manifest and in the benchmark and
evaluation results, so a figure can be traced to the code and recipe behind it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    """git's output, or None outside a checkout (not stripped: porcelain lines start with a space)."""
    try:
        done = subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def code_revision() -> dict[str, object]:
    """``{"version", "commit", "dirty"}``; commit and dirty are None outside a git checkout."""
    import importlib.metadata as md

    try:
        version: str | None = md.version("mstsb-onnx")
    except md.PackageNotFoundError:
        version = None
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    changed = [line[3:] for line in (status or "").splitlines() if not _generated(line[3:])]
    return {"version": version, "commit": commit, "dirty": bool(changed) if status is not None else None}


def _generated(path: str) -> bool:
    """Files the benchmarks themselves rewrite (results, RESULTS.md, the README headline) and prose:
    changing them does not change the code that made a figure."""
    return path.startswith("benchmarks/results/") or path.endswith(".md")


def same_code(recorded: object) -> bool:
    """True when ``recorded`` (a manifest's ``exporter``) names this clean commit."""
    now = code_revision()
    return (isinstance(recorded, dict) and now["commit"] is not None and not now["dirty"]
            and recorded.get("commit") == now["commit"] and recorded.get("dirty") is False)
