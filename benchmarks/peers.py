"""Ours against the CPU engines a user would pick instead: OpenVINO (NNCF int8) and CTranslate2 int8.

    python -m benchmarks.peers --data ../shared/data/mstsb/sentences-unscored.csv   # or: make bench

Runs in its own venv (``models/.peers-venv``: openvino, nncf, ctranslate2 beside onnxruntime and
this package; ``--setup`` builds it), never in the runtime's. XLM-R-base-shaped random model (speed
does not depend on weight values); every engine end to end -- tokenize, sort by length, pad,
infer, pool -- with the same tokenizer.json, 2 threads:

* ``ours int8``            our int8 export through ``Embedder``
* ``OpenVINO int8 LATENCY`` / ``THROUGHPUT``  our fp32 ONNX export converted by ``openvino.convert_model``,
  quantized by ``nncf.quantize(..., model_type=TRANSFORMER)`` on 300 real sentences; THROUGHPUT
  runs its streams through an ``AsyncInferQueue``
* ``CTranslate2 int8``     ``ct2-transformers-converter --quantization int8``, mean pooling over the mask here

Each is first checked to compute the same function (cosine to our fp32 export >= 0.99 on real
text). Interleaved rounds, medians; ratios are medians of per-round ratios. Load time and peak
RSS from a fresh process per engine. Writes ``benchmarks/results/peers.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import write_results  # noqa: F401  (ovep imports it from here)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
THREADS = 2
PEERS_VENV = "models/.peers-venv"
PINS = ["openvino==2026.4.1", "nncf==3.4.0", "ctranslate2==4.8.5", "sentencepiece", "protobuf"]
OURS, OV_LAT, OV_TPUT, CT2 = "ours int8", "OpenVINO int8 LATENCY", "OpenVINO int8 THROUGHPUT", "CTranslate2 int8"
# The default export (per-row activation scales) and the same model with per-batch scales, which
# is faster but not batch-invariant; only the first is "ours" in the ratios against the peers.
OURS_BATCH = "ours int8, per-batch scales"
ENGINES = (OURS, OURS_BATCH, OV_LAT, OV_TPUT, CT2)
PEERS = (OV_LAT, OV_TPUT, CT2)
Encode = Callable[[list[str], int], np.ndarray]


def setup_venv(root: Path) -> None:
    """The peers' venv: torch pinned first (else a CUDA build), then the engines, then this package."""
    import importlib.metadata as md
    import venv

    venv.EnvBuilder(with_pip=True).create(root)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    same = [f"{d}=={md.version(d)}" for d in ("onnxruntime", "tokenizers", "numpy", "transformers", "onnx")]
    subprocess.run([*pip, *PINS, *same], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(HERE.parent)], check=True)


class Batches:
    """Our tokenizer.json, truncation at 128, sorted by length, padded per batch: what every engine gets."""

    def __init__(self, tokenizer_json: Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(tokenizer_json))
        self.tok.enable_truncation(128)
        self.tok.no_padding()

    def __call__(self, texts: list[str], batch_size: int):
        ids = [e.ids for e in self.tok.encode_batch(texts)]
        order = np.argsort([-len(i) for i in ids], kind="stable")
        for start in range(0, len(ids), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(ids[r]) for r in rows)
            batch = np.ones((len(rows), width), np.int64)  # pad id 1 (XLM-R)
            mask = np.zeros((len(rows), width), np.int64)
            for j, r in enumerate(rows):
                batch[j, : len(ids[r])] = ids[r]
                mask[j, : len(ids[r])] = 1
            yield rows, batch, mask

    def run(self, texts: list[str], batch_size: int, infer: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        out: np.ndarray | None = None
        for rows, ids, mask in self(texts, batch_size):
            vec = infer(ids, mask)
            if out is None:
                out = np.empty((len(texts), vec.shape[1]), np.float32)
            out[rows] = vec
        assert out is not None
        return out


def prepare(models_dir: Path, base: Path, fp32: Path, calibration: list[str]) -> dict[str, Path]:
    """OpenVINO int8 (NNCF) from our fp32 export, CTranslate2 int8 from the checkpoint; kept if present."""
    peers = models_dir / "peers"
    ov_xml, ct2 = peers / "openvino-int8" / "model.xml", peers / "ct2-int8"
    marker = peers / "made-from.txt"
    stale = not marker.is_file() or marker.read_text() != f"{base}\n{fp32}"
    if stale or not ov_xml.is_file():
        import nncf
        import openvino as ov

        batches = Batches(fp32 / "tokenizer.json")
        feeds = [{"input_ids": ids, "attention_mask": mask} for _, ids, mask in batches(calibration, 1)]
        model = ov.convert_model(str(fp32 / "model.onnx"))
        quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(feeds))
        ov_xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(quantized, str(ov_xml))
    if stale or not (ct2 / "model.bin").is_file():
        converter = Path(sys.executable).with_name("ct2-transformers-converter")
        subprocess.run([str(converter), "--model", str(base), "--output_dir", str(ct2), "--quantization", "int8",
                        "--copy_files", "tokenizer.json", "--force"], check=True, capture_output=True)
    marker.write_text(f"{base}\n{fp32}")
    return {"ov": ov_xml, "ct2": ct2}


