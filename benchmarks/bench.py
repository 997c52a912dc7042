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
import csv
import datetime as dt
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.gemm_floor import floor_session
from mstsb_onnx.eval import benchmark as bm

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OURS = "ours int8"
BASELINE = "torch fp32 (ST)"
FLOOR = "int8 GEMM floor"  # the linear layers alone (benchmarks/gemm_floor.py), rows = batch x tokens
LENGTHS = (8, 16, 32, 64, 128)
LANGS = 15


def load_sample(path: Path, n: int, seed: int = 0) -> list[str]:
    """A fixed sample of ``n`` real sentences, the same number from each language."""
    by_lang: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for col in ("sentence1", "sentence2"):
                if row[col].strip():
                    by_lang.setdefault(row["lang"], []).append(row[col])
    rng = np.random.default_rng(seed)
    per = -(-n // len(by_lang))
    out = []
    for lang in sorted(by_lang):
        pool = list(dict.fromkeys(by_lang[lang]))
        out += [pool[i] for i in rng.choice(len(pool), per, replace=False)]
    rng.shuffle(out)
    return out[:n]


# --- artifacts ---------------------------------------------------------------------------------


def prepare(models_dir: Path, force: bool) -> dict[str, Path]:
    """Base-shaped random checkpoint, our fp32 and int8 exports, and ST's avx512_vnni ONNX folder."""
    from benchmarks.xlmr import cached_base_random
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

        emb = Embedder(paths["int8" if name == OURS else "fp32"], threads=threads)
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
    if name == "ST ONNX int8":
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
    "ST ONNX int8": (
        "from sentence_transformers import SentenceTransformer; SentenceTransformer({p!r}, backend='onnx', "
        "device='cpu', model_kwargs={{'file_name': 'onnx/model_qint8_avx512_vnni.onnx'}}).encode(['hello world'])"
        + _STAMP
    ),
    BASELINE: "from sentence_transformers import SentenceTransformer; "
              "SentenceTransformer({p!r}, device='cpu').encode(['hello world'])" + _STAMP,
}
COLD_PATH = {OURS: "int8", "ST ONNX int8": "st_onnx", BASELINE: "base"}


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
        "import json, sys; from benchmarks import bench; "
        f"p = bench.paths_only({str(models_dir)!r}); "
        f"enc = bench.make_variant({variant!r}, p, {threads}); "
        f"texts = json.loads(open({str(texts_file)!r}, encoding='utf-8').read()); [enc(texts, 32) for _ in range(3)]; "
        "print(json.dumps(bench.proc_status_mib('VmHWM')))"
    )
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=HERE.parent)
    return float(res.stdout.strip().splitlines()[-1])


def proc_status_mib(field: str, pid: int | str = "self") -> float:
    """A memory line of /proc/PID/status in MiB: VmRSS (now) or VmHWM (peak; not ru_maxrss,
    which Linux carries over fork+exec from the parent)."""
    status = Path(f"/proc/{pid}/status")
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in {status}")


def paths_only(models_dir: str) -> dict[str, Path]:
    from benchmarks.xlmr import BASE_RANDOM_DIR, default_cache_dir

    m = Path(models_dir)
    # int8_batch: per-batch activation scales, made by benchmarks/activations.py for the comparisons.
    return {"base": default_cache_dir() / BASE_RANDOM_DIR, "int8": m / "xlmr-base-random-int8",
            "int8_batch": m / "xlmr-base-random-int8-batch",
            "fp32": m / "xlmr-base-random-fp32", "st_onnx": m / "xlmr-base-random-st-onnx"}


def fixed_texts(paths: dict[str, Path], n_tokens: int, n_texts: int) -> list[str]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(paths["int8"] / "tokenizer.json"))
    tok.no_truncation()
    words = "the of and a to in is was for on that with by as at from his her it an were are which this".split()
    words += "Mann Frau maison ciudad 城市 男人 город мужчина kadın adam uomo città man vrouw".split()
    return bm.texts_with_tokens(lambda t: len(tok.encode(t).ids), words, n_tokens, n_texts)


# --- report ------------------------------------------------------------------------------------


