"""Static int8 activation scales: constants calibrated at export, so no text depends on another.

onnxruntime's dynamic quantization (``DynamicQuantizeLinear``) measures every quantized
activation's range on each call, i.e. per batch, so a text's int8 vector moves with its
batch-mates. This pass measures each such activation's range once, at export, on calibration
text (the built-in multilingual probes), and replaces the run-time measurement by constants:

    DynamicQuantizeLinear(x) -> (q, scale, zero_point)
    becomes  q = QuantizeLinear(x, scale, zero_point)   with scale, zero_point initializers

Quantizing is then elementwise, so a token's int8 input -- and the text's vector -- cannot depend
on other rows, and each call saves the range reduction. onnxruntime folds the now-constant
``scale x weight scale`` product and fuses ``MatMulInteger -> Cast -> Mul`` into
``MatMulIntegerToFloat`` (correct here: the activation scale is one scalar).

The range is uint8 asymmetric, like ``DynamicQuantizeLinear`` (it always contains 0), widened by
``margin`` on both sides so text unlike the calibration set is clipped less; values outside it
saturate. What margin to ship is measured (docs/int8-recipe.md). It does not touch fp32 MatMuls,
the embedding table, or graphs without ``DynamicQuantizeLinear``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

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


def static_activations(model, ranges: dict[str, tuple[float, float]], margin: float) -> dict[str, object]:
    """Rewrite, in place, every ``DynamicQuantizeLinear`` as a ``QuantizeLinear`` with constant scale."""
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes, inits = [], []
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in ranges:
            raise ValueError(f"no calibrated range for the activation {x!r} (quantized by {node.name!r})")
        scale, zero_point = uint8_params(*ranges[x], margin)
        q, s_name, zp_name = node.output
        inits += [numpy_helper.from_array(np.array(scale, np.float32), s_name),
                  numpy_helper.from_array(np.array(zero_point, np.uint8), zp_name)]
        nodes.append(helper.make_node("QuantizeLinear", [x, s_name, zp_name], [q], name=node.name + "_static"))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    return {"static_quantizers": len(inits) // 2, "margin": margin}
