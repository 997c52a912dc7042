"""Read and verify the manifest that the exporter writes next to the model.

The manifest (``manifest.json``) is the contract between export and runtime: it names every file
with its sha256, and carries what the runtime must know to embed exactly like the source model
(max_seq_length, pooling, normalize, prompts). This module reads it and checks the files; it
never writes one (the exporter does) and never guesses a missing field.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mstsb_onnx.errors import ModelFolderError

MANIFEST_NAME = "manifest.json"
FORMAT = "mstsb-onnx/1"
# Pooling runs inside the graph; the manifest records which (sentence-transformers' names).
POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_CHUNK = 1 << 22
Verify = Literal["cached", "full", "off"]


def _stamp_dir() -> Path:
    return Path(os.environ.get("MSTSB_CACHE", Path.home() / ".cache" / "mstsb-onnx")) / "verified"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """The fields the runtime uses; ``raw`` keeps the whole document (versions, parity...)."""

    dim: int
    max_seq_length: int
    pooling: str
    normalize: bool
    prompts: dict[str, str]
    default_prompt_name: str | None
    files: dict[str, str]
    raw: dict[str, Any] = field(repr=False)
    # Rows of the word-embedding table; ids at or above it have no vector. None in manifests
    # written before it was recorded (the runtime then cannot check ids before running).
    vocab_size: int | None = None

    @property
    def quantization_mode(self) -> str:
        """"int8" or "none" as recorded by the exporter ("?" if the manifest does not say)."""
        return str(self.raw.get("quantization", {}).get("mode", "?"))

    @property
    def recipe_name(self) -> str | None:
        """The int8 recipe shipped (``quantization.recipe.name``); None for fp32 or older manifests."""
        return (self.raw.get("quantization", {}).get("recipe") or {}).get("name")

    @property
    def default_prompt(self) -> str:
        if self.default_prompt_name is None:
            return ""
        return self.prompts[self.default_prompt_name]


def _require(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in doc:
        raise ModelFolderError(f"{where}: field {key!r} is missing; re-export the model with `mstsb-onnx export`")
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ModelFolderError(f"{where}: field {key!r} has type {type(value).__name__}; re-export the model")
    return value


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_NAME
    if folder.is_file():
        raise ModelFolderError(f"{folder} is a file; pass the exported model folder ({folder.parent})")
    if not folder.is_dir():
        raise ModelFolderError(
            f"model folder {folder} does not exist; export one with `mstsb-onnx export SOURCE -o {folder}`"
        )
    if not path.is_file():
        raise ModelFolderError(
            f"{folder} has no {MANIFEST_NAME}: it was not written by `mstsb-onnx export` "
            "(or the export did not finish); export the model again"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{path} is not valid JSON ({e}); export the model again") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFolderError(f"{path}: format is {doc.get('format') if isinstance(doc, dict) else None!r}, expected {FORMAT!r}")
    prompts = _require(doc, "prompts", dict, path)
    default = doc.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ModelFolderError(f"{path}: default_prompt_name {default!r} is not one of the prompts {sorted(prompts)}")
    pooling = _require(doc, "pooling", str, path)
    if pooling not in POOLING_MODES:
        raise ModelFolderError(f"{path}: unknown pooling {pooling!r}")
    dim, max_seq_length = _require(doc, "dim", int, path), _require(doc, "max_seq_length", int, path)
    if dim < 1:
        raise ModelFolderError(f"{path}: dim is {dim}; a model's vectors have at least 1 dimension -- export again")
    if max_seq_length < 2:
        raise ModelFolderError(f"{path}: max_seq_length is {max_seq_length}; it must leave room for <s> and </s> "
                               "(at least 2) -- export again")
    return Manifest(
        dim=dim,
        max_seq_length=max_seq_length,
        pooling=pooling,
        normalize=_require(doc, "normalize", bool, path),
        prompts={str(k): str(v) for k, v in prompts.items()},
        default_prompt_name=default,
        files={str(k): str(v) for k, v in _require(doc, "files", dict, path).items()},
        raw=doc,
        vocab_size=_require(doc, "vocab_size", int, path) if "vocab_size" in doc else None,
    )


def _stats(folder: Path, names: list[str]) -> dict[str, list[int]]:
    out = {}
    for name in names:
        st = (folder / name).stat()
        out[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return out


def _stamp_path(folder: Path, manifest: Manifest) -> Path:
    key = hashlib.sha256((str(folder.resolve()) + json.dumps(manifest.files, sort_keys=True)).encode()).hexdigest()
    return _stamp_dir() / f"{key[:32]}.json"


def verify_files(folder: Path, manifest: Manifest, mode: Verify = "cached") -> None:
    """Check that every file the manifest lists is there with the recorded sha256.

    ``cached`` (default) hashes once, then remembers each file's size, mtime and inode in the
    user cache and re-hashes only when one of them changed -- the check git uses for its index;
    it saves ~0.2 s per load of a 300 MB model. ``full`` always hashes; ``off`` skips the hashes
    (files must still exist).
    """
    if mode not in ("cached", "full", "off"):
        raise ValueError(f"verify must be 'cached', 'full' or 'off', got {mode!r}")
    names = list(manifest.files)
    root = folder.resolve()
    for name in names:
        # The text of the entry, then where it really leads: a link may point anywhere.
        if Path(name).is_absolute() or ".." in Path(name).parts or not (folder / name).resolve().is_relative_to(root):
            raise ModelFolderError(f"{folder / MANIFEST_NAME}: file entry {name!r} points outside the folder")
        if not (folder / name).is_file():
            raise ModelFolderError(f"{folder}: {name} is missing (listed in {MANIFEST_NAME}); export the model again")
    if mode == "off":
        return
    stamp = _stamp_path(folder, manifest)
    stats = _stats(folder, names)
    if mode == "cached":
        try:
            if json.loads(stamp.read_text()) == stats:
                return
        except (OSError, ValueError):
            pass
    _hash_all(folder, manifest)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(stats))
    except OSError:
        pass  # a read-only home only costs the next load a re-hash


def _hash_all(folder: Path, manifest: Manifest) -> None:
    for name, digest in manifest.files.items():
        actual = sha256_file(folder / name)
        if actual != digest:
            raise ModelFolderError(
                f"{folder}: {name} changed since export (sha256 {actual[:12]}..., manifest says {digest[:12]}...); "
                "restore it or export the model again"
            )
