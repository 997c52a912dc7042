"""int8 dynamic quantization of the exported graph.

Two parts, because they want different treatment:

* Linear layers (MatMul with constant weights): onnxruntime's dynamic quantization -- int8
  weights, activations quantized at run time (u8s8). Per-channel and reduce_range are options,
  chosen by measurement (docs/int8-recipe.md).
* Activations: one scale per batch (onnxruntime's), one per row (``rowquant``) or constants
  calibrated at export (``staticquant``); the last two make a text's vector independent of its
  batch-mates.
* The word-embedding table (250,002 x 768: 80% of XLM-R base's weights): onnxruntime's own
  Gather quantization uses one scale for the whole table, so rare tokens with small rows lose
  most of their precision. We store it as int8 with one scale per row (symmetric) and
  dequantize only the rows a batch gathers: Gather(int8) -> Cast -> Mul(Gather(scales)).

It does not fuse or optimise the graph (onnxruntime does that at session load).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mstsb_onnx.export.layout import write_model
from mstsb_onnx.export.rowquant import per_row_activations
from mstsb_onnx.export.staticquant import DEFAULT_MARGIN, calibrated_static_activations


# How int8 activations are scaled, declared once: "per-row" one scale per token (``rowquant``; a
# text's vector does not depend on its batch-mates), "per-tensor" onnxruntime's dynamic scale per
# batch (faster), "static" constants calibrated at export (``staticquant``).
ACTIVATIONS = ("per-row", "per-tensor", "static")
DEFAULT_ACTIVATIONS = "per-row"


@dataclass(frozen=True)
class QuantConfig:
    per_channel: bool = True
    reduce_range: bool = False
    embedding: str = "int8-per-row"  # or "fp32"
    op_types: tuple[str, ...] = ("MatMul",)
    # Regexes on node names of MatMuls to keep in fp32 (sensitive layers).
    exclude: tuple[str, ...] = ()
    activations: str = DEFAULT_ACTIVATIONS  # one of ACTIVATIONS; static ranges widened by static_margin
    static_margin: float = DEFAULT_MARGIN

    def to_dict(self) -> dict:
        d = asdict(self)
        d["op_types"] = list(self.op_types)
        d["exclude"] = list(self.exclude)
        how = {"per-row": "at run time, one symmetric scale per row", "static": "with constant scales calibrated at export"}
        d["method"] = ("onnxruntime.quantization.quantize_dynamic (weights int8 symmetric, activations uint8 "
                       + how.get(self.activations, "at run time, one scale per batch") + ")")
        return d


def _word_embedding_gather(model) -> tuple[object, object]:
    """The Gather whose data is the largest 2-D float initializer fed by ``input_ids``."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    best = None
    for node in model.graph.node:
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        init = inits[node.input[0]]
        if init.data_type != TensorProto.FLOAT or len(init.dims) != 2 or node.input[1] != "input_ids":
            continue
        if best is None or init.dims[0] > inits[best.input[0]].dims[0]:
            best = node
    if best is None:
        raise ValueError("no word-embedding Gather on input_ids found in the graph")
    return best, inits[best.input[0]]


def quantize_embedding_rows(model) -> dict[str, float]:
    """Replace the word-embedding table by int8 rows + float32 per-row scales, in place."""
    from onnx import helper, numpy_helper

    node, init = _word_embedding_gather(model)
    table = numpy_helper.to_array(init).astype(np.float32)
    scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    err = float(np.abs(q.astype(np.float32) * scale - table).max())

    base = init.name
    q_name, s_name = base + "_int8", base + "_row_scale"
    model.graph.initializer.remove(init)
    model.graph.initializer.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale.astype(np.float32), s_name)])
    out = node.output[0]
    gq, gs, cast = out + "_q", out + "_scale", out + "_f"
    new_nodes = [
        helper.make_node("Gather", [q_name, node.input[1]], [gq], name=node.name + "_int8", axis=0),
        helper.make_node("Gather", [s_name, node.input[1]], [gs], name=node.name + "_scale", axis=0),
        helper.make_node("Cast", [gq], [cast], name=node.name + "_cast", to=1),
        helper.make_node("Mul", [cast, gs], [out], name=node.name + "_dequant"),
    ]
    nodes = list(model.graph.node)
    at = nodes.index(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes[:at] + new_nodes + nodes[at + 1 :])
    return {"rows": int(table.shape[0]), "max_abs_error": err}


def _matching_nodes(path: Path, patterns: tuple[str, ...]) -> list[str]:
    import re

    import onnx

    if not patterns:
        return []
    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if any(re.search(p, n.name) for p in patterns)]


def quantize_int8(in_path: Path, out_path: Path, config: QuantConfig,
                  calibration: Iterable[dict[str, np.ndarray]] | None = None) -> dict:
    """Write the int8 model in the shipped layout (``layout.write_model``); returns what was done.

    ``calibration`` (model input feeds) is needed for static activations only.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    report: dict = {}
    excluded = _matching_nodes(in_path, config.exclude)
    report["excluded_nodes"] = len(excluded)
    tmp = in_path.with_name(in_path.stem + ".matmul.onnx")  # beside the input, not in the shipped folder
    quantize_dynamic(
        str(in_path), str(tmp), per_channel=config.per_channel, reduce_range=config.reduce_range,
        weight_type=QuantType.QInt8, op_types_to_quantize=list(config.op_types), nodes_to_exclude=excluded,
        # The fused graph's custom ops lack type info; the quantizer needs a default.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )
    model = onnx.load(str(tmp))
    tmp.unlink()
    if config.activations == "per-row":
        report["per_row"] = per_row_activations(model)
    elif config.activations == "static":
        if calibration is None:
            raise ValueError("static activation scales need calibration feeds")
        report["static"] = calibrated_static_activations(model, calibration, config.static_margin)
    # "per-tensor" is what quantize_dynamic wrote; export_model has refused any other value.
    if config.embedding == "int8-per-row":
        report["embedding_table"] = quantize_embedding_rows(model)
    elif config.embedding != "fp32":
        raise ValueError(f"unknown embedding quantization {config.embedding!r}")
    report["quantized_nodes"] = sum(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear") for n in model.graph.node)
    write_model(model, out_path)  # the shipped layout directly: no extra save and reload of the weights
    return report
