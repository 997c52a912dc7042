"""Static int8 activation scales: constants calibrated at export, so no text depends on another.

onnxruntime's dynamic quantization (``DynamicQuantizeLinear``) measures every quantized
activation's range on each call, i.e. per batch, so a text's int8 vector moves with its
batch-mates. This pass measures each such activation's range once, at export, on calibration
text (the built-in multilingual probes), and replaces the run-time measurement by constants:

    DynamicQuantizeLinear(x) -> (q, scale, zero_point)
    becomes  q = QuantizeLinear(x, scale, zero_point)   with scale, zero_point initializers

Quantizing is then elementwise, so a token's int8 input -- and the text's vector -- cannot depend
on other rows, and each call saves the range reduction. The ``MatMulInteger -> Cast -> Mul`` chains
they feed are written as ``MatMulIntegerToFloat`` with the constant activation scale.

The range is uint8 asymmetric, like ``DynamicQuantizeLinear`` (it always contains 0), widened by
``margin`` on both sides so text unlike the calibration set is clipped less; values outside it
saturate. What margin to ship is measured (docs/int8-recipe.md). It does not touch fp32 MatMuls,
the embedding table, or graphs without ``DynamicQuantizeLinear``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mstsb_onnx.export.rowquant import consumers, name_unnamed, producers, scale_chain
from mstsb_onnx.export.smooth import run_collecting

# The calibrated range is widened by this factor on both sides (docs/int8-recipe.md: measured).
DEFAULT_MARGIN = 1.0


def activation_ranges(model, tensors: list[str], feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """The min and max of each tensor of ``model`` over every calibration batch."""
    ranges: dict[str, tuple[float, float]] = {}
    for values in run_collecting(model, tensors, feeds):
        for name, value in zip(tensors, values):
            lo, hi = float(value.min()), float(value.max())
            if name in ranges:
                lo, hi = min(lo, ranges[name][0]), max(hi, ranges[name][1])
            ranges[name] = (lo, hi)
    return ranges


def uint8_params(lo: float, hi: float, margin: float) -> tuple[float, int]:
    """Scale and zero point of ``DynamicQuantizeLinear`` for the range [lo, hi] widened by ``margin``."""
    lo, hi = min(0.0, lo) * margin, max(0.0, hi) * margin
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zero_point = int(np.clip(np.rint(-lo / scale), 0, 255))
    return scale, zero_point


def quantized_inputs(model) -> list[str]:
    """The tensors that ``DynamicQuantizeLinear`` nodes quantize, in graph order."""
    return [n.input[0] for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]


def _bias(add, out: str, vectors: set[str]) -> str | None:
    """The constant vector ``add`` adds to ``out``, if it is one (the linear layer's bias)."""
    if add is None or add.op_type != "Add":
        return None
    other = add.input[1] if add.input[0] == out else add.input[0]
    return other if other in vectors else None


def _fused_matmul(mmi, cons: dict, producer: dict, act_scales: set[str], vectors: set[str]) -> tuple[list, set[str]]:
    """``MatMulInteger -> Cast -> Mul(scale x column scale) [-> Add(bias)]`` as one ``MatMulIntegerToFloat``."""
    from onnx import helper

    gone, act, col = scale_chain(mmi, cons, producer, act_scales)
    out = gone[1].output[0]
    after = cons.get(out, [])
    bias = _bias(after[0], out, vectors) if len(after) == 1 else None
    if bias:
        gone.append(after[0])
        out = after[0].output[0]
    a_zero = mmi.input[2] if len(mmi.input) > 2 else ""
    b_zero = mmi.input[3] if len(mmi.input) > 3 else ""
    node = helper.make_node("MatMulIntegerToFloat", [mmi.input[0], mmi.input[1], act, col, a_zero, b_zero] + ([bias] if bias else []),
                            [out], domain="com.microsoft", name=mmi.name + "_static")
    return [node], {n.name for n in gone}


def static_activations(model, ranges: dict[str, tuple[float, float]], margin: float) -> dict[str, object]:
    """Rewrite, in place, every ``DynamicQuantizeLinear`` as a ``QuantizeLinear`` with constant scale.

    The ``MatMulInteger`` chains they feed become ``MatMulIntegerToFloat`` nodes here: with the scale
    product folded to one constant, onnxruntime's own fusion no longer recognises them.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    name_unnamed(graph)
    cons, producer = consumers(graph), producers(graph)
    quantizers = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    replace: dict[str, list] = {}
    for node in quantizers:
        x = node.input[0]
        if x not in ranges:
            raise ValueError(f"no calibrated range for the activation {x!r} (quantized by {node.name!r})")
        scale, zero_point = uint8_params(*ranges[x], margin)
        q, s_name, zp_name = node.output
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), s_name),
                                  numpy_helper.from_array(np.array(zero_point, np.uint8), zp_name)])
        replace[node.name] = [helper.make_node("QuantizeLinear", [x, s_name, zp_name], [q], name=node.name + "_static")]
    quantized = {n.output[0] for n in quantizers}
    dropped: set[str] = set()
    matmuls = [n for n in graph.node if n.op_type == "MatMulInteger" and n.input[0] in quantized]
    vectors = {i.name for i in graph.initializer if len(i.dims) == 1}
    for mmi in matmuls:
        replace[mmi.name], gone = _fused_matmul(mmi, cons, producer, {n.output[1] for n in quantizers}, vectors)
        dropped |= gone
    nodes = [m for n in graph.node if n.name not in dropped for m in replace.get(n.name, [n])]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return {"static_quantizers": len(quantizers), "matmuls": len(matmuls), "margin": margin}


def calibrated_static_activations(model, calibration: Iterable[dict[str, np.ndarray]],
                                  margin: float = DEFAULT_MARGIN) -> dict[str, object]:
    """Measure the quantized activations' ranges on ``calibration`` and rewrite ``model`` in place.

    The ranges are taken from ``model`` itself, before the rewrite: what its quantizers see at run time.
    """
    return static_activations(model, activation_ranges(model, quantized_inputs(model), calibration), margin)
