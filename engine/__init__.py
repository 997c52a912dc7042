"""mstsb-onnx runtime: multilingual sentence embeddings with onnxruntime, tokenizers and numpy.

    from mstsb_onnx import Embedder
    Embedder("models/mstsb-int8").encode(["Hola", "Hello"])

The exporter lives in ``mstsb_onnx.export`` (extra ``export``); nothing here imports torch,
transformers, optimum or onnx.
"""

from __future__ import annotations

from mstsb_onnx.embedder import Embedder
from mstsb_onnx.errors import (
    ExportError,
    InputError,
    MissingExtraError,
    ModelFolderError,
    MstsbError,
    ParityError,
)

__version__ = "0.1.0"

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
