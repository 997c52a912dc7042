"""The runtime is slim for real: wheel installed without extras into a fresh venv, then used.

Builds the wheel, installs it (and only its declared dependencies) into a new venv, loads an
exported model there, encodes, and checks that torch, transformers, optimum and onnx were neither
imported nor installed. Needs the package registry for onnxruntime/tokenizers/numpy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "transformers", "optimum", "onnx", "sentence_transformers"]

PROBE = """
import importlib.util, json, sys
from mstsb_onnx import Embedder
emb = Embedder(sys.argv[1])
vec = emb.encode(["Hola", "Hello", "你好"])
print(json.dumps({
    "shape": list(vec.shape), "dtype": str(vec.dtype), "vec": vec.tolist(),
    "imported": sorted(m for m in %r if m in sys.modules),
    "installed": sorted(m for m in %r if importlib.util.find_spec(m) is not None),
}))
""" % (HEAVY, HEAVY)


@pytest.mark.slow
def test_wheel_without_extras_runs_torch_free(tiny_int8: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                   check=True, timeout=600)
    wheel = next(dist.glob("mstsb_onnx-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=900)
    res = subprocess.run([str(py), "-c", PROBE, str(tiny_int8)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["shape"] == [3, 32] and out["dtype"] == "float32"
    assert out["imported"] == [] and out["installed"] == []
    # Same vectors as the dev install.
    np.testing.assert_allclose(np.array(out["vec"]), Embedder(tiny_int8).encode(["Hola", "Hello", "你好"]), atol=1e-5)
    # The CLI entry point is installed and its help works without the extras.
    cli = subprocess.run([str(env_dir / "bin" / "mstsb-onnx"), "info", str(tiny_int8)], capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 0 and '"dim": 32' in cli.stdout
