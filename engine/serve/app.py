"""``mstsb-onnx serve``: OpenAI- and TEI-compatible embedding routes with dynamic micro-batching.

    POST /v1/embeddings   OpenAI: {"input": str | [str], "model": ..., "encoding_format": "float"|"base64"}
    POST /embed, POST /   text-embeddings-inference: {"inputs": str | [str], "normalize", "truncate"} -> [[float]]
    GET  /info            TEI's model description
    GET  /health          200 once the model is loaded (503 before); never needs a key
    GET  /metrics         Prometheus text format (a key only with protect_metrics)

Concurrent requests are merged into token-budgeted batches (``batcher``); tokenization and
inference run on thread pools, never on the event loop. With ``api_keys`` every other route needs
``Authorization: Bearer <key>`` (compared in constant time; 401 with ``WWW-Authenticate``). Every
response carries ``X-Request-Id`` (the client's, when it sent a usable one). Client mistakes are
4xx in OpenAI's error shape. Needs the ``serve`` extra (starlette, uvicorn).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from mstsb_onnx.errors import InputError, MissingExtraError, MstsbError
from mstsb_onnx.serve.api import ApiError, encode_vector, parse_request, parse_tei
from mstsb_onnx.serve.batcher import Batcher, Done, timed_out
from mstsb_onnx.serve.config import ServeConfig
from mstsb_onnx.serve.metrics import Metrics

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Request bodies this small skip the shared byte budget (``Service._reserve``).
SMALL_BODY = 64 * 1024
# On refusing a body that is still arriving: close the connection, or the rest of it keeps it open.
_CLOSE = {"Connection": "close"}
_EXTRA = 'the server needs the serve extra: pip install "mstsb-onnx[serve]"'


def authorized(header: str | None, keys: tuple[str, ...]) -> bool:
    """``Authorization: Bearer <key>`` names one of ``keys``; every key is compared, in constant time."""
    scheme, _, token = (header or "").partition(" ")
    given = token.strip().encode()
    match = False
    for key in keys:
        match |= hmac.compare_digest(given, key.encode())
    return scheme.lower() == "bearer" and match


def _request_id(scope: dict) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if 0 < len(text) <= 128 and text.isascii() and text.isprintable():
                return text
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Puts ``X-Request-Id`` on every response (and in ``request.state.request_id``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _token_ids(embedder: Any, texts: list[str], prompt_name: str | None,
               field: str) -> tuple[list[list[int]], list[bool]]:
    """Token ids (and which texts were cut), checked here so that a bad request fails alone, not its batch.
    Errors name the client's ``field`` (``input`` or ``inputs``) and positions in its own texts."""
    try:
        seqs, cut = embedder.tokenize_flagged(texts, prompt_name=prompt_name, what=field)
        embedder.check_token_ids(seqs, what=field)
    except InputError as e:
        raise ApiError(422, str(e), "invalid_input", field) from e
    return seqs, cut


