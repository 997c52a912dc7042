"""The OpenAI embeddings wire format: request validation, error shape, vector encoding.

``parse_request`` turns a raw body into texts or raises ``ApiError`` (status, OpenAI-shaped
body, headers); ``encode_vector`` writes one vector as floats or base64. No I/O, no model.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from mstsb_onnx.serve.config import ServeConfig


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 and self.status != 429 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def parse_request(raw: bytes | bytearray, config: ServeConfig, dim: int) -> tuple[list[str], str]:
    """Validate an embeddings request body; returns (texts, encoding_format)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, f"request body is not UTF-8 (byte {e.start})", "invalid_encoding") from e
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(400, f"request body is not valid JSON: {e.msg} at position {e.pos}", "invalid_json") from e
    if not isinstance(body, dict):
        raise ApiError(422, "request body must be a JSON object", "invalid_type")
    if "input" not in body:
        raise ApiError(422, "'input' is required: a string or a list of strings", "missing_input", "input")
    value = body["input"]
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None) if isinstance(texts, list) else None
        where = f"input[{bad}] is {type(texts[bad]).__name__}" if bad is not None else f"input is {type(value).__name__}"
        raise ApiError(422, f"{where}; expected a string or a list of strings (token arrays are not supported)",
                       "invalid_type", "input")
    if not texts:
        raise ApiError(422, "'input' is an empty list; send at least one string", "empty_input", "input")
    if len(texts) > config.max_inputs:
        raise ApiError(413, f"{len(texts)} inputs in one request; the limit is {config.max_inputs}", "too_many_inputs",
                       "input")
    long = next((i for i, t in enumerate(texts) if len(t) > config.max_chars), None)
    if long is not None:
        raise ApiError(413, f"input[{long}] has {len(texts[long])} characters; the limit is {config.max_chars}",
                       "input_too_long", "input")
    fmt = body.get("encoding_format", "float") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(422, f"encoding_format must be 'float' or 'base64', got {fmt!r}", "invalid_value",
                       "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and dims != dim:
        raise ApiError(422, f"dimensions={dims!r} is not supported: this model returns {dim}-dimensional vectors "
                            "(omit the field or pass that number)", "unsupported_dimensions", "dimensions")
    if "model" in body and not isinstance(body["model"], str):
        raise ApiError(422, "'model' must be a string", "invalid_type", "model")
    return texts, fmt


def encode_vector(vec: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(np.ascontiguousarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return vec.astype(np.float32).tolist()
