"""mstsb-onnx runtime: multilingual sentence embeddings with onnxruntime, tokenizers and numpy.

    from mstsb_onnx import Embedder
    Embedder("models/mstsb-int8").encode(["Hola", "Hello"])

The core (embedder, session, tokenizer, batching, inputs, manifest, similarity, probes, errors)
sits at the top of the package; ``serve``, ``corpus`` and ``eval`` are subpackages on top of it.
The exporter lives in ``mstsb_onnx.export`` (extra ``export``); nothing here imports it, torch,
transformers, optimum or onnx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mstsb_onnx.errors import (
    ExportError,
    InputError,
    MissingExtraError,
    ModelFolderError,
    MstsbError,
    ParityError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mstsb_onnx.embedder import Embedder


def __getattr__(name: str) -> Any:
    # Lazy, so that light modules (errors, cpus, the CLI's --help) do not load onnxruntime.
    if name == "Embedder":
        from mstsb_onnx.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'mstsb_onnx' has no attribute {name!r}")

__all__ = [
    "Embedder",
    "ExportError",
    "InputError",
    "MissingExtraError",
    "ModelFolderError",
    "MstsbError",
    "ParityError",
    "__version__",
]
