"""Vocabulary trims: coverage, STS deltas, and size / cold start / memory / speed -- one command.

    python -m benchmarks.trim --data ../shared/data/mstsb      # or: part of make bench

Two trims, "es,en" and "card" (the model card's 16 languages), with the default word-list size:

* ``coverage``: pieces kept against sentences tokenized exactly as before, per language, on the
  STS dev sentences (``sts31-dev.csv``: never used to choose pieces or to tune the method) and,
  apart, on ``sentences-unscored.csv`` (the set the selection rules were developed on), for
  several word-list sizes. Selection only, no folders written.
* ``sts``: the 31 STS dev tasks on the stand-in, untrimmed vs trimmed (fp32 and per-row int8:
  batch-invariant, so a changed neighbour cannot move another text's vector).
* ``speed``: the XLM-R-base-shaped int8 export untrimmed vs trimmed in one run: folder size, new
  process to first vector (imports included; in a venv holding only the slim install, and in the
  dev venv), peak RSS embedding 32 x 128 tokens, sentences/s at
  batch 32 and batch 1 -- interleaved, medians.

Writes ``benchmarks/results/trim*.{json,md}`` and ``trim_size_cold.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mstsb_onnx.export.provenance import code_revision, same_code
from mstsb_onnx.manifest import MANIFEST_NAME

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TRIMS = {"es-en": "es,en", "card": "card"}
WORD_SIZES = (25_000, 50_000, 100_000, 200_000)


def sentences_by_language(path: Path) -> dict[str, list[str]]:
    """Unique sentences per language of an STS CSV (task ``xx;yy``) or the unscored one (``lang``)."""
    out: dict[str, set[str]] = defaultdict(set)
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            first, second = row["task"].split(";") if "task" in row else (row["lang"], row["lang"])
            out[first].add(row["sentence1"])
            out[second].add(row["sentence2"])
    return {k: sorted(v) for k, v in sorted(out.items())}


def coverage_part(folder: Path, data: Path) -> dict:
    from mstsb_onnx.export import pieces
    from mstsb_onnx.export.trim import _load_tokenizer, _tokenizer_ids, coverage

    doc, tokenize = _load_tokenizer(folder)
    pad = int(json.loads((folder / MANIFEST_NAME).read_text())["pad_token_id"])
    vocab = [(p, s) for p, s in doc["model"]["vocab"]]
    held_out = sentences_by_language(data / "sts31-dev.csv")
    tuning = sentences_by_language(data / "sentences-unscored.csv")
    rows = []
    for name, langs in TRIMS.items():
        for words in WORD_SIZES:
            start = time.perf_counter()
            sel = pieces.choose_pieces(vocab, _tokenizer_ids(doc) | {pad}, tokenize,
                                       languages=pieces.parse_languages(langs), words=words)
            seconds = time.perf_counter() - start
            kept = sel.ids
            rows.append({"trim": name, "words": words, "pieces": len(kept), "added": sel.added,
                         "select_s": round(seconds, 1),
                         "held_out": {lang: coverage(tokenize, texts, kept) for lang, texts in held_out.items()},
                         "tuning": {lang: coverage(tokenize, texts, kept) for lang, texts in tuning.items()}})
            print(f"{name} words={words}: {len(kept):,} pieces, {seconds:.0f}s", flush=True)
    return {"rows": rows, "languages": {name: list(pieces.parse_languages(l)) for name, l in TRIMS.items()}}


def ensure_trims(untrimmed: Path, force: bool) -> dict[str, Path]:
    """The trims of ``untrimmed``, made again unless this clean commit made them from it."""
    from mstsb_onnx.export.trim import trim_folder

    out = {"untrimmed": untrimmed}
    src_files = json.loads((untrimmed / MANIFEST_NAME).read_text())["files"]
    for name, langs in TRIMS.items():
        folder = untrimmed.with_name(f"{untrimmed.name}-{name}")
        manifest = folder / MANIFEST_NAME
        doc = json.loads(manifest.read_text()) if manifest.is_file() else {}
        trim = doc.get("trim") or {}
        if force or trim.get("source", {}).get("files") != src_files or not same_code(trim.get("exporter")):
            trim_folder(untrimmed, folder, languages=langs, force=True)
        out[name] = folder
    return out


def sts_part(folders: dict[str, Path], data: Path) -> dict:
    """Per-task Spearman x 100 of each trim minus its untrimmed folder (same quantization)."""
    from mstsb_onnx.eval.evaluation import run_eval_sts

    names = list(folders)
    result = run_eval_sts([folders[n] for n in names], data / "sts31-dev.csv", batch_size=32)
    columns = dict(zip(names, result["columns"].values()))
    base = columns["untrimmed"]
    deltas = {name: {task: 100 * (scores[task]["spearman"] - base[task]["spearman"]) for task in base}
              for name, scores in columns.items() if name != "untrimmed"}
    return {"folders": {n: str(p) for n, p in folders.items()}, "models": result["models"],
            "summary": {n: result["summary"][k] for n, k in zip(names, result["summary"])}, "deltas": deltas}


COLD_CODE = "from mstsb_onnx import Embedder; Embedder({p!r}, threads={t}).encode(['hola mundo']); import time; print(time.time())"
RSS_CODE = ("import json; from mstsb_onnx import Embedder; "
            "e = Embedder({p!r}, threads={t}); texts = json.load(open({f!r}, encoding='utf-8')); "
            "[e.encode(texts, batch_size=32) for _ in range(3)]; "
            "print([int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])")
# Spanish and English words: every variant tokenizes them into the same pieces (same shapes timed).
WORDS = ("the of and a to in is was for on that with by as at from his her it an were are which this "
         "el la de que y en los se del las un por con una para es al lo como su").split()


def slim_python(models_dir: Path) -> Path:
    """A venv holding only the wheel and its declared dependencies (as ``pip install mstsb-onnx``),
    at this venv's onnxruntime/tokenizers/numpy versions: what an app ships, without the dev
    install's extras and editable-install hooks. Rebuilt for every commit."""
    import importlib.metadata as md
    import shutil
    import venv

    root = (models_dir / ".slim-venv").resolve()
    stamp, commit = root / "commit.txt", str(code_revision()["commit"])
    py = root / "bin" / "python"
    if stamp.is_file() and stamp.read_text() == commit and py.is_file():
        return py
    shutil.rmtree(root, ignore_errors=True)
    venv.EnvBuilder(with_pip=True).create(root)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"),
                    str(HERE.parent)], check=True)
    pins = [f"{d}=={md.version(d)}" for d in ("onnxruntime", "tokenizers", "numpy")]
    subprocess.run([str(py), "-m", "pip", "install", "-q", *pins, str(next((root / "dist").glob("*.whl")))],
                   check=True)
    # pip has been seen to exit 0 without installing the wheel: prove the import before trusting the venv.
    subprocess.run([str(py), "-c", "import mstsb_onnx"], check=True, cwd=root)
    stamp.write_text(commit)
    return py


