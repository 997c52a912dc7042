"""Benchmark against PyTorch: latency, throughput, memory, cold start, size -- one command.

    python -m benchmarks.bench --data ../shared/data/mstsb/sentences-unscored.csv   # or: make bench

Model: a full-size XLM-R-base-shaped checkpoint with random weights (the card's config; speed
does not depend on weight values), built locally. Variants, same machine and thread count,
interleaved round by round, medians after warm-up:

* ``torch fp32 (ST)``      sentence-transformers ``encode`` (length-sorted), the card's model as users run it
* ``torch fp32 (card)``    the card's transformers + mean pooling code (batch 1 and fixed shapes only)
* ``torch int8``           ``torch.ao.quantization.quantize_dynamic`` on every nn.Linear, via ST
* ``ONNX fp32``            our fp32 export through ``Embedder``
* ``ST ONNX int8``         sentence-transformers' own ``backend="onnx"`` with optimum's avx512_vnni file
* ``ours int8``            our int8 export through ``Embedder``

Writes ``benchmarks/results/bench.json``, ``benchmarks/RESULTS.md`` and two PNG plots.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import report
from benchmarks.common import (BASELINE, FLOOR, HERE, OURS, RESULTS, ST_ONNX, dir_size_mb, fixed_texts, load_sample,
                               machine_info)
from benchmarks.gemm_floor import floor_session
from mstsb_onnx.eval import benchmark as bm

LENGTHS = (8, 16, 32, 64, 128)


# --- artifacts ---------------------------------------------------------------------------------


def prepare(models_dir: Path, force: bool) -> dict[str, Path]:
    """Base-shaped random checkpoint, our fp32 and int8 exports, and ST's avx512_vnni ONNX folder."""
    from testmodels.xlmr import cached_base_random
    from mstsb_onnx.export import export_model
    from mstsb_onnx.export.provenance import same_code
    from mstsb_onnx.manifest import MANIFEST_NAME

    base = cached_base_random()
    paths = {"base": base}

    def current(manifest: Path) -> bool:  # exports of an older base model or other code are stale
        if not manifest.is_file():
            return False
        doc = json.loads(manifest.read_text())
        return doc["source"]["model_id"] == str(base) and same_code(doc.get("exporter"))

    for mode, name in (("int8", "int8"), ("none", "fp32")):
        out = models_dir / f"xlmr-base-random-{name}"
        if force or not current(out / MANIFEST_NAME):
            export_model(str(base), out, quantize=mode, force=True)
        paths[name] = out
    st_dir = models_dir / "xlmr-base-random-st-onnx"
    marker = st_dir / "onnx" / "copied-from.txt"
    if (force or not (st_dir / "onnx" / "model_qint8_avx512_vnni.onnx").is_file()
            or not marker.is_file() or marker.read_text() != str(base)):
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

        shutil.rmtree(st_dir, ignore_errors=True)
        shutil.copytree(base, st_dir)
        model = SentenceTransformer(str(st_dir), backend="onnx", device="cpu")
        export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(st_dir))
        marker.write_text(str(base))
    paths["st_onnx"] = st_dir
    return paths


def make_variant(name: str, paths: dict[str, Path], threads: int):
    """``encode(texts, batch_size)`` for one variant, pinned to ``threads``.

    torch is imported only by the torch variants, so the ONNX variants' memory is their own.
    """

    def torch_threads(fn):
        import torch

        def run(texts, bs):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                return fn(texts, bs)
        return run

    if name == OURS or name == "ONNX fp32":
        from mstsb_onnx import Embedder

        # runners=threads: the default layout on ``threads`` cores, however many the machine has.
        emb = Embedder(paths["int8" if name == OURS else "fp32"], threads=threads, runners=threads)
        return lambda texts, bs: emb.encode(texts, batch_size=bs)
    if name in (BASELINE, "torch int8"):
        from sentence_transformers import SentenceTransformer

        import torch

        model = SentenceTransformer(str(paths["base"]), device="cpu")
        if name == "torch int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        return torch_threads(lambda texts, bs: model.encode(texts, batch_size=bs, convert_to_numpy=True))
    if name == "torch fp32 (card)":
        from mstsb_onnx.export.reference import TorchReference
        from mstsb_onnx.export.source import resolve_source

        ref = TorchReference(resolve_source(str(paths["base"])), threads=threads)
        return torch_threads(lambda texts, bs: ref.encode(texts, batch_size=bs))
    if name == ST_ONNX:
        import onnxruntime as ort
        from sentence_transformers import SentenceTransformer

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        model = SentenceTransformer(str(paths["st_onnx"]), backend="onnx", device="cpu", model_kwargs={
            "file_name": "onnx/model_qint8_avx512_vnni.onnx", "session_options": so})
        return lambda texts, bs: model.encode(texts, batch_size=bs, convert_to_numpy=True)
    raise ValueError(f"unknown variant {name!r}")


