"""The server against slow, oversized and careless clients, and models that cannot load.

Real server processes on 127.0.0.1 with short timeouts, and in-process apps over fake embedders
that block where a test needs them to. Every wait is bounded in count and time.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from mstsb_onnx.manifest import Manifest
from mstsb_onnx.serve import ServeConfig, create_app

from conftest import copy_folder, manifest_of
from test_server import _free_port, metric, start_server, wait_for


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it was still open after ``seconds``."""
    got = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(min(0.25, left))  # never past ``seconds``: callers time their sends by it
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk
    return None


# --- 1. slow clients, buffered bytes, connections ----------------------------------------------

SLOW = {
    "nothing": [b""],
    "half-request-line": [b"POST /v1/embe"],
    "headers-without-blank-line": [b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n"],
    "half-a-body": [b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 40\r\n\r\n{\"input\": "],
}


@pytest.fixture(scope="module")
def guarded(tiny_int8: Path):
    base, proc = start_server(tiny_int8, "--header-timeout", "1", "--read-timeout", "2", "--max-connections", "12",
                              "--max-body-bytes", "1000000", "--max-buffered-bytes", "2500000")
    yield base
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.mark.parametrize("name", list(SLOW), ids=list(SLOW))
def test_a_client_that_stalls_is_cut_off_and_others_are_served(guarded: str, name: str) -> None:
    sock = _connect(guarded)
    for part in SLOW[name]:
        sock.sendall(part)
    assert httpx.post(guarded + "/v1/embeddings", json={"input": "still served"}, timeout=10).status_code == 200
    sent = _closed_within(sock, 8)
    assert sent is not None, f"{name}: the connection was still open after 8 s"
    assert sent == b"" or sent.startswith(b"HTTP/1.1 408")
    sock.close()


def test_a_body_trickled_past_the_read_timeout_gets_408(guarded: str) -> None:
    sock = _connect(guarded)
    body = json.dumps({"input": "x" * 30}).encode()
    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
    answer = None
    # One byte every 0.8 s (the whole body would take ~35 s). The 2 s deadline falls mid-interval,
    # 0.4 s from either send: a byte sent after the server has closed would draw a reset that can
    # discard its 408 before it is read.
    for byte in body:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        answer = _closed_within(sock, 0.8)
        if answer is not None:
            break
    assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request_timeout" in answer
    sock.close()


def test_bytes_buffered_across_requests_are_capped(guarded: str) -> None:
    """Two bodies of 1,000,000 bytes fit in the 2,500,000-byte budget; a third is refused at once."""
    holders = []
    for _ in range(2):
        sock = _connect(guarded)
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b" " * 900_000)
        holders.append(sock)
    wait_for(lambda: metric(guarded, "mstsb_body_bytes_reserved") >= 2_000_000, "both bodies to be admitted",
             timeout=10)
    res = httpx.post(guarded + "/v1/embeddings", content=b" " * 1_000_000,
                     headers={"content-type": "application/json"}, timeout=10)
    assert res.status_code == 503 and res.json()["error"]["code"] == "server_busy" and res.headers["retry-after"]
    # An ordinary request is still served while the large ones hold the budget.
    assert httpx.post(guarded + "/v1/embeddings", json={"input": "small"}, timeout=10).status_code == 200
    for sock in holders:
        assert _closed_within(sock, 8) is not None  # the read timeout ends them too
        sock.close()
    wait_for(lambda: metric(guarded, "mstsb_body_bytes_reserved") == 0, "the budget to be released", timeout=10)


def test_connections_beyond_the_cap_are_refused_with_503(guarded: str) -> None:
    idle = [_connect(guarded) for _ in range(12)]
    try:
        extra = _connect(guarded)
        sent = _closed_within(extra, 5)
        assert sent is not None and sent.startswith(b"HTTP/1.1 503")
        extra.close()
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: _health_ok(guarded), "the server to take connections again", timeout=10)


