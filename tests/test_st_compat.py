"""sentence-transformers' encode, as users call it: argument names and meanings, precisions,
encode_query / encode_document, and the streaming ``embed`` -- each against sentence-transformers
itself where it has the same thing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.quantization import quantize_embeddings

from mstsb_onnx import Embedder
from mstsb_onnx.export import export_model

from conftest import _quiet, copy_folder, tiny_lines

TEXTS = tiny_lines()[:40]


@pytest.fixture(scope="module")
def prompted(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model with query/passage prompts and no default, as a source and its fp32 export."""
    root = tmp_path_factory.mktemp("prompted")
    src = copy_folder(tiny_src, root / "src")
    (src / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None}))
    return src, export_model(str(src), root / "fp32", quantize="none", log=_quiet).path


@pytest.fixture(scope="module")
def emb(prompted: tuple[Path, Path]) -> Embedder:
    return Embedder(prompted[1], threads=1)


@pytest.fixture(scope="module")
def st_model(prompted: tuple[Path, Path]) -> SentenceTransformer:
    return SentenceTransformer(str(prompted[0]), device="cpu")


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_precision_equals_sentence_transformers_quantize_embeddings(emb: Embedder, precision: str) -> None:
    ours = emb.encode(TEXTS, precision=precision)
    theirs = quantize_embeddings(emb.encode(TEXTS), precision=precision)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("precision", ["int8", "ubinary"])
def test_precision_through_sentence_transformers_encode(emb: Embedder, st_model: SentenceTransformer,
                                                        precision: str) -> None:
    """Same float vectors (fp32 export) -> the same quantized ones as ST's own encode(precision=...)."""
    ours = emb.encode(TEXTS, precision=precision, normalize_embeddings=True)
    theirs = st_model.encode(TEXTS, precision=precision, normalize_embeddings=True)
    # Rounding at a bucket edge can move a value by one step between two float computations.
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert np.mean(ours != theirs) < 0.01 and np.abs(ours.astype(int) - theirs.astype(int)).max() <= (1 if precision == "int8" else 255)


def test_normalize_embeddings_and_the_older_normalize(emb: Embedder) -> None:
    unit = emb.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(unit, emb.encode(TEXTS, normalize=True))
    raw = emb.encode(TEXTS)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)


def test_convert_to_numpy_false_gives_a_list_of_vectors(emb: Embedder) -> None:
    out = emb.encode(TEXTS[:3], convert_to_numpy=False)
    assert isinstance(out, list) and len(out) == 3 and all(v.shape == (emb.dim,) for v in out)
    np.testing.assert_array_equal(np.stack(out), emb.encode(TEXTS[:3]))


def test_encode_query_and_document_use_the_prompts_as_sentence_transformers(emb: Embedder,
                                                                          st_model: SentenceTransformer) -> None:
    for ours, theirs in ((emb.encode_query, st_model.encode_query), (emb.encode_document, st_model.encode_document)):
        np.testing.assert_allclose(ours(TEXTS[:8]), theirs(TEXTS[:8]), atol=1e-4)
        np.testing.assert_allclose(ours(TEXTS[:8], prompt_name="passage"), theirs(TEXTS[:8], prompt_name="passage"),
                                   atol=1e-4)
    assert not np.allclose(emb.encode_query(TEXTS[:8]), emb.encode(TEXTS[:8]), atol=1e-3)  # the prompt matters
    np.testing.assert_array_equal(emb.encode_query(TEXTS[:8], prompt=""), emb.encode(TEXTS[:8]))


def test_show_progress_bar_reports_every_text(emb: Embedder, capsys: pytest.CaptureFixture[str]) -> None:
    emb.encode(TEXTS, show_progress_bar=True)
    err = capsys.readouterr().err
    assert f"{len(TEXTS)}/{len(TEXTS)}" in err
    emb.encode(TEXTS)
    assert capsys.readouterr().err == ""  # off by default


def test_embed_streams_in_order_and_equals_encode(emb: Embedder) -> None:
    taken = []

    def source():
        for t in TEXTS:
            taken.append(t)
            yield t

    stream = emb.embed(source(), chunk_size=7)
    first = next(stream)
    assert len(taken) == 7  # one chunk read, not the whole input
    got = np.stack([first, *stream])
    # fp32: the same vectors whatever the chunking (padding-level differences only).
    np.testing.assert_allclose(got, emb.encode(TEXTS), atol=1e-5)


def test_embed_names_a_bad_item_by_its_position_in_the_stream(emb: Embedder) -> None:
    with pytest.raises(TypeError, match=r"documents\[9\] is int"):
        list(emb.embed(iter(TEXTS[:9] + [3]), chunk_size=4))
    with pytest.raises(ValueError, match="chunk_size"):
        next(emb.embed(iter(TEXTS), chunk_size=0))


def test_encode_document_of_a_model_whose_default_prompt_is_query(tiny_src: Path, tmp_path: Path) -> None:
    """e5-style folders (default "query"): encode uses it, encode_document uses none -- as sentence-transformers."""
    src = copy_folder(tiny_src, tmp_path / "src")
    (src / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}))
    emb = Embedder(export_model(str(src), tmp_path / "fp32", quantize="none", log=_quiet).path, threads=1)
    st_model = SentenceTransformer(str(src), device="cpu")
    for ours, theirs in ((emb.encode, st_model.encode), (emb.encode_document, st_model.encode_document),
                         (emb.encode_query, st_model.encode_query)):
        np.testing.assert_allclose(ours(TEXTS[:8]), theirs(TEXTS[:8]), atol=1e-4)
