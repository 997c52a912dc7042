"""``export_model``: source model -> verified ONNX folder, written atomically.

Steps: resolve the source; export the fp32 graph (encoder + pooling); write tokenizer.json from
the transformers tokenizer actually loaded; for int8, smooth activations and quantize; write the
manifest (settings, versions, sha256 of every file); check parity against the torch reference
(fp32 intermediate and shipped model) and record it; only then move the folder into place.

A failed or interrupted export leaves no folder at the destination (work happens in a hidden
sibling folder that is renamed at the very end), so a half folder can never load.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from mstsb_onnx.embedder import MODEL_FILE, TOKENIZER_FILE, Embedder
from mstsb_onnx.errors import ExportError, ParityError
from mstsb_onnx.export import parity
from mstsb_onnx.export.deps import require
from mstsb_onnx.export.folder import atomic_folder, check_replaceable, work_folder, write_manifest
from mstsb_onnx.export.graph import DENSE_NODES, INPUT_NAMES, LAYOUTS, OPSET, OUTPUT_NAME, export_fp32
from mstsb_onnx.export.layout import write_model
from mstsb_onnx.probes import probe_set
from mstsb_onnx.export.card import CARD_NAME, model_card
from mstsb_onnx.export.provenance import code_revision
from mstsb_onnx.export.quantize import ACTIVATIONS, DEFAULT_ACTIVATIONS, QuantConfig, quantize_int8
from mstsb_onnx.export.reference import SentenceTransformersReference, TorchReference, lower_case_first
from mstsb_onnx.export.smooth import OUTLIER_SUFFIX, down_projections, smooth_graph
from mstsb_onnx.export.source import SourceModel, resolve_source
from mstsb_onnx.manifest import FORMAT, MANIFEST_NAME, sha256_file
from mstsb_onnx.tokenizer import Tokenizer, pad_batch

QUANTIZE_MODES = ("int8", "none")
# The shipped int8 quantizer settings; docs/int8-recipe.md has the measurements behind each choice.
DEFAULT_QUANT = QuantConfig(
    per_channel=True, reduce_range=False, embedding="int8-per-row", exclude=(OUTLIER_SUFFIX + "$",)
)


@dataclass(frozen=True)
class Recipe:
    """How activations are prepared for int8: smoothing strength and what stays fp32."""

    name: str
    alpha: float  # SmoothQuant migration strength
    outliers: int  # input channels of each down-projection computed in fp32
    fp32_down: bool  # keep every down-projection (feed-forward output) entirely fp32


# Tried in order until one passes parity (docs/int8-recipe.md has the measurements behind them).
# The first is the fast one; the second keeps every down-projection (the worst int8 inputs of any
# BERT-like FFN) in fp32, for checkpoints whose activations defeat the first.
RECIPES = (
    Recipe("smooth-outliers", 0.5, 128, False),
    Recipe("fp32-down", 0.7, 0, True),
)
RECIPE_CHOICES = ("auto", *(r.name for r in RECIPES))

Log = Callable[[str], None]


@dataclass
class ExportResult:
    path: Path
    manifest: dict


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("mstsb-onnx", "torch", "transformers", "onnx", "onnxruntime", "tokenizers", "optimum",
                 "optimum-onnx", "sentence-transformers", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


# Files transformers builds a tokenizer from (fast: tokenizer.json; slow: the rest).
TOKENIZER_SOURCES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "vocab.txt",
                     "vocab.json", "merges.txt", "spm.model")


def _write_tokenizer(src: SourceModel, out: Path) -> tuple[object, int]:
    """Save the backend of the tokenizer transformers loads: what the reference really uses."""
    from transformers import AutoTokenizer

    found = sorted(p.name for p in src.model_dir.iterdir() if p.name in TOKENIZER_SOURCES)
    if not found:
        raise ExportError(f"{src.model_dir}: no tokenizer files (looked for {', '.join(TOKENIZER_SOURCES)}); "
                          "export a folder saved with its tokenizer (tokenizer.save_pretrained(DIR))")
    try:
        tok = AutoTokenizer.from_pretrained(str(src.model_dir), trust_remote_code=False)
    except (OSError, ValueError, ImportError, AttributeError, TypeError) as e:
        # transformers fails in many ways on tokenizer folders it cannot use (a missing optional
        # package, a vocabulary file of another tokenizer class); all of them end the export here.
        raise ExportError(f"{src.model_dir}: transformers could not load the tokenizer from {found} "
                          f"({type(e).__name__}: {e}); is `pip install \"mstsb-onnx[export]\"` complete?") from e
    if not getattr(tok, "is_fast", False):
        raise ExportError(f"{src.model_dir}: no fast tokenizer could be built (is `tokenizers` installed?)")
    if src.do_lower_case:
        lower_case_first(tok)
    # Compact JSON: half the size of the pretty form (8 vs 16 MB for XLM-R), same tokenizer.
    tok.backend_tokenizer.save(str(out / TOKENIZER_FILE), pretty=False)
    if tok.pad_token_id is None:
        raise ExportError(f"{src.model_dir}: the tokenizer has no pad token")
    return tok, int(tok.pad_token_id)


def _warn_tokens_without_rows(tok: object, rows: int, log: Log) -> None:
    """Tokens the tokenizer can emit but the embedding table has no row for (tokens added to the
    tokenizer without resizing the model). Torch fails on them too; the runtime refuses texts that
    contain them by name (the manifest's vocab_size), so the export goes on and says so."""
    beyond = sorted((i, t) for t, i in tok.get_vocab().items() if i >= rows)  # type: ignore[attr-defined]
    if beyond:
        shown = ", ".join(f"{t!r} = {i}" for i, t in beyond[:5]) + (", ..." if len(beyond) > 5 else "")
        log(f"warning: the tokenizer has {len(beyond)} token(s) with no row in the model's {rows}-row embedding "
            f"table ({shown}); texts that contain them will be refused -- resize the model's embeddings "
            "(model.resize_token_embeddings(len(tokenizer))) and train them, or remove the tokens")


def probe_feeds(tokenizer_path: Path, max_seq_length: int, pad_id: int, prompt: str) -> Iterator[dict[str, np.ndarray]]:
    """Calibration batches of 16: the built-in multilingual probes with the model's default prompt."""
    tok = Tokenizer.from_file(tokenizer_path, max_seq_length, pad_id)
    seqs = tok.encode([prompt + t for texts in probe_set().values() for t in texts])
    for start in range(0, len(seqs), 16):
        ids, mask = pad_batch(seqs[start : start + 16], pad_id)
        yield {"input_ids": ids, "attention_mask": mask}


def _manifest(src: SourceModel, folder: Path, info: dict, quant: dict, pad_id: int) -> dict:
    return {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"model_id": src.model_id, "revision": src.revision,
                   "sentence_transformers": src.sentence_transformers,
                   **({"revision_note": src.revision_note} if src.revision_note else {})},
        "dim": info["dim"],
        "vocab_size": info["embedding_rows"],
        "max_seq_length": src.max_seq_length,
        "pooling": src.pooling,
        "normalize": src.normalize,
        "lowercase": src.do_lower_case,
        "prompts": src.prompts,
        "default_prompt_name": src.default_prompt_name,
        "pad_token_id": pad_id,
        "onnx": {"opset": OPSET, "inputs": INPUT_NAMES, "output": OUTPUT_NAME, "exporter": "torch.onnx (dynamo=False)",
                 "layout": info["layout"]},
        "quantization": quant,
        "exporter": code_revision(),
        "versions": _versions(),
        "files": {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_NAME},
    }


