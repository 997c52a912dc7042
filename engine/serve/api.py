"""The wire formats: OpenAI's embeddings request and TEI's ``/embed``, their validation, the
error shape, vector encoding.

``parse_request`` (OpenAI) and ``parse_tei`` (text-embeddings-inference) turn a raw body into
texts and options or raise ``ApiError`` (status, OpenAI-shaped body, headers) -- a 4xx for
anything a client can send, however malformed. ``encode_vector`` writes one vector as floats or
base64. No I/O, no model.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
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


def _shown(value: object) -> str:
    """A short repr for messages; never fails (a 5,000-digit int cannot even be printed)."""
    try:
        text = repr(value)
    except ValueError:
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= 60 else text[:57] + "..."


def load_json_object(raw: bytes | bytearray) -> dict[str, Any]:
    """The body as a JSON object, or a 400/422 saying why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, f"request body is not UTF-8 (byte {e.start})", "invalid_encoding") from e
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(400, f"request body is not valid JSON: {e.msg} at position {e.pos}", "invalid_json") from e
    except RecursionError as e:  # deeply nested arrays/objects
        raise ApiError(400, "request body is nested too deeply to parse", "invalid_json") from e
    except ValueError as e:  # e.g. an integer beyond Python's int-string limit
        raise ApiError(400, f"request body is not usable JSON: {e}", "invalid_json") from e
    if not isinstance(body, dict):
        raise ApiError(422, "request body must be a JSON object", "invalid_type")
    return body


def _texts(body: dict[str, Any], field: str, config: ServeConfig) -> list[str]:
    """``body[field]`` as a non-empty list of strings within the configured limits."""
    if field not in body:
        raise ApiError(422, f"'{field}' is required: a string or a list of strings", "missing_input", field)
    value = body[field]
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None) if isinstance(texts, list) else None
        where = f"{field}[{bad}] is {type(texts[bad]).__name__}" if bad is not None else f"{field} is {type(value).__name__}"
        raise ApiError(422, f"{where}; expected a string or a list of strings (token arrays are not supported)",
                       "invalid_type", field)
    if not texts:
        raise ApiError(422, f"'{field}' is an empty list; send at least one string", "empty_input", field)
    if len(texts) > config.max_inputs:
        raise ApiError(413, f"{len(texts)} inputs in one request; the limit is {config.max_inputs}", "too_many_inputs",
                       field)
    long = next((i for i, t in enumerate(texts) if len(t) > config.max_chars), None)
    if long is not None:
        raise ApiError(413, f"{field}[{long}] has {len(texts[long])} characters; the limit is {config.max_chars}",
                       "input_too_long", field)
    return texts


def parse_request(raw: bytes | bytearray, config: ServeConfig, dim: int) -> tuple[list[str], str]:
    """Validate an OpenAI embeddings request body; returns (texts, encoding_format)."""
    body = load_json_object(raw)
    texts = _texts(body, "input", config)
    fmt = body.get("encoding_format", "float")
    if not isinstance(fmt, str) or fmt not in ("float", "base64"):  # 0, "", null and {} are not "float"
        raise ApiError(422, f"encoding_format must be 'float' or 'base64', got {_shown(fmt)}", "invalid_value",
                       "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or dims != dim):
        raise ApiError(422, f"dimensions={_shown(dims)} is not supported: this model returns {dim}-dimensional "
                            "vectors (omit the field or pass that number)", "unsupported_dimensions", "dimensions")
    if "model" in body and not isinstance(body["model"], str):
        raise ApiError(422, "'model' must be a string", "invalid_type", "model")
    return texts, fmt


@dataclass(frozen=True)
class TeiRequest:
    texts: list[str]
    normalize: bool
    truncate: bool
    prompt_name: str | None


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(422, f"'{name}' must be true or false, got {_shown(value)}", "invalid_type", name)
    return value


def parse_tei(raw: bytes | bytearray, config: ServeConfig, prompts: dict[str, str]) -> TeiRequest:
    """Validate a TEI ``/embed`` body: ``inputs``, ``normalize`` (default true), ``truncate``
    (default false: an over-long input is refused, as TEI does), ``prompt_name``."""
    body = load_json_object(raw)
    texts = _texts(body, "inputs", config)
    name = body.get("prompt_name")
    if name is not None and (not isinstance(name, str) or name not in prompts):
        raise ApiError(422, f"prompt_name {_shown(name)} is not one of this model's prompts {sorted(prompts)}",
                       "invalid_value", "prompt_name")
    direction = body.get("truncation_direction")
    if direction is not None and direction not in ("right", "Right"):
        raise ApiError(422, f"truncation_direction {_shown(direction)} is not supported: texts are truncated on the "
                            "right", "invalid_value", "truncation_direction")
    return TeiRequest(texts, _flag(body, "normalize", True), _flag(body, "truncate", False), name)


def encode_vector(vec: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(np.ascontiguousarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return vec.astype(np.float32).tolist()