def _health_ok(base: str) -> bool:
    try:
        return httpx.get(base + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --- 2. and 3. admission before the expensive part; the timeout bounds the whole request ---------


class GatedEmbedder:
    """A fake embedder whose tokenizer waits for ``gate`` (and counts its calls)."""

    dim = 4
    max_seq_length = 16

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.tokenized = 0
        self.inside = False  # a tokenize call is waiting at the gate
        self.manifest = Manifest(dim=4, max_seq_length=16, pooling="mean", normalize=False, prompts={},
                                 default_prompt_name=None, files={}, raw={})

    def tokenize_flagged(self, texts, prompt=None, prompt_name=None, what="texts"):
        self.tokenized += 1
        self.inside = True
        self.gate.wait(10)
        self.inside = False
        return [[1, 2, 3] for _ in texts], [False] * len(texts)

    def check_token_ids(self, seqs, what="texts"):
        pass

    def encode_tokens(self, seqs, batch_size=32, normalize=False, on_batch=None, *, runners=None):
        return np.ones((len(seqs), 4), np.float32)


def _client(embedder: GatedEmbedder, **config):
    from starlette.testclient import TestClient

    return TestClient(create_app(ServeConfig(model_dir="-", workers=1, **config), embedder=embedder))


def test_a_full_queue_refuses_before_tokenizing() -> None:
    embedder = GatedEmbedder()
    with _client(embedder, max_queue_inputs=4, max_inputs=4) as client:
        box: dict[str, httpx.Response] = {}
        first = threading.Thread(target=lambda: box.setdefault("r", client.post("/v1/embeddings",
                                                                                  json={"input": ["a"] * 4})))
        first.start()
        wait_for(lambda: embedder.tokenized == 1, "the first request to be tokenizing", timeout=10)
        res = client.post("/v1/embeddings", json={"input": ["b"]})
        assert res.status_code == 503 and res.json()["error"]["code"] == "queue_full"
        assert embedder.tokenized == 1, "the refused request was tokenized first"
        embedder.gate.set()
        first.join(30)
        assert box["r"].status_code == 200


def test_the_timeout_bounds_tokenizing_too() -> None:
    embedder = GatedEmbedder()  # its gate opens only after 10 s
    with _client(embedder, timeout_s=0.5) as client:
        res = client.post("/v1/embeddings", json={"input": ["slow to tokenize"]})
        assert res.status_code == 503 and res.json()["error"]["code"] == "timeout"
        embedder.gate.set()


def test_a_queue_smaller_than_one_request_is_refused_at_start(tiny_int8: Path) -> None:
    with pytest.raises(ValueError, match="max_queue_inputs"):
        ServeConfig(model_dir="-", max_queue_inputs=32, max_inputs=2048)
    res = subprocess.run([sys.executable, "-m", "mstsb_onnx.cli", "serve", str(tiny_int8), "--max-queue", "32"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "--max-queue" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# --- 4. and 9. the server starts only when it can serve -------------------------------------------


def _break(folder: Path, how: str) -> None:
    doc = manifest_of(folder)
    if how == "wrong-sha256":
        doc["files"]["tokenizer.json"] = "0" * 64
    elif how == "truncated-tokenizer":
        import hashlib

        text = (folder / "tokenizer.json").read_bytes()[:1000]
        (folder / "tokenizer.json").write_bytes(text)
        doc["files"]["tokenizer.json"] = hashlib.sha256(text).hexdigest()
    elif how == "corrupt-model":
        import hashlib

        (folder / "model.onnx").write_bytes(b"not a model" * 100)
        doc["files"]["model.onnx"] = hashlib.sha256(b"not a model" * 100).hexdigest()
    elif how == "path-outside":
        doc["files"]["../../etc/passwd"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("how", ["wrong-sha256", "truncated-tokenizer", "corrupt-model", "path-outside"])
def test_a_model_that_cannot_load_stops_serve_before_it_listens(tiny_int8: Path, tmp_path: Path, how: str) -> None:
    folder = copy_folder(tiny_int8, tmp_path / "model")
    _break(folder, how)
    res = subprocess.run([sys.executable, "-m", "mstsb_onnx.cli", "serve", str(folder), "--port", str(_free_port())],
                         capture_output=True, text=True, timeout=60, env={"MSTSB_CACHE": str(tmp_path / "cache"),
                                                                            **_env()})
    assert res.returncode == 1
    assert "serving" not in res.stdout
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("mstsb-onnx serve: error:")


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "MSTSB_CACHE"}


def test_health_tells_strangers_only_ok_or_not_ready(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    secret = tmp_path / "private-folder-name"
    app = create_app(ServeConfig(model_dir=str(secret)))
    with TestClient(app) as client:
        wait_for(app.state.service.ready.is_set, "the load to fail", timeout=10)
        assert app.state.service.error is not None
        body = client.get("/health").text
        assert "private-folder-name" not in body and json.loads(body) == {"status": "not_ready"}


def test_a_port_in_use_is_one_line_and_no_serving_line(tiny_int8: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "mstsb_onnx.cli", "serve", str(tiny_int8), "--port", str(port)],
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "serving" not in res.stdout
    assert len(res.stderr.strip().splitlines()) == 1 and str(port) in res.stderr


# --- 6. and 7. disconnects and keys ------------------------------------------------------------------


def test_a_client_that_hangs_up_is_counted_and_logged_in_one_line(tiny_int8: Path, tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    base, proc = start_server(tiny_int8, stderr_to=log)
    try:
        sock = _connect(base)
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"input\": ")
        time.sleep(0.3)
        sock.close()
        wait_for(lambda: _labelled(base, 'mstsb_requests_total{status="client_closed"}') >= 1,
                 "the disconnect to be counted", timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text
    assert len([line for line in text.splitlines() if "disconnected" in line]) == 1


def _labelled(base: str, sample: str) -> float:
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[1])
    return 0.0


def test_a_key_that_no_client_can_send_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        ServeConfig(model_dir="-", api_keys=("clé-secrète",))


def test_two_authorization_headers_are_a_400(tiny_int8: Path) -> None:
    from starlette.testclient import TestClient

    from mstsb_onnx import Embedder

    app = create_app(ServeConfig(model_dir=str(tiny_int8), workers=1, api_keys=("k1",)),
                     embedder=Embedder(tiny_int8, threads=1))
    with TestClient(app) as client:
        wait_for(lambda: client.get("/health").status_code == 200, "the model", timeout=30)
        res = client.post("/v1/embeddings", json={"input": "x"},
                          headers=[("authorization", "Bearer k1"), ("authorization", "Bearer other")])
        assert res.status_code == 400 and res.json()["error"]["code"] == "duplicate_authorization"


# --- the OpenAI surface -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_client(tiny_int8: Path):
    from starlette.testclient import TestClient

    from mstsb_onnx import Embedder

    app = create_app(ServeConfig(model_dir=str(tiny_int8), workers=1, model_name="tiny"),
                     embedder=Embedder(tiny_int8, threads=1))
    with TestClient(app) as client:
        wait_for(lambda: client.get("/health").status_code == 200, "the model", timeout=30)
        yield client


def test_models_are_listed_as_openai_does(app_client) -> None:
    res = app_client.get("/v1/models")
    assert res.status_code == 200
    body = res.json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["tiny"]
    assert body["data"][0]["object"] == "model"
    assert app_client.get("/v1/models/tiny").json()["id"] == "tiny"
    assert app_client.get("/v1/models/other").status_code == 404


@pytest.mark.parametrize("fmt", [0, {}, "", None], ids=["zero", "object", "empty", "null"])
def test_an_encoding_format_that_is_not_one_is_refused(app_client, fmt: object) -> None:
    res = app_client.post("/v1/embeddings", json={"input": "x", "encoding_format": fmt})
    assert res.status_code == 422 and res.json()["error"]["param"] == "encoding_format"


def test_a_trailing_slash_is_not_redirected(app_client) -> None:
    res = app_client.post("/v1/embeddings/", json={"input": "x"}, follow_redirects=False)
    assert res.status_code == 404


@pytest.mark.parametrize(("route", "field"), [("/v1/embeddings", "input"), ("/embed", "inputs")])
def test_a_lone_surrogate_is_placed_in_the_clients_own_text(app_client, route: str, field: str) -> None:
    body = '{"%s": ["fine", "ab\\ud800c"]}' % field
    res = app_client.post(route, content=body.encode(), headers={"content-type": "application/json"})
    assert res.status_code == 422
    message = res.json()["error"]["message"]
    assert message.startswith(f"{field}[1]") and "character 2" in message


def test_a_prompt_does_not_shift_the_reported_position(tiny_int8: Path) -> None:
    from mstsb_onnx import Embedder, InputError

    emb = Embedder(tiny_int8, threads=1)
    with pytest.raises(InputError, match=r"texts\[0\] .*character 3 "):
        emb.encode(["abc\ud800"], prompt="query: ")


def test_an_unordered_collection_is_refused() -> None:
    from mstsb_onnx.inputs import as_text_list

    with pytest.raises(TypeError, match="order"):
        as_text_list({"b", "a"})
    with pytest.raises(TypeError, match="order"):
        as_text_list(frozenset({"a"}))


def test_embed_reads_cr_only_line_endings_as_lines(tiny_int8: Path, tmp_path: Path) -> None:
    from mstsb_onnx.cli import main

    src = tmp_path / "old-mac.txt"
    src.write_bytes(b"first\rsecond\rthird\r")
    assert main(["embed", str(tiny_int8), str(src), "-o", str(tmp_path / "out.npy")]) == 0
    assert np.load(tmp_path / "out.npy").shape[0] == 3


# --- 5. two writers, one output --------------------------------------------------------------------


def test_a_second_writer_to_the_same_output_is_refused(tmp_path: Path) -> None:
    from mstsb_onnx import InputError
    from mstsb_onnx.corpus.sinks import open_sink

    out = tmp_path / "out.npy"
    first = open_sink(out, 4)
    with pytest.raises(InputError, match="another"):
        open_sink(out, 4)
    first.write([1, 2], ["a", "b"], np.ones((2, 4), np.float32))
    first.close(0)
    assert np.load(out).shape == (2, 4)
    again = open_sink(out, 4)  # free once the first has finished
    again.abort()
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


# --- 8. the manifest is checked against the graph -------------------------------------------------


@pytest.mark.parametrize(("change", "fragment"), [
    (dict(dim=-1), "dim"), (dict(max_seq_length=0), "max_seq_length"), (dict(dim=768), "768"),
    (dict(max_seq_length=100_000), "100000"),
], ids=["negative-dim", "zero-length", "dim-not-the-graphs", "longer-than-positions"])
def test_a_manifest_that_disagrees_with_the_graph_is_refused(tiny_int8: Path, tmp_path: Path, change: dict,
                                                            fragment: str) -> None:
    from mstsb_onnx import Embedder, ModelFolderError
    from mstsb_onnx.cli import main

    folder = copy_folder(tiny_int8, tmp_path / "model")
    doc = manifest_of(folder)
    doc.update(change)
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFolderError, match=fragment):
        Embedder(folder)
    if "dim" in change and change["dim"] < 1 or change.get("max_seq_length", 2) < 2:  # info reads only the manifest
        assert main(["info", str(folder)]) == 1


def test_a_file_entry_that_links_outside_the_folder_is_refused(tiny_int8: Path, tmp_path: Path) -> None:
    from mstsb_onnx import Embedder, ModelFolderError

    folder = copy_folder(tiny_int8, tmp_path / "model")
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(outside)
    with pytest.raises(ModelFolderError, match="outside"):
        Embedder(folder)
