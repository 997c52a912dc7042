"""Per-row (per-token) int8 activation scales: vectors that do not depend on their batch-mates.

onnxruntime's dynamic quantization (``DynamicQuantizeLinear``) picks one activation scale per
tensor, i.e. per batch, so a text's int8 vector moves with the texts it is batched with. This pass
rewrites the graph ``quantize_dynamic`` wrote so that every row (token) of every quantized
activation gets its own symmetric scale, computed from that row alone:

    scale = max(|x|) / 127 over the row       q = QuantizeLinear(x, scale, 128) per row  (uint8)
    y = MatMulIntegerToFloat(q, W, 1, w_scale, 128, w_zero_point) * scale

A row's result then depends only on the row, so batching and padding cannot change it. The zero
point is one scalar (128), as onnxruntime's CPU MatMulInteger requires, which keeps the fast u8s8
kernel. The product with the row scale is written explicitly after ``MatMulIntegerToFloat``:
onnxruntime 1.32's ``MatMulIntegerToFloatFusion`` fuses ``Mul(Cast(MatMulInteger), row x column
scale)`` as if the activation scale were a scalar, which silently wrecks the result (probe cosine
0.77 on the stand-in; docs/int8-recipe.md). It does not touch fp32 MatMuls or the embedding table.
"""

from __future__ import annotations

import numpy as np

ZERO_POINT = "rowquant_zero_point_128"
AXES = "rowquant_last_axis"
_CONSTANTS = {"rowquant_eps": 1e-8, "rowquant_127": 127.0, "rowquant_one": 1.0}


def _row_quantize_nodes(x: str, q: str, scale: str, prefix: str, width: int) -> list:
    """x [..., width] float -> q uint8 and scale [..., 1] float (symmetric, per row).

    The quantizing itself is one blocked ``QuantizeLinear`` (opset 21) whose block is the whole
    row: onnxruntime runs it in parallel over rows with its vectorized kernel, and no reshape to a
    2-D view (about six shape operators per activation) is needed.
    """
    from onnx import TensorProto, helper

    t = {k: prefix + k for k in ("hi", "lo", "nlo", "amax", "sshape", "zp")}
    return [
        helper.make_node("ReduceMax", [x, AXES], [t["hi"]], keepdims=1, name=t["hi"]),
        helper.make_node("ReduceMin", [x, AXES], [t["lo"]], keepdims=1, name=t["lo"]),
        helper.make_node("Neg", [t["lo"]], [t["nlo"]], name=t["nlo"]),
        helper.make_node("Max", [t["hi"], t["nlo"], "rowquant_eps"], [t["amax"]], name=t["amax"]),
        helper.make_node("Div", [t["amax"], "rowquant_127"], [scale], name=prefix + "scale"),
        # The zero point has the scale's shape (one per row), all 128.
        helper.make_node("Shape", [scale], [t["sshape"]], name=t["sshape"]),
        helper.make_node("ConstantOfShape", [t["sshape"]], [t["zp"]], name=t["zp"],
                         value=helper.make_tensor("v", TensorProto.UINT8, [1], [128])),
        helper.make_node("QuantizeLinear", [x, scale, t["zp"]], [q], axis=-1, block_size=width, name=prefix + "q"),
    ]


def _to_opset_21(model) -> None:
    """Raise the default domain to opset 21 (blocked QuantizeLinear) without changing any node's meaning.

    Between 17 and 21 the one change that matters to an existing graph is that the Reduce
    operators other than ReduceSum take ``axes`` as an input (opset 18); every other change adds
    types or attributes.
    """
    from onnx import numpy_helper

    (default,) = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if default.version >= 21:
        return
    default.version = 21
    for node in model.graph.node:
        axes = [a for a in node.attribute if a.name == "axes"]
        if node.domain in ("", "ai.onnx") and node.op_type.startswith("Reduce") and node.op_type != "ReduceSum" and axes:
            name = f"{node.name}_axes"
            model.graph.initializer.append(numpy_helper.from_array(np.array(list(axes[0].ints), np.int64), name))
            node.attribute.remove(axes[0])
            node.input.insert(1, name)


def consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def producers(graph) -> dict[str, object]:
    return {o: n for n in graph.node for o in n.output}


def scale_chain(mmi, cons: dict, producer: dict, act_scales: set[str]) -> tuple[list, str, str]:
    """``MatMulInteger -> Cast -> Mul(act scale x column scale)`` as quantize_dynamic writes it.

    Returns the nodes that go when the chain is fused (Cast, Mul, and the scale product where
    nothing else reads it), the activation scale and the column scale.
    """
    (cast,) = cons[mmi.output[0]]
    (mul,) = cons[cast.output[0]]
    scales = producer[mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]]
    act, col = (scales.input[0], scales.input[1]) if scales.input[0] in act_scales else (scales.input[1], scales.input[0])
    gone = [cast, mul] + ([scales] if len(cons[scales.output[0]]) == 1 else [])
    return gone, act, col


def _matmul_nodes(mmi, cons: dict, producer: dict, row_scales: set[str]) -> tuple[list, set[str]]:
    """``MatMulInteger -> Cast -> Mul(row scale x column scale)`` as ``MatMulIntegerToFloat -> Mul``."""
    from onnx import helper

    gone, row, col = scale_chain(mmi, cons, producer, row_scales)
    b_zero = mmi.input[3] if len(mmi.input) > 3 else ""
    out = gone[1].output[0]
    unscaled = out + "_rowquant_unscaled"
    nodes = [helper.make_node("MatMulIntegerToFloat", [mmi.input[0], mmi.input[1], "rowquant_one", col, ZERO_POINT, b_zero],
                              [unscaled], domain="com.microsoft", name=mmi.name + "_rowquant"),
             helper.make_node("Mul", [unscaled, row], [out], name=mmi.name + "_rowscale")]
    return nodes, {n.name for n in gone}


def name_unnamed(graph) -> None:
    """Give every unnamed node a unique name: the rewrites here and in ``staticquant`` match nodes by name."""
    taken = {n.name for n in graph.node}
    for i, node in enumerate(graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{i}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)


def _row_width(quantizer, cons: dict, weights: dict[str, tuple]) -> int:
    """The quantized activation's row length: K of the int8 weights every reader multiplies it by."""
    from mstsb_onnx.errors import ExportError

    widths = {weights[n.input[1]][0] for n in cons[quantizer.output[0]] if n.op_type == "MatMulInteger" and n.input[1] in weights}
    if len(widths) != 1:
        raise ExportError(f"per-row activations: cannot tell the row length of {quantizer.name!r}'s input "
                          f"(its MatMulInteger weights have K = {sorted(widths)}); export with --activations per-tensor")
    return widths.pop()


def per_row_activations(model) -> dict[str, int]:
    """Rewrite, in place, every ``DynamicQuantizeLinear`` and the ``MatMulInteger`` chains it feeds."""
    from onnx import helper, numpy_helper

    graph = model.graph
    name_unnamed(graph)
    cons, producer = consumers(graph), producers(graph)
    weights = {i.name: tuple(i.dims) for i in graph.initializer}
    quantizers = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    row_scales = {n.output[1] for n in quantizers}
    replace: dict[str, list] = {}
    dropped: set[str] = set()
    matmuls = [n for n in graph.node if n.op_type == "MatMulInteger" and n.input[0] in {q.output[0] for q in quantizers}]
    for node in quantizers:
        width = _row_width(node, cons, weights)
        replace[node.name] = _row_quantize_nodes(node.input[0], node.output[0], node.output[1], node.name + "_rowquant_", width)
    for mmi in matmuls:
        replace[mmi.name], gone = _matmul_nodes(mmi, cons, producer, row_scales)
        dropped |= gone
    graph.initializer.extend([numpy_helper.from_array(np.array(128, np.uint8), ZERO_POINT)]
                             + [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in _CONSTANTS.items()]
                             + [numpy_helper.from_array(np.array([-1], np.int64), AXES)])
    nodes = [m for n in graph.node if n.name not in dropped for m in replace.get(n.name, [n])]
    del graph.node[:]
    graph.node.extend(nodes)
    _to_opset_21(model)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return {"row_quantizers": len(quantizers), "matmuls": len(matmuls)}
