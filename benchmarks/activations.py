"""Per-batch, per-row and static int8 activation scales: what batch invariance costs.

    python -m benchmarks.activations --data ../shared/data/mstsb/sentences-unscored.csv

The per-row and static graphs are made from a per-batch int8 export by the same passes
``--activations per-row`` and ``--activations static`` run (``export/rowquant.py``,
``export/staticquant.py``, static scales calibrated on the built-in probes), so the variants differ
only in how activations are scaled. Speed: the XLM-R-base-shaped model through ``Embedder`` in one
process, interleaved, 2 threads: one text of 16 and of 128 tokens, fixed 32 x 32 and 32 x 128
batches, real sentences at batch 32. Accuracy: the stand-in, every text alone, cosine to its fp32
export on out-of-distribution text (code, URLs, numbers, all caps, emoji, repeats, 10,000
characters, mixed scripts), the probe edge cases and real sentences. Writes
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


def _rewritten_copy(int8: Path, out: Path, rewrite, activations: str) -> Path:
    """``int8`` with its graph passed through ``rewrite`` (manifest activations and hashes updated)."""
    import onnx

    from mstsb_onnx.export.layout import write_model
    from mstsb_onnx.manifest import MANIFEST_NAME, sha256_file

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(int8, out)
    model = onnx.load(str(int8 / "model.onnx"))
    report = rewrite(model)
    write_model(model, out / "model.onnx")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["quantization"]["activations"] = activations
    manifest["quantization"][activations.replace("-", "_")] = report
    manifest["files"] = {name: sha256_file(out / name) for name in manifest["files"]}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def per_batch_export(source: Path, folder: Path) -> Path:
    """``source`` exported with per-batch activation scales by this code (again when another commit wrote it)."""
    from benchmarks.eval_sts import current_export

    return current_export(str(source), folder, activations="per-tensor")


def per_row_copy(int8: Path, out: Path) -> Path:
    """``int8`` with per-row activation scales, rewritten from its own graph."""
    from mstsb_onnx.export.rowquant import per_row_activations

    return _rewritten_copy(int8, out, per_row_activations, "per-row")


def static_copy(int8: Path, out: Path, margin: float | None = None) -> Path:
    """``int8`` with static activation scales calibrated on the built-in probes, as the export does."""
    from mstsb_onnx.export.pipeline import probe_feeds
    from mstsb_onnx.export.staticquant import DEFAULT_MARGIN, calibrated_static_activations
    from mstsb_onnx.manifest import read_manifest

    m = read_manifest(int8)

    def rewrite(model) -> dict:
        feeds = probe_feeds(int8 / "tokenizer.json", m.max_seq_length, int(m.raw.get("pad_token_id", 1)), m.default_prompt)
        return calibrated_static_activations(model, feeds, DEFAULT_MARGIN if margin is None else margin)

    return _rewritten_copy(int8, out, rewrite, "static")


# Text unlike the calibration probes, for the clipping risk of static scales: code, URLs, numbers, emoji, markup.
OUT_OF_DISTRIBUTION = {
    "code": ["def f(x):\n    return [i**2 for i in range(x) if i % 3 == 0]",
             "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
             '#include <stdio.h>\nint main(){printf("%d\\n", 42);}', '{"key": [1, 2, {"nested": null}], "ok": true}'],
    "urls": ["https://www.example.com/path/to/page?query=1&lang=es#section",
             "ftp://files.example.org/pub/v2.3.1/release.tar.gz", "mailto:someone@example.com?subject=Hello"],
    "numbers": ["1234567890 0987654321 3.14159265358979", "+34 912 345 678, ext. 42",
                "2026-12-02T05:41:21Z 10:30 AM 99.9%", "0x1F4A 0b101101 1e-9 6.022e23"],
    "all caps": ["THIS IS AN ALL CAPS SENTENCE ABOUT THE WEATHER TODAY",
                 "ESTO ES UNA FRASE EN MAYÚSCULAS SOBRE EL TIEMPO", "DAS IST EIN SATZ IN GROSSBUCHSTABEN"],
    "emoji": ["😀" * 16, "🎉🔥💯👍🏽🙏❤️😂🤣😍🥺✨🌟", "🇪🇸🇬🇧🇯🇵🇨🇳🇷🇺🇹🇷"],
    "repeats": ["a" * 52, "!" * 31, "ha " * 16, "." * 300, "xyz" * 200],
    "10k chars": ["The quick brown fox jumps over the lazy dog. " * 230,
                  "Le renard brun rapide saute par-dessus le chien paresseux. " * 170, "吾輩は猫である。名前はまだ無い。" * 625],
    "scripts": ["Hello 你好 مرحبا Привет नमस्ते こんにちは 안녕하세요 שלום", "ok", "a", "?", "Ω≈ç√∫˜µ≤≥÷"],
}


# Static ranges widened by these factors too: does a wider range make up for clipping?
WIDER_MARGINS = (1.25, 1.5, 2.0)


def accuracy_part(standin_int8: Path, standin_fp32: Path, data: Path, work: Path) -> dict:
    """Cosine to the fp32 export, texts embedded alone: out-of-distribution groups, edge cases, real text."""
    from benchmarks.common import load_sample
    from mstsb_onnx import Embedder
    from mstsb_onnx.probes import edge_cases
    from mstsb_onnx.similarity import unit_rows

    groups = {**OUT_OF_DISTRIBUTION, "probe edge cases": list(edge_cases().values()),
              "300 real sentences": load_sample(data, 300, seed=1)}
    variants = {"per-batch": standin_int8, "per-row": per_row_copy(standin_int8, work / "standin-rows"),
                "static": static_copy(standin_int8, work / "standin-static")}
    for m in WIDER_MARGINS:
        variants[f"static, range x{m}"] = static_copy(standin_int8, work / f"standin-static-{m}", m)
    ref = Embedder(standin_fp32, threads=2)
    want = {g: ref.encode(t, batch_size=1) for g, t in groups.items()}
    out: dict = {}
    for name, folder in variants.items():
        e = Embedder(folder, threads=2)
        cos = {g: np.sum(unit_rows(e.encode(t, batch_size=1)) * unit_rows(want[g]), axis=1) for g, t in groups.items()}
        out[name] = {g: {"worst": float(c.min()), "mean": float(c.mean())} for g, c in cos.items()}
        print(name, {g: round(v["worst"], 5) for g, v in out[name].items()}, flush=True)
    return out


def speed_part(paths: dict[str, Path], data: Path, models_dir: Path, rounds: int) -> dict:
    """Each variant's time per workload, interleaved, and its speed against per-batch."""
    from benchmarks.common import fixed_texts, load_sample
    from mstsb_onnx import Embedder
    from mstsb_onnx.eval import benchmark as bm

    batch = per_batch_export(paths["base"], paths["int8_batch"])
    emb = {"per-batch": Embedder(batch, threads=2),
           "per-row": Embedder(per_row_copy(batch, models_dir / "xlmr-base-random-int8-rows-ab"), threads=2),
           "static": Embedder(static_copy(batch, models_dir / "xlmr-base-random-int8-static-ab"), threads=2)}
    work = {"1 x 16": (fixed_texts(paths, 16, 1), 1), "1 x 128": (fixed_texts(paths, 128, 1), 1),
            "32 x 32": (fixed_texts(paths, 32, 32), 32), "32 x 128": (fixed_texts(paths, 128, 32), 32),
            "real, batch 32": (load_sample(data, 512), 32)}
    out: dict = {}
    for label, (texts, bs) in work.items():
        single = bs == 1
        calls = {n: (lambda e=e: e.encode(texts, batch_size=bs)) for n, e in emb.items()}
        t = bm.interleaved(calls, rounds, settle=int(single), per_round=3 if single else 1,
                           pause=bm.LATENCY_PAUSE_S if single else 0.0)
        per_round = {n: np.asarray(v).reshape(rounds, -1).mean(1) for n, v in t.items()}
        out[label] = {"median_ms": {n: 1000 * float(np.median(v)) for n, v in t.items()},
                      "speed": {n: float(np.median(per_round["per-batch"] / per_round[n])) for n in ("per-row", "static")}}
        print(label, out[label], flush=True)
    return out


