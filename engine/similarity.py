"""Cosine similarity between embeddings, as sentence-transformers' ``model.similarity`` gives it.

``cosine_similarity(a, b)`` takes two embedding arrays (a 1-D vector counts as one row) and
returns the ``[len(a), len(b)]`` float32 matrix of their cosines. It is numpy only and does not
embed: pass it what ``Embedder.encode`` returned. A zero vector has cosine 0 with everything
rather than NaN. ``unit_rows`` is the one L2 normalisation: ``encode(normalize=True)`` and STS
scoring (in float64) use it too.
"""

from __future__ import annotations

import numpy as np

from mstsb_onnx.errors import InputError


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm, in ``x``'s dtype; a new array. The norm is clamped as the
    graph's pooling clamps its denominator, so a zero row stays zero instead of becoming NaN."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _rows(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" or arr.ndim not in (1, 2):
        raise InputError(
            f"{name} must be a 1-D or 2-D array of numbers (what encode returns), got "
            f"{arr.ndim}-D {arr.dtype} of shape {arr.shape}"
        )
    arr = np.atleast_2d(arr).astype(np.float32, copy=False)
    if arr.shape[1] == 0:
        raise InputError(f"{name} has vectors of dimension 0")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} holds NaN or infinite values; cosine similarity is undefined for them")
    return arr


def cosine_similarity(a: object, b: object) -> np.ndarray:
    """``[len(a), len(b)]`` float32 cosines of the rows of ``a`` and ``b`` (same dimension)."""
    x, y = _rows(a, "a"), _rows(b, "b")
    if x.shape[1] != y.shape[1]:
        raise InputError(f"a and b must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    return (unit_rows(x) @ unit_rows(y).T).astype(np.float32, copy=False)
