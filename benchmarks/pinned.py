"""A process held to one CPU before onnxruntime loads: onnxruntime's own import against ours.

    python -m benchmarks.pinned --data ../shared/data/mstsb/sentences-unscored.csv

Each measurement is a fresh process pinned to one CPU from its first instruction (as ``taskset -c``
would), timing (a) the int8 GEMM floor graph (the encoder's 72 linear layers, 1,024 rows) and (b)
the base-shaped int8 export on 512 real sentences at batch 32, one thread. Three ways to load
onnxruntime: plainly while pinned (what any program gets), pinned but loaded through
``mstsb_onnx.ortimport`` (what the runtime does), and pinned only after the import (the reference).
Rounds interleave the three; medians. Writes ``results/pinned.json`` and ``results/pinned.md``.
What it does not do: explain what onnxruntime settles at load time; it shows the effect.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WAYS = {"plain": "onnxruntime imported while pinned",
        "ours": "imported through mstsb_onnx.ortimport while pinned",
        "after": "pinned after the import"}


def _child(way: str, model: str, texts_file: str) -> None:
    import importlib
    import os

    cpu = min(os.sched_getaffinity(0))
    if way != "after":
        os.sched_setaffinity(0, {cpu})
    if way == "plain":
        importlib.import_module("onnxruntime")  # loaded before mstsb_onnx can widen the mask
    from mstsb_onnx import Embedder
    from mstsb_onnx.ortimport import load_onnxruntime

    from benchmarks.gemm_floor import floor_session

    load_onnxruntime()
    os.sched_setaffinity(0, {cpu})
    floor, emb = floor_session(1), Embedder(model, threads=1, runners=1)
    texts = json.loads(Path(texts_file).read_text())
    floor(1024)
    emb.encode(texts[:32])
    t0 = time.perf_counter()
    for _ in range(3):
        floor(1024)
    t1 = time.perf_counter()
    emb.encode(texts, batch_size=32)
    t2 = time.perf_counter()
    print(json.dumps({"floor_ms": (t1 - t0) / 3 * 1000, "sent_s": len(texts) / (t2 - t1),
                      "mask": sorted(os.sched_getaffinity(0))}))


def measure(way: str, model: str, texts_file: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.pinned", "--child", way, model, texts_file],
                         check=True, capture_output=True, text=True, cwd=HERE.parent).stdout
    return json.loads(out.strip().splitlines()[-1])


def markdown(doc: dict) -> str:
    from benchmarks.common import caption

    lines = [f"One CPU, one thread (`benchmarks/pinned.py`): {caption(doc['machine'], doc['code'])} "
             f"Base-shaped int8 export, {doc['sentences']} real sentences at batch 32; the int8 GEMM floor "
             f"graph at 1,024 rows; {doc['rounds']} interleaved rounds, medians; each a fresh process.", "",
             "| how onnxruntime was loaded | GEMM floor, ms | model, sent/s |", "|---|---|---|"]
    for way, label in WAYS.items():
        r = doc["results"][way]
        lines.append(f"| {label} | {r['floor_ms']:.1f} | {r['sent_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(*argv[1:])
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.pinned", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--sentences", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    from benchmarks.common import code_revision, load_sample, machine_info, paths_only, write_results

    code = code_revision()
    model = str(paths_only(str(HERE.parent / "models"))["int8"])
    texts_file = HERE.parent / "models" / "pinned-texts.json"
    texts_file.write_text(json.dumps(load_sample(args.data, args.sentences)))
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
            time.sleep(1)
            runs[way].append(measure(way, model, str(texts_file)))
    results = {way: {k: statistics.median(r[k] for r in rs) for k in ("floor_ms", "sent_s")} for way, rs in runs.items()}
    doc = {"machine": machine_info(), "code": code, "model": model, "sentences": args.sentences,
           "rounds": args.rounds, "results": results, "runs": runs}
    write_results("pinned", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