def _quantize(recipe: Recipe, work: Path, out: Path, calibration: Callable[[], Iterator[dict[str, np.ndarray]]],
              activations: str) -> dict:
    """Smooth ``work/fp32.onnx`` and write the int8 model to ``out``; returns its manifest entry."""
    import onnx

    graph = onnx.load(str(work / "fp32.onnx"), load_external_data=False)
    # Dense heads stay fp32: per-sentence work, and their error would land on the output directly.
    dense = [n.name for n in graph.graph.node if re.search(DENSE_NODES, n.name)]
    skip = dense + (down_projections(graph) if recipe.fp32_down else [])
    smooth = smooth_graph(work / "fp32.onnx", work / "smooth.onnx", calibration(), alpha=recipe.alpha,
                          outliers=recipe.outliers, skip=skip)
    config = replace(DEFAULT_QUANT, exclude=DEFAULT_QUANT.exclude + tuple(f"^{re.escape(n)}$" for n in skip),
                     activations=activations)
    q = quantize_int8(work / "smooth.onnx", out, config, calibration() if activations == "static" else None)
    return {"mode": "int8", "recipe": asdict(recipe), **config.to_dict(), "smoothing": smooth, **q}


def _references(src: SourceModel, threads: int | None) -> tuple[TorchReference, dict[str, object]]:
    """The torch reference (card code) and, for sentence-transformers folders, ST's encode too."""
    reference = TorchReference(src, threads=threads)
    references: dict[str, object] = {"torch (transformers + pooling)": reference}
    if src.sentence_transformers:
        references["sentence-transformers"] = SentenceTransformersReference(src)
    return reference, references


