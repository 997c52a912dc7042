"""``mstsb-onnx eval-sts``: score an exported model (and optionally the torch reference) on STS.

Embeds each distinct sentence once per model with a progress bar, scores with ``sts``, prints
the card-style table, and writes JSON and Markdown. The torch reference is imported only when
asked for (``--reference``), so a slim install can score ONNX models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mstsb_onnx.eval import sts
from mstsb_onnx.embedder import Embedder
from mstsb_onnx.progress import encode_with_progress
from mstsb_onnx.files import write_report


def run_eval_sts(
    model_dirs: list[str | os.PathLike[str]],
    data: Path,
    reference: str | None = None,
    per_task: int | None = None,
    out_json: str | None = None,
    out_md: str | None = None,
    threads: int | None = None,
    batch_size: int = 32,
    provenance: dict | None = None,
) -> dict:
    """Score each folder (and the torch reference); the result names each column's folder, recipe
    and exporter commit (from its manifest), plus ``provenance`` of the run when given."""
    tasks = sts.read_sts_csv(data)
    if per_task:
        tasks = sts.subset(tasks, per_task)
    embedders = [Embedder(d, threads=threads) for d in model_dirs]
    sentences = sts.unique_sentences(tasks)
    columns: dict[str, dict[str, dict[str, float]]] = {}
    models: dict[str, dict] = {}
    if reference:
        from mstsb_onnx.export.reference import TorchReference
        from mstsb_onnx.export.source import resolve_source

        ref = TorchReference(resolve_source(reference, max_seq_length=embedders[0].max_seq_length), threads=threads)
        vectors = encode_with_progress(lambda t: ref.encode(t, batch_size=batch_size), sentences, "torch fp32")
        columns["torch fp32"] = sts.score_tasks(tasks, sts.vector_map(sentences, vectors))
    for folder, embedder in zip(model_dirs, embedders):
        rows = embedder.manifest.raw.get("quantization", {}).get("activations") == "per-row"
        name = f"ONNX {embedder.manifest.quantization_mode}{' per-row' if rows else ''}"
        if name in columns:
            name = f"{name} ({Path(folder).name})"
        models[name] = _model_info(folder, embedder)
        vectors = encode_with_progress(lambda t, e=embedder: e.encode(t, batch_size=batch_size), sentences, name)
        columns[name] = sts.score_tasks(tasks, sts.vector_map(sentences, vectors))
    table = sts.markdown_table(columns, reference="torch fp32" if reference else None)
    print(table)
    result = {
        "model_dirs": [str(d) for d in model_dirs],
        "data": str(data),
        "per_task": per_task,
        "models": models,
        **({"provenance": provenance} if provenance else {}),
        "columns": columns,
        "summary": {name: sts.summary(scores) for name, scores in columns.items()},
    }
    if out_json:
        write_report(out_json, json.dumps(result, indent=2) + "\n")
    if out_md:
        write_report(out_md, table + "\n")
    return result



def _model_info(folder: str | os.PathLike[str], embedder: Embedder) -> dict:
    m = embedder.manifest
    return {"path": str(folder), "quantization": m.raw.get("quantization", {}).get("mode"),
            "recipe": m.recipe_name, "exporter": m.raw.get("exporter"), "parity": _parity_summary(m.raw.get("parity"))}


def _parity_summary(parity: dict | None) -> dict | None:
    """The export's own parity figures (manifest), against its first reference: all texts and the worst group."""
    if not parity or not parity.get("model"):
        return None
    first = parity["model"][0]
    groups = first.get("groups") or {}
    worst = min(groups, key=lambda g: groups[g]["min_cosine"]) if groups else None
    return {"against": first.get("against"), "max_abs_diff": first.get("max_abs_diff"),
            "min_cosine": first.get("min_cosine"), "worst_group": worst,
            "batch_invariance": parity.get("batch_invariance")}
