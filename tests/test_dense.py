"""sentence-transformers Dense modules: exported after pooling, kept fp32, checked against the library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx import Embedder, ExportError
from mstsb_onnx.export import export_model
from mstsb_onnx.export.source import resolve_source

from conftest import _quiet, copy_folder, manifest_of

DENSE_TYPE = "sentence_transformers.base.modules.dense.Dense"  # as sentence-transformers 5 saves it


def _add_dense(src: Path, in_features: int, out_features: int, activation: str | None = "torch.nn.modules.activation.Tanh",
               bias: bool = True, seed: int = 0, **config: object) -> Path:
    """Append a Dense module (config + safetensors weights) to a sentence-transformers folder."""
    import torch
    from safetensors.torch import save_file

    modules = json.loads((src / "modules.json").read_text())
    sub = src / f"{len(modules)}_Dense"
    sub.mkdir()
    (sub / "config.json").write_text(json.dumps({"in_features": in_features, "out_features": out_features,
                                                 "bias": bias, "activation_function": activation, **config}))
    g = torch.Generator().manual_seed(seed)
    tensors = {"linear.weight": torch.randn(out_features, in_features, generator=g) * 0.2}
    if bias:
        tensors["linear.bias"] = torch.randn(out_features, generator=g) * 0.1
    save_file(tensors, str(sub / "model.safetensors"))
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": sub.name, "type": DENSE_TYPE})
    (src / "modules.json").write_text(json.dumps(modules))
    return sub


HEADS = {
    "tanh": [(32, 16, "torch.nn.modules.activation.Tanh")],
    "two-layers": [(32, 24, "torch.nn.modules.activation.ReLU"), (24, 8, "torch.nn.modules.linear.Identity")],
}


@pytest.mark.parametrize("head", list(HEADS), ids=list(HEADS))
def test_dense_head_matches_sentence_transformers(tiny_src: Path, tmp_path: Path, head: str) -> None:
    import sentence_transformers  # noqa: F401
    src = copy_folder(tiny_src, tmp_path / "src")
    for i, (n_in, n_out, act) in enumerate(HEADS[head]):
        _add_dense(src, n_in, n_out, act, seed=i)
    out = export_model(str(src), tmp_path / "out", quantize="none", log=_quiet).path
    m = manifest_of(out)
    dim = HEADS[head][-1][1]
    assert m["dim"] == dim
    # Parity against SentenceTransformer(folder).encode is part of the export: it ran and passed.
    assert "sentence-transformers" in [r["against"] for r in m["parity"]["model"]]
    assert Embedder(out).encode(["hello world", "x"]).shape == (2, dim)


def test_int8_keeps_the_dense_head_fp32(tiny_src: Path, tmp_path: Path) -> None:
    import onnx

    src = copy_folder(tiny_src, tmp_path / "src")
    _add_dense(src, 32, 16)
    (src / "modules.json").write_text(json.dumps(json.loads((src / "modules.json").read_text()) + [
        {"idx": 3, "name": "3", "path": "3_Normalize",
         "type": "sentence_transformers.sentence_transformer.modules.normalize.Normalize"}]))
    out = export_model(str(src), tmp_path / "out", log=_quiet).path
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    dense_ops = {n.op_type for n in graph.node if n.name.startswith("/st_dense/")}
    int8_ops = {"MatMulInteger", "MatMulIntegerToFloat"}  # per-batch / per-row activation scales
    assert "MatMul" in dense_ops and not dense_ops & int8_ops
    assert any(n.op_type in int8_ops for n in graph.node)  # the encoder itself is int8
    vectors = Embedder(out).encode(["hello world", "naïve café"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


REFUSED = {
    "unknown-activation": (dict(activation="my_package.Evil"), "activation_function 'my_package.Evil'"),
    "token-input": (dict(module_input_name="token_embeddings"), "module_input_name"),
    "wrong-in-features": (dict(in_features=31), "in_features 31"),
}


@pytest.mark.parametrize("name", list(REFUSED), ids=list(REFUSED))
def test_dense_settings_we_cannot_reproduce_are_refused(tiny_src: Path, tmp_path: Path, name: str) -> None:
    kwargs, fragment = REFUSED[name]
    src = copy_folder(tiny_src, tmp_path / "src")
    _add_dense(src, **{"in_features": 32, "out_features": 16, **kwargs})
    with pytest.raises(ExportError, match=fragment):
        export_model(str(src), tmp_path / "out", quantize="none", log=_quiet)
    assert not (tmp_path / "out").exists()


def test_pickled_dense_weights_are_never_loaded(tiny_src: Path, tmp_path: Path) -> None:
    src = copy_folder(tiny_src, tmp_path / "src")
    sub = _add_dense(src, 32, 16)
    (sub / "model.safetensors").unlink()
    (sub / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(ExportError, match=r"model.safetensors .*pytorch_model.bin.*never loaded"):
        resolve_source(str(src))


def test_dense_weights_of_the_wrong_shape_are_refused(tiny_src: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    src = copy_folder(tiny_src, tmp_path / "src")
    sub = _add_dense(src, 32, 16)
    save_file({"linear.weight": torch.zeros(16, 30), "linear.bias": torch.zeros(16)}, str(sub / "model.safetensors"))
    with pytest.raises(ExportError, match=r"linear.weight should have shape \(16, 32\), found \(16, 30\)"):
        export_model(str(src), tmp_path / "out", quantize="none", log=_quiet)


@pytest.mark.parametrize("order", ["dense-before-pooling", "dense-after-normalize"])
def test_dense_out_of_place_is_refused(tiny_src: Path, tmp_path: Path, order: str) -> None:
    src = copy_folder(tiny_src, tmp_path / "src")
    _add_dense(src, 32, 16)
    modules = json.loads((src / "modules.json").read_text())
    if order == "dense-before-pooling":
        modules[1], modules[2] = modules[2], modules[1]
    else:
        modules.insert(2, {"idx": 9, "name": "9", "path": "9_Normalize",
                           "type": "sentence_transformers.models.Normalize"})
    (src / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ExportError, match="Dense"):
        resolve_source(str(src))
