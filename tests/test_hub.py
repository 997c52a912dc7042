"""Hub downloads against a fake hub: safetensors only, and the bot's conversion pull request for
repositories that hold only pickled weights (export/hub.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import _quiet, manifest_of

from mstsb_onnx.errors import ExportError
from mstsb_onnx.export.hub import CONVERSION_BOT, CONVERSION_TITLE, download, revision_of
from mstsb_onnx.export.source import resolve_source

import huggingface_hub  # noqa: F401  (a dev dependency: fail, not skip, without it)


@dataclass
class _Commit:
    commit_id: str


@dataclass
class _Discussion:
    num: int
    title: str = CONVERSION_TITLE
    author: str = CONVERSION_BOT
    status: str = "open"
    is_pull_request: bool = True


def _sha(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


@dataclass
class FakeHub:
    """Branches as {revision: {path in repo: bytes}}, each one commit on top of its parent."""

    root: Path
    branches: dict[str, dict[str, bytes]]
    parents: dict[str, str] = field(default_factory=dict)  # revision -> the revision it was made on
    discussions: list[_Discussion] = field(default_factory=list)
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def snapshot_download(self, repo_id: str, revision: str | None, allow_patterns: list[str]) -> str:
        from huggingface_hub.utils import filter_repo_objects

        rev = revision or "main"
        self.calls.append(("snapshot", rev))
        folder = self.root / "snapshots" / _sha(rev)
        files = self.branches[rev]
        for name in filter_repo_objects(list(files), allow_patterns=allow_patterns):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(files[name])
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    def api(self) -> FakeHub:
        return self

    def list_repo_files(self, repo_id: str, revision: str | None = None) -> list[str]:
        return sorted(self.branches[revision or "main"])

    def list_repo_commits(self, repo_id: str, revision: str | None = None) -> list[_Commit]:
        rev = revision or "main"
        chain = [rev] + ([self.parents[rev]] if rev in self.parents else [])
        return [_Commit(_sha(r)) for r in chain]

    def get_repo_discussions(self, repo_id: str, **filters: object) -> list[_Discussion]:
        self.calls.append(("discussions", None))
        return list(self.discussions)


@pytest.fixture()
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_src: Path) -> FakeHub:
    """A repository whose default branch has the tiny model with only pickled weights."""

    main = {str(p.relative_to(tiny_src)): p.read_bytes() for p in tiny_src.rglob("*") if p.is_file()}
    weights = main.pop("model.safetensors")
    main["pytorch_model.bin"] = b"not loaded"
    hub = FakeHub(tmp_path / "hub", {"main": main, "refs/pr/3": {**main, "model.safetensors": weights}},
                  parents={"refs/pr/3": "main"}, discussions=[_Discussion(3)])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", hub.api)
    return hub


def test_safetensors_on_the_asked_revision_are_used_as_they_are(fake_hub: FakeHub) -> None:
    fake_hub.branches["main"]["model.safetensors"] = fake_hub.branches["refs/pr/3"]["model.safetensors"]
    snap = download("someone/model")
    assert revision_of(snap.path) == _sha("main") and snap.note == ""
    assert ("discussions", None) not in fake_hub.calls
    assert not (snap.path / "pytorch_model.bin").exists()


def test_pickle_only_repository_takes_the_bots_conversion(fake_hub: FakeHub) -> None:
    src = resolve_source("someone/model")
    assert src.revision == _sha("refs/pr/3")
    assert (src.model_dir / "model.safetensors").is_file() and not (src.model_dir / "pytorch_model.bin").exists()
    assert "refs/pr/3" in src.revision_note and "pytorch_model.bin" in src.revision_note


@pytest.mark.parametrize(
    "pr",
    [
        pytest.param(_Discussion(3, author="someone-else"), id="not-the-bot"),
        pytest.param(_Discussion(3, title="Add weights"), id="other-title"),
        pytest.param(_Discussion(3, status="closed"), id="closed"),
        pytest.param(_Discussion(3, is_pull_request=False), id="a-discussion"),
    ],
)
def test_pull_requests_that_are_not_the_bots_open_conversion_are_refused(fake_hub: FakeHub, pr: _Discussion) -> None:
    fake_hub.discussions = [pr]
    with pytest.raises(ExportError, match=r"pickled weights without a safetensors copy \(pytorch_model\.bin\), "
                                          r"which are never loaded.*safe_serialization"):
        download("someone/model")
    assert ("snapshot", "refs/pr/3") not in fake_hub.calls


def test_a_conversion_of_an_older_head_is_refused(fake_hub: FakeHub) -> None:
    fake_hub.parents["refs/pr/3"] = "an-older-commit"
    with pytest.raises(ExportError, match="no open safetensors conversion"):
        download("someone/model")


def test_an_explicit_revision_without_safetensors_is_not_replaced(fake_hub: FakeHub) -> None:
    fake_hub.branches["v1"] = fake_hub.branches["main"]
    with pytest.raises(ExportError,
                       match=r"someone/model, revision 'v1': pickled .*\(pytorch_model.bin\), "
                             r"which are never loaded; convert"):
        download("someone/model", revision="v1")
    assert ("discussions", None) not in fake_hub.calls


def test_export_records_the_conversion_revision(fake_hub: FakeHub, tmp_path: Path) -> None:
    from mstsb_onnx.export import export_model

    out = export_model("someone/model", tmp_path / "out", quantize="none", log=_quiet).path
    source = manifest_of(out)["source"]
    assert source["model_id"] == "someone/model" and source["revision"] == _sha("refs/pr/3")
    assert "refs/pr/3" in source["revision_note"]


def test_a_dense_module_left_pickled_is_not_taken_for_converted(fake_hub: FakeHub) -> None:
    """Safetensors for the transformer do not cover a Dense module that is only pickled."""
    main = fake_hub.branches["main"]
    main["model.safetensors"] = fake_hub.branches["refs/pr/3"]["model.safetensors"]
    main["2_Dense/pytorch_model.bin"] = b"not loaded"
    modules = json.loads(main["modules.json"])
    main["modules.json"] = json.dumps(modules + [{"idx": len(modules), "name": str(len(modules)), "path": "2_Dense",
                                                  "type": "sentence_transformers.models.Dense"}]).encode()
    fake_hub.discussions = []
    with pytest.raises(ExportError, match=r"\(2_Dense/pytorch_model.bin\).*no open safetensors conversion"):
        download("someone/model")


def test_no_weights_at_all_is_said_plainly(fake_hub: FakeHub) -> None:
    del fake_hub.branches["main"]["pytorch_model.bin"]
    fake_hub.discussions = []
    with pytest.raises(ExportError, match="someone/model, the default branch: no safetensors weights;"):
        download("someone/model")


def test_pickles_outside_the_model_folders_do_not_block(fake_hub: FakeHub) -> None:
    """Training checkpoints kept in a repo (checkpoint-500/pytorch_model.bin) are not the model."""
    main = fake_hub.branches["main"]
    main["model.safetensors"] = fake_hub.branches["refs/pr/3"]["model.safetensors"]
    del main["pytorch_model.bin"]
    main["checkpoint-500/pytorch_model.bin"] = b"not loaded"
    snap = download("someone/model")
    assert snap.note == "" and not (snap.path / "checkpoint-500").exists()