def _ship(onnx_path: Path, folder: Path) -> None:
    import onnx

    write_model(onnx.load(str(onnx_path)), folder / MODEL_FILE)


def export_model(
    source: str,
    output: str | os.PathLike[str],
    *,
    quantize: str = "int8",
    revision: str | None = None,
    max_seq_length: int | None = None,
    force: bool = False,
    threads: int | None = None,
    int8_recipe: str = "auto",
    layout: str = "auto",
    activations: str | None = None,
    languages: str | Sequence[str] | None = None,
    corpus: str | os.PathLike[str] | None = None,
    log: Log = print,
) -> ExportResult:
    """Export ``source`` (hub id or folder) to ``output``; raises ``ParityError`` if parity fails.

    ``int8_recipe="auto"`` tries ``RECIPES`` in order and ships the first that passes parity
    (the manifest records which, and why earlier ones were rejected); a recipe's name tries only it.
    ``layout`` is the activation layout traced into the graph (``graph.LAYOUTS``). ``activations``
    is how int8 activations are scaled: "per-row" (the default: one scale per token) or "static"
    (constants calibrated at export) -- with either, a text's vector does not depend on its
    batch-mates -- or "per-tensor" (one per batch, faster). ``languages`` / ``corpus``
    trim the vocabulary afterwards (``trim.trim_folder``): only the trimmed folder is written.
    """
    if quantize not in QUANTIZE_MODES:
        raise ExportError(f"--quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if int8_recipe not in RECIPE_CHOICES:
        raise ExportError(f"--int8-recipe must be one of {RECIPE_CHOICES}, got {int8_recipe!r}")
    if layout not in LAYOUTS:
        raise ExportError(f"--layout must be one of {LAYOUTS}, got {layout!r}")
    activations = DEFAULT_ACTIVATIONS if activations is None else activations
    if activations not in ACTIVATIONS:
        raise ExportError(f"--activations must be one of {ACTIVATIONS}, got {activations!r}")
    if languages or corpus is not None:
        return _export_trimmed(source, Path(output).expanduser().resolve(), force, languages, corpus, log,
                               quantize=quantize, revision=revision, max_seq_length=max_seq_length, threads=threads,
                               int8_recipe=int8_recipe, layout=layout, activations=activations)
    require()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    output = Path(output).expanduser().resolve()
    check_replaceable(output, force)
    src = resolve_source(source, revision=revision, max_seq_length=max_seq_length)
    if src.revision_note:
        log(f"revision: {src.revision_note}")
    log(f"source: {src.model_id} ({'sentence-transformers' if src.sentence_transformers else 'transformers'} "
        f"folder; pooling={src.pooling}, max_seq_length={src.max_seq_length}, normalize={src.normalize}, "
        f"default prompt={src.default_prompt!r})")
    with atomic_folder(output, force) as tmp:
        work = tmp / "work"
        work.mkdir()
        log("exporting the fp32 graph (torch.onnx, encoder + pooling)...")
        info = export_fp32(src, work / "fp32.onnx", layout=layout)
        if info["max_seq_length"] != src.max_seq_length:
            log(f"max_seq_length {src.max_seq_length} (from {src.max_seq_length_from}) cut to the "
                f"{info['max_seq_length']} positions the model can embed")
            src.max_seq_length = info["max_seq_length"]
        reference_tok, pad_id = _write_tokenizer(src, tmp)
        _warn_tokens_without_rows(reference_tok, info["embedding_rows"], log)
        reference, references = _references(src, threads)

        # Parity of the fp32 graph first: an export bug must not hide behind quantization noise.
        _ship(work / "fp32.onnx", tmp)
        manifest = _manifest(src, tmp, info, {"mode": "none"}, pad_id)
        write_manifest(tmp, manifest)
        # verify="off": the files were hashed a line above; a stamp for this temp folder would be litter.
        shipped = Embedder(tmp, threads=threads, verify="off")
        fp32_reports, failures = parity.check_against(
            shipped, references, reference.tokenize, src.default_prompt, quantized=False
        )
        for r in fp32_reports:
            log("fp32 " + r.table())
        parity.raise_on(failures, "the fp32 graph")

        reports = fp32_reports
        if quantize == "int8":
            rejected: list[dict] = []
            for recipe in RECIPES if int8_recipe == "auto" else [r for r in RECIPES if r.name == int8_recipe]:
                log(f"int8, recipe {recipe.name}: smoothing activations and quantizing...")
                quant = _quantize(recipe, work, tmp / MODEL_FILE,
                                  partial(probe_feeds, tmp / TOKENIZER_FILE, src.max_seq_length, pad_id, src.default_prompt),
                                  activations)
                quant["rejected_recipes"] = rejected
                manifest = _manifest(src, tmp, info, quant, pad_id)
                write_manifest(tmp, manifest)
                shipped = Embedder(tmp, threads=threads, verify="off")
                reports, failures = parity.check_against(
                    shipped, references, reference.tokenize, src.default_prompt, quantized=True
                )
                for r in reports:
                    log("int8 " + r.table())
                if not failures:
                    break
                rejected.append({"recipe": recipe.name, "failures": failures})
                log(f"recipe {recipe.name} failed parity: {'; '.join(failures)}")
            else:
                tried = "; ".join(f"{r['recipe']}: {' / '.join(r['failures'])}" for r in rejected)
                raise ParityError(f"the int8 model failed parity with every recipe tried ({tried}); "
                                  "export with --quantize none for an fp32 model")
        shutil.rmtree(work)  # the manifest's file list never included it: only regular files are listed
        invariance = parity.batch_invariance(shipped, src.default_prompt)  # the model that ships
        log(parity.invariance_line(invariance))

        manifest["parity"] = {
            "thresholds": {"fp32_max_abs_diff": parity.FP32_MAX_ABS_DIFF, "int8_min_cosine": parity.INT8_MIN_COSINE},
            "fp32_graph": [r.as_dict() for r in fp32_reports],
            "model": [r.as_dict() for r in reports],
            "tokenization": "identical to the transformers tokenizer on the probe set and edge cases",
            "batch_invariance": invariance,
        }
        manifest["tokenizer"] = {"written_from": f"transformers {type(reference_tok).__name__}.backend_tokenizer"}
        write_manifest(tmp, manifest)
        (tmp / CARD_NAME).write_text(model_card(manifest, output), encoding="utf-8")
    size = sum(p.stat().st_size for p in output.iterdir() if p.name.startswith(MODEL_FILE))
    log(f"wrote {output} ({size / 1e6:.1f} MB model, quantization={quantize})")
    return ExportResult(output, manifest)


def _export_trimmed(source: str, output: Path, force: bool, languages: str | Sequence[str] | None,
                    corpus: str | os.PathLike[str] | None, log: Log, **options: object) -> ExportResult:
    """Export the whole model into a hidden sibling, trim it into ``output``, remove the sibling."""
    from mstsb_onnx.export.pieces import parse_languages
    from mstsb_onnx.export.trim import trim_folder

    if languages:
        parse_languages(languages)  # an unknown code fails before minutes of export, not after
    check_replaceable(output, force)
    full = work_folder(output)
    try:
        export_model(source, full, force=True, log=log, **options)  # type: ignore[arg-type]
        result = trim_folder(full, output, languages=languages or (), corpus=corpus, force=force,
                             threads=options.get("threads"), source_label=f"{source} (exported in the same run)",
                             log=log)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(full, ignore_errors=True)
    return ExportResult(result.path, result.manifest)


def check_model(model_dir: str | os.PathLike[str], reference: str, texts: list[str] | None = None,
                threads: int | None = None, log: Log = print) -> list[parity.ParityReport]:
    """Re-run the export parity for an existing folder, optionally on user texts too."""
    require()
    embedder = Embedder(model_dir, threads=threads)
    src = resolve_source(reference, max_seq_length=embedder.max_seq_length)
    ref, references = _references(src, threads)
    quantized = embedder.manifest.quantization_mode == "int8"
    reports, failures = parity.check_against(
        embedder, references, ref.tokenize, embedder.manifest.default_prompt, quantized, extra_texts=texts or ()
    )
    for r in reports:
        log(r.table())
    log(parity.invariance_line(parity.batch_invariance(embedder, embedder.manifest.default_prompt)))
    parity.raise_on(failures, str(model_dir))
    return reports
