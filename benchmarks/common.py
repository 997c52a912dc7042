"""What every benchmark script shares: the real-text sample, fixed-length texts, the model paths,
the machine record, a caption naming machine and commit, and memory probes.

Dev tooling (``make bench`` and its siblings), never imported by the runtime. What it does not do:
time anything (``mstsb_onnx.eval.benchmark``) or render reports (``benchmarks.report``).
"""

from __future__ import annotations

import csv
import json
import datetime as dt
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mstsb_onnx.eval import benchmark as bm

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LANGS = 15
# Variant names, as results files key them.
OURS = "ours int8"
BASELINE = "torch fp32 (ST)"
ST_ONNX = "ST ONNX int8"
FLOOR = "int8 GEMM floor"  # the linear layers alone (benchmarks/gemm_floor.py), rows = batch x tokens


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


def proc_status_mib(field: str, pid: int | str = "self") -> float:
    """A memory line of /proc/PID/status in MiB: VmRSS (now) or VmHWM (peak; not ru_maxrss,
    which Linux carries over fork+exec from the parent)."""
    status = Path(f"/proc/{pid}/status")
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in {status}")


def paths_only(models_dir: str) -> dict[str, Path]:
    from testmodels.cache import default_cache_dir
    from testmodels.xlmr import BASE_RANDOM_DIR

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


def code_revision() -> dict:
    """The commit these results come from (``dirty`` when the tree had uncommitted changes)."""
    from mstsb_onnx.export.provenance import code_revision as revision

    return revision()


def caption(machine: dict, code: dict | None) -> str:
    """One line naming the CPU, its cores, the date and the commit: every results table starts with it."""
    commit = "not recorded" if not code else str(code.get("commit"))[:12] + (" (uncommitted changes)" if code.get("dirty") else "")
    isa = ", ".join(machine.get("isa") or []) or "no VNNI/AVX-512 flags"
    return (f"CPU: {machine['cpu']} ({isa}), {machine['cores_available']} cores available; "
            f"{machine['date']}; commit {commit}.")


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def write_results(stem: str, result: dict, render: Callable[[dict], str]) -> None:
    """``results/<stem>.json`` and its rendering ``results/<stem>.md``, which is also printed."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = render(result)
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)
