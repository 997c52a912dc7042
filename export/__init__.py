"""mstsb-onnx exporter: XLM-R (+ pooling) from a hub id or folder to a verified int8/fp32 ONNX folder.

    from mstsb_onnx.export import export_model
    export_model("AIDA-UPM/mstsb-paraphrase-multilingual-mpnet-base-v2", "models/mstsb-int8")

Needs the ``export`` extra (torch, transformers, onnx, optimum...). Importing this package is
cheap; the heavy packages are imported when a function runs, with an install hint if missing.
"""

from __future__ import annotations

from mstsb_onnx.export.pipeline import ExportResult, check_model, export_model

__all__ = ["ExportResult", "check_model", "export_model"]