def machine_info() -> dict:
    import importlib.metadata as md

    from mstsb_onnx.cpus import available_cpus, cpu_fields

    fields = cpu_fields()  # the first processor's entries; empty where /proc/cpuinfo is unreadable
    cpu = "unknown"
    if fields:
        # A VM's model name can be as bare as "AMD EPYC"; family and model tell the generation
        # (AMD family 25 = Zen 3/4, 26 = Zen 5).
        cpu = f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ("avx512_vnni", "avx_vnni", "avx512f", "avx2", "amx_int8") if f in flags]

    versions = {}
    for dist in ("onnxruntime", "torch", "transformers", "sentence-transformers", "optimum-onnx", "tokenizers", "numpy"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return {"cpu": cpu, "isa": isa, "cores_available": available_cpus(), "python": platform.python_version(),
            "versions": versions, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _line_plot(series: dict[str, tuple[list[int], list[float]]], path: Path, **axes: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    ax.set(**axes)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(results: dict, out_dir: Path) -> None:
    t = str(max(int(k) for k in results["latency"]))
    lat, thr = results["latency"][t], results["throughput"][t]
    _line_plot({n: ([int(L) for L in lat], [1000 * lat[L][n]["median"] for L in lat]) for n in next(iter(lat.values()))},
               out_dir / "latency_vs_tokens.png", xlabel="tokens (batch 1)", ylabel="median latency, ms",
               yscale="log", title=f"Batch-1 latency vs tokens ({t} threads)")
    _line_plot({n: ([int(b) for b in thr], [thr[b][n]["median"] for b in thr]) for n in next(iter(thr.values()))},
               out_dir / "throughput_vs_batch.png", xlabel="batch size", ylabel="sentences / s", xscale="log",
               yscale="log", title=f"Throughput on real multilingual sentences ({t} threads)")


def _fmt(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.2f}"


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


def _provenance_line(r: dict) -> str:
    p = r.get("provenance")
    if not p:
        return "Code: not recorded (a run from before results recorded their commit)."
    code, int8 = p["code"], p["exports"]["int8"]
    dirty = " (uncommitted changes)" if code.get("dirty") else ""
    return (f"Code: commit {str(code.get('commit'))[:12]}{dirty}; int8 export recipe `{int8['recipe']}`, "
            f"activation scales {timed_activations(r)}.")


def timed_activations(r: dict) -> str:
    """How the timed int8 export scaled activations; runs that did not record it used per-tensor, then the only default."""
    return (r.get("provenance") or {}).get("exports", {}).get("int8", {}).get("activations") or "per-tensor"


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` (`python -m benchmarks.bench`); speed figures from the run of "
        f"{r.get('speed_measured', m['date'])}, memory/cold start from {r.get('process_measured', m['date'])}.",
        f"Machine: {m['cpu']} ({', '.join(m['isa'])}), {m['cores_available']} cores available, Python {m['python']}.",
        _provenance_line(r),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "Model: XLM-R-base-shaped (12 layers, hidden 768, vocab 250,002) with random weights; "
        "accuracy figures come from the stand-in (`benchmarks/results/sts-dev.md`).",
        "Ratios are against `torch fp32 (ST)` (sentence-transformers `encode`, length-sorted) in the same run; "
        "every figure is a median of interleaved rounds after warm-up.",
        "",
    ]
    for t, thr in r["throughput"].items():
        lines += [f"## Throughput, real multilingual sentences, {t} thread(s) (sentences/s, ratio vs torch fp32)", ""]
        names = list(next(iter(thr.values())))
        lines += ["| batch | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for b, row in thr.items():
            base = row[BASELINE]["median"]
            lines.append(f"| {b} | " + " | ".join(f"{row[n]['median']:.1f} ({row[n]['median'] / base:.2f}x)" for n in names) + " |")
        n_texts = {row[names[0]]["n_texts"] for row in thr.values()}
        lines += ["", f"Sample: {max(n_texts)} sentences, {LANGS} languages (batch 1: the first {min(n_texts)}).", ""]
    for t, lat in r["latency"].items():
        lines += [f"## Batch-1 latency, {t} thread(s) (ms, p50 / p99, speed-up vs torch fp32)", ""]
        names = list(next(iter(lat.values())))
        lines += ["| tokens | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for L, row in lat.items():
            base = row[BASELINE]["median"]
            lines.append(f"| {L} | " + " | ".join(
                f"{1000 * row[n]['median']:.1f} / {1000 * row[n]['p99']:.1f} ({base / row[n]['median']:.1f}x)" for n in names) + " |")
        lines.append("")
    for t, fx in r["fixed"].items():
        lines += [f"## Fixed batch 32 x 32 tokens, {t} thread(s)", "", "| variant | sentences/s | vs torch fp32 | vs int8 GEMM floor |", "|---|---|---|---|"]
        floor = fx[FLOOR]
        for n, v in fx.items():
            lines.append(f"| {n} | {v:.1f} | {v / fx[BASELINE]:.2f}x | {100 * v / floor:.0f}% |")
        lines.append("")
    lines += ["## Memory, size, cold start", "", "| variant | peak RSS at batch 32 x 128 (MiB) | vs torch fp32 | size on disk (MB) | cold start to first embedding (s, median) | to process exit (s) |", "|---|---|---|---|---|---|"]
    for n, rss in r["peak_rss_mib"].items():
        cold = r["cold_start"].get(n, {})
        size = r["size_mb"].get(n)
        lines.append(f"| {n} | {rss:.0f} | {rss / r['peak_rss_mib'][BASELINE]:.0%} | "
                     f"{'' if size is None else f'{size:.0f}'} | {_fmt(cold.get('median'))} | {_fmt(cold.get('to_exit_median'))} |")
    lines += ["", "![latency](results/latency_vs_tokens.png)", "", "![throughput](results/throughput_vs_batch.png)", ""]
    for name, title in (("peers.md", "Against OpenVINO and CTranslate2 (`benchmarks/peers.py`)"),
                        ("ovep.md", "onnxruntime's OpenVINO execution provider (`benchmarks/ovep.py`)"),
                        ("activations.md", "Batch-invariant int8: per-row and static activation scales (`benchmarks/activations.py`)"),
                        ("trim.md", "Vocabulary trims: size, cold start, memory, speed (`benchmarks/trim.py`)"),
                        ("trim-sts.md", "Vocabulary trims: 31 STS tasks (`benchmarks/trim.py`)"),
                        ("ray.md", "One process vs Ray Data, 2 actors (`benchmarks/bench_ray.py`)"),
                        ("load.md", "Server load and soak (`benchmarks/load.py`, 5,000 requests, 32 clients, "
                                    "1-4 sentences each; client and server share the 2 cores)")):
        if (RESULTS / name).is_file():
            lines += [f"## {title}", "", (RESULTS / name).read_text(encoding="utf-8").strip(), ""]
            if name == "trim.md" and (RESULTS / "trim_size_cold.png").is_file():
                lines += ["![trims](results/trim_size_cold.png)", ""]
    return "\n".join(lines)


HEADLINE_START, HEADLINE_END = "<!-- headline: generated by make bench from bench.json and sts-dev.json -->", "<!-- /headline -->"
ST_ONNX = "ST ONNX int8"


def headline(r: dict, sts: dict) -> str:
    """The README's one table: speed, memory, size, cold start (bench.json) and accuracy (sts-dev.json)."""
    t = str(max(int(k) for k in r["throughput"]))
    cols = (BASELINE, ST_ONNX, OURS)
    tp, lat = r["throughput"][t]["32"], r["latency"][t]["16"]

    def row(label: str, values: dict, fmt: str, better: str = "") -> str:
        cells = [f"{values[c]:{fmt}}" if c in values else "-" for c in cols]
        cells[-1] = f"**{cells[-1]}**{better}"
        return f"| {label} | " + " | ".join(cells) + " |"

    sp = {c: tp[c]["median"] for c in cols}
    ms = {c: 1000 * lat[c]["median"] for c in cols}
    summary = sts["summary"]
    column = "ONNX int8 per-row" if timed_activations(r) == "per-row" else "ONNX int8"  # the timed export's kind
    acc = {BASELINE: 100 * summary["torch fp32"]["avg_spearman"], OURS: 100 * summary[column]["avg_spearman"]}
    lines = [
        HEADLINE_START,
        f"| {t} threads, XLM-R-base-shaped model | torch fp32 (sentence-transformers) | sentence-transformers ONNX int8 | ours int8 |",
        "|---|---|---|---|",
        row("real multilingual sentences, batch 32, sent/s", sp, ".1f", f" ({sp[OURS] / sp[BASELINE]:.1f}x torch)"),
        row("one text of 16 tokens, ms", ms, ".1f", f" ({ms[BASELINE] / ms[OURS]:.1f}x faster)"),
        row("peak RSS embedding 32 x 128 tokens, MiB", r["peak_rss_mib"], ".0f"),
        row("model on disk, MB", r["size_mb"], ".0f"),
        row("cold start, new process to first vector, s", {c: v["median"] for c, v in r["cold_start"].items()}, ".2f"),
        row("31 STS tasks, avg Spearman x 100 (stand-in, dev half)", acc, ".2f", f" ({acc[OURS] - acc[BASELINE]:+.2f})"),
        "",
        f"Speed from the run of {r['speed_measured'][:16].replace('T', ' ')} on {r['machine']['cpu']} "
        f"({r['machine']['cores_available']} cores), int8 activation scales {timed_activations(r)}; accuracy from `make eval`. "
        "Full tables: [benchmarks/RESULTS.md](benchmarks/RESULTS.md), "
        "[benchmarks/results/sts-dev.md](benchmarks/results/sts-dev.md).",
        HEADLINE_END,
    ]
    return "\n".join(lines)


def write_headline(readme: Path, r: dict, sts: dict) -> None:
    """Replace the README's headline block with ``headline`` (the block's markers stay)."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(HEADLINE_START), text.index(HEADLINE_END) + len(HEADLINE_END)
    readme.write_text(text[:start] + headline(r, sts) + text[end:], encoding="utf-8")


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="sentences-unscored.csv")
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--sample", type=int, default=2048)
    p.add_argument("--one-thread-sample", type=int, default=512, help="smaller sample for the 1-thread runs")
    p.add_argument("--batch1-sample", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds for throughput")
    p.add_argument("--latency-rounds", type=int, default=8, help="rounds of 5 timed calls per latency point")
    p.add_argument("--force", action="store_true", help="rebuild the exports")
    p.add_argument("--parts", nargs="+", choices=["speed", "process", "report"], default=["speed", "process"],
                   help="speed: latency, fixed shapes, throughput; process: peak RSS, cold start, size. "
                        "Parts not run keep their figures from the last bench.json")
    args = p.parse_args(argv)

    RESULTS.mkdir(exist_ok=True)
    args.models_dir = args.models_dir.resolve()
    if args.parts == ["report"]:  # regenerate RESULTS.md from the JSON files, measure nothing
        results = json.loads((RESULTS / "bench.json").read_text())
        (HERE / "RESULTS.md").write_text(markdown(results), encoding="utf-8")
        write_headline(HERE.parent / "README.md", results, json.loads((RESULTS / "sts-dev.json").read_text()))
        return 0
    paths = prepare(args.models_dir, args.force)
    sample = load_sample(args.data, args.sample)
    names = [BASELINE, "torch int8", "ONNX fp32", "ST ONNX int8", OURS]
    previous = RESULTS / "bench.json"
    results: dict = json.loads(previous.read_text()) if set(args.parts) != {"speed", "process"} else {}
    results.update({"machine": machine_info(), "config": vars(args) | {
        "data": str(args.data), "models_dir": str(args.models_dir)}, "provenance": provenance(paths)})
    by_len = {L: fixed_texts(paths, L, 4) for L in LENGTHS}
    fixed32 = fixed_texts(paths, 32, 32)
    if "speed" in args.parts:
        results.update(latency={}, throughput={}, fixed={}, speed_measured=results["machine"]["date"])
    for t in args.threads if "speed" in args.parts else []:
        print(f"== {t} thread(s)", flush=True)
        variants = {n: make_variant(n, paths, t) for n in names + ["torch fp32 (card)"]}
        floor = floor_session(t)
        rows_of = {texts[0]: L for L, texts in by_len.items()}  # batch 1: rows = tokens
        results["latency"][str(t)] = bm.latency_table(
            variants | {FLOOR: lambda texts, bs, f=floor, rows=rows_of: f(rows[texts[0]])}, by_len, args.latency_rounds)
        print("latency done", flush=True)
        calls = {n: (lambda fn=fn: fn(fixed32, 32)) for n, fn in variants.items()}
        calls[FLOOR] = lambda f=floor: f(32 * 32)
        fixed = bm.interleaved(calls, rounds=5, settle=1, per_round=2)
        results["fixed"][str(t)] = {n: 32 / bm.stats(v)["median"] for n, v in fixed.items()}
        print("fixed done", flush=True)
        tp = {n: variants[n] for n in names}
        texts = sample if t > 1 else sample[: args.one_thread_sample]
        results["throughput"][str(t)] = bm.throughput_table(tp, texts, (1, 8, 32, 128), args.rounds, args.batch1_sample)
        print("throughput done", flush=True)
        del variants, tp, calls, floor
    t_max = max(args.threads)
    if "process" in args.parts:
        rss_texts = fixed_texts(paths, 128, 32)
        results["peak_rss_mib"] = {n: peak_rss(n, args.models_dir, t_max, rss_texts) for n in names}
        results["cold_start"] = cold_start(paths, t_max, rounds=5)
        results["process_measured"] = results["machine"]["date"]
    results["size_mb"] = {BASELINE: (paths["base"] / "model.safetensors").stat().st_size / 1e6,
                          "ONNX fp32": dir_size_mb(paths["fp32"]), OURS: dir_size_mb(paths["int8"]),
                          "ST ONNX int8": (paths["st_onnx"] / "onnx" / "model_qint8_avx512_vnni.onnx").stat().st_size / 1e6}
    (RESULTS / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    plot(results, RESULTS)
    md = markdown(results)
    (HERE / "RESULTS.md").write_text(md, encoding="utf-8")
    # As written to bench.json (string keys), which is what the report step and the tests read.
    write_headline(HERE.parent / "README.md", json.loads((RESULTS / "bench.json").read_text()),
                   json.loads((RESULTS / "sts-dev.json").read_text()))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
