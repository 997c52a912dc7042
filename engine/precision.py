"""Output precisions of ``encode(precision=...)``, computed as sentence-transformers'
``quantize_embeddings`` computes them (numpy only).

``int8``/``uint8`` map each dimension's [min, max] over the embeddings of the call onto 256
buckets; ``binary``/``ubinary`` pack the signs into bits
(int8 offset by -128, or uint8). ``float32`` leaves them as they are. No model, no I/O.
"""

from __future__ import annotations

import numpy as np

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def quantize(embeddings: np.ndarray, precision: str) -> np.ndarray:
    """[n, dim] float32 -> [n, dim] (u)int8, or [n, ceil(dim / 8)] (u)int8 for the binary forms."""
    check_precision(precision)
    if precision == "float32":
        return embeddings.astype(np.float32, copy=False)
    if precision in ("int8", "uint8"):
        if not len(embeddings):
            return np.zeros(embeddings.shape, dtype=np.dtype(precision))
        starts, stops = embeddings.min(axis=0), embeddings.max(axis=0)
        steps = (stops - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    bits = np.packbits(embeddings > 0, axis=-1).reshape(embeddings.shape[0], -1)
    return (bits - 128).astype(np.int8) if precision == "binary" else bits