# --- process-level measurements ------------------------------------------------------------------

# Each child prints the wall clock when its first embedding exists; teardown is timed apart.
_STAMP = "; import time; print(time.time())"
COLD = {
    OURS: "from mstsb_onnx import Embedder; Embedder({p!r}, threads={t}).encode(['hello world'])" + _STAMP,
    ST_ONNX: (
        "from sentence_transformers import SentenceTransformer; SentenceTransformer({p!r}, backend='onnx', "
        "device='cpu', model_kwargs={{'file_name': 'onnx/model_qint8_avx512_vnni.onnx'}}).encode(['hello world'])"
        + _STAMP
    ),
    BASELINE: "from sentence_transformers import SentenceTransformer; "
              "SentenceTransformer({p!r}, device='cpu').encode(['hello world'])" + _STAMP,
}
COLD_PATH = {OURS: "int8", ST_ONNX: "st_onnx", BASELINE: "base"}


def cold_start(paths: dict[str, Path], threads: int, rounds: int) -> dict:
    """New process to its first embedding, imports included (what a user waits for), and to exit.

    Medians over ``rounds``; variants alternate so a noisy moment hits all of them.
    """
    first: dict[str, list[float]] = {k: [] for k in COLD}
    exit_: dict[str, list[float]] = {k: [] for k in COLD}
    for _ in range(rounds):
        for name, code in COLD.items():
            cmd = [sys.executable, "-c", code.format(p=str(paths[COLD_PATH[name]]), t=threads)]
            start = time.time()  # wall clock: the child's stamp is on the same clock
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=RESULTS)
            exit_[name].append(time.time() - start)
            first[name].append(float(done.stdout.strip().splitlines()[-1]) - start)
    return {name: bm.stats(first[name]) | {"to_exit_median": bm.stats(exit_[name])["median"]} for name in COLD}


def peak_rss(variant: str, models_dir: Path, threads: int, texts: list[str]) -> float:
    """Peak RSS (MiB) of a fresh process that loads ``variant`` and embeds ``texts`` (32 x 128 tokens)."""
    texts_file = RESULTS / ".rss-texts.json"
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    code = (
        "import json, sys; from benchmarks import bench, common; "
        f"p = common.paths_only({str(models_dir)!r}); "
        f"enc = bench.make_variant({variant!r}, p, {threads}); "
        f"texts = json.loads(open({str(texts_file)!r}, encoding='utf-8').read()); [enc(texts, 32) for _ in range(3)]; "
        "print(json.dumps(common.proc_status_mib('VmHWM')))"
    )
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=HERE.parent)
    return float(res.stdout.strip().splitlines()[-1])


def provenance(paths: dict[str, Path]) -> dict:
    """The code that ran the bench and the exports it timed (commit, recipe), from their manifests."""
    from mstsb_onnx.export.provenance import code_revision
    from mstsb_onnx.manifest import read_manifest

    exports = {}
    for name in ("int8", "fp32"):
        m = read_manifest(paths[name])
        exports[name] = {"recipe": m.recipe_name, "quantization": m.quantization_mode,
                         "activations": m.raw.get("quantization", {}).get("activations"),
                         "exporter": m.raw.get("exporter")}
    return {"code": code_revision(), "exports": exports}


VARIANTS = [BASELINE, "torch int8", "ONNX fp32", ST_ONNX, OURS]


