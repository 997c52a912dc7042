"""One process vs Ray Data with 2 actors, embedding a corpus file end to end (sentences/s).

    python -m benchmarks.bench_ray --data ../shared/data/mstsb/sentences-unscored.csv

Writes ``benchmarks/results/ray.json`` and ``benchmarks/results/ray.md`` (RESULTS.md links it).
Both paths read the same text file and write .npy through the same sinks; Ray's figure includes
starting the local cluster and its actors, which a long job amortises.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, load_sample, paths_only


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_ray", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--sample", type=int, default=4096)
    args = p.parse_args(argv)
    import ray

    from mstsb_onnx import Embedder
    from mstsb_onnx.corpus.bulk import embed_file
    from mstsb_onnx.corpus.ray import embed_file_ray

    model = paths_only(str(args.models_dir.resolve()))["int8"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    src = tmp / "corpus.txt"
    src.write_text("\n".join(s.replace("\n", " ") for s in load_sample(args.data, args.sample)) + "\n", encoding="utf-8")
    rows = {}
    start = time.perf_counter()
    embed_file(Embedder(model, threads=2), str(src), tmp / "one.npy", log=io.StringIO())
    rows["1 process x 2 threads"] = args.sample / (time.perf_counter() - start)
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    embed_file_ray(str(model), str(src), tmp / "ray.npy", workers=2, threads=1)
    end = time.perf_counter()
    rows["Ray, 2 actors x 1 thread (incl. cluster start)"] = args.sample / (end - start)
    rows["Ray, 2 actors x 1 thread (after cluster start)"] = args.sample / (end - started)
    ray.shutdown()
    RESULTS.mkdir(exist_ok=True)
    from mstsb_onnx.export.provenance import code_revision

    doc = {"sentences": args.sample, "sent_per_s": rows, "provenance": {"code": code_revision(), "model": str(model)}}
    (RESULTS / "ray.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = ["| path | sentences/s |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in rows.items()]
    (RESULTS / "ray.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
