"""Smoothing + outlier split rewrite an fp32 graph without changing what it computes.

Graphs are built here with onnx.helper: an FFN block (up-projection, bias, erf GELU, down-
projection) in the shapes the rewrite looks for, with the constant sharing the torch exporter
produces (one bias initializer read by two layers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnx
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mstsb_onnx.export.smooth import OUTLIER_SUFFIX, smooth_graph  # noqa: E402

HIDDEN, FF = 16, 64


def _ffn_graph(path: Path, between: str, layers: int = 2) -> Path:
    """``layers`` FFN blocks; ``between`` is "gelu" (elementwise) or "softmax" (not elementwise)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.zeros(FF, np.float32), "shared_bias"),  # read by every layer
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    nodes, h = [], "x"
    for i in range(layers):
        w1 = rng.standard_normal((HIDDEN, FF)).astype(np.float32) * 0.3
        w1[:, 3] *= 20  # an outlier channel after the activation
        w2 = rng.standard_normal((FF, HIDDEN)).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(w1, f"w1_{i}"), numpy_helper.from_array(w2, f"w2_{i}")]
        nodes += [helper.make_node("Identity", ["b2"], [f"b2_{i}"], name=f"l{i}/b2"),  # as the exporter shares
                  helper.make_node("MatMul", [h, f"w1_{i}"], [f"u{i}"], name=f"l{i}/up/MatMul"),
                  helper.make_node("Add", ["shared_bias", f"u{i}"], [f"ub{i}"], name=f"l{i}/up/Add")]
        if between == "gelu":
            nodes += [
                helper.make_node("Constant", [], [f"c{i}"], name=f"l{i}/c",
                                 value=numpy_helper.from_array(np.array(np.sqrt(2), np.float32))),
                helper.make_node("Div", [f"ub{i}", f"c{i}"], [f"d{i}"], name=f"l{i}/div"),
                helper.make_node("Erf", [f"d{i}"], [f"e{i}"], name=f"l{i}/erf"),
                helper.make_node("Add", [f"e{i}", "one"], [f"e1{i}"], name=f"l{i}/add1"),
                helper.make_node("Mul", [f"ub{i}", f"e1{i}"], [f"m{i}"], name=f"l{i}/mul"),
                helper.make_node("Mul", [f"m{i}", "half"], [f"act{i}"], name=f"l{i}/act"),
            ]
        else:
            nodes.append(helper.make_node("Softmax", [f"ub{i}"], [f"act{i}"], name=f"l{i}/softmax", axis=-1))
        nodes += [helper.make_node("MatMul", [f"act{i}", f"w2_{i}"], [f"o{i}"], name=f"l{i}/down/MatMul"),
                  helper.make_node("Add", [f"o{i}", f"b2_{i}"], [f"h{i}"], name=f"l{i}/down/Add")]
        h = f"h{i}"
    inits += [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
              numpy_helper.from_array(np.full(HIDDEN, 0.1, np.float32), "b2")]
    graph = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", HIDDEN])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["n", HIDDEN])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("between, path", [("gelu", "up-projection columns"), ("softmax", "gather")],
                         ids=["elementwise-chain", "other-op"])
def test_rewrite_keeps_the_function(tmp_path: Path, between: str, path: str) -> None:
    src = _ffn_graph(tmp_path / "in.onnx", between)
    x = np.random.default_rng(1).standard_normal((10, HIDDEN)).astype(np.float32)
    feeds = [{"x": x[:5]}, {"x": x[5:]}]
    report = smooth_graph(src, tmp_path / "out.onnx", feeds, alpha=0.5, outliers=4)

    assert report["outlier_paths"][path] == 2 and sum(report["outlier_paths"].values()) == 2
    np.testing.assert_allclose(_run(tmp_path / "out.onnx", x), _run(src, x), rtol=1e-4, atol=1e-5)
    model = onnx.load(str(tmp_path / "out.onnx"))
    sides = [n for n in model.graph.node if n.name.endswith(OUTLIER_SUFFIX)]
    assert len(sides) == 2
    inits = {i.name: i for i in model.graph.initializer}
    read = {i for n in model.graph.node for i in n.input}
    assert set(inits) <= read, "unused initializers left behind"
    downs = [n for n in model.graph.node if n.name.endswith("down/MatMul")]
    k = {tuple(inits[n.input[1]].dims)[0] for n in downs}
    # The column path removes the outlier rows from the int8 MatMul; the gather path zeroes them.
    assert k == ({FF - 4} if path == "up-projection columns" else {FF})
    if path == "up-projection columns":
        assert not any(n.op_type == "Gather" for n in model.graph.node)
    # The fp32 part joins after the bias Add, so onnxruntime can fuse MatMul + bias.
    producers = {o: n for n in model.graph.node for o in n.output}
    merges = [n for n in model.graph.node if n.name.endswith("_merge")]
    assert [producers[m.input[0]].name for m in merges] == ["l0/down/Add", "l1/down/Add"]
