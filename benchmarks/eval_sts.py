"""Full 31-task STS dev table for torch fp32, ONNX fp32 and ONNX int8 (per-tensor and per-row
activation scales) on the stand-in.

    python -m benchmarks.eval_sts --data ../shared/data/mstsb/sts31-dev.csv     # or: make eval

Exports the stand-in both ways under ``models/`` (again with ``--force``, or when the folders were
written by another commit or a dirty tree), then runs the
same code as ``mstsb-onnx eval-sts`` and writes ``benchmarks/results/sts-dev.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.common import caption, machine_info
from mstsb_onnx.eval.evaluation import run_eval_sts
from mstsb_onnx.export import export_model
from mstsb_onnx.export.provenance import code_revision, same_code
from mstsb_onnx.manifest import MANIFEST_NAME

RESULTS = Path(__file__).resolve().parent / "results"


def current_export(source: str, folder: Path, force: bool = False, **options: object) -> Path:
    """``folder`` as exported by this clean commit; exported (again) when missing, stale or ``force``."""
    manifest = folder / MANIFEST_NAME
    recorded = json.loads(manifest.read_text()).get("exporter") if manifest.is_file() else None
    if force or not same_code(recorded):
        if manifest.is_file():
            print(f"{folder}: exported by {recorded or 'an unrecorded commit'}, not this clean checkout "
                  f"({code_revision()}): exporting again", flush=True)
        export_model(source, folder, force=True, **options)  # type: ignore[arg-type]
    return folder


def ensure_exports(source: str, models_dir: Path, name: str, force: bool) -> dict[str, Path]:
    """The three exports, made again unless they exist and were written by this clean commit."""
    return {mode: current_export(source, models_dir / f"{name}-{'fp32' if mode == 'none' else mode}", force,
                                 quantize="none" if mode == "none" else "int8",
                                 activations="per-row" if mode == "int8-rows" else "per-tensor")
            for mode in ("none", "int8", "int8-rows")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_sts", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--force", action="store_true", help="re-export the models")
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    from testmodels.standin import cached_standin

    source = str(cached_standin())
    exports = ensure_exports(source, args.models_dir, "standin-e5-small", args.force)
    RESULTS.mkdir(exist_ok=True)
    code = code_revision()  # before anything is written: the results files are tracked
    run_eval_sts([exports["none"], exports["int8"], exports["int8-rows"]], args.data, reference=source, threads=args.threads,
                 out_json=str(RESULTS / "sts-dev.json"),
                 provenance={"code": code, "machine": machine_info(), "data": str(args.data)})
    write_markdown()
    return 0


def write_markdown() -> None:
    """sts-dev.md from sts-dev.json: the caption, the 31-task table and each export's own parity figures."""
    from mstsb_onnx.eval import sts

    r = json.loads((RESULTS / "sts-dev.json").read_text(encoding="utf-8"))
    prov = r.get("provenance") or {}
    head = (caption(prov["machine"], prov.get("code")) if "machine" in prov
            else f"Machine not recorded; commit {str((prov.get('code') or {}).get('commit'))[:12]}.")
    lines = [f"31 STS dev tasks, stand-in (`benchmarks/eval_sts.py`). {head} Spearman x 100, delta vs torch fp32 "
             "in brackets; the average by Fisher z.", "", sts.markdown_table(r["columns"], reference="torch fp32"), ""]
    parity = {name: m["parity"] for name, m in r["models"].items() if m.get("parity")}
    if parity:
        lines += ["Each export's parity at export time (its manifest; the built-in probes):", "",
                  "| export | against | max abs diff | min cosine | worst group | batch invariance: worst cosine, max abs diff |",
                  "|---|---|---|---|---|---|"]
        for name, p in parity.items():
            inv = p.get("batch_invariance") or {}
            lines.append(f"| {name} | {p['against']} | {p['max_abs_diff']:.2e} | {p['min_cosine']:.5f} | {p['worst_group']} | "
                         f"{inv.get('worst_cosine', float('nan')):.8f}, {inv.get('max_abs_diff', float('nan')):.1e} |")
        lines.append("")
    (RESULTS / "sts-dev.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