def speed(paths: dict[str, Path], threads: int, sample: list[str], args: argparse.Namespace) -> dict:
    """Latency by length, fixed 32 x 32, and real-text throughput by batch size, at ``threads``."""
    print(f"== {threads} thread(s)", flush=True)
    by_len = {L: fixed_texts(paths, L, 4) for L in LENGTHS}
    fixed32 = fixed_texts(paths, 32, 32)
    variants = {n: make_variant(n, paths, threads) for n in VARIANTS + ["torch fp32 (card)"]}
    floor = floor_session(threads)
    rows_of = {texts[0]: L for L, texts in by_len.items()}  # batch 1: rows = tokens
    latency = bm.latency_table(
        variants | {FLOOR: lambda texts, bs, f=floor, rows=rows_of: f(rows[texts[0]])}, by_len, args.latency_rounds)
    print("latency done", flush=True)
    calls = {n: (lambda fn=fn: fn(fixed32, 32)) for n, fn in variants.items()}
    calls[FLOOR] = lambda f=floor: f(32 * 32)
    fixed = {n: 32 / bm.stats(v)["median"] for n, v in bm.interleaved(calls, rounds=5, settle=1, per_round=2).items()}
    print("fixed done", flush=True)
    texts = sample if threads > 1 else sample[: args.one_thread_sample]
    throughput = bm.throughput_table({n: variants[n] for n in VARIANTS}, texts, (1, 8, 32, 128), args.rounds,
                                     args.batch1_sample)
    print("throughput done", flush=True)
    return {"latency": latency, "fixed": fixed, "throughput": throughput}


def process(paths: dict[str, Path], models_dir: Path, threads: int) -> dict:
    """Peak RSS at 32 x 128 tokens and cold start, each variant in fresh processes."""
    rss_texts = fixed_texts(paths, 128, 32)
    return {"peak_rss_mib": {n: peak_rss(n, models_dir, threads, rss_texts) for n in VARIANTS},
            "cold_start": cold_start(paths, threads, rounds=5)}


def sizes(paths: dict[str, Path]) -> dict[str, float]:
    return {BASELINE: (paths["base"] / "model.safetensors").stat().st_size / 1e6,
            "ONNX fp32": dir_size_mb(paths["fp32"]), OURS: dir_size_mb(paths["int8"]),
            ST_ONNX: (paths["st_onnx"] / "onnx" / "model_qint8_avx512_vnni.onnx").stat().st_size / 1e6}


def write_report() -> str:
    """RESULTS.md, the plots and the README headline, from bench.json and sts-dev.json as stored."""
    results = json.loads((RESULTS / "bench.json").read_text())
    report.plot(results, RESULTS)
    md = report.markdown(results)
    (HERE / "RESULTS.md").write_text(md, encoding="utf-8")
    report.write_headline(HERE.parent / "README.md", results, json.loads((RESULTS / "sts-dev.json").read_text()))
    return md


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="sentences-unscored.csv")
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="cores per variant (ours: threads and runners)")
    p.add_argument("--sample", type=int, default=2048)
    p.add_argument("--one-thread-sample", type=int, default=512, help="smaller sample for the 1-thread runs")
    p.add_argument("--batch1-sample", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds for throughput")
    p.add_argument("--latency-rounds", type=int, default=8, help="rounds of 5 timed calls per latency point")
    p.add_argument("--force", action="store_true", help="rebuild the exports")
    p.add_argument("--parts", nargs="+", choices=["speed", "process", "report"], default=["speed", "process"],
                   help="speed: latency, fixed shapes, throughput; process: peak RSS, cold start, size; "
                        "report alone: RESULTS.md and the README headline from the stored results. "
                        "Parts not run keep their figures from the last bench.json")
    args = p.parse_args(argv)
    args.models_dir = args.models_dir.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    if args.parts == ["report"]:  # measure nothing
        write_report()
        return 0
    paths = prepare(args.models_dir, args.force)
    previous = RESULTS / "bench.json"
    results: dict = json.loads(previous.read_text()) if set(args.parts) != {"speed", "process"} else {}
    results.update({"machine": machine_info(), "config": vars(args) | {
        "data": str(args.data), "models_dir": str(args.models_dir)}, "provenance": provenance(paths)})
    if "speed" in args.parts:
        sample = load_sample(args.data, args.sample)
        by_threads = {str(t): speed(paths, t, sample, args) for t in args.threads}
        results.update({part: {t: r[part] for t, r in by_threads.items()} for part in ("latency", "fixed", "throughput")})
        results["speed_measured"] = results["machine"]["date"]
    if "process" in args.parts:
        results.update(process(paths, args.models_dir, max(args.threads)), process_measured=results["machine"]["date"])
    results["size_mb"] = sizes(paths)
    (RESULTS / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(write_report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
