"""The server where users already are: API keys, TEI's routes (huggingface_hub's client), request
ids, the access log, and a 4xx -- never a 5xx -- for anything a client sends."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mstsb_onnx import Embedder
from mstsb_onnx.serve import ServeConfig, create_app
from mstsb_onnx.serve.app import authorized
from mstsb_onnx.serve.config import read_api_keys

from test_server import start_server

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def keyed(tiny_int8: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("log") / "stderr.txt"
    base, proc = start_server(tiny_int8, "--api-key", KEY, "--access-log", "--model-name", "tiny", stderr_to=log)
    yield base, log
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def reference(tiny_int8: Path) -> Embedder:
    return Embedder(tiny_int8, threads=1)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# --- API keys ------------------------------------------------------------------------------------


def test_openai_client_with_the_right_key_and_a_wrong_one(keyed, reference: Embedder) -> None:
    good = openai.OpenAI(base_url=keyed[0] + "/v1", api_key=KEY, max_retries=0)
    vec = np.asarray(good.embeddings.create(model="tiny", input="Hello world").data[0].embedding)
    assert float(_cos(vec, reference.encode("Hello world"))) > 0.9999
    bad = openai.OpenAI(base_url=keyed[0] + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.embeddings.create(model="tiny", input="Hello world")
    assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"


@pytest.mark.parametrize("header", [None, f"Basic {KEY}", "Bearer", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}"],
                         ids=["none", "basic", "empty", "longer", "shorter"])
def test_401_in_openai_shape_with_www_authenticate(keyed, header: str | None) -> None:
    res = httpx.post(keyed[0] + "/v1/embeddings", json={"input": "x"},
                     headers={"Authorization": header} if header else {})
    assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
    assert res.json()["error"]["type"] == "invalid_request_error"


def test_health_and_metrics_stay_open(keyed) -> None:
    assert httpx.get(keyed[0] + "/health").status_code == 200
    metrics = httpx.get(keyed[0] + "/metrics")
    assert metrics.status_code == 200 and 'mstsb_rejected_total{reason="unauthorized"}' in metrics.text


def test_protected_metrics_and_keys_from_environment_and_file(tiny_int8: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# one key per line\nfrom-file\n", encoding="utf-8")
    base, proc = start_server(tiny_int8, "--api-key-file", str(keys), "--protect-metrics",
                              env={"MSTSB_API_KEYS": "from-env-1, from-env-2"})
    try:
        assert httpx.get(base + "/metrics").status_code == 401
        for key in ("from-file", "from-env-1", "from-env-2"):
            auth = {"Authorization": f"Bearer {key}"}
            assert httpx.get(base + "/metrics", headers=auth).status_code == 200
            assert httpx.post(base + "/embed", json={"inputs": "x"}, headers=auth).status_code == 200
        assert httpx.post(base + "/embed", json={"inputs": "x"}).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_read_api_keys_and_the_comparison() -> None:
    assert read_api_keys(["a", "b"], None, {"MSTSB_API_KEYS": "b,c, ,d"}) == ("a", "b", "c", "d")
    assert authorized("Bearer c", ("a", "c")) and authorized("bearer  a", ("a",))
    assert not authorized("Bearer ", ("a",)) and not authorized(None, ("a",)) and not authorized("a", ("a",))
    with pytest.raises(ValueError, match="api_keys\\[1\\]"):
        ServeConfig(model_dir="m", api_keys=("ok", "has space"))


def test_a_public_address_without_a_key_is_warned_about(tiny_int8: Path, tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    base, proc = start_server(tiny_int8, "--host", "0.0.0.0", stderr_to=log)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert "warning: listening on 0.0.0.0 without an API key" in log.read_text()


# --- TEI routes ----------------------------------------------------------------------------------


def test_huggingface_hub_client_feature_extraction(keyed, reference: Embedder, monkeypatch: pytest.MonkeyPatch,
                                                  request: pytest.FixtureRequest) -> None:
    from huggingface_hub import InferenceClient, constants

    from huggingface_hub.utils import reset_sessions

    # The suite runs with HF_HUB_OFFLINE=1 (no hub here); this client only talks to 127.0.0.1. Sessions
    # are cached with the offline adapter mounted, so they are reset on the way in and out.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    request.addfinalizer(reset_sessions)

    texts = ["Hello world", "Hola mundo"]
    got = InferenceClient(model=keyed[0] + "/embed", token=KEY).feature_extraction(texts)
    want = reference.encode(texts, normalize_embeddings=True)
    assert got.shape == want.shape and _cos(got, want).min() > 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # TEI normalises by default
    with pytest.raises(Exception, match="401"):
        InferenceClient(model=keyed[0] + "/embed", token="wrong").feature_extraction(texts)


def test_both_clients_without_authentication(tiny_int8: Path, reference: Embedder, monkeypatch: pytest.MonkeyPatch,
                                            request: pytest.FixtureRequest) -> None:
    """A server started without keys takes any key (or none) from both clients."""
    from huggingface_hub import InferenceClient, constants
    from huggingface_hub.utils import reset_sessions

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    request.addfinalizer(reset_sessions)
    base, proc = start_server(tiny_int8)
    try:
        texts = ["Hello world", "Hola mundo"]
        tei = InferenceClient(model=base + "/embed").feature_extraction(texts, normalize=False)
        oai = openai.OpenAI(base_url=base + "/v1", api_key="anything", max_retries=0).embeddings.create(
            model="m", input=texts)
        want = reference.encode(texts)
        assert _cos(tei, want).min() > 0.9999
        assert _cos(np.asarray([d.embedding for d in oai.data]), want).min() > 0.9999
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_embed_route_equals_openai_route(keyed) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    texts = ["Hello world", "你好，世界", "Grüß Gott"]
    tei = httpx.post(keyed[0] + "/embed", json={"inputs": texts, "normalize": False}, headers=auth).json()
    oai = httpx.post(keyed[0] + "/v1/embeddings", json={"input": texts}, headers=auth).json()["data"]
    a, b = np.asarray(tei), np.asarray([d["embedding"] for d in oai])
    assert a.shape == b.shape and _cos(a, b).min() > 0.9999  # int8: batch-mates may differ between calls


def test_truncate_false_refuses_an_over_long_input(keyed) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    long = "palabra " * 400
    refused = httpx.post(keyed[0] + "/embed", json={"inputs": [long]}, headers=auth)
    assert refused.status_code == 413 and "max_seq_length of 128" in refused.json()["error"]["message"]
    assert httpx.post(keyed[0] + "/embed", json={"inputs": [long], "truncate": True}, headers=auth).status_code == 200


def test_info(keyed) -> None:
    info = httpx.get(keyed[0] + "/info", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert info["model_id"] == "tiny" and info["max_input_length"] == 128 and info["model_dtype"] == "int8"
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}


# --- request ids and the access log ----------------------------------------------------------------


def test_request_ids_and_one_json_log_line_per_request(keyed) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    mine = httpx.post(keyed[0] + "/v1/embeddings", json={"input": ["a b", "c"]}, headers={**auth, "X-Request-Id": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    theirs = httpx.get(keyed[0] + "/health")
    assert len(theirs.headers["x-request-id"]) == 32  # generated
    refused = httpx.post(keyed[0] + "/v1/embeddings", json={"input": "x"}, headers={"X-Request-Id": "no-key-1"})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "no-key-1"
    lines = [json.loads(line) for line in keyed[1].read_text().splitlines() if line.startswith("{")]
    by_id = {line["id"]: line for line in lines}
    assert by_id["abc-123"]["status"] == 200 and by_id["abc-123"]["inputs"] == 2 and by_id["abc-123"]["tokens"] > 2
    assert by_id["abc-123"]["queue_ms"] >= 0 and by_id["abc-123"]["compute_ms"] > 0
    assert by_id["no-key-1"]["status"] == 401 and by_id["no-key-1"]["inputs"] == 0


# --- nothing a client sends is a 5xx ----------------------------------------------------------------


@pytest.fixture(scope="module")
def in_process(tiny_int8: Path):
    from starlette.testclient import TestClient

    emb = Embedder(tiny_int8, threads=1)
    with TestClient(create_app(ServeConfig(model_dir=str(tiny_int8), workers=1, max_inputs=16, max_chars=200),
                               embedder=emb)) as client:
        for _ in range(100):
            if client.get("/health").status_code == 200:
                break
        yield client


@pytest.mark.parametrize("route", ["/v1/embeddings", "/embed"])
@pytest.mark.parametrize("body", [b"[" * 50_000, b'{"input": "x", "inputs": "x", "dimensions": ' + b"9" * 5000 + b"}",
                                  b'{"input": "x", "inputs": "x", "normalize": ' + b"1" * 5000 + b"}"],
                         ids=["nested", "huge-int-dimensions", "huge-int-flag"])
def test_pathological_json_is_a_400_or_422(in_process, route: str, body: bytes) -> None:
    res = in_process.post(route, content=body, headers={"content-type": "application/json"})
    assert res.status_code in (400, 422) and set(res.json()["error"]) == {"message", "type", "param", "code"}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "input": JSON, "inputs": JSON, "encoding_format": JSON, "dimensions": JSON, "model": JSON,
    "normalize": JSON, "truncate": JSON, "prompt_name": JSON, "truncation_direction": JSON})


def _answers_well(client, route: str, body: bytes) -> None:
    res = client.post(route, content=body, headers={"content-type": "application/json"})
    assert res.status_code < 500, (res.status_code, body[:200], res.text[:300])
    if res.status_code >= 400:
        assert set(res.json()["error"]) == {"message", "type", "param", "code"}
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("route", ["/v1/embeddings", "/embed"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_get_a_2xx_or_an_openai_shaped_4xx(in_process, route: str, body: bytes) -> None:
    _answers_well(in_process, route, body)


@pytest.mark.parametrize("route", ["/v1/embeddings", "/embed"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON | FIELDS)
def test_arbitrary_json_gets_a_2xx_or_an_openai_shaped_4xx(in_process, route: str, value: object) -> None:
    _answers_well(in_process, route, json.dumps(value).encode())
