"""Import the heavy export-only packages, or say which extra to install.

Export code calls ``require()`` before importing torch & co at function level, so that
``import mstsb_onnx.export`` works in a slim install and fails only when used, with one clear line.
"""

from __future__ import annotations

import importlib

from mstsb_onnx.errors import MissingExtraError

EXPORT_PACKAGES = ("torch", "transformers", "onnx")


def require(*modules: str, extra: str = "export") -> None:
    missing = []
    for name in modules or EXPORT_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(
            f"{', '.join(missing)} not installed; this command needs the '{extra}' extra: "
            f"pip install \"mstsb-onnx[{extra}]\""
        )
