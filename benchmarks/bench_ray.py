"""One process vs Ray Data with one actor per core, embedding a corpus file end to end (sentences/s).

    python -m benchmarks.bench_ray --data ../shared/data/mstsb/sentences-unscored.csv

Writes ``benchmarks/results/ray.json`` and ``benchmarks/results/ray.md`` (RESULTS.md links it).
Both paths read the same text file and write .npy through the same sinks; Ray's figure includes
starting the local cluster and its actors, which a long job amortises.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, caption, code_revision, load_sample, machine_info, paths_only
from mstsb_onnx.cpus import available_cpus


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_ray", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--sample", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    args = p.parse_args(argv)
    import ray

    from mstsb_onnx.corpus.bulk import corpus_embedder, embed_file
    from mstsb_onnx.corpus.ray import embed_file_ray

    code = code_revision()  # before anything is written: the results files are tracked
    model = paths_only(str(args.models_dir.resolve()))["int8"]
    cores = available_cpus()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    src = tmp / "corpus.txt"
    src.write_text("\n".join(s.replace("\n", " ") for s in load_sample(args.data, args.sample)) + "\n", encoding="utf-8")
    seconds: dict[str, list[float]] = {ONE: [], RAY: [], RAY_STARTED: []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        embed_file(corpus_embedder(model), str(src), tmp / "one.npy", log=io.StringIO())  # embed's defaults
        seconds[ONE].append(time.perf_counter() - start)
        start = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter()
        embed_file_ray(str(model), str(src), tmp / "ray.npy", workers=cores, threads=1)
        end = time.perf_counter()
        ray.shutdown()
        seconds[RAY].append(end - start)
        seconds[RAY_STARTED].append(end - started)
    rows = {name: args.sample / statistics.median(s) for name, s in seconds.items()}
    doc = {"sentences": args.sample, "rounds": args.rounds, "sent_per_s": rows, "seconds": seconds,
           "machine": machine_info(), "provenance": {"code": code, "model": str(model)}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / "ray.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


ONE = "1 process, `mstsb-onnx embed` defaults (one-thread runners on every core)"
RAY = "Ray Data, one one-thread actor per core (incl. cluster start)"
RAY_STARTED = "Ray Data, one one-thread actor per core (after cluster start)"


def markdown(doc: dict) -> str:
    lines = [f"{doc['sentences']:,} real sentences, file to .npy (`benchmarks/bench_ray.py`). "
             f"{caption(doc['machine'], doc['provenance']['code'])} Medians of {doc['rounds']} interleaved rounds; "
             "Ray's cluster is started in every round.", "",
             "| path | sentences/s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in doc["sent_per_s"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