def cold_and_rss(folders: dict[str, Path], threads: int, rounds: int, python: Path) -> dict:
    from mstsb_onnx.eval import benchmark as bm
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folders["untrimmed"] / "tokenizer.json"))
    tok.no_truncation()
    texts = bm.texts_with_tokens(lambda t: len(tok.encode(t).ids), WORDS, 128, 32)
    texts_file = RESULTS / ".trim-rss-texts.json"
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    first: dict[str, list[float]] = {n: [] for n in folders}
    rss: dict[str, list[float]] = {n: [] for n in folders}
    for round_ in range(rounds + 1):  # round 0 warms the page cache and the hash stamps, untimed
        for name, folder in folders.items():
            start = time.time()
            out = subprocess.run([str(python), "-c", COLD_CODE.format(p=str(folder.resolve()), t=threads)], check=True,
                                 capture_output=True, text=True, cwd=RESULTS)
            if round_:
                first[name].append(float(out.stdout.split()[-1]) - start)
                code = RSS_CODE.format(p=str(folder.resolve()), t=threads, f=str(texts_file))
                done = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True,
                                      cwd=RESULTS)
                rss[name].append(float(done.stdout.split()[-1]))
    texts_file.unlink()
    return {n: {"cold_start_s": bm.stats(first[n])["median"], "peak_rss_mib": float(np.median(rss[n]))}
            for n in folders}


