"""The exceptions mstsb-onnx raises on purpose.

One small hierarchy so callers can catch ``MstsbError`` for everything we report, or a narrower
class. Input problems also subclass the built-in a Python user would expect (``ValueError``), and
non-text items raise the plain ``TypeError`` that sentence-transformers users already catch.
"""

from __future__ import annotations


class MstsbError(Exception):
    """Base class of every error mstsb-onnx raises deliberately."""


class ModelFolderError(MstsbError):
    """The model folder is missing, incomplete, changed since export, or not ours."""


class InputError(MstsbError, ValueError):
    """Input that cannot be used: a text ``encode`` cannot embed (e.g. bytes that are not UTF-8), or
    vectors ``similarity`` cannot compare."""


class MissingExtraError(MstsbError, ImportError):
    """An optional dependency group (``export``, ``serve``...) is not installed."""


class ExportError(MstsbError):
    """The source model cannot be exported as asked."""


class ParityError(ExportError):
    """The ONNX model does not match the torch reference within the recorded tolerances."""
