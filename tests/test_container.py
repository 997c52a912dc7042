"""The server image: built from this tree with the Containerfile, run with a tiny model mounted.

Needs podman (``.ci/run`` installs it; in CI a missing podman fails). The machine's facts
(``../shared/docs/containers.md``): runc as the runtime, a containers.conf without default
ulimits, host networking only, a base image made locally with debootstrap, and the host's CA
bundle mounted for the build only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from mstsb_onnx import Embedder

from test_server import _free_port, metric, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BASE = "localhost/debian-python:bookworm"
IMAGE = "localhost/mstsb-onnx:test"
KEY = "sk-container-test"
CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _podman(*args: str, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check, **kw)


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (apt-get install podman runc debootstrap; .ci/run does)")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    old = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = str(conf)
    yield
    if old is None:
        os.environ.pop("CONTAINERS_CONF", None)
    else:
        os.environ["CONTAINERS_CONF"] = old


def _mirror() -> str:
    for source in Path("/etc/apt/sources.list.d").glob("*.sources"):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


@pytest.fixture(scope="module")
def image(podman_env, tmp_path_factory: pytest.TempPathFactory) -> str:
    if _podman("image", "exists", BASE, check=False).returncode != 0:
        root = tmp_path_factory.mktemp("debroot")
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                        "bookworm", str(root), _mirror()], check=True, capture_output=True, timeout=900)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        _podman("import", "-", BASE, stdin=tar.stdout)
        tar.wait()
    context = tmp_path_factory.mktemp("context")
    for name in ("Containerfile", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    for name in ("engine", "export"):
        shutil.copytree(ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = ["build", "--runtime", "runc", "--network", "host", "--format", "docker", "--build-arg", f"BASE={BASE}",
             "-t", IMAGE, "-f", "Containerfile"]
    if CA.is_file():
        build += ["--volume", f"{CA}:{CA}:ro", "--build-arg", f"PIP_CERT={CA}"]
    _podman(*build, str(context), timeout=1200)
    return IMAGE


@contextlib.contextmanager
def running(image: str, tiny_int8: Path, tmp_path: Path, cpus: str | None = None) -> Iterator[tuple[str, str]]:
    """A container of ``image`` serving the tiny model with a key; yields (base URL, container id) once healthy."""
    model = Path(shutil.copytree(tiny_int8, tmp_path / "public" / "model"))
    (tmp_path / "public").chmod(0o755)  # pytest's tmp folders are 0700: the container's user must read it
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    extra = ["--cpus", cpus] if cpus else []
    cid = _podman("run", "-d", "--runtime", "runc", "--network", "host", *extra, "-v", f"{model}:/model:ro",
                  "-e", f"MSTSB_API_KEYS={KEY}", image, "--port", str(port)).stdout.strip()
    try:
        wait_for(lambda: _healthy(base), "the container to be healthy", timeout=120)
        yield base, cid
    finally:
        _podman("rm", "-f", cid, check=False)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_image_serves_the_hosts_vectors_behind_a_key_as_a_non_root_user(image: str, tiny_int8: Path,
                                                                            tmp_path: Path) -> None:
    with running(image, tiny_int8, tmp_path) as (base, cid):
        texts = ["Hello world", "Hola mundo", "你好，世界"]
        res = httpx.post(base + "/v1/embeddings", json={"input": texts}, headers={"Authorization": f"Bearer {KEY}"},
                         timeout=30)
        assert res.status_code == 200
        got = np.array([d["embedding"] for d in res.json()["data"]], dtype=np.float32)
        want = Embedder(tiny_int8, threads=1, runners=1).encode(texts)
        assert np.abs(got - want).max() <= 1e-6
        assert httpx.post(base + "/v1/embeddings", json={"input": "x"}, timeout=30).status_code == 401
        uid = _podman("exec", cid, "python3", "-c", "import os; print(os.getuid())").stdout.strip()
        assert uid not in ("", "0")
        assert json.loads(_podman("inspect", cid).stdout)[0]["Config"].get("User") == "10001"


def test_the_image_checks_its_own_health_on_8080_as_uid_10001(image: str) -> None:
    info = json.loads(_podman("image", "inspect", image).stdout)[0]
    assert "/health" in " ".join(info["Healthcheck"]["Test"])
    assert info["Config"]["User"] == "10001" and "8080/tcp" in info["Config"]["ExposedPorts"]
    assert info["Config"]["Entrypoint"][:3] == ["mstsb-onnx", "serve", "/model"]


def test_a_one_cpu_container_runs_one_worker(image: str, tiny_int8: Path, tmp_path: Path) -> None:
    with running(image, tiny_int8, tmp_path, cpus="1") as (base, _):
        assert httpx.get(base + "/health", timeout=5).json()["workers"] == 1


def test_stop_finishes_in_flight_requests_within_10_s(image: str, tiny_int8: Path, tmp_path: Path) -> None:
    with running(image, tiny_int8, tmp_path) as (base, cid):
        box: dict[str, httpx.Response] = {}

        def big() -> None:
            box["res"] = httpx.post(base + "/v1/embeddings", json={"input": ["some words " * 40] * 2000},
                                    headers={"Authorization": f"Bearer {KEY}"}, timeout=60)

        client = threading.Thread(target=big)
        client.start()
        wait_for(lambda: metric(base, "mstsb_requests_in_flight") >= 1, "the request to arrive", timeout=30)
        start = time.monotonic()
        _podman("stop", "-t", "10", cid, timeout=60)
        assert time.monotonic() - start < 10
        client.join(60)
        assert box["res"].status_code == 200 and len(box["res"].json()["data"]) == 2000
