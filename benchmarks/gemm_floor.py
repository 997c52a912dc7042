"""The int8 GEMM floor: the time of an XLM-R encoder's linear layers alone, in int8.

Method: an ONNX graph holding only the encoder's MatMuls with XLM-R-base shapes -- per layer
Q, K, V, attention-output (768x768), FFN-in (768x3072) and FFN-out (3072x768) -- chained as in
the model, quantized with onnxruntime's dynamic int8 (per-channel weights, activations quantized
at run time, exactly the kernels the real model uses), run on [batch x tokens, 768] inputs with
the same session options. Attention scores, softmax, layernorm, GELU, embeddings and pooling are
left out, so a whole model can approach this floor but not beat it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def build_floor_model(path: Path, layers: int = 12, hidden: int = 768, ff: int = 3072, seed: int = 0) -> Path:
    """The floor graph in onnxruntime's dynamic int8 at ``path``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = build_floor_fp32(path.with_suffix(".fp32.onnx"), layers, hidden, ff, seed)
    quantize_dynamic(str(fp32), str(path), per_channel=True, weight_type=QuantType.QInt8)
    fp32.unlink()
    return path


def build_floor_fp32(path: Path, layers: int = 12, hidden: int = 768, ff: int = 3072, seed: int = 0) -> Path:
    """The floor graph in fp32 (input ``x`` [rows, hidden]), for engines that quantize it themselves."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    h = "x"

    def linear(name: str, inp: str, k: int, n: int) -> str:
        w = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
        inits.append(numpy_helper.from_array(w, name + "_w"))
        nodes.append(helper.make_node("MatMul", [inp, name + "_w"], [name], name=name))
        return name

    for i in range(layers):
        q = linear(f"l{i}_q", h, hidden, hidden)
        k = linear(f"l{i}_k", h, hidden, hidden)
        v = linear(f"l{i}_v", h, hidden, hidden)
        # Sum q, k, v so none is dead code (one cheap elementwise pass, as attention reads them).
        nodes.append(helper.make_node("Sum", [q, k, v], [f"l{i}_qkv"]))
        o = linear(f"l{i}_o", f"l{i}_qkv", hidden, hidden)
        f1 = linear(f"l{i}_ffn_in", o, hidden, ff)
        h = linear(f"l{i}_ffn_out", f1, ff, hidden)
    graph = helper.make_graph(
        nodes, "int8_gemm_floor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", hidden])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["rows", hidden])], inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def floor_session(threads: int, spin: bool = True) -> Callable[[int], object]:
    """``run(rows)``: the floor graph once on ``rows`` x 768 activations (one session, inputs cached)."""
    from mstsb_onnx.session import make_session

    tmp = Path(tempfile.mkdtemp(prefix="gemm-floor-"))
    sess = make_session(build_floor_model(tmp / "floor.onnx"), threads=threads, spin=spin)
    inputs: dict[int, np.ndarray] = {}

    def run(rows: int) -> object:
        if rows not in inputs:
            inputs[rows] = np.random.default_rng(rows).standard_normal((rows, 768)).astype(np.float32)
        return sess.run(None, {"x": inputs[rows]})
    return run
