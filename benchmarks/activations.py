"""Per-row vs per-batch int8 activation scales: the speed cost of batch invariance.

    python -m benchmarks.activations --data ../shared/data/mstsb/sentences-unscored.csv

The per-row graph is made from the shipped per-batch int8 export of the XLM-R-base-shaped model
by the same pass ``--activations per-row`` runs (``export/rowquant.py``), so the two differ only in
how activations are scaled. Both run through ``Embedder`` in one process, interleaved, 2 threads:
one text of 16 tokens, fixed 32 x 32 and 32 x 128 batches, and real sentences at batch 32. Writes
``benchmarks/results/activations.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def per_row_copy(int8: Path, out: Path) -> Path:
    """``int8`` with per-row activation scales, rewritten from its own graph (manifest hashes updated)."""
    import onnx

    from mstsb_onnx.export.layout import write_model
    from mstsb_onnx.export.rowquant import per_row_activations
    from mstsb_onnx.manifest import MANIFEST_NAME, sha256_file

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(int8, out)
    model = onnx.load(str(int8 / "model.onnx"))
    per_row_activations(model)
    write_model(model, out / "model.onnx")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["quantization"]["activations"] = "per-row"
    manifest["files"] = {name: sha256_file(out / name) for name in manifest["files"]}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.activations", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="sentences-unscored.csv")
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    from benchmarks.bench import fixed_texts, load_sample, machine_info, paths_only
    from mstsb_onnx import Embedder
    from mstsb_onnx.eval import benchmark as bm
    from mstsb_onnx.export.provenance import code_revision

    code = code_revision()
    paths = paths_only(str(args.models_dir))
    rows = per_row_copy(paths["int8"], args.models_dir / "xlmr-base-random-int8-rows-ab")
    emb = {"per-batch": Embedder(paths["int8"], threads=2), "per-row": Embedder(rows, threads=2)}
    work = {"1 x 16": (fixed_texts(paths, 16, 1), 1), "32 x 32": (fixed_texts(paths, 32, 32), 32),
            "32 x 128": (fixed_texts(paths, 128, 32), 32), "real, batch 32": (load_sample(args.data, 512), 32)}
    out: dict = {}
    for label, (texts, bs) in work.items():
        single = bs == 1
        calls = {n: (lambda e=e: e.encode(texts, batch_size=bs)) for n, e in emb.items()}
        t = bm.interleaved(calls, args.rounds, settle=int(single), per_round=3 if single else 1,
                           pause=bm.LATENCY_PAUSE_S if single else 0.0)
        per_round = {n: np.asarray(v).reshape(args.rounds, -1).mean(1) for n, v in t.items()}
        out[label] = {"median_ms": {n: 1000 * float(np.median(v)) for n, v in t.items()},
                      "per_row_speed": float(np.median(per_round["per-batch"] / per_round["per-row"]))}
        print(label, out[label], flush=True)
    probe = load_sample(args.data, 64, seed=3)
    alone = np.stack([emb["per-row"].encode([t])[0] for t in probe])
    mixed = emb["per-row"].encode(probe, batch_size=16)
    result = {"code": code, "machine": machine_info(), "rounds": args.rounds, "workloads": out,
              "per_row_alone_vs_batched_max_abs": float(np.abs(alone - mixed).max())}
    lines = [f"Per-row vs per-batch activation scales (`benchmarks/activations.py`, commit {code['commit'][:12]}"
             f"{' dirty' if code['dirty'] else ''}, {result['machine']['date']}): XLM-R-base-shaped int8, 2 threads, "
             f"{args.rounds} interleaved rounds; {result['machine']['cpu']}. Speed = per-batch time / per-row time "
             "(median of per-round ratios).", "", "| workload | per batch, ms | per row, ms | per-row speed |",
             "|---|---|---|---|"]
    for label, r in out.items():
        lines.append(f"| {label} | {r['median_ms']['per-batch']:.1f} | {r['median_ms']['per-row']:.1f} | "
                     f"{r['per_row_speed']:.2f}x |")
    lines += ["", f"Per-row, 64 real sentences alone vs in batches of 16: max abs diff "
                  f"{result['per_row_alone_vs_batched_max_abs']:.1e}."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "activations.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "activations.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
