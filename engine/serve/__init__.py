"""The embedding server (``mstsb-onnx serve``, extra ``serve``): OpenAI-compatible routes,
micro-batching, metrics.

``config`` (settings), ``api`` (wire format), ``batcher`` (merging requests), ``metrics``
(Prometheus text), ``app`` (the ASGI app and ``serve``). starlette and uvicorn are imported only
when an app is created.
"""

from __future__ import annotations

from typing import Any

from mstsb_onnx.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy: the CLI reads ServeConfig's defaults for --help without loading numpy or the app.
    if name in ("create_app", "serve"):
        from mstsb_onnx.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'mstsb_onnx.serve' has no attribute {name!r}")
