"""Score sentence embeddings on multilingual STS, as the model card does.

Reads the 31-task CSV format (task ``xx;yy``, idx, sentence1, sentence2, score in [0, 1]), embeds
each distinct sentence once, and reports per task the Pearson and Spearman correlation of cosine
similarity with the gold score; the average over tasks by Fisher z (arctanh, mean, tanh), as the
card averages. numpy and the standard library only; it scores vectors, so the torch reference
and ONNX models are scored by the same code.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mstsb_onnx.errors import InputError
from mstsb_onnx.similarity import unit_rows

COLUMNS = ("task", "idx", "sentence1", "sentence2", "score")


@dataclass(frozen=True)
class Pair:
    idx: int
    sentence1: str
    sentence2: str
    score: float


def read_sts_csv(path: Path) -> dict[str, list[Pair]]:
    """Task -> pairs, in file order. Errors name the line that is wrong."""
    tasks: dict[str, list[Pair]] = {}
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column's name.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing column(s) {missing}; expected {', '.join(COLUMNS)}")
            for row in reader:
                line = reader.line_num
                try:
                    pair = Pair(int(row["idx"]), row["sentence1"], row["sentence2"], float(row["score"]))
                except (TypeError, ValueError) as e:
                    raise InputError(f"{path}, line {line}: bad idx or score ({e})") from e
                if ";" not in row["task"] or not math.isfinite(pair.score):
                    raise InputError(f"{path}, line {line}: task must be 'xx;yy' and score finite, got {row['task']!r}")
                tasks.setdefault(row["task"], []).append(pair)
    except OSError as e:
        raise InputError(f"cannot read STS data {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8: {e}") from e
    if not tasks:
        raise InputError(f"{path} has no rows")
    return tasks


def subset(tasks: dict[str, list[Pair]], per_task: int) -> dict[str, list[Pair]]:
    """A fixed subset: ``per_task`` pairs per task, evenly spaced by idx.

    Evenly spaced, not the first ones: STS-B is ordered by genre (captions, news, forums), so a
    prefix would score a single genre.
    """
    out = {}
    for task, pairs in tasks.items():
        ordered = sorted(pairs, key=lambda x: x.idx)
        if len(ordered) <= per_task:
            out[task] = ordered
        else:
            picks = np.unique(np.linspace(0, len(ordered) - 1, per_task).round().astype(int))
            out[task] = [ordered[i] for i in picks]
    return out


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties get their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    boundaries = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1], True])
    ranks = np.empty(len(x), dtype=np.float64)
    for lo, hi in zip(boundaries[:-1], boundaries[1:]):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(rankdata(a), rankdata(b))


def fisher_mean(values: Sequence[float]) -> float:
    """Average correlations through Fisher's z, clipping |r| just below 1 to stay finite."""
    z = np.arctanh(np.clip(np.asarray(values, dtype=np.float64), -0.999999, 0.999999))
    return float(np.tanh(z.mean()))


def unique_sentences(tasks: dict[str, list[Pair]]) -> list[str]:
    """Every distinct sentence once, in first-seen order (so each is embedded once)."""
    return list(dict.fromkeys(s for pairs in tasks.values() for p in pairs for s in (p.sentence1, p.sentence2)))


def vector_map(sentences: list[str], vectors: np.ndarray) -> dict[str, np.ndarray]:
    """sentence -> L2-normalised float64 vector."""
    return dict(zip(sentences, unit_rows(np.asarray(vectors, dtype=np.float64))))


def score_tasks(tasks: dict[str, list[Pair]], vectors: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for task, pairs in tasks.items():
        cos = np.array([float(vectors[p.sentence1] @ vectors[p.sentence2]) for p in pairs])
        gold = np.array([p.score for p in pairs])
        out[task] = {"pearson": pearson(cos, gold), "spearman": spearman(cos, gold), "n": len(pairs)}
    return out


def summary(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    mono = [t for t in scores if t.split(";")[0] == t.split(";")[1]]
    cross = [t for t in scores if t not in mono]
    out = {"avg_spearman": fisher_mean([scores[t]["spearman"] for t in scores]),
           "avg_pearson": fisher_mean([scores[t]["pearson"] for t in scores])}
    if mono:
        out["avg_spearman_monolingual"] = fisher_mean([scores[t]["spearman"] for t in mono])
    if cross:
        out["avg_spearman_crosslingual"] = fisher_mean([scores[t]["spearman"] for t in cross])
    return out


def markdown_table(columns: dict[str, dict[str, dict[str, float]]], reference: str | None = None) -> str:
    """Card-style table: one row per task (monolingual first), Spearman x 100 per column.

    With ``reference`` (a column name), every other column also shows its delta against it.
    """
    names = list(columns)
    tasks = list(next(iter(columns.values())))
    mono = [t for t in tasks if t.split(";")[0] == t.split(";")[1]]
    ordered = mono + [t for t in tasks if t not in mono]
    head = ["task", "n"] + [f"{n} Spearman" if n == reference or reference is None else f"{n} Spearman (Δ)" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(name: str, value: float, ref: float | None) -> str:
        if ref is None or name == reference:
            return f"{100 * value:.2f}"
        return f"{100 * value:.2f} ({100 * (value - ref):+.2f})"

    for task in ordered:
        ref = columns[reference][task]["spearman"] if reference else None
        cells = [cell(n, columns[n][task]["spearman"], ref) for n in names]
        lines.append(f"| {task} | {columns[names[0]][task]['n']} | " + " | ".join(cells) + " |")
    avgs = {n: summary(columns[n])["avg_spearman"] for n in names}
    ref_avg = avgs[reference] if reference else None
    lines.append("| **average (Fisher z)** | | " + " | ".join(cell(n, avgs[n], ref_avg) for n in names) + " |")
    if reference:
        lines += _delta_rows(columns, reference, ordered)
    return "\n".join(lines)


def _delta_rows(columns: dict[str, dict[str, dict[str, float]]], reference: str, tasks: list[str]) -> list[str]:
    """The mean per-task delta and the worst task of each column against ``reference``."""
    mean, worst = ["**mean Δ over tasks**", ""], ["**worst task (Δ)**", ""]
    for name, col in columns.items():
        if name == reference:
            mean.append("")
            worst.append("")
            continue
        deltas = {t: 100 * (col[t]["spearman"] - columns[reference][t]["spearman"]) for t in tasks}
        low = min(deltas, key=deltas.__getitem__)
        mean.append(f"{np.mean(list(deltas.values())):+.3f}")
        worst.append(f"{low} ({deltas[low]:+.2f})")
    return ["| " + " | ".join(row) + " |" for row in (mean, worst)]
