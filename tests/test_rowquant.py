"""The per-row activation pass on a graph built here: the int8 product each row would get alone.

A tiny fp32 graph (a ReduceMean written the opset-17 way, with an ``axes`` attribute, then a
MatMul with a bias) goes through onnxruntime's ``quantize_dynamic`` and ``per_row_activations``.
The result is checked against numpy doing the same arithmetic per row, and each row's output
against the same row run with other companions.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mstsb_onnx.errors import ExportError
from mstsb_onnx.export.rowquant import per_row_activations
from mstsb_onnx.session import session_options

K, N = 16, 8


def _fp32_graph(path: Path, w: np.ndarray, b: np.ndarray) -> None:
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["c"]),
             helper.make_node("MatMul", ["c", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["r", "s", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["r", "s", N])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture(scope="module")
def rows_graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(K, N)).astype(np.float32), rng.normal(size=N).astype(np.float32)
    root = tmp_path_factory.mktemp("rowquant")
    _fp32_graph(root / "fp32.onnx", w, b)
    quantize_dynamic(str(root / "fp32.onnx"), str(root / "int8.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    model = onnx.load(str(root / "int8.onnx"))
    report = per_row_activations(model)
    assert report == {"row_quantizers": 1, "matmuls": 1}
    onnx.save(model, str(root / "rows.onnx"))
    return root / "rows.onnx", w, b


def _run(path: Path, x: np.ndarray, plain: bool = False) -> np.ndarray:
    """The graph in a session built as the runtime builds it (``plain``: onnxruntime's defaults)."""
    if plain:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
    else:
        so = session_options(threads=1)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _cpu_has_int8_dot_product() -> bool:
    """VNNI or AMX in /proc/cpuinfo, read here rather than through ``cpus`` (the code under test)."""
    text = Path("/proc/cpuinfo").read_text()
    flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def _numpy_rows(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Symmetric per-row uint8 (zero point 128) x per-column int8 weights, in exact integer arithmetic."""
    c = x - x.mean(-1, keepdims=True)
    s = np.maximum(np.abs(c).max(-1, keepdims=True), 1e-8) / np.float32(127)
    q = np.clip(np.rint(c / s) + 128, 0, 255).astype(np.int64) - 128
    ws = np.abs(w).max(0) / 127
    wq = np.clip(np.rint(w / ws), -127, 127).astype(np.int64)
    return (q @ wq) * ws * s + b


def test_each_row_is_quantized_alone(rows_graph: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, w, b = rows_graph
    x = np.random.default_rng(1).normal(size=(3, 5, K)).astype(np.float32)
    x[1, 2] *= 40  # one row far larger than the rest: a per-batch scale would coarsen every other row
    got = _run(path, x)
    assert np.abs(got - _numpy_rows(x, w, b)).max() <= 1e-4
    # The same row beside other companions (and alone) gives the same numbers.
    alone = _run(path, x[2:3, 1:2])
    assert np.array_equal(alone[0, 0], got[2, 1])


def test_a_plain_session_saturates_only_without_int8_dot_products(rows_graph: tuple[Path, np.ndarray, np.ndarray]) -> None:
    """Why the runtime sets ``session.x64quantprecision`` on x86-64 CPUs without VNNI/AMX.

    There onnxruntime's u8s8 kernels sum pairs of products in int16 and saturate on the large row
    (measured: max abs diff 5.69 on an AVX2-only EPYC); with VNNI or AMX they are exact.
    """
    path, w, b = rows_graph
    x = np.random.default_rng(1).normal(size=(3, 5, K)).astype(np.float32)
    x[1, 2] *= 40
    diff = np.abs(_run(path, x, plain=True) - _numpy_rows(x, w, b)).max()
    if platform.machine().lower() in {"x86_64", "amd64"} and not _cpu_has_int8_dot_product():
        assert diff > 1e-2
    else:
        assert diff <= 1e-4


def test_the_graph_is_raised_to_opset_21_with_reduce_axes_as_inputs(rows_graph: tuple[Path, np.ndarray, np.ndarray]) -> None:
    model = onnx.load(str(rows_graph[0]))
    assert [o.version for o in model.opset_import if o.domain == ""] == [21]
    (mean,) = [n for n in model.graph.node if n.op_type == "ReduceMean"]
    assert not mean.attribute or all(a.name != "axes" for a in mean.attribute)
    assert len(mean.input) == 2
    onnx.checker.check_model(model)


def test_a_quantizer_without_a_known_row_length_is_refused(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The MatMul's weight is a graph input, not an initializer: nothing tells the row length.
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, N])],
                              [numpy_helper.from_array(np.ones((K, N), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "f.onnx"))
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8)
    model = onnx.load(str(tmp_path / "q.onnx"))
    weights = [i for i in model.graph.initializer if i.data_type == TensorProto.INT8]
    for init in weights:  # move the int8 weight out of the initializers
        model.graph.initializer.remove(init)
        model.graph.input.append(helper.make_tensor_value_info(init.name, TensorProto.INT8, list(init.dims)))
    with pytest.raises(ExportError, match="row length"):
        per_row_activations(model)
