"""``mstsb-onnx serve``: an OpenAI-compatible embedding server with dynamic micro-batching.

    POST /v1/embeddings   {"input": str | [str], "model": ..., "encoding_format": "float"|"base64"}
    GET  /health          200 once the model is loaded (503 before)
    GET  /metrics         Prometheus text format

Concurrent requests are merged into token-budgeted batches; a request waits at most
``max_wait_ms`` for company. Batches run off the event loop on ``workers`` threads that share ONE
onnxruntime session (weights held once) with ``threads_per_worker`` intra-op threads each --
the "parallel sessions" layout measured fastest on many cores, without N copies of the model.
Limits (inputs per request, characters per input, body bytes, pending inputs, per-request
timeout) answer with OpenAI-shaped errors; a full queue answers 503 with Retry-After instead of
growing. Needs the ``serve`` extra (starlette, uvicorn).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mstsb_onnx.errors import InputError, MissingExtraError
from mstsb_onnx.inputs import is_count
from mstsb_onnx.metrics import Metrics
from mstsb_onnx.session import available_cpus


@dataclass
class ServeConfig:
    model_dir: str
    model_name: str = "mstsb"
    workers: int = 0  # 0: one per available core
    threads_per_worker: int = 1
    max_wait_ms: float = 5.0
    max_batch_tokens: int = 4096
    max_queue_inputs: int = 4096
    max_inputs: int = 2048
    max_chars: int = 20_000
    max_body_bytes: int = 8 * 1024 * 1024
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        # The CLI checks its arguments as it parses them; this covers the Python API.
        at_least = {"workers": 0, "threads_per_worker": 1, "max_batch_tokens": 1, "max_queue_inputs": 1,
                    "max_inputs": 1, "max_chars": 1, "max_body_bytes": 1}
        for name, low in at_least.items():
            value = getattr(self, name)
            if not is_count(value, low):
                raise ValueError(f"ServeConfig.{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= self.max_wait_ms < float("inf"):
            raise ValueError(f"ServeConfig.max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if not 0 < self.timeout_s < float("inf"):
            raise ValueError(f"ServeConfig.timeout_s must be > 0, got {self.timeout_s!r}")

    def resolved_workers(self) -> int:
        return self.workers or max(1, available_cpus() // self.threads_per_worker)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 and self.status != 429 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class _Job:
    seqs: list[list[int]]  # token ids, from the request handler (tokenized once)
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def tokens(self) -> int:
        return sum(map(len, self.seqs))


class Batcher:
    """Merges jobs into batches of up to ``max_batch_tokens`` and runs them on worker threads."""

    def __init__(self, embedder: Any, config: ServeConfig, metrics: Metrics) -> None:
        self.embedder, self.config, self.metrics = embedder, config, metrics
        self.workers = config.resolved_workers()
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embed")
        self.slots = asyncio.Semaphore(self.workers)
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.pending_inputs = 0
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.pool.shutdown(wait=True)

    async def submit(self, seqs: list[list[int]]) -> np.ndarray:
        if self.pending_inputs + len(seqs) > self.config.max_queue_inputs:
            self.metrics.inc("mstsb_rejected_total", reason="queue_full")
            raise ApiError(503, f"server busy: {self.pending_inputs} inputs queued (limit "
                                f"{self.config.max_queue_inputs}); retry shortly", "queue_full",
                           headers={"Retry-After": "1"})
        job = _Job(seqs, asyncio.get_running_loop().create_future())
        self.pending_inputs += len(seqs)
        self.metrics.set("mstsb_queue_inputs", self.pending_inputs)
        await self.queue.put(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.config.timeout_s)
        except asyncio.TimeoutError:
            self.metrics.inc("mstsb_rejected_total", reason="timeout")
            raise ApiError(503, f"request timed out after {self.config.timeout_s:.0f}s in the queue; retry later",
                           "timeout", headers={"Retry-After": "1"}) from None

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # A free worker first, then the batch: under load everything that queued while the
            # workers were busy joins this batch, instead of a batch formed early waiting stale.
            await self.slots.acquire()
            first = await self.queue.get()
            batch, tokens = [first], first.tokens
            deadline = loop.time() + self.config.max_wait_ms / 1000
            while tokens < self.config.max_batch_tokens:
                remaining = deadline - loop.time()
                if remaining <= 0 and self.queue.empty():
                    break
                try:
                    job = self.queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self.queue.get(), remaining)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(job)
                tokens += job.tokens
            loop.create_task(self._run(batch))

    async def _run(self, batch: list[_Job]) -> None:
        seqs = [ids for job in batch for ids in job.seqs]
        start = time.perf_counter()
        try:
            vectors = await asyncio.get_running_loop().run_in_executor(self.pool, self.embedder.encode_tokens, seqs)
        except Exception as e:  # report to every waiting request rather than kill the batcher
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(ApiError(500, f"embedding failed: {e}", "internal_error"))
            vectors = None
        finally:
            self.slots.release()
            self.pending_inputs -= len(seqs)
            self.metrics.set("mstsb_queue_inputs", self.pending_inputs)
        self.metrics.observe("mstsb_batch_inputs", len(seqs))
        self.metrics.observe("mstsb_batch_seconds", time.perf_counter() - start)
        if vectors is None:
            return
        at = 0
        for job in batch:
            if not job.future.done():
                job.future.set_result(vectors[at : at + len(job.seqs)])
            at += len(job.seqs)


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


def _encode_vector(vec: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(np.ascontiguousarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return vec.astype(np.float32).tolist()


def create_app(config: ServeConfig, embedder: Any = None):
    """The ASGI app. The model loads in a background thread; /health says when it is ready."""
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, PlainTextResponse, Response
        from starlette.routing import Route
    except ImportError as e:
        raise MissingExtraError('the server needs the serve extra: pip install "mstsb-onnx[serve]"') from e
    from contextlib import asynccontextmanager

    metrics = Metrics()
    state: dict[str, Any] = {"embedder": embedder, "batcher": None, "error": None}
    ready = threading.Event()

    def load() -> None:
        try:
            if state["embedder"] is None:
                from mstsb_onnx.embedder import Embedder

                state["embedder"] = Embedder(config.model_dir, threads=config.threads_per_worker, spin=False)
        except Exception as e:  # surfaced by /health and every request
            state["error"] = f"{type(e).__name__}: {e}"
        ready.set()

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=load, daemon=True).start()

        async def start_batcher() -> None:
            await asyncio.get_running_loop().run_in_executor(None, ready.wait)
            if state["error"] is None:
                state["batcher"] = Batcher(state["embedder"], config, metrics)
                state["batcher"].start()

        starter = asyncio.get_running_loop().create_task(start_batcher())
        yield
        starter.cancel()
        if state["batcher"] is not None:
            await state["batcher"].stop()

    def error_response(err: ApiError) -> JSONResponse:
        metrics.inc("mstsb_errors_total", code=err.code)
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    async def embeddings(request: Request) -> Response:
        start = time.perf_counter()
        status = 200
        try:
            batcher = state["batcher"]
            if batcher is None:
                raise ApiError(503, state["error"] or "model is loading; retry shortly", "not_ready",
                               headers={"Retry-After": "1"})
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
                raise ApiError(413, f"request body is {declared} bytes; the limit is {config.max_body_bytes}",
                               "body_too_large")
            raw = bytearray()  # appending to bytes would copy the whole body per chunk
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > config.max_body_bytes:
                    raise ApiError(413, f"request body exceeds {config.max_body_bytes} bytes", "body_too_large")
            emb = state["embedder"]
            texts, fmt = parse_request(raw, config, emb.dim)
            try:
                seqs = emb.tokenize(texts)
                emb.check_token_ids(seqs, what="input")  # here, so a bad request fails alone, not its batch
            except InputError as e:
                raise ApiError(422, str(e), "invalid_input", "input") from e
            tokens = sum(map(len, seqs))
            vectors = await batcher.submit(seqs)
            metrics.inc("mstsb_inputs_total", value=len(texts))
            metrics.inc("mstsb_tokens_total", value=tokens)
            return JSONResponse({
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": _encode_vector(v, fmt)}
                         for i, v in enumerate(vectors)],
                "model": config.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            })
        except ApiError as err:
            status = err.status
            return error_response(err)
        finally:
            metrics.inc("mstsb_requests_total", status=str(status))
            metrics.observe("mstsb_request_seconds", time.perf_counter() - start)

    async def health(request: Request) -> Response:
        if state["batcher"] is not None:
            return JSONResponse({"status": "ok", "model": config.model_name, "workers": state["batcher"].workers})
        if state["error"]:
            return JSONResponse({"status": "error", "error": state["error"]}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    async def metrics_endpoint(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(ApiError(404, f"no route {request.method} {request.url.path}", "not_found"))

    async def bad_method(request: Request, exc: Exception) -> Response:
        return error_response(ApiError(405, f"{request.method} is not allowed on {request.url.path}", "method_not_allowed"))

    return Starlette(
        routes=[Route("/v1/embeddings", embeddings, methods=["POST"]), Route("/embeddings", embeddings, methods=["POST"]),
                Route("/health", health, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"])],
        lifespan=lifespan, exception_handlers={404: not_found, 405: bad_method},
    )


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    try:
        import uvicorn
    except ImportError as e:
        raise MissingExtraError('the server needs the serve extra: pip install "mstsb-onnx[serve]"') from e
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
