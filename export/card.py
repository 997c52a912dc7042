"""The model card (``README.md``) of an exported folder, written from its manifest.

Everything in it comes from the manifest the same export wrote -- source, dim, pooling, prompts,
quantization recipe, parity figures, exporter commit -- so it states only what was measured for
this folder. It is not hashed into the manifest (it is written after it, from it).
"""

from __future__ import annotations

from pathlib import Path

from mstsb_onnx.export.parity import invariance_line

CARD_NAME = "README.md"


def _parity_rows(parity: dict) -> list[str]:
    rows = ["| graph | against | texts | max abs diff | min cosine | worst group |", "|---|---|---|---|---|---|"]
    for graph in ("fp32_graph", "model"):
        for report in parity.get(graph, []):
            groups = report.get("groups", {})
            worst = min(groups, key=lambda g: groups[g]["min_cosine"]) if groups else "-"
            n = sum(g["n"] for g in groups.values())
            label = "fp32 graph" if graph == "fp32_graph" else "shipped model"
            rows.append(f"| {label} | {report['against']} | {n} | {report['max_abs_diff']:.2e} | "
                        f"{report['min_cosine']:.5f} | {worst} |")
    return rows


def _invariance_lines(inv: dict | None) -> list[str]:
    if not inv:
        return []
    line = invariance_line(inv)
    return [line[0].upper() + line[1:] + ".", ""]


def _activation_scales(mode: str | None) -> str:
    """How the card describes the export's activation scales."""
    if mode == "per-row":
        return "with one scale per row (a text's vector does not depend on its batch-mates)"
    if mode == "static":
        return "with constant scales calibrated at export (the same for every batch)"
    return "with one scale per batch (a text's vector moves slightly with its batch-mates)"


def _quantization_lines(quant: dict) -> list[str]:
    if quant.get("mode") != "int8":
        return ["fp32: no quantization."]
    recipe, smoothing = quant.get("recipe") or {}, quant.get("smoothing") or {}
    lines = [f"int8, recipe `{recipe.get('name')}`: SmoothQuant alpha {recipe.get('alpha')}, "
             f"{'every down-projection kept fp32' if recipe.get('fp32_down') else 'down-projections int8 but for their outlier channels'}; "
             f"weights per-channel int8, activations quantized at run time "
             + _activation_scales(quant.get("activations"))
             + f"; embedding table {quant.get('embedding')}."]
    if smoothing.get("outlier_split_groups"):
        lines.append(f"fp32 outlier channels per down-projection: {smoothing['outlier_channels_fp32']} "
                     f"({smoothing['outlier_split_groups']} projections).")
    for rejected in quant.get("rejected_recipes", []):
        lines.append(f"Rejected first: `{rejected['recipe']}` ({'; '.join(rejected['failures'])}).")
    return lines


def _trim_lines(trim: dict | None) -> list[str]:
    if not trim:
        return []
    what = ", ".join(trim["languages"]) if trim.get("languages") else ""
    if trim.get("corpus"):
        what += (" and " if what else "") + f"a {trim['corpus']['lines']:,}-line corpus"
    parity = trim.get("parity") or {}
    lines = ["## Vocabulary trim", "",
             f"Trimmed for {what}: {trim['pieces_kept']:,} of {trim['source']['vocab_size']:,} pieces kept "
             f"(from `{trim['source']['path']}`). Texts whose pieces were all kept embed bit for bit as before "
             f"({parity.get('covered', 0)} checked, max abs diff {parity.get('covered_max_abs_diff', 0):.1e}); "
             "others are segmented into kept pieces.", "",
             "| texts | tokenized as before | tokens kept |", "|---|---|---|"]
    for name, c in trim.get("coverage", {}).items():
        lines.append(f"| {name} ({c['texts']}) | {c['sentences']:.1%} | {c['tokens']:.2%} |")
    return lines + [""]


def model_card(manifest: dict, folder: Path) -> str:
    """Markdown for ``folder/README.md``."""
    src, parity = manifest["source"], manifest.get("parity", {})
    languages = [g for g in (parity.get("model") or [{}])[0].get("groups", {}) if g != "edge"]
    exporter = manifest.get("exporter") or {}
    prompts = manifest.get("prompts") or {}
    lines = [
        "---", "library_name: mstsb-onnx", "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, feature-extraction, onnx, " + manifest["quantization"]["mode"] + "]", "---", "",
        f"# {folder.name}", "",
        f"ONNX export of `{src['model_id']}`" + (f" (revision `{src['revision']}`)" if src.get("revision") else "")
        + f" by mstsb-onnx {exporter.get('version')}" + (f", commit {exporter['commit'][:12]}" if exporter.get("commit") else "")
        + (" with uncommitted changes" if exporter.get("dirty") else "") + f", {manifest.get('created')}.", "",
        "| | |", "|---|---|",
        f"| embedding dim | {manifest['dim']} |",
        f"| max_seq_length | {manifest['max_seq_length']} tokens (longer texts are truncated) |",
        f"| pooling | {manifest['pooling']}{', L2-normalised' if manifest.get('normalize') else ''} (inside the graph) |",
        f"| prompts | {', '.join(f'{k}: {v!r}' for k, v in prompts.items()) or 'none'}"
        + (f"; default `{manifest['default_prompt_name']}`" if manifest.get("default_prompt_name") else "") + " |",
        f"| lower-cases input | {'yes' if manifest.get('lowercase') else 'no'} |",
        f"| vocabulary rows | {manifest.get('vocab_size')} |",
        f"| parity checked on | {', '.join(languages)}, plus tokenizer edge cases |", "",
        "## Quantization", "", *_quantization_lines(manifest["quantization"]), "",
        "## Parity against the torch reference", "",
        "Measured at export on the built-in probes; tolerances: fp32 max abs diff <= "
        f"{parity.get('thresholds', {}).get('fp32_max_abs_diff')}, int8 min cosine >= "
        f"{parity.get('thresholds', {}).get('int8_min_cosine')} per text.", "",
        *_parity_rows(parity), "", *_invariance_lines(parity.get("batch_invariance")),
        *_trim_lines(manifest.get("trim")),
        "## Use", "", "```python", "from mstsb_onnx import Embedder", "",
        f'emb = Embedder("{folder.name}")', 'vectors = emb.encode(["Hola, ¿cómo estás?", "Hello, how are you?"])',
        "emb.similarity(vectors, vectors)", "```", "",
        f"`pip install mstsb-onnx` (onnxruntime, tokenizers, numpy). `mstsb-onnx info {folder.name}` shows the "
        "manifest and verifies the files' sha256s; `mstsb-onnx check` re-measures parity on your install.",
    ]
    return "\n".join(lines) + "\n"