def _openvino(xml: Path, hint: str, batches: Batches) -> Encode:
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": hint})
    if hint == "LATENCY":
        request = compiled.create_infer_request()

        def infer(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            request.infer({"input_ids": ids, "attention_mask": mask})
            return request.get_output_tensor(0).data.copy()

        return lambda texts, bs: batches.run(texts, bs, infer)
    queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    done: list[tuple[np.ndarray, np.ndarray]] = []
    queue.set_callback(lambda request, rows: done.append((rows, request.get_output_tensor(0).data.copy())))

    def encode(texts: list[str], bs: int) -> np.ndarray:
        done.clear()
        for rows, ids, mask in batches(texts, bs):
            queue.start_async({"input_ids": ids, "attention_mask": mask}, rows)
        queue.wait_all()
        out = np.empty((len(texts), done[0][1].shape[1]), np.float32)
        for rows, vec in done:
            out[rows] = vec
        return out

    return encode


def _ctranslate2(folder: Path, batches: Batches) -> Encode:
    import ctranslate2

    encoder = ctranslate2.Encoder(str(folder), device="cpu", compute_type="int8", intra_threads=THREADS)

    def infer(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        lengths = mask.sum(1)
        out = encoder.forward_batch([row[:n].tolist() for row, n in zip(ids, lengths)])
        hidden = np.asarray(out.last_hidden_state, dtype=np.float32)
        m = mask[:, : hidden.shape[1], None].astype(np.float32)
        return (hidden * m).sum(1) / m.sum(1)

    return lambda texts, bs: batches.run(texts, bs, infer)


def engine(name: str, paths: dict[str, Path]) -> Encode:
    if name in (OURS, OURS_BATCH, "ours fp32"):
        from mstsb_onnx import Embedder

        emb = Embedder(paths[{OURS: "int8", OURS_BATCH: "int8_batch"}.get(name, "fp32")], threads=THREADS)
        return lambda texts, bs: emb.encode(texts, batch_size=bs)
    batches = Batches(paths["int8"] / "tokenizer.json")  # only the peers: ours loads its own
    if name in (OV_LAT, OV_TPUT):
        return _openvino(paths["ov"], "LATENCY" if name == OV_LAT else "THROUGHPUT", batches)
    if name == CT2:
        return _ctranslate2(paths["ct2"], batches)
    raise ValueError(f"unknown engine {name!r}")


def same_function(engines: dict[str, Encode], reference: Encode, texts: list[str]) -> dict[str, float]:
    """Worst cosine of each engine's vectors to our fp32 export's; an engine below 0.99 is refused."""
    ref = reference(texts, 32)
    out = {}
    for name, fn in engines.items():
        vec = fn(texts, 8)
        cos = (vec * ref).sum(1) / (np.linalg.norm(vec, axis=1) * np.linalg.norm(ref, axis=1))
        out[name] = float(cos.min())
        if out[name] < 0.99:
            raise SystemExit(f"{name} does not compute the same function: worst cosine {out[name]:.4f} to fp32")
    return out


def timed(engines: dict[str, Encode], workloads: dict[str, tuple[list[str], int]], rounds: int) -> dict:
    """Seconds per workload and engine, engines interleaved in every round (after one warm-up)."""
    from mstsb_onnx.eval import benchmark as bm

    out: dict[str, dict[str, list[float]]] = {}
    for label, (texts, bs) in workloads.items():
        calls = {n: (lambda fn=fn: fn(texts, bs)) for n, fn in engines.items()}
        single = bs == 1
        out[label] = bm.interleaved(calls, rounds, settle=int(single), per_round=3 if single else 1,
                                    pause=bm.LATENCY_PAUSE_S if single else 0.0)
    return out


CHILD = """
import json, sys, time
t0 = time.time()
from benchmarks import peers
paths = {{k: peers.Path(v) for k, v in json.loads(sys.argv[1]).items()}}
fn = peers.engine({name!r}, paths)
fn(["hola mundo"], 1)
loaded = time.time() - t0
texts = json.loads(open(sys.argv[2], encoding="utf-8").read())
[fn(texts, 32) for _ in range(3)]
hwm = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({{"load_s": loaded, "peak_rss_mib": hwm}}))
"""


def per_process(paths: dict[str, Path], texts_32x128: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """Load to first vector (imports included) and peak RSS embedding 32 x 128, fresh process each, medians."""
    texts_file = RESULTS / ".peers-rss.json"
    texts_file.write_text(json.dumps(texts_32x128), encoding="utf-8")
    runs: dict[str, list[dict]] = {n: [] for n in ENGINES}
    for _ in range(rounds):
        for name in ENGINES:
            done = subprocess.run([sys.executable, "-c", CHILD.format(name=name),
                                   json.dumps({k: str(v) for k, v in paths.items()}), str(texts_file)],
                                  check=True, capture_output=True, text=True, cwd=HERE.parent)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    texts_file.unlink()
    return {n: {k: float(np.median([r[k] for r in rs])) for k in ("load_s", "peak_rss_mib")} for n, rs in runs.items()}


def summarize(times: dict, workloads: dict[str, tuple[list[str], int]]) -> dict:
    """Medians per engine and, per workload, ours / best peer as the median of per-round ratios."""
    out: dict = {}
    for label, by_engine in times.items():
        texts, bs = workloads[label]
        per_round = {n: np.asarray(t).reshape(len(times[label][OURS]) // (3 if bs == 1 else 1), -1).mean(1)
                     for n, t in by_engine.items()}
        others = [n for n in by_engine if n != OURS]
        speedups = {n: float(np.median(per_round[n] / per_round[OURS])) for n in others}
        best = min((n for n in others if n in PEERS), key=lambda n: speedups[n])
        out[label] = {"median_s": {n: float(np.median(t)) for n, t in by_engine.items()},
                      "sent_per_s": {n: len(texts) / float(np.median(t)) for n, t in by_engine.items()},
                      "ours_vs_peer": speedups, "best_peer": best, "ours_vs_best": speedups[best]}
    return out


RATIOS = ("In brackets: the engine's time / ours (above 1 = ours faster), first as the median of per-round "
          "ratios, then as the ratio of the medians. The verdicts use the first: a round where the shared machine "
          "slowed down slows every engine in it alike. Where the two fall on different sides of 1, the engines "
          "are level within this run's noise.")


def cell(workload: dict, name: str, ms: bool) -> str:
    """One engine's median for one workload and, for an engine not ours, both ratios to ours."""
    value = 1000 * workload["median_s"][name] if ms else workload["sent_per_s"][name]
    if name == OURS:
        return f"{value:.1f}"
    of_medians = workload["median_s"][name] / workload["median_s"][OURS]
    return f"{value:.1f} ({workload['ours_vs_peer'][name]:.2f} / {of_medians:.2f})"


def markdown(r: dict) -> str:
    w = r["workloads"]
    lines = [f"Peers (`benchmarks/peers.py`, commit {r['code']['commit'][:12]}{' dirty' if r['code']['dirty'] else ''}, "
             f"{r['machine']['date']}): XLM-R-base-shaped model, {THREADS} threads, {r['rounds']} interleaved rounds, "
             f"medians; {r['machine']['cpu']}. " + RATIOS, "",
             "| engine | real text batch 32, sent/s | 1 x 16 tokens, ms | 1 x 128 tokens, ms | load to first vector, s "
             "| peak RSS 32 x 128, MiB | worst cosine to fp32 |", "|---|---|---|---|---|---|---|"]
    for name in ENGINES:
        p = r["process"][name]
        lines.append(f"| {name} | {cell(w['batch32'], name, False)} | {cell(w['1x16'], name, True)} | "
                     f"{cell(w['1x128'], name, True)} | "
                     f"{p['load_s']:.2f} | {p['peak_rss_mib']:.0f} | {r['same_function'].get(name, 1.0):.5f} |")
    lines += ["", "Ours against the best peer per workload: " + "; ".join(
        f"{label} {w[label]['ours_vs_best']:.2f}x ({w[label]['best_peer']})" for label in w) + "."]
    if "gemm_floors_ms" in r:
        floors = r["gemm_floors_ms"]
        names = list(next(iter(floors.values())))
        lines += ["", "The encoder's 72 linear layers alone (`benchmarks/gemm_floor.py`: XLM-R-base shapes, no attention, "
                  "norms or GELU), each engine's int8, same run, ms:", "",
                  "| rows | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {rows} | " + " | ".join(f"{v[n]:.2f}" for n in names) + " |" for rows, v in floors.items()]
    return "\n".join(lines) + "\n"


FLOOR_ROWS = (16, 128, 1024)


def _openvino_floor(folder: Path) -> Callable[[int], object]:
    """The GEMM floor graph converted by OpenVINO and quantized by NNCF (static int8), LATENCY hint."""
    import nncf
    import openvino as ov

    from benchmarks.gemm_floor import build_floor_fp32

    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((128, 768)).astype(np.float32)} for _ in range(16)]
    model = nncf.quantize(ov.convert_model(str(build_floor_fp32(folder / "floor.fp32.onnx"))), nncf.Dataset(feeds),
                          subset_size=len(feeds))
    request = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": THREADS,
                                                     "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
    inputs = {rows: rng.standard_normal((rows, 768)).astype(np.float32) for rows in FLOOR_ROWS}
    return lambda rows: request.infer({"x": inputs[rows]})


def gemm_floors(rounds: int) -> dict[str, dict[str, float]]:
    """The encoder's linear layers alone (``benchmarks/gemm_floor.py``) in each engine's int8, interleaved."""
    import tempfile

    from benchmarks.gemm_floor import floor_session
    from mstsb_onnx.eval import benchmark as bm

    runs = {"onnxruntime int8 (ours)": floor_session(THREADS),
            "OpenVINO int8": _openvino_floor(Path(tempfile.mkdtemp(prefix="ov-floor-")))}
    out: dict[str, dict[str, float]] = {}
    for rows in FLOOR_ROWS:
        calls = {n: (lambda fn=fn: fn(rows)) for n, fn in runs.items()}
        t = bm.interleaved(calls, rounds, settle=1, per_round=3, pause=bm.LATENCY_PAUSE_S)
        out[str(rows)] = {n: 1000 * float(np.median(v)) for n, v in t.items()}
        print("floor", rows, out[str(rows)], flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="sentences-unscored.csv")
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--process-rounds", type=int, default=3)
    p.add_argument("--report-only", action="store_true", help="rewrite peers.md from peers.json, measure nothing")
    args = p.parse_args(argv)
    if args.report_only:
        write_results("peers", json.loads((RESULTS / "peers.json").read_text()), markdown)
        return 0
    from benchmarks.common import fixed_texts, load_sample, machine_info, paths_only
    from testmodels.xlmr import cached_base_random
    from mstsb_onnx.export.provenance import code_revision

    code = code_revision()  # before anything is written: the results files are tracked
    paths = paths_only(str(args.models_dir))
    if not (paths["int8_batch"] / "model.onnx").is_file():
        raise SystemExit(f"{paths['int8_batch']} is missing: run python -m benchmarks.activations first (make bench does)")
    sample = load_sample(args.data, 512)
    paths.update(prepare(args.models_dir, cached_base_random(), paths["fp32"], load_sample(args.data, 300, seed=1)))
    engines = {n: engine(n, paths) for n in ENGINES}
    checked = same_function(engines, engine("ours fp32", paths), sample[:64])
    workloads = {"batch32": (sample, 32), "1x16": (fixed_texts(paths, 16, 1), 1),
                 "1x128": (fixed_texts(paths, 128, 1), 1)}
    times = timed(engines, workloads, args.rounds)
    del engines
    result = {"code": code, "machine": machine_info(), "rounds": args.rounds, "same_function": checked,
              "workloads": summarize(times, workloads),
              "process": per_process(paths, fixed_texts(paths, 128, 32), args.process_rounds),
              "gemm_floors_ms": gemm_floors(args.rounds),
              "models": {k: str(v) for k, v in paths.items()}}
    write_results("peers", result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