def speed(folders: dict[str, Path], data: Path, threads: int, rounds: int) -> dict:
    """Sentences/s at batch 32 (Spanish STS dev sentences) and batch-1 ms (16 tokens), interleaved."""
    from mstsb_onnx import Embedder
    from mstsb_onnx.eval import benchmark as bm
    from tokenizers import Tokenizer

    real = sentences_by_language(data / "sentences-unscored.csv")["es"][:512]
    tok = Tokenizer.from_file(str(folders["untrimmed"] / "tokenizer.json"))
    short = bm.texts_with_tokens(lambda t: len(tok.encode(t).ids), WORDS, 16, 1)
    embedders = {n: Embedder(f, threads=threads) for n, f in folders.items()}
    batch = bm.interleaved({n: (lambda e=e: e.encode(real, batch_size=32)) for n, e in embedders.items()}, rounds)
    single = bm.interleaved({n: (lambda e=e: e.encode(short, batch_size=1)) for n, e in embedders.items()},
                            rounds, settle=1, per_round=5, pause=bm.LATENCY_PAUSE_S)
    return {n: {"batch32_sent_s": len(real) / float(np.median(batch[n])),
                "batch1_16tok_ms": 1000 * float(np.median(single[n]))} for n in folders}


def speed_part(folders: dict[str, Path], data: Path, threads: int, rounds: int, slim: Path) -> dict:
    from benchmarks.common import machine_info

    rows = {n: {"pieces": json.loads((f / MANIFEST_NAME).read_text())["vocab_size"],
                "folder_mb": sum(p.stat().st_size for p in f.iterdir() if p.is_file()) / 1e6} for n, f in folders.items()}
    dev = {n: {"cold_start_dev_venv_s": v["cold_start_s"]}
           for n, v in cold_and_rss(folders, threads, rounds, Path(sys.executable)).items()}
    for part in (cold_and_rss(folders, threads, rounds, slim), dev, speed(folders, data, threads, rounds)):
        for n, values in part.items():
            rows[n].update(values)
    return {"machine": machine_info(), "threads": threads, "rounds": rounds, "rows": rows,
            "folders": {n: str(f) for n, f in folders.items()}}


def speed_markdown(r: dict) -> str:
    base = r["rows"]["untrimmed"]
    lines = [f"XLM-R-base-shaped int8 export (`benchmarks/trim.py`, commit {r['code']['commit'][:12]}"
             f"{' dirty' if r['code']['dirty'] else ''}, {r['machine']['date']}), {r['threads']} threads, "
             f"{r['rounds']} interleaved rounds, medians; {r['machine']['cpu']}. Cold start and RSS: a new process "
             "in a venv with only `pip install mstsb-onnx` (the wheel, onnxruntime, tokenizers, numpy); in "
             "brackets, the same in the dev venv (all extras, editable install).", "",
             "| folder | pieces | size, MB | cold start, s | peak RSS 32 x 128, MiB | batch 32, sent/s | batch 1 x 16, ms |",
             "|---|---|---|---|---|---|---|"]
    for name, row in r["rows"].items():
        lines.append(f"| {name} | {row['pieces']:,} | {row['folder_mb']:.1f} | {row['cold_start_s']:.2f} "
                     f"({row['cold_start_dev_venv_s']:.2f}) | "
                     f"{row['peak_rss_mib']:.0f} | {row['batch32_sent_s']:.1f} "
                     f"({row['batch32_sent_s'] / base['batch32_sent_s']:.2f}x) | {row['batch1_16tok_ms']:.2f} "
                     f"({row['batch1_16tok_ms'] / base['batch1_16tok_ms']:.2f}x) |")
    return "\n".join(lines) + "\n"