class Service:
    """One server's state: the model (loaded in the background), the batcher, metrics, routes."""

    def __init__(self, config: ServeConfig, embedder: Any = None) -> None:
        self.config, self.metrics = config, Metrics()
        self.embedder, self.batcher, self.error = embedder, None, None
        self.ready = threading.Event()
        self.buffered = 0  # request-body bytes being received, all requests together
        self.metrics.set("mstsb_body_bytes_reserved", 0)
        self.started = time.time()
        self.tokenize_pool = ThreadPoolExecutor(config.resolved_workers(), thread_name_prefix="tokenize")

    def load(self) -> None:
        try:
            if self.embedder is None:
                self.embedder = load_embedder(self.config)
        except Exception as e:  # on stderr for the operator; /health and requests say only "not ready"
            self.error = f"{type(e).__name__}: {e}"
            print(f"mstsb-onnx serve: error: the model could not be loaded: {self.error}", file=sys.stderr, flush=True)
        self.ready.set()

    @asynccontextmanager
    async def lifespan(self, app: Any):
        threading.Thread(target=self.load, daemon=True).start()

        async def start_batcher() -> None:
            await asyncio.get_running_loop().run_in_executor(None, self.ready.wait)
            if self.error is None:
                self.batcher = Batcher(self.embedder, self.config, self.metrics)
                self.batcher.start()

        starter = asyncio.get_running_loop().create_task(start_batcher())
        yield
        starter.cancel()
        if self.batcher is not None:
            await self.batcher.stop()
        self.tokenize_pool.shutdown(wait=True)

    def check_key(self, request: Any) -> None:
        if not self.config.api_keys:
            return
        given = request.headers.getlist("authorization")
        if len(given) > 1:
            raise ApiError(400, f"{len(given)} Authorization headers; send exactly one", "duplicate_authorization")
        if not authorized(given[0] if given else None, self.config.api_keys):
            self.metrics.inc("mstsb_rejected_total", reason="unauthorized")
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    def not_ready(self) -> ApiError:
        what = "the model failed to load (see the server's log)" if self.error else "the model is loading; retry shortly"
        return ApiError(503, what, "not_ready", headers={"Retry-After": "1"})

    async def body(self, request: Any) -> bytearray:
        """The request body, within ``max_body_bytes``, the shared ``max_buffered_bytes`` budget and
        ``read_timeout_s`` (408, and the connection is closed)."""
        if self.batcher is None:
            raise self.not_ready()
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        declared = int(declared) if declared is not None and declared.isdigit() and len(declared) < 20 else None
        if declared is not None and declared > limit:
            raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}", "body_too_large",
                           headers=_CLOSE)
        held = [0]  # bytes of the shared budget this request holds
        try:
            self._reserve(held, declared or 0)
            return await asyncio.wait_for(self._read(request, held), self.config.read_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(408, f"request body not received within {self.config.read_timeout_s:g}s", "request_timeout",
                           headers=_CLOSE) from None
        finally:
            self.buffered -= held[0]
            self.metrics.set("mstsb_body_bytes_reserved", self.buffered)

    def _reserve(self, held: list[int], total: int) -> None:
        """Grow this request's share of the body budget to ``total`` bytes, or 503.

        Bodies up to ``SMALL_BODY`` bytes are always admitted (counted, never refused): a few slow
        uploads holding the budget must not lock out every ordinary request. Their total is bounded
        by the connection cap.
        """
        more = total - held[0]
        if more <= 0:
            return
        if total > SMALL_BODY and self.buffered + more > self.config.max_buffered_bytes:
            self.metrics.inc("mstsb_rejected_total", reason="server_busy")
            raise ApiError(503, f"server busy: {self.buffered} bytes of request bodies being received (limit "
                                f"{self.config.max_buffered_bytes}); retry shortly", "server_busy",
                           headers={"Retry-After": "1", **_CLOSE})
        self.buffered += more
        held[0] = total
        self.metrics.set("mstsb_body_bytes_reserved", self.buffered)

    async def _read(self, request: Any, held: list[int]) -> bytearray:
        limit = self.config.max_body_bytes
        raw = bytearray()  # appending to bytes would copy the whole body per chunk
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise ApiError(413, f"request body exceeds {limit} bytes", "body_too_large", headers=_CLOSE)
            self._reserve(held, len(raw))
        return raw

    async def embed(self, texts: list[str], log: dict, field: str, prompt_name: str | None = None,
                    truncate: bool = True) -> Done:
        """Room in the queue first, then tokenize off the loop, refuse cut texts unless ``truncate``,
        then batch and embed -- all within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        self.batcher.admit(len(texts))  # before any work: a full queue costs a refusal, not a tokenization
        tokenized = loop.run_in_executor(self.tokenize_pool, _token_ids, self.embedder, texts, prompt_name, field)
        try:
            seqs, cut = await asyncio.wait_for(asyncio.shield(tokenized), self.config.timeout_s)
        except asyncio.TimeoutError:
            # The tokenizing thread cannot be stopped: its room is given back when it ends.
            tokenized.add_done_callback(lambda _: self.batcher.release(len(texts)))
            raise timed_out(self.config, self.metrics) from None
        except BaseException:
            self.batcher.release(len(texts))
            raise
        if not truncate and any(cut):
            self.batcher.release(len(texts))
            i = cut.index(True)
            raise ApiError(413, f"inputs[{i}] is longer than the model's max_seq_length of "
                                f"{self.embedder.max_seq_length} tokens; send truncate: true to embed its start",
                           "input_too_long", "inputs")
        log["tokens"] = sum(map(len, seqs))
        done = await self.batcher.submit(seqs, deadline, admitted=True)
        log.update(inputs=len(texts), queue_ms=round(1000 * done.queue_s, 2), compute_ms=round(1000 * done.compute_s, 2))
        self.metrics.inc("mstsb_inputs_total", value=len(texts))
        self.metrics.inc("mstsb_tokens_total", value=log["tokens"])
        return done

    async def handle(self, request: Any, route: Any) -> Any:
        """Key check, in-flight gauge, OpenAI-shaped errors, metrics and the access-log line around ``route``."""
        from starlette.responses import JSONResponse

        from starlette.requests import ClientDisconnect
        from starlette.responses import Response

        start, log = time.perf_counter(), {}
        self.metrics.inc("mstsb_requests_in_flight", value=1)
        status = None
        try:
            self.check_key(request)
            response = await route(request, log)
        except ApiError as err:
            self.metrics.inc("mstsb_errors_total", code=err.code)
            response = JSONResponse(err.body(), status_code=err.status, headers=err.headers)
        except ClientDisconnect:  # nobody to answer: count it, one line, no traceback
            status, response = "client_closed", Response(status_code=499)
            print(f"client disconnected before its request was read ({request.method} {request.url.path}, "
                  f"id {request.state.request_id})", file=sys.stderr, flush=True)
        finally:
            self.metrics.inc("mstsb_requests_in_flight", value=-1)
        self.metrics.inc("mstsb_requests_total", status=status or str(response.status_code))
        self.metrics.observe("mstsb_request_seconds", time.perf_counter() - start)
        if self.config.access_log:
            line = {"id": request.state.request_id, "method": request.method, "path": request.url.path,
                    "status": response.status_code, "inputs": 0, "tokens": 0, "queue_ms": None, "compute_ms": None,
                    **log, "total_ms": round(1000 * (time.perf_counter() - start), 2)}
            print(json.dumps(line), file=sys.stderr, flush=True)
        return response

    async def openai(self, request: Any, log: dict) -> Any:
        from starlette.responses import JSONResponse

        texts, fmt = parse_request(await self.body(request), self.config, self.embedder.dim)
        done = await self.embed(texts, log, "input")
        return JSONResponse({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, fmt)}
                     for i, v in enumerate(done.vectors)],
            "model": self.config.model_name,
            "usage": {"prompt_tokens": log["tokens"], "total_tokens": log["tokens"]},
        })

    async def tei(self, request: Any, log: dict) -> Any:
        from starlette.responses import JSONResponse

        from mstsb_onnx.similarity import unit_rows

        req = parse_tei(await self.body(request), self.config, self.embedder.manifest.prompts)
        done = await self.embed(req.texts, log, "inputs", prompt_name=req.prompt_name, truncate=req.truncate)
        vectors = unit_rows(done.vectors) if req.normalize else done.vectors
        return JSONResponse([encode_vector(v, "float") for v in vectors])

    async def info(self, request: Any, log: dict) -> Any:
        from starlette.responses import JSONResponse

        from mstsb_onnx import __version__

        if self.embedder is None:
            raise self.not_ready()
        m = self.embedder.manifest
        return JSONResponse({
            "model_id": self.config.model_name, "model_sha": (m.raw.get("source") or {}).get("revision"),
            "model_dtype": "int8" if m.quantization_mode == "int8" else "float32",
            "model_type": {"embedding": {"pooling": m.raw.get("pooling")}},
            "max_concurrent_requests": self.config.max_queue_inputs, "max_input_length": m.max_seq_length,
            "max_batch_tokens": self.config.max_batch_tokens, "max_batch_requests": None,
            "max_client_batch_size": self.config.max_inputs, "auto_truncate": False,
            "tokenization_workers": self.config.resolved_workers(), "version": __version__,
            "prompts": m.prompts, "dim": m.dim,
        })

    async def health(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if self.batcher is not None:
            return JSONResponse({"status": "ok", "model": self.config.model_name, "workers": self.batcher.workers})
        # Never the error or the model's path: /health needs no key.
        return JSONResponse({"status": "not_ready"}, status_code=503, headers={"Retry-After": "1"})

    async def models(self, request: Any, log: dict) -> Any:
        """OpenAI's model list: this server's one model."""
        from starlette.responses import JSONResponse

        one = self._model_card()
        wanted = request.path_params.get("model")
        if wanted is None:
            return JSONResponse({"object": "list", "data": [one]})
        if wanted != self.config.model_name:
            raise ApiError(404, f"model {wanted!r} not found; this server has {self.config.model_name!r}",
                           "model_not_found", "model")
        return JSONResponse(one)

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.config.model_name, "object": "model", "created": int(self.started), "owned_by": "mstsb-onnx"}

    async def metrics_text(self, request: Any, log: dict) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(config: ServeConfig, embedder: Any = None) -> Any:
    """The ASGI app. The model loads in a background thread; /health says when it is ready."""
    try:
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as e:
        raise MissingExtraError(_EXTRA) from e
    svc = Service(config, embedder)

    def routed(route: Any) -> Any:
        async def endpoint(request: Any) -> Any:
            return await svc.handle(request, route)
        return endpoint

    async def metrics_endpoint(request: Any) -> Any:
        if config.protect_metrics:
            return await svc.handle(request, svc.metrics_text)
        return await svc.metrics_text(request, {})

    def error(status: int, message: str, code: str) -> Any:
        svc.metrics.inc("mstsb_errors_total", code=code)
        return JSONResponse(ApiError(status, message, code).body(), status_code=status)

    async def not_found(request: Any, exc: Exception) -> Any:
        return error(404, f"no route {request.method} {request.url.path}", "not_found")

    async def bad_method(request: Any, exc: Exception) -> Any:
        return error(405, f"{request.method} is not allowed on {request.url.path}", "method_not_allowed")

    routes = [Route("/v1/embeddings", routed(svc.openai), methods=["POST"]),
              Route("/embeddings", routed(svc.openai), methods=["POST"]),
              Route("/embed", routed(svc.tei), methods=["POST"]), Route("/", routed(svc.tei), methods=["POST"]),
              Route("/info", routed(svc.info), methods=["GET"]),
              Route("/v1/models", routed(svc.models), methods=["GET"]),
              Route("/v1/models/{model:path}", routed(svc.models), methods=["GET"]),
              Route("/health", svc.health, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=svc.lifespan, middleware=[Middleware(RequestIdMiddleware)],
                    exception_handlers={404: not_found, 405: bad_method})
    app.router.redirect_slashes = False  # a 307 built from the Host header; the route or a 404 instead
    app.state.service = svc
    return app


def load_embedder(config: ServeConfig) -> Any:
    """The server's Embedder: ``threads`` per batch, one runner per worker, no idle spinning."""
    from mstsb_onnx.embedder import Embedder

    return Embedder(config.model_dir, threads=config.threads, runners=config.resolved_workers(), spin=False)


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, or a one-line ``MstsbError`` (port in use, unknown host...)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise MstsbError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise MstsbError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    return sock


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8080, embedder: Any = None,
          announce: Callable[[str], None] | None = None) -> None:
    """Bind, then load the model (unless given), then ``announce`` and serve: a port in use or a model
    that cannot load is an ``MstsbError`` before anything is announced."""
    try:
        import uvicorn

        from mstsb_onnx.serve.guard import guarded
    except ImportError as e:
        raise MissingExtraError(_EXTRA) from e
    sock = listen(host, port)
    try:
        embedder = embedder if embedder is not None else load_embedder(config)
    except BaseException as e:
        sock.close()
        if isinstance(e, ValueError):  # e.g. more workers or threads than the cores allow
            raise MstsbError(str(e)) from e
        raise
    if not config.api_keys and host not in LOOPBACK:
        print(f"warning: listening on {host} without an API key: anyone who can reach this port can use the model "
              "(pass --api-key, --api-key-file or MSTSB_API_KEYS)", file=sys.stderr, flush=True)
    if announce is not None:
        announce(f"http://{host}:{port}")
    settings = uvicorn.Config(create_app(config, embedder), log_level="warning", timeout_graceful_shutdown=30,
                              http=guarded(config.header_timeout_s, config.max_connections))
    uvicorn.Server(settings).run(sockets=[sock])