def _provenance(part: dict) -> str:
    code = part["code"]
    return f"commit {code['commit'][:12]}{' dirty' if code['dirty'] else ''}, {part['machine']['date']}"


def markdown(r: dict) -> str:
    lines = ["Activation scales: per batch, per row, static (`benchmarks/activations.py`)."]
    if "speed" in r:
        sp = r["speed"]
        lines += ["", f"Speed ({_provenance(sp)}; {sp['machine']['cpu']}): XLM-R-base-shaped int8, 2 threads, "
                  f"{sp['rounds']} interleaved rounds; speed = per-batch time / variant time (median of per-round "
                  "ratios).", "",
                  "| workload | per batch, ms | per row, ms | static, ms | per-row speed | static speed |",
                  "|---|---|---|---|---|---|"]
        for label, w in sp["workloads"].items():
            ms, x = w["median_ms"], w["speed"]
            lines.append(f"| {label} | {ms['per-batch']:.1f} | {ms['per-row']:.1f} | {ms['static']:.1f} | "
                         f"{x['per-row']:.2f}x | {x['static']:.2f}x |")
    if "accuracy" in r:
        acc = r["accuracy"]["variants"]
        groups = list(next(iter(acc.values())))
        lines += ["", f"Accuracy ({_provenance(r['accuracy'])}): stand-in, each text alone, cosine to the fp32 "
                  "export -- worst in the group (mean for real sentences in brackets).", "",
                  "| text | " + " | ".join(acc) + " |", "|---|" + "---|" * len(acc)]
        for g in groups:
            cells = [f"{acc[v][g]['worst']:.5f}" + (f" ({acc[v][g]['mean']:.5f})" if g.startswith("300") else "")
                     for v in acc]
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.activations", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="sentences-unscored.csv")
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--parts", nargs="+", choices=["speed", "accuracy"], default=["speed", "accuracy"])
    args = p.parse_args(argv)
    from benchmarks.common import machine_info, paths_only
    from testmodels.standin import cached_standin
    from benchmarks.trim import exported
    from mstsb_onnx.export.provenance import code_revision

    out = RESULTS / "activations.json"
    # A part run alone replaces only its own section; each section records the code that made it.
    result: dict = json.loads(out.read_text()) if out.is_file() else {}
    made = {"code": code_revision(), "machine": machine_info()}
    if "speed" in args.parts:
        result["speed"] = {**made, "rounds": args.rounds,
                           "workloads": speed_part(paths_only(str(args.models_dir)), args.data, args.models_dir, args.rounds)}
    if "accuracy" in args.parts:
        standin = cached_standin()
        result["accuracy"] = {**made, "variants": accuracy_part(
            per_batch_export(standin, args.models_dir / "standin-e5-small-int8"),
            exported(standin, args.models_dir / "standin-e5-small-fp32", quantize="none"), args.data, args.models_dir)}
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "activations.md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
