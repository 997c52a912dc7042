"""Cosine similarity of embeddings (``Embedder.similarity``), as sentence-transformers' ``similarity``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder, InputError
from mstsb_onnx.similarity import cosine_similarity


def test_matrix_of_encode_results_equals_normalized_dot_products(tiny_int8: Path) -> None:
    emb = Embedder(tiny_int8, threads=1)
    a = emb.encode(["Hola", "Hello", "你好"])
    b = emb.encode(["Bonjour", "Hallo"])
    sim = emb.similarity(a, b)
    assert sim.shape == (3, 2) and sim.dtype == np.float32
    unit_a, unit_b = emb.encode(["Hola", "Hello", "你好"], normalize=True), emb.encode(["Bonjour", "Hallo"], normalize=True)
    np.testing.assert_allclose(sim, unit_a @ unit_b.T, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.diag(emb.similarity(a, a)), 1.0, rtol=0, atol=1e-6)
    # A single text's vector counts as one row.
    assert emb.similarity(emb.encode("Hola"), b).shape == (1, 2)


def test_against_sentence_transformers_cosine() -> None:
    import sentence_transformers.util as st_util
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)
    np.testing.assert_allclose(cosine_similarity(a, b), st_util.cos_sim(a, b).numpy(), rtol=0, atol=1e-6)


def test_zero_vector_scores_zero_not_nan() -> None:
    sim = cosine_similarity(np.zeros((1, 8)), np.ones((2, 8)))
    assert sim.tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize(
    ("a", "b", "fragment"),
    [
        (np.ones((2, 8)), np.ones((2, 4)), "same dimension, got 8 and 4"),
        (np.ones((2, 2, 8)), np.ones((2, 8)), "1-D or 2-D array of numbers"),
        (["a", "b"], np.ones((2, 8)), "1-D or 2-D array of numbers"),
        (np.ones((2, 8)), np.array([[np.nan] * 8]), "b holds NaN"),
        (np.ones(0), np.ones(0), "dimension 0"),
    ],
    ids=["dims-differ", "3-d", "texts-not-vectors", "nan", "empty-vector"],
)
def test_bad_input_is_named(a: object, b: object, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        cosine_similarity(a, b)
