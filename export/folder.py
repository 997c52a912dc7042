"""Write a model folder atomically, and replace only folders this tool wrote.

Work happens in a hidden sibling folder that is renamed into place at the very end, so an
interrupted export or trim never leaves a half folder that could load. ``--force`` removes the
old output, so only a folder with our manifest (or an empty one) may be replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mstsb_onnx.errors import ExportError
from mstsb_onnx.manifest import FORMAT, MANIFEST_NAME


def work_folder(output: Path) -> Path:
    """A fresh hidden sibling of ``output`` to build the folder in."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_replaceable(output: Path, force: bool) -> None:
    """``--force`` replaces an earlier export or an empty folder, never anything else.

    The output is removed on replace, so a typo (the source folder, a home directory, a file)
    must not be: only what this tool wrote, known by its manifest's format, is fair game.
    """
    if not output.exists() and not output.is_symlink():
        return
    if not force:
        raise ExportError(f"{output} already exists; pass --force to replace it")
    if output.is_dir() and not output.is_symlink():
        if not any(output.iterdir()):
            return
        try:
            if json.loads((output / MANIFEST_NAME).read_text(encoding="utf-8")).get("format") == FORMAT:
                return
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            pass  # no readable manifest of ours: not an export, refused below
    raise ExportError(f"{output} exists and is not a folder written by mstsb-onnx export (no {MANIFEST_NAME} "
                      f"of format {FORMAT!r}); --force replaces only earlier exports and empty folders -- "
                      "pick another output or remove it yourself")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_permissions(folder: Path) -> None:
    """Folders 0777 and files 0666 less the umask (0755 / 0644 usually), as ``mkdir`` and ``open``
    would give: ``mkdtemp`` makes the work folder 0700, which would lock out every other account
    (a container's non-root user, a service account) once renamed into place."""
    mask = _current_umask()
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def move_into_place(tmp: Path, output: Path, force: bool) -> None:
    usual_permissions(tmp)
    if output.exists():
        check_replaceable(output, force)
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, output)


@contextmanager
def atomic_folder(output: Path, force: bool) -> Iterator[Path]:
    """Yield a hidden work folder that becomes ``output`` when the block ends without an error.

    On any error (Ctrl-C included) the work folder is removed and ``output`` is left as it was.
    """
    tmp = work_folder(output)
    try:
        yield tmp
        move_into_place(tmp, output, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