def coverage_markdown(r: dict) -> str:
    langs = sorted({lang for row in r["rows"] for lang in row["held_out"]})
    lines = [f"Sentences tokenized exactly as before, held-out STS dev sentences (`benchmarks/trim.py`, commit "
             f"{r['code']['commit'][:12]}); `*` marks the trim's own languages.", "",
             "| trim | words/lang | pieces | " + " | ".join(langs) + " | worst own (tokens) |",
             "|---|---|---|" + "---|" * len(langs) + "---|"]
    for row in r["rows"]:
        own = r["languages"][row["trim"]]
        cells = [f"{row['held_out'][l]['sentences']:.3f}{'*' if l in own else ''}" for l in langs]
        worst = min((l for l in langs if l in own), key=lambda l: row["held_out"][l]["sentences"])
        lines.append(f"| {row['trim']} | {row['words']:,} | {row['pieces']:,} | " + " | ".join(cells)
                     + f" | {worst} {row['held_out'][worst]['sentences']:.3f} ({row['held_out'][worst]['tokens']:.4f}) |")
    return "\n".join(lines) + "\n"


def sts_markdown(r: dict) -> str:
    lines = [f"Spearman x 100, trimmed minus untrimmed, stand-in, 31 STS dev tasks (`benchmarks/trim.py`, commit "
             f"{r['code']['commit'][:12]}).", "", "| model | trim | mean delta | worst task | own tasks (worst) |",
             "|---|---|---|---|---|"]
    for mode, part in r["modes"].items():
        for trim, deltas in part["deltas"].items():
            own = set(TRIMS[trim].split(",")) if trim != "card" else None
            mine = {t: d for t, d in deltas.items() if own is None or set(t.split(";")) <= own}
            worst = max(deltas, key=lambda t: abs(deltas[t]))
            worst_own = max(mine, key=lambda t: abs(mine[t]))
            lines.append(f"| {mode} | {trim} | {np.mean(list(deltas.values())):+.3f} | {worst} {deltas[worst]:+.3f} | "
                         f"{worst_own} {mine[worst_own]:+.3f} ({len(mine)} tasks) |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["rows"])
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, label in zip(axes, ("folder_mb", "cold_start_s", "peak_rss_mib"),
                              ("folder size, MB", "cold start, s", "peak RSS, MiB")):
        ax.bar(names, [r["rows"][n][key] for n in names], color=["#888", "#2a7", "#27a"][: len(names)])
        ax.set_title(label)
    fig.suptitle("Vocabulary trims, XLM-R-base-shaped int8")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def exported(source: Path, folder: Path, **options: object) -> Path:
    """``folder`` as exported earlier (its manifest records by which commit), or exported now."""
    from mstsb_onnx.export import export_model

    if not (folder / MANIFEST_NAME).is_file():
        export_model(str(source), folder, force=True, **options)  # type: ignore[arg-type]
    return folder


def _write(name: str, doc: dict, md: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(md)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.trim", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder with sts31-dev.csv and sentences-unscored.csv")
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--parts", nargs="+", choices=["coverage", "sts", "speed"], default=["coverage", "sts", "speed"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--force", action="store_true", help="trim again even when the trims are current")
    args = p.parse_args(argv)
    from testmodels.standin import cached_standin
    from testmodels.xlmr import cached_base_random

    code = code_revision()
    base = exported(cached_base_random(), args.models_dir / "xlmr-base-random-int8")
    if "coverage" in args.parts:
        r = coverage_part(base, args.data) | {"code": code}
        _write("trim-coverage", r, coverage_markdown(r))
    if "sts" in args.parts:
        standin = cached_standin()
        modes = {"fp32": exported(standin, args.models_dir / "standin-e5-small-fp32", quantize="none"),
                 "int8 per-row": exported(standin, args.models_dir / "standin-e5-small-int8-rows",
                                           activations="per-row")}
        r = {"code": code, "modes": {m: sts_part(ensure_trims(f, args.force), args.data) for m, f in modes.items()}}
        _write("trim-sts", r, sts_markdown(r))
    if "speed" in args.parts:
        slim = slim_python(args.models_dir)
        r = speed_part(ensure_trims(base, args.force), args.data, args.threads, args.rounds, slim) | {"code": code}
        _write("trim", r, speed_markdown(r))
        plot(r, RESULTS / "trim_size_cold.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
