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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mstsb_onnx.errors import InputError, MissingExtraError
from mstsb_onnx.serve.api import ApiError, encode_vector, parse_request
from mstsb_onnx.serve.batcher import Batcher
from mstsb_onnx.serve.config import ServeConfig
from mstsb_onnx.serve.metrics import Metrics


def _token_ids(embedder: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of a request's texts, checked here so that a bad request fails alone, not its batch."""
    try:
        seqs = embedder.tokenize(texts)
        embedder.check_token_ids(seqs, what="input")
    except InputError as e:
        raise ApiError(422, str(e), "invalid_input", "input") from e
    return seqs


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
    state: dict[str, Any] = {"embedder": embedder, "batcher": None, "error": None,
                             "tokenize": ThreadPoolExecutor(config.resolved_workers(), thread_name_prefix="tokenize")}
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
        state["tokenize"].shutdown(wait=True)

    def error_response(err: ApiError) -> JSONResponse:
        metrics.inc("mstsb_errors_total", code=err.code)
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    async def embeddings(request: Request) -> Response:
        start = time.perf_counter()
        status = 200
        metrics.inc("mstsb_requests_in_flight", value=1)
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
            # Off the event loop: a request of thousands of long texts takes seconds to tokenize,
            # and /health and every other client must not wait for it.
            seqs = await asyncio.get_running_loop().run_in_executor(state["tokenize"], _token_ids, emb, texts)
            tokens = sum(map(len, seqs))
            vectors = await batcher.submit(seqs)
            metrics.inc("mstsb_inputs_total", value=len(texts))
            metrics.inc("mstsb_tokens_total", value=tokens)
            return JSONResponse({
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, fmt)}
                         for i, v in enumerate(vectors)],
                "model": config.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            })
        except ApiError as err:
            status = err.status
            return error_response(err)
        finally:
            metrics.inc("mstsb_requests_in_flight", value=-1)
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
