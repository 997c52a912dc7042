"""Download a model from the Hugging Face hub: configs, tokenizers and safetensors weights only.

Pickled weights (``pytorch_model.bin``) are never downloaded, so never unpickled. Many older
repositories hold only those; for many of them the hub's conversion bot has opened a pull request
that adds a safetensors copy. When the asked revision has no safetensors weights, the download
looks for that pull request as transformers does (open, opened by the bot, its parent the current
head of the default branch) and takes its revision instead, saying so. It never asks the hub to
convert anything (transformers would, by sending the repository to a conversion service), and
without such a pull request it stops with an error that says how to convert the weights.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mstsb_onnx.errors import ExportError

# Configs and tokenizer files, in the root or in module folders (the hub's patterns let "*" cross
# "/"), and weights as safetensors.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]
CONVERSION_BOT = "SFconvertbot"
CONVERSION_TITLE = "Adding `safetensors` variant of this model"
# How to get safetensors from pickled weights: said by the hub download and by local loading.
CONVERT_PICKLES = ("convert them once where you trust the file (AutoModel.from_pretrained(DIR).save_pretrained(DIR, "
                   "safe_serialization=True)) and export that folder, or for a hub model pass --revision of its "
                   "safetensors conversion (e.g. refs/pr/1)")
# What transformers and sentence-transformers name pickled weights (a whole model or its shards).
_PICKLED_WEIGHTS = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin")


@dataclass(frozen=True)
class Snapshot:
    path: Path  # the local snapshot folder (its name is the commit hash: ``revision_of``)
    note: str = ""  # why it is not the revision asked for, when it is not


def download(model_id: str, revision: str | None = None) -> Snapshot:
    """Fetch ``model_id`` at ``revision`` (default branch when None), safetensors weights only."""
    try:
        import huggingface_hub
    except ImportError as e:
        raise ExportError("huggingface_hub is needed to download models: pip install \"mstsb-onnx[export]\"") from e
    path = _snapshot(huggingface_hub, model_id, revision)
    have = _safetensors_dirs(path)
    missing = _missing(path, have, _pickled_files(huggingface_hub, model_id, revision))
    if have and not missing:
        return Snapshot(path)
    pr = _conversion_pr(huggingface_hub, model_id) if revision in (None, "main") else None
    if pr is not None:
        converted = _snapshot(huggingface_hub, model_id, pr)
        have = _safetensors_dirs(converted)
        if have and not _missing(converted, have, _pickled_files(huggingface_hub, model_id, pr)):
            return Snapshot(converted,
                            note=f"{pr}, {CONVERSION_BOT}'s safetensors conversion: the default branch has "
                                 f"{', '.join(missing) or 'its weights'} only pickled, which is never loaded")
    what = (f"pickled weights without a safetensors copy ({', '.join(missing)}), which are never loaded" if missing
            else "no safetensors weights")
    where = f"revision {revision!r}" if revision else "the default branch"
    raise ExportError(
        f"{model_id}, {where}: {what}"
        + (f"; no open safetensors conversion by {CONVERSION_BOT} was found" if revision in (None, "main") else "")
        + "; " + CONVERT_PICKLES
    )


def revision_of(path: Path) -> str | None:
    """The commit hash when ``path`` is a hub cache snapshot (.../snapshots/<sha>)."""
    if path.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", path.name):
        return path.name
    return None


def _snapshot(hub: Any, model_id: str, revision: str | None) -> Path:
    try:
        return Path(hub.snapshot_download(repo_id=model_id, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except Exception as e:  # the hub client raises many unrelated types for "unreachable"
        raise ExportError(
            f"could not download {model_id!r} from the Hugging Face hub ({type(e).__name__}: {e}); "
            "check the id and your network, or pass a local folder"
        ) from e


def _safetensors_dirs(path: Path) -> set[str]:
    """The snapshot's folders (relative, "." for the root) that hold a safetensors file."""
    return {p.parent.relative_to(path).as_posix() for p in path.rglob("*.safetensors")}


def _missing(path: Path, have: set[str], pickled: list[str]) -> list[str]:
    """The pickled weight files the export would need, with no safetensors file (``have``) beside them.

    Per folder, because a sentence-transformers repo may have converted its transformer and not its
    Dense module (2_Dense/pytorch_model.bin), or the other way round. Only the root and the module
    folders named in modules.json count: a training checkpoint folder kept in the repo does not.
    """
    needed = _module_dirs(path) - have
    return [f for f in pickled if (posixpath.dirname(f) or ".") in needed]


def _module_dirs(path: Path) -> set[str]:
    dirs = {"."}
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return dirs  # not a sentence-transformers repo (or a broken one, which source.py reports)
    if isinstance(modules, list):
        dirs |= {posixpath.normpath(m["path"] or ".") for m in modules
                 if isinstance(m, dict) and isinstance(m.get("path"), str)}
    return dirs


def _pickled_files(hub: Any, model_id: str, revision: str | None) -> list[str]:
    """The repository's pickled model weights (pytorch_model.bin and its shards); [] when it cannot be listed."""
    try:
        files = hub.HfApi().list_repo_files(model_id, revision=revision)
    except Exception:  # only decorates a message; the download above already reached the hub
        return []
    return sorted(f for f in files if _PICKLED_WEIGHTS.fullmatch(posixpath.basename(f)))


def _conversion_pr(hub: Any, model_id: str) -> str | None:
    """``refs/pr/N`` of the bot's open safetensors pull request on the current head, if any."""
    try:
        api = hub.HfApi()
        head = api.list_repo_commits(model_id)[0].commit_id
        for d in api.get_repo_discussions(model_id, author=CONVERSION_BOT, discussion_type="pull_request",
                                          discussion_status="open"):
            # Filters re-checked here: the bot's own title and account, and a branch of exactly one
            # commit on top of today's head, so the weights are the converted current ones.
            if not (d.is_pull_request and d.status == "open" and d.author == CONVERSION_BOT
                    and d.title == CONVERSION_TITLE):
                continue
            commits = api.list_repo_commits(model_id, revision=f"refs/pr/{d.num}")
            if len(commits) > 1 and commits[1].commit_id == head:
                return f"refs/pr/{d.num}"
    except Exception:  # no pull request to offer is the same answer as none found
        return None
    return None
