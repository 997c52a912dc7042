"""Embedder behaviour: encode conventions, ordering, prompts, bad input, model-folder checks."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder, InputError, ModelFolderError
from mstsb_onnx.probes import edge_cases, probe_set
from mstsb_onnx.manifest import MANIFEST_NAME, Manifest

from conftest import copy_folder

TEXTS = [t for texts in probe_set().values() for t in texts]


@pytest.fixture(scope="module")
def emb(tiny_int8: Path) -> Embedder:
    return Embedder(tiny_int8, threads=1)


def test_list_gives_float32_matrix(emb: Embedder) -> None:
    out = emb.encode(["Hola", "Hello", "你好"])
    assert out.shape == (3, emb.dim) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_str_gives_vector_equal_to_row(emb: Embedder) -> None:
    one = emb.encode("Hello")
    assert one.shape == (emb.dim,)
    np.testing.assert_allclose(one, emb.encode(["Hello"])[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("empty", [[], (), iter([])], ids=["list", "tuple", "iterator"])
def test_empty_input_gives_zero_rows(emb: Embedder, empty) -> None:
    out = emb.encode(empty)
    assert out.shape == (0, emb.dim) and out.dtype == np.float32


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


@pytest.mark.parametrize("batch_size", [1, 3, 8, 32, 1000], ids=lambda b: f"bs{b}")
def test_order_restored_and_batch_size_invariant(tiny_fp32: Path, batch_size: int) -> None:
    # fp32: one at a time is the ground truth; sorted batching must give the same rows
    # (1e-5: padding changes summation order in attention, measured ~1e-6).
    emb = Embedder(tiny_fp32, threads=1)
    single = np.stack([emb.encode(t) for t in TEXTS[::7]])
    batched = emb.encode(TEXTS[::7], batch_size=batch_size)
    np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3, 32], ids=lambda b: f"bs{b}")
def test_int8_batch_composition_changes_vectors_only_slightly(emb: Embedder, batch_size: int) -> None:
    # Dynamic int8 picks activation scales per batch, so batch-mates move a vector a little
    # (measured max abs ~2e-4 on the tiny model); order must still be restored exactly.
    single = np.stack([emb.encode(t) for t in TEXTS[::7]])
    batched = emb.encode(TEXTS[::7], batch_size=batch_size)
    assert _min_cos(batched, single) > 0.9999


def test_int8_batch_size_one_is_independent_of_batch_mates(emb: Embedder) -> None:
    # What the README offers for caches and deduplication: bit-identical vectors whatever the
    # other texts of the call and their order.
    texts = TEXTS[::7]
    alone = np.stack([emb.encode(t) for t in texts])
    np.testing.assert_array_equal(emb.encode(texts, batch_size=1), alone)
    np.testing.assert_array_equal(emb.encode(texts[::-1] + TEXTS[:5], batch_size=1)[: len(texts)][::-1], alone)


def test_token_budget_batches_give_same_vectors(tiny_fp32: Path) -> None:
    plain = Embedder(tiny_fp32, threads=1).encode(TEXTS)
    budgeted = Embedder(tiny_fp32, threads=1, max_batch_tokens=64).encode(TEXTS)
    np.testing.assert_allclose(budgeted, plain, atol=1e-5)


def test_normalize(emb: Embedder) -> None:
    out = emb.encode(TEXTS[:5], normalize=True)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_numpy_and_bytes_inputs(emb: Embedder) -> None:
    ref = emb.encode(["Grüße", "abc"])
    np.testing.assert_allclose(emb.encode(np.array(["Grüße", "abc"])), ref, atol=1e-6)
    np.testing.assert_allclose(emb.encode(["Grüße".encode(), b"abc"]), ref, atol=1e-6)


@pytest.mark.parametrize(
    "bad, kind, fragment",
    [
        ([None], TypeError, "texts[0] is NoneType"),
        (["ok", 3], TypeError, "texts[1] is int"),
        (["ok", ["nested"]], TypeError, "texts[1] is list"),
        (None, TypeError, "got NoneType"),
        (42, TypeError, "got int"),
        ({"a": 1}, TypeError, "got dict"),
        ([b"\xff\xfe bad"], InputError, "texts[0] is bytes that are not valid UTF-8"),
        (b"\xc3\x28", InputError, "not valid UTF-8"),
        (["fine", "lone \ud800 surrogate"], InputError, "texts[1] cannot be encoded as UTF-8"),
    ],
    ids=["none-item", "int-item", "nested-list", "none", "int", "dict", "bytes-item", "bytes", "surrogate"],
)
def test_bad_input_names_what_is_wrong(emb: Embedder, bad, kind, fragment: str) -> None:
    with pytest.raises(kind) as info:
        emb.encode(bad)
    assert fragment in str(info.value)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, None], ids=str)
def test_bad_batch_size(emb: Embedder, batch_size) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        emb.encode(["x"], batch_size=batch_size)


@pytest.mark.parametrize(
    "kwargs, kind, fragment",
    [
        (dict(threads="2"), ValueError, "threads must be a positive int"),
        (dict(threads=0), ValueError, "threads must be a positive int"),
        (dict(max_batch_tokens=0), ValueError, "max_batch_tokens must be a positive int"),
        (dict(max_batch_tokens=2.5), ValueError, "max_batch_tokens must be a positive int"),
        (dict(spin="no"), ValueError, "spin must be True or False"),
        (dict(verify="sometimes"), ValueError, "verify must be"),
        (dict(providers=["NoSuchExecutionProvider"]), ValueError, "not available in this onnxruntime build"),
    ],
    ids=["threads-str", "threads-0", "budget-0", "budget-float", "spin-str", "verify", "provider"],
)
def test_bad_options_name_what_is_wrong(tiny_int8: Path, kwargs: dict, kind: type, fragment: str) -> None:
    with pytest.raises(kind, match=fragment):
        Embedder(tiny_int8, **kwargs)


def test_one_provider_name_and_the_model_file_are_understood(tiny_int8: Path) -> None:
    emb = Embedder(tiny_int8, threads=1, providers="CPUExecutionProvider")
    assert emb.encode("x").shape == (emb.dim,)
    with pytest.raises(ModelFolderError, match=r"model.onnx is a file; pass the exported model folder"):
        Embedder(tiny_int8 / "model.onnx")


@pytest.mark.parametrize("name", list(edge_cases()), ids=list(edge_cases()))
def test_edge_cases_embed_finite(emb: Embedder, name: str) -> None:
    vec = emb.encode(edge_cases()[name])
    assert vec.shape == (emb.dim,) and np.isfinite(vec).all()


def test_threads_give_same_vectors_as_serial(tiny_int8: Path) -> None:
    emb = Embedder(tiny_int8, threads=1)
    chunks = [TEXTS[i::6] for i in range(6)]
    serial = [emb.encode(c, batch_size=4) for c in chunks]
    barrier = threading.Barrier(6)

    def work(i: int) -> np.ndarray:
        barrier.wait()
        return emb.encode(chunks[i], batch_size=4)

    with ThreadPoolExecutor(6) as pool:
        parallel = list(pool.map(work, range(6)))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


# --- prompts -------------------------------------------------------------------------------


def _with_prompts(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    doc = json.loads((dst / MANIFEST_NAME).read_text())
    doc["prompts"] = {"query": "query: ", "passage": "passage: "}
    doc["default_prompt_name"] = "query"
    (dst / MANIFEST_NAME).write_text(json.dumps(doc))
    return dst


def test_default_prompt_is_applied(tiny_int8: Path, tmp_path: Path) -> None:
    plain = Embedder(tiny_int8, threads=1)
    prompted = Embedder(_with_prompts(tiny_int8, tmp_path / "m"), threads=1)
    text = "Wie spät ist es?"
    np.testing.assert_allclose(prompted.encode(text), plain.encode("query: " + text), atol=1e-6)
    np.testing.assert_allclose(prompted.encode(text, prompt=""), plain.encode(text), atol=1e-6)
    np.testing.assert_allclose(prompted.encode(text, prompt_name="passage"), plain.encode("passage: " + text), atol=1e-6)
    assert prompted.tokenize([text])[0] == plain.tokenize(["query: " + text])[0]
    with pytest.raises(ValueError, match="prompt_name 'nope'"):
        prompted.encode(text, prompt_name="nope")


# --- the model folder ----------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="does not exist"):
        Embedder(tmp_path / "nowhere")


def test_folder_without_manifest(tiny_int8: Path, tmp_path: Path) -> None:
    folder = copy_folder(tiny_int8, tmp_path / "model")
    (folder / MANIFEST_NAME).unlink()
    with pytest.raises(ModelFolderError, match="no manifest.json"):
        Embedder(folder)


@pytest.mark.parametrize("name", ["model.onnx", "model.onnx.data", "tokenizer.json"])
def test_missing_file_is_named(tiny_int8: Path, tmp_path: Path, name: str) -> None:
    folder = copy_folder(tiny_int8, tmp_path / "model")
    (folder / name).unlink()
    with pytest.raises(ModelFolderError, match=f"{name} is missing"):
        Embedder(folder)


@pytest.mark.parametrize("name", ["model.onnx", "model.onnx.data", "tokenizer.json"])
def test_changed_file_is_named(tiny_int8: Path, tmp_path: Path, name: str) -> None:
    folder = copy_folder(tiny_int8, tmp_path / "model")
    with open(folder / name, "ab") as f:
        f.write(b" ")
    with pytest.raises(ModelFolderError, match=f"{name} changed since export"):
        Embedder(folder)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda d: d.pop("dim"), "field 'dim' is missing"),
        (lambda d: d.update(format="other/9"), "format is 'other/9'"),
        (lambda d: d.update(pooling="sum"), "unknown pooling 'sum'"),
        (lambda d: d.update(default_prompt_name="q"), "default_prompt_name 'q'"),
        (lambda d: d["files"].update({"../x": "0"}), "points outside the folder"),
    ],
    ids=["no-dim", "format", "pooling", "prompt", "escape"],
)
def test_bad_manifest(tiny_int8: Path, tmp_path: Path, edit, fragment: str) -> None:
    folder = copy_folder(tiny_int8, tmp_path / "model")
    doc = json.loads((folder / MANIFEST_NAME).read_text())
    edit(doc)
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelFolderError, match=fragment.replace("(", r"\(").replace("?", r"\?")):
        Embedder(folder)


def test_manifest_not_json(tiny_int8: Path, tmp_path: Path) -> None:
    folder = copy_folder(tiny_int8, tmp_path / "model")
    (folder / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        Embedder(folder)


# --- ready-made parts ------------------------------------------------------------------------


class FakeTokenizer:
    pad_id = 0

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [[1] + [2] * len(t) + [1] for t in texts]


class FakeSession:
    """Returns, per row, [number of real tokens, 0, ...]; records what it was fed."""

    class _Arg:
        def __init__(self, name: str) -> None:
            self.name = name

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []

    def get_inputs(self):
        return [self._Arg("input_ids"), self._Arg("attention_mask"), self._Arg("token_type_ids")]

    def get_outputs(self):
        return [self._Arg("sentence_embedding")]

    def run(self, names, feeds):
        self.calls.append(feeds)
        out = np.zeros((feeds["input_ids"].shape[0], 4), np.float32)
        out[:, 0] = feeds["attention_mask"].sum(axis=1)
        return [out]


def _fake_manifest() -> Manifest:
    return Manifest(dim=4, max_seq_length=16, pooling="mean", normalize=False, prompts={},
                    default_prompt_name=None, files={}, raw={})


def test_ready_made_parts_and_feeds_by_input_name() -> None:
    session = FakeSession()
    emb = Embedder.from_parts(FakeTokenizer(), session, _fake_manifest())
    texts = ["a", "abcdef", "abc", ""]
    out = emb.encode(texts, batch_size=2)
    # Restored order: row i holds len(text) + 2 special tokens.
    assert out[:, 0].tolist() == [3, 8, 5, 2]
    # Sorted by length: the first batch holds the two longest texts; token_type_ids fed as zeros.
    first = session.calls[0]
    assert first["input_ids"].shape == (2, 8) and not first["token_type_ids"].any()
    assert first["input_ids"].dtype == np.int64


def test_unknown_graph_inputs_are_refused() -> None:
    class Odd(FakeSession):
        def get_inputs(self):
            return [self._Arg("input_ids"), self._Arg("pixel_values")]

    with pytest.raises(ModelFolderError, match="pixel_values"):
        Embedder.from_parts(FakeTokenizer(), Odd(), _fake_manifest())


def test_non_finite_output_is_an_error() -> None:
    class NaNSession(FakeSession):
        def run(self, names, feeds):
            return [np.full((feeds["input_ids"].shape[0], 4), np.nan, np.float32)]

    emb = Embedder.from_parts(FakeTokenizer(), NaNSession(), _fake_manifest())
    with pytest.raises(Exception, match="non-finite"):
        emb.encode(["x"])


def test_verify_cached_rehashes_on_stat_change_and_full_always(tiny_int8: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("MSTSB_CACHE", str(tmp_path / "cache"))
    folder = copy_folder(tiny_int8, tmp_path / "model")
    Embedder(folder)  # hashes and remembers size/mtime/inode
    assert list((tmp_path / "cache" / "verified").iterdir())
    target = folder / "tokenizer.json"
    st = target.stat()
    data = target.read_bytes()
    at = data.index(b'["<s>",0.0]')
    with open(target, "r+b") as f:  # same size, same inode, mtime restored: only a hash can tell
        f.seek(at)
        f.write(b'["<s>",1.0]')  # a special token's score: still a valid tokenizer
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    Embedder(folder)  # the documented trade-off of "cached"
    with pytest.raises(ModelFolderError, match="tokenizer.json changed since export"):
        Embedder(folder, verify="full")
    target.touch()  # an ordinary edit changes mtime: "cached" hashes again and catches it
    with pytest.raises(ModelFolderError, match="tokenizer.json changed since export"):
        Embedder(folder)
