"""Static activation scales (``--activations static``): constants in the graph, vectors free of batch-mates.

Static scales lost on accuracy (benchmarks/results/activations.md) and are an option, not the
default; these tests check that the option computes what it says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import _quiet, tiny_lines

from mstsb_onnx import Embedder
from mstsb_onnx.export.staticquant import static_activations, uint8_params


@pytest.mark.parametrize(("lo", "hi", "margin", "scale", "zero_point"), [
    (-1.0, 3.0, 1.0, 4 / 255, 64),         # zero point = round(1 / (4/255)) = round(63.75)
    (0.5, 2.0, 1.0, 2 / 255, 0),           # the range always holds 0, like DynamicQuantizeLinear's
    (-2.0, -0.5, 1.0, 2 / 255, 255),
    (-1.0, 3.0, 1.5, 6 / 255, 64),         # widened on both sides
    (0.0, 0.0, 1.0, 1.0, 0),               # an all-zero activation gets a usable scale
], ids=["mixed", "positive", "negative", "margin", "zero"])
def test_uint8_params_match_dynamic_quantize_linear(lo: float, hi: float, margin: float, scale: float,
                                                    zero_point: int) -> None:
    got_scale, got_zero = uint8_params(lo, hi, margin)
    assert got_scale == pytest.approx(scale, rel=1e-12)
    assert got_zero == zero_point


@pytest.fixture(scope="module")
def tiny_static(tiny_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mstsb_onnx.export import export_model

    return export_model(str(tiny_src), tmp_path_factory.mktemp("tiny-static") / "model", activations="static",
                        log=_quiet).path


def _op_counts(folder: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_every_run_time_quantizer_becomes_a_constant_one(tiny_static: Path, tiny_int8_batch: Path) -> None:
    dynamic, static = _op_counts(tiny_int8_batch), _op_counts(tiny_static)
    assert dynamic["DynamicQuantizeLinear"] > 0
    assert "DynamicQuantizeLinear" not in static
    assert static.get("QuantizeLinear", 0) == dynamic["DynamicQuantizeLinear"]


def test_manifest_says_static(tiny_static: Path) -> None:
    from conftest import manifest_of

    q = manifest_of(tiny_static)["quantization"]
    assert q["activations"] == "static"
    assert q["static"]["static_quantizers"] == _op_counts(tiny_static)["QuantizeLinear"]
    assert "constant scales" in q["method"]


def test_a_text_gets_the_same_vector_in_any_batch(tiny_static: Path, tiny_int8_batch: Path) -> None:
    texts = tiny_lines()
    rng = np.random.default_rng(0)
    for folder, bound in ((tiny_static, 1e-5), (tiny_int8_batch, None)):
        emb = Embedder(folder, threads=1)
        alone = np.stack([emb.encode([t])[0] for t in texts])
        order = rng.permutation(len(texts))
        batched = np.empty_like(alone)
        batched[order] = emb.encode([texts[i] for i in order], batch_size=16)
        worst = float(np.abs(alone - batched).max())
        if bound is not None:
            assert worst <= bound, f"static: a text moved by {worst:.2e} with its batch-mates"
        else:  # the per-batch export on the same texts: the check above can tell the difference
            assert worst > 1e-5


def test_an_activation_without_a_range_is_refused() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dq")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("q", TensorProto.UINT8, [2])])
    with pytest.raises(ValueError, match="'x'.*'dq'"):
        static_activations(helper.make_model(graph), {}, 1.0)
