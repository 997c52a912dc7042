"""The server, as a real process on 127.0.0.1, driven by the official `openai` client."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder

import openai
import httpx

TEXTS = ["Hello world", "Hola mundo", "你好，世界", "مرحبا بالعالم", "Grüß Gott"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, *args: str, stderr_to: Path | None = None,
                 env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    """``mstsb-onnx serve`` as a real process; returns once /health answers 200."""
    port = _free_port()
    err = open(stderr_to, "w") if stderr_to else subprocess.PIPE
    proc = subprocess.Popen([sys.executable, "-m", "mstsb_onnx.cli", "serve", str(folder), "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return base, proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(stderr_to.read_text() if stderr_to else proc.stderr.read().decode())
        time.sleep(0.05)  # on a 503 (loading) as on a refused connection
    proc.kill()
    raise RuntimeError("server did not become ready in 60 s")


def metric(base: str, name: str) -> float:
    """One unlabelled sample from /metrics."""
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def server(tiny_int8: Path):
    # --max-wait-ms 20: concurrent requests of a test reliably find company (default 5).
    base, proc = start_server(tiny_int8, "--workers", "2", "--max-inputs", "64", "--max-chars", "1000",
                              "--max-body-bytes", "200000", "--model-name", "tiny", "--max-wait-ms", "20")
    yield base, proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(tiny_int8: Path) -> Embedder:
    return Embedder(tiny_int8, threads=1)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_single_string(client, reference: Embedder) -> None:
    res = client.embeddings.create(model="tiny", input="Hello world")
    assert len(res.data) == 1 and res.data[0].index == 0 and res.model == "tiny"
    vec = np.asarray(res.data[0].embedding, dtype=np.float32)
    np.testing.assert_allclose(vec, reference.encode("Hello world"), atol=1e-5)
    assert res.usage.prompt_tokens == len(reference.tokenize(["Hello world"])[0])


def test_list_matches_embedder(client, reference: Embedder) -> None:
    res = client.embeddings.create(model="tiny", input=TEXTS)
    got = np.asarray([d.embedding for d in sorted(res.data, key=lambda d: d.index)], dtype=np.float32)
    # int8 activations are scaled per batch, and the server may merge requests: compare by cosine.
    assert _cos(got, reference.encode(TEXTS)).min() > 0.9999
    assert res.usage.prompt_tokens == sum(map(len, reference.tokenize(TEXTS)))


def test_base64(client, server) -> None:
    floats = client.embeddings.create(model="tiny", input=TEXTS[:2])
    raw = httpx.post(server[0] + "/v1/embeddings", json={"model": "tiny", "input": TEXTS[:2], "encoding_format": "base64"})
    assert raw.status_code == 200
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw.json()["data"]]
    via_client = client.embeddings.create(model="tiny", input=TEXTS[:2], encoding_format="base64")
    from_client = np.frombuffer(base64.b64decode(via_client.data[0].embedding), dtype="<f4")
    assert from_client.shape == (32,)
    floats_arr = np.asarray([d.embedding for d in floats.data])
    assert _cos(np.stack(decoded), floats_arr).min() > 0.9999
    assert float(_cos(from_client, floats_arr[0])) > 0.9999


def test_concurrent_requests_are_batched_and_correct(client, server, reference: Embedder) -> None:
    results: dict[int, np.ndarray] = {}
    go = threading.Barrier(24)

    def one(i: int) -> None:
        go.wait()
        results[i] = np.asarray(client.embeddings.create(model="tiny", input=TEXTS[i % 5]).data[0].embedding)

    batches, inputs = metric(server[0], "mstsb_batch_inputs_count"), metric(server[0], "mstsb_batch_inputs_sum")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = reference.encode(TEXTS)
    assert min(float(_cos(results[i], expected[i % 5])) for i in range(24)) > 0.9999
    # 24 one-text requests ran as fewer batches than requests: they were merged.
    assert metric(server[0], "mstsb_batch_inputs_sum") - inputs == 24
    assert metric(server[0], "mstsb_batch_inputs_count") - batches < 24


@pytest.mark.parametrize(
    "kwargs, status, fragment",
    [
        (dict(input=[]), 422, "empty list"),
        (dict(input=[1, 2, 3]), 422, "token arrays are not supported"),
        (dict(input=["ok", None]), 422, "input[1] is NoneType"),
        (dict(input=["x" * 1001]), 413, "limit is 1000"),
        (dict(input=["x"] * 65), 413, "limit is 64"),
        (dict(input="x", encoding_format="int8"), 422, "encoding_format"),
        (dict(input="x", dimensions=16), 422, "dimensions=16 is not supported"),
    ],
    ids=["empty", "token-ids", "none-item", "too-long", "too-many", "format", "dimensions"],
)
def test_bad_requests_get_openai_errors(client, kwargs: dict, status: int, fragment: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.embeddings.create(model="tiny", **kwargs)
    assert info.value.status_code == status
    err = info.value.body if isinstance(info.value.body, dict) else {}
    assert fragment in err.get("message", str(info.value))


@pytest.mark.parametrize(
    "body, headers, status, code",
    [
        (b"{not json", {}, 400, "invalid_json"),
        (b"\xff\xfe{}", {}, 400, "invalid_encoding"),
        (b'["a list"]', {}, 422, "invalid_type"),
        (b'{"model": "tiny"}', {}, 422, "missing_input"),
        (b'{"input": "' + b"a" * 300_000 + b'"}', {}, 413, "body_too_large"),
        (b'{"input": ["fine", "\\ud800 lone surrogate"]}', {}, 422, "invalid_input"),
    ],
    ids=["malformed-json", "not-utf8", "not-object", "no-input", "huge-body", "lone-surrogate"],
)
def test_raw_bad_bodies(server, body: bytes, headers: dict, status: int, code: str) -> None:
    res = httpx.post(server[0] + "/v1/embeddings", content=body, headers={"content-type": "application/json", **headers})
    assert res.status_code == status
    assert res.json()["error"]["code"] == code
    # ...and the server keeps serving.
    assert httpx.get(server[0] + "/health").status_code == 200


def test_health_and_unknown_route(server) -> None:
    assert httpx.get(server[0] + "/health").json()["status"] == "ok"
    res = httpx.get(server[0] + "/v1/nothing")
    assert res.status_code == 404 and res.json()["error"]["code"] == "not_found"


def test_full_queue_answers_503_with_retry_after(tiny_int8: Path) -> None:
    """A queue of 2 and a model that blocks until told: excess requests get 503 + Retry-After, never a hang.

    Room is taken when a request is submitted and given back only when its batch has run, which
    the blocked model prevents until the refusals have been counted.
    """
    import asyncio

    from mstsb_onnx.serve.api import ApiError
    from mstsb_onnx.serve.batcher import Batcher, Done
    from mstsb_onnx.serve.config import ServeConfig
    from mstsb_onnx.serve.metrics import Metrics

    go = threading.Event()

    class Blocked:
        dim = 4

        def encode_tokens(self, seqs, runners=None):
            go.wait(30)
            return np.zeros((len(seqs), 4), np.float32)

    async def scenario() -> tuple[int, list[object]]:
        batcher = Batcher(Blocked(), ServeConfig(model_dir="-", workers=1, max_queue_inputs=2, max_inputs=1,
                                                 max_wait_ms=1), Metrics())
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit([[5]])) for _ in range(5)]
        for _ in range(3):
            await asyncio.sleep(0)  # every task has taken its first step
        refused_early = sum(t.done() and isinstance(t.exception(), ApiError) for t in tasks)
        go.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.stop()
        return refused_early, results

    refused_early, results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, ApiError)]
    assert refused_early == 3 and len(refused) == 3
    assert all(r.status == 503 and r.headers["Retry-After"] for r in refused)
    assert sum(isinstance(r, Done) and r.vectors.shape == (1, 4) for r in results) == 2


def test_sigterm_finishes_in_flight_requests(tiny_int8: Path) -> None:
    base, proc = start_server(tiny_int8)
    try:
        box: dict[str, object] = {}

        def big() -> None:
            box["res"] = httpx.post(base + "/v1/embeddings", json={"input": ["some text " * 50] * 2000}, timeout=60)

        t = threading.Thread(target=big)
        t.start()
        wait_for(lambda: metric(base, "mstsb_queue_inputs") > 0, "the request to reach the queue")
        os.kill(proc.pid, signal.SIGTERM)
        t.join(60)
        assert box["res"].status_code == 200 and len(box["res"].json()["data"]) == 2000
        # uvicorn re-raises the captured SIGTERM once shutdown is done, so -15 is a clean exit.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_health_answers_while_a_request_is_tokenized() -> None:
    """Tokenizing runs off the event loop: /health answers while a tokenizer is blocked mid-request.

    The fake tokenizer waits for the test's signal, so no timing decides the outcome: were
    tokenization on the loop, /health could not answer until the signal, which comes after it.
    """
    from starlette.testclient import TestClient

    from mstsb_onnx.serve import ServeConfig, create_app
    from test_server_limits import GatedEmbedder

    embedder = GatedEmbedder()
    with TestClient(create_app(ServeConfig(model_dir="-", workers=1), embedder=embedder)) as client:
        box: dict[str, object] = {}
        big = threading.Thread(target=lambda: box.setdefault("res", client.post("/v1/embeddings",
                                                                                  json={"input": ["x"] * 512})))
        big.start()
        wait_for(lambda: embedder.tokenized == 1, "the request to be tokenizing")
        health = client.get("/health")
        assert health.status_code == 200 and embedder.inside, "/health waited for the tokenizer"
        embedder.gate.set()
        big.join(60)
        assert box["res"].status_code == 200 and len(box["res"].json()["data"]) == 512


@pytest.mark.parametrize("kwargs", [dict(workers=-1), dict(threads=0), dict(max_batch_tokens=0),
                                    dict(max_wait_ms=float("nan")), dict(timeout_s=0), dict(max_inputs=2.5)],
                         ids=["workers", "threads", "batch-tokens", "wait-nan", "timeout", "inputs-float"])
def test_config_refuses_values_that_cannot_work(kwargs: dict) -> None:
    from mstsb_onnx.serve import ServeConfig

    with pytest.raises(ValueError, match=f"ServeConfig.{next(iter(kwargs))} must be"):
        ServeConfig(model_dir="m", **kwargs)
