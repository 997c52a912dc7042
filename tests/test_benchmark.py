"""The benchmark's own machinery: exact-length texts, interleaving, statistics, the GEMM floor.

Speed itself is never asserted here (benchmarks measure it); these check that the harness
measures what RESULTS.md says it does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mstsb_onnx.eval import benchmark as bm


def _count_words(text: str) -> int:
    """A fake tokenizer: one token per word plus two specials, like <s> ... </s>."""
    return len(text.split()) + 2


@pytest.mark.parametrize("n_tokens", [3, 8, 16, 128], ids=lambda n: f"{n}tok")
def test_texts_with_tokens_have_exactly_that_many(n_tokens: int) -> None:
    texts = bm.texts_with_tokens(_count_words, ["alpha", "beta", "gamma"], n_tokens, 5)
    assert len(texts) == 5
    assert all(_count_words(t) == n_tokens for t in texts)


def test_texts_with_tokens_says_when_the_length_cannot_be_made() -> None:
    # Two specials are always there: one token is out of reach.
    with pytest.raises(ValueError, match="exactly 1 tokens"):
        bm.texts_with_tokens(_count_words, ["alpha"], 1, 2)


def test_texts_with_tokens_on_a_real_tokenizer(tiny_int8: Path) -> None:
    from mstsb_onnx import Embedder

    emb = Embedder(tiny_int8)
    count = lambda text: len(emb.tokenize([text], prompt="")[0])  # noqa: E731
    words = "the city man woman Stadt ville город 城市 kadın".split()
    for n in (8, 16, 32):
        texts = bm.texts_with_tokens(count, words, n, 3)
        assert [count(t) for t in texts] == [n] * 3


def test_interleaved_alternates_variants_with_warmup_and_settle_calls_untimed() -> None:
    log: list[str] = []
    calls = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    times = bm.interleaved(calls, rounds=3, warmup=2, settle=1, per_round=2)
    assert log[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up, each variant in turn
    rounds = log[6:]
    # Every round: each variant's settle call then its timed calls, variants in order.
    assert rounds == (["a"] * 3 + ["b"] * 3 + ["c"] * 3) * 3
    assert {name: len(t) for name, t in times.items()} == {"a": 6, "b": 6, "c": 6}
    assert all(s >= 0 for t in times.values() for s in t)


def test_stats_are_median_p99_min_and_count() -> None:
    # Worked by hand: sorted 0.1 .. 0.5; the median is the middle one; the 99th percentile with
    # linear interpolation is 0.4 + 0.96 * (0.5 - 0.4).
    s = bm.stats([0.5, 0.1, 0.3, 0.2, 0.4])
    assert s["median"] == 0.3 and s["min"] == 0.1 and s["n"] == 5
    assert s["p99"] == pytest.approx(0.496)


def test_gemm_floor_graph_is_the_encoders_linear_chain_in_int8(tmp_path: Path) -> None:
    """The floor RESULTS.md divides by: 6 int8 MatMuls per layer with XLM-R's shapes, chained.

    Rebuilt in numpy from the same seed, the int8 graph must compute the same chain (cosine per
    row), so the floor times the real amount of work, not a shortcut.
    """
    import onnx

    from benchmarks.gemm_floor import build_floor_model
    from mstsb_onnx.session import make_session

    layers, hidden, ff = 2, 32, 128
    path = build_floor_model(tmp_path / "floor.onnx", layers=layers, hidden=hidden, ff=ff, seed=3)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("MatMulInteger") == 6 * layers
    assert "MatMul" not in ops  # nothing left in fp32

    rng = np.random.default_rng(3)  # the builder's draws, in its order
    x = np.random.default_rng(0).standard_normal((16, hidden)).astype(np.float32)
    h = x.astype(np.float64)
    for _ in range(layers):
        q, k, v, o = (rng.standard_normal((hidden, hidden)) * 0.02 for _ in range(4))
        f1 = rng.standard_normal((hidden, ff)) * 0.02
        f2 = rng.standard_normal((ff, hidden)) * 0.02
        h = ((h @ q + h @ k + h @ v) @ o) @ f1 @ f2
    # The runtime's session: on CPUs without VNNI a bare one saturates (cosine 0.895 measured on AVX2).
    (got,) = make_session(path, threads=1).run(None, {"x": x})
    assert got.shape == (16, hidden)
    cos = (got * h).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(h, axis=1))
    assert cos.min() > 0.99, cos.min()


def test_results_md_is_what_the_committed_bench_json_renders() -> None:
    """RESULTS.md is written from bench.json (and ray.md / load.md) by one command, never by hand."""
    import json

    from benchmarks import common, report

    results = json.loads((common.RESULTS / "bench.json").read_text(encoding="utf-8"))
    rendered = report.markdown(results)
    assert rendered == (common.HERE / "RESULTS.md").read_text(encoding="utf-8")
    # The floor column is ours / floor of the same run, as docs/performance.md quotes it.
    for threads, fixed in results["fixed"].items():
        share = f"{100 * fixed[common.OURS] / fixed[common.FLOOR]:.0f}%"
        table = rendered.split(f"### Fixed batch 32 x 32 tokens, {threads} thread(s)")[1].split("##")[0]
        (ours,) = [line for line in table.splitlines() if line.startswith(f"| {common.OURS} |")]
        assert ours.startswith(f"| {common.OURS} | {fixed[common.OURS]:.1f} | ") and ours.endswith(f"| {share} |")


def test_readme_headline_is_what_the_committed_results_render() -> None:
    """The README's one table is generated from bench.json and sts-dev.json (make bench), never retyped."""
    import json

    from benchmarks import common, report

    readme = (common.HERE.parent / "README.md").read_text(encoding="utf-8")
    r = json.loads((common.RESULTS / "bench.json").read_text(encoding="utf-8"))
    sts = json.loads((common.RESULTS / "sts-dev.json").read_text(encoding="utf-8"))
    block = readme[readme.index(report.HEADLINE_START) : readme.index(report.HEADLINE_END) + len(report.HEADLINE_END)]
    assert block == report.headline(r, sts)
    # Spot-check the renderer against the JSON, independently of its formatting code paths.
    t = str(max(int(k) for k in r["throughput"]))
    ours = r["throughput"][t]["32"][common.OURS]["median"]
    torch = r["throughput"][t]["32"][common.BASELINE]["median"]
    assert f"**{ours:.1f}** ({ours / torch:.1f}x torch)" in block
    # The accuracy column is the timed export's kind, read from the run's own record.
    timed = ((r.get("provenance") or {}).get("exports", {}).get("int8", {}).get("activations")) or "per-tensor"
    column = {"per-row": "ONNX int8 per-row", "per-tensor": "ONNX int8"}[timed]
    delta = 100 * (sts["summary"][column]["avg_spearman"] - sts["summary"]["torch fp32"]["avg_spearman"])
    assert f"({delta:+.2f})" in block
