"""``trim_folder``: an exported folder -> the same model with only the pieces some languages need.

The word-embedding table is most of an int8 XLM-R folder (250,002 rows x 768). Trimming keeps
the pieces that ``pieces.choose_pieces`` selects, in their original order with their original
scores, renumbers them, and rewrites the three places that know ids: the tokenizer (vocabulary,
unk id, added tokens, post-processor, padding), the graph (every Gather of ``input_ids`` from a
table with one row per piece) and the manifest (pad id, vocab size). A text whose tokenization
used only kept pieces is tokenized into the same pieces and embedded bit for bit as before; the
trim checks that on the probes (and the corpus) before the folder is moved into place.

It does not re-export or re-quantize: the source folder's graph and recipe are kept as they are.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mstsb_onnx.embedder import MODEL_FILE, TOKENIZER_FILE, Embedder
from mstsb_onnx.errors import ExportError
from mstsb_onnx.export import pieces
from mstsb_onnx.export.card import CARD_NAME, model_card
from mstsb_onnx.export.deps import require
from mstsb_onnx.export.folder import atomic_folder, check_replaceable, write_manifest
from mstsb_onnx.export.provenance import code_revision
from mstsb_onnx.manifest import MANIFEST_NAME, read_manifest, sha256_file, verify_files
from mstsb_onnx.probes import edge_cases, probe_set
from mstsb_onnx.similarity import cosine_similarity

Log = Callable[[str], None]
# Corpus lines re-embedded with both folders at trim time (all of them are used to choose pieces).
PARITY_CORPUS_LINES = 256


@dataclass
class TrimResult:
    path: Path
    manifest: dict


def read_corpus(path: str | os.PathLike[str]) -> list[str]:
    """Non-empty lines of a UTF-8 text file; anything else is a one-line error naming the line."""
    data = Path(path).read_bytes() if str(path) != "-" else __import__("sys").stdin.buffer.read()
    lines = []
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise ExportError(f"{path}, line {number}: not UTF-8 ({e.reason} at byte {e.start}); "
                              "re-save the corpus as UTF-8") from None
        if line:
            lines.append(line)
    if not lines:
        raise ExportError(f"{path}: the corpus has no text")
    return lines


def _tokenizer_ids(doc: dict) -> set[int]:
    """Ids the tokenizer itself refers to: added tokens, unk, post-processor, padding."""
    ids = {int(t["id"]) for t in doc.get("added_tokens", [])}
    if doc["model"].get("unk_id") is not None:
        ids.add(int(doc["model"]["unk_id"]))
    ids.update(_post_processor_ids(doc.get("post_processor")))
    if doc.get("padding"):
        ids.add(int(doc["padding"]["pad_id"]))
    return ids


def _post_processor_ids(pp: dict | None, remap: dict[int, int] | None = None) -> set[int]:
    """The ids a post-processor holds, rewritten in place through ``remap`` when given."""
    if pp is None:
        return set()
    kind, found = pp.get("type"), set()
    if kind == "Sequence":
        for sub in pp["processors"]:
            found |= _post_processor_ids(sub, remap)
    elif kind == "TemplateProcessing":
        for special in pp["special_tokens"].values():
            found.update(special["ids"])
            if remap is not None:
                special["ids"] = [remap[i] for i in special["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            found.add(pp[key][1])
            if remap is not None:
                pp[key][1] = remap[pp[key][1]]
    elif kind != "ByteLevel":
        raise ExportError(f"the tokenizer's post-processor {kind!r} is not one trim knows how to renumber")
    return found


def remap_tokenizer(doc: dict, kept: Sequence[int]) -> dict:
    """A copy of tokenizer.json ``doc`` holding only the pieces ``kept`` (sorted old ids)."""
    doc = json.loads(json.dumps(doc))
    remap = {old: new for new, old in enumerate(kept)}
    missing = sorted(_tokenizer_ids(doc) - remap.keys())
    if missing:
        raise ExportError(f"ids {missing[:5]} that the tokenizer refers to would be removed")
    model = doc["model"]
    model["vocab"] = [model["vocab"][i] for i in kept]
    if model.get("unk_id") is not None:
        model["unk_id"] = remap[model["unk_id"]]
    for token in doc.get("added_tokens", []):
        token["id"] = remap[token["id"]]
    _post_processor_ids(doc.get("post_processor"), remap)
    if doc.get("padding"):
        doc["padding"]["pad_id"] = remap[doc["padding"]["pad_id"]]
    return doc


def _embedding_tables(model, rows: int) -> list[object]:
    """Initializers gathered by ``input_ids`` with one row per piece (values, and int8 row scales)."""
    inits = {t.name: t for t in model.graph.initializer}
    tables = []
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[1] == "input_ids" and node.input[0] in inits:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            table = inits[node.input[0]]
            if axis == 0 and table.dims and table.dims[0] == rows:
                tables.append(table)
    if not tables:
        raise ExportError(f"no {rows}-row table gathered by input_ids in the graph; is this an mstsb-onnx export?")
    return tables


def slice_graph(src: Path, out: Path, kept: Sequence[int], rows: int) -> int:
    """Write ``src``'s graph to ``out`` with the embedding tables cut to ``kept`` rows; bytes saved."""
    import onnx
    from onnx import numpy_helper

    from mstsb_onnx.export.layout import write_model

    model = onnx.load(str(src))
    index, saved = np.asarray(kept, dtype=np.int64), 0
    for table in _embedding_tables(model, rows):
        full = numpy_helper.to_array(table)
        cut = numpy_helper.from_array(np.ascontiguousarray(full[index]), table.name)
        saved += full.nbytes - cut.raw_data.__len__()
        table.CopyFrom(cut)
    write_model(model, out)
    return saved


def coverage(tokenize: pieces.Tokenize, texts: Sequence[str], kept: set[int]) -> dict[str, float | int]:
    """Share of texts tokenized exactly as before (every piece kept), and of tokens kept."""
    seqs = tokenize(list(texts))
    exact = sum(all(i in kept for i in seq) for seq in seqs)
    tokens = sum(len(seq) for seq in seqs)
    tokens_kept = sum(i in kept for seq in seqs for i in seq)
    return {"texts": len(seqs), "sentences": round(exact / max(len(seqs), 1), 4),
            "tokens": round(tokens_kept / max(tokens, 1), 5)}


def _trimmed_languages(manifest: dict) -> tuple[str, ...] | None:
    trim = manifest.get("trim")
    return None if trim is None else tuple(trim.get("languages") or ())


def _check_narrowing(manifest: dict, source: Path, languages: Sequence[str]) -> None:
    """A trimmed folder can be trimmed further, never widened: removed pieces cannot come back."""
    had = _trimmed_languages(manifest)
    if had is None or not languages:
        return
    extra = sorted(set(languages) - set(had))
    if extra:
        untrimmed = manifest["trim"]["source"]["path"]
        raise ExportError(f"{source} is already trimmed to {', '.join(had) or 'a corpus'}; {', '.join(extra)} "
                          f"would need pieces it no longer has -- trim the untrimmed folder ({untrimmed}) instead")


def _load_tokenizer(folder: Path) -> tuple[dict, pieces.Tokenize]:
    from tokenizers import Tokenizer as HFTokenizer

    doc = json.loads((folder / TOKENIZER_FILE).read_text(encoding="utf-8"))
    if doc.get("model", {}).get("type") != "Unigram":
        raise ExportError(f"{folder}: the tokenizer is {doc.get('model', {}).get('type')!r}; only SentencePiece "
                          "Unigram tokenizers (XLM-R and its family) can be trimmed")
    tok = HFTokenizer.from_str(json.dumps(doc))
    tok.no_truncation()
    tok.no_padding()
    return doc, lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def _select(source: Path, manifest: dict, doc: dict, tokenize: pieces.Tokenize, languages: Sequence[str],
            corpus: Sequence[str], words: int, words_for: Callable[[str, int], list[str]],
            log: Log) -> tuple[list[int], dict[str, int]]:
    pad = int(manifest["pad_token_id"])
    vocab = [(str(p), float(s)) for p, s in doc["model"]["vocab"]]
    sel = pieces.choose_pieces(vocab, _tokenizer_ids(doc) | {pad}, tokenize, languages=languages, corpus=corpus,
                               words=words, words_for=words_for, log=log)
    kept = sorted(sel.ids)
    if kept.index(pad) != pad:
        # The graph compares input_ids with the pad id (XLM-R's position ids): it must not move.
        raise ExportError(f"{source}: pieces before the pad id {pad} would be removed, which moves it")
    log(f"keeping {len(kept):,} of {len(vocab):,} pieces ({', '.join(f'{k} {v:,}' for k, v in sel.added.items())})")
    return kept, dict(sel.added)


def _texts_by_group(corpus: Sequence[str]) -> dict[str, list[str]]:
    groups = probe_set()
    groups["edge"] = list(edge_cases().values())
    if corpus:
        step = max(1, len(corpus) // PARITY_CORPUS_LINES)
        groups["corpus"] = list(corpus[::step][:PARITY_CORPUS_LINES])
    return groups


def compare(before: Embedder, after: Embedder, groups: dict[str, list[str]], covered: Callable[[str], bool]) -> dict:
    """Each text alone through both folders: covered texts must be bit-identical."""
    out: dict = {"covered": 0, "covered_max_abs_diff": 0.0, "changed": 0, "changed_min_cosine": None}
    for texts in groups.values():
        for text in texts:
            a, b = before.encode([text], batch_size=1)[0], after.encode([text], batch_size=1)[0]
            if covered(text):
                out["covered"] += 1
                out["covered_max_abs_diff"] = max(out["covered_max_abs_diff"], float(np.abs(a - b).max()))
            else:
                cos = float(cosine_similarity(a, b)[0, 0])
                out["changed"] += 1
                out["changed_min_cosine"] = min(cos, out["changed_min_cosine"] or cos)
    return out


def _digest(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _trim_record(source: str, manifest: dict, languages: Sequence[str], corpus: Sequence[str], words: int,
                 kept: list[int], by_rule: dict[str, int], tokenize: pieces.Tokenize,
                 groups: dict[str, list[str]]) -> dict:
    kept_set = set(kept)
    return {
        "source": {"path": source, "files": manifest["files"], "vocab_size": manifest["vocab_size"],
                   **({"trim": manifest["trim"]} if "trim" in manifest else {})},
        "languages": list(languages),
        "words_per_language": words if languages else 0,
        "word_lists": "wordfreq " + _wordfreq_version() if languages else None,
        "corpus": {"lines": len(corpus), "sha256": _digest(corpus)} if corpus else None,
        "pieces_kept": len(kept),
        "pieces_removed": int(manifest["vocab_size"]) - len(kept),
        "pieces_by_rule": by_rule,  # each piece counted under the first rule that kept it
        "coverage": {name: coverage(tokenize, texts, kept_set) for name, texts in groups.items()},
    }


def _wordfreq_version() -> str:
    import importlib.metadata as md

    return md.version("wordfreq")


def _write_folder(source: Path, tmp: Path, doc: dict, kept: list[int], rows: int) -> None:
    remapped = remap_tokenizer(doc, kept)
    (tmp / TOKENIZER_FILE).write_text(json.dumps(remapped, ensure_ascii=False, separators=(",", ":")),
                                      encoding="utf-8")
    slice_graph(source / MODEL_FILE, tmp / MODEL_FILE, kept, rows)
    written = {TOKENIZER_FILE, MODEL_FILE, MODEL_FILE + ".data", MANIFEST_NAME, CARD_NAME}
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in written:
            shutil.copy2(path, tmp / path.name)


def _trimmed_manifest(tmp: Path, manifest: dict, trim: dict, rows: int) -> dict:
    """The source's manifest with the trim's vocab size, record and file hashes."""
    out = json.loads(json.dumps(manifest))
    out["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out["vocab_size"] = rows
    out["trim"] = trim
    out["trim"]["exporter"] = code_revision()
    out["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())
                    if p.is_file() and p.name not in (MANIFEST_NAME, CARD_NAME)}
    return out


def trim_folder(model_dir: str | os.PathLike[str], output: str | os.PathLike[str], *,
                languages: str | Sequence[str] = (), corpus: str | os.PathLike[str] | None = None,
                words: int = pieces.DEFAULT_WORDS, force: bool = False, threads: int | None = None,
                words_for: Callable[[str, int], list[str]] | None = None, source_label: str | None = None,
                log: Log = print) -> TrimResult:
    """Write ``output``: ``model_dir`` with only the pieces ``languages`` and ``corpus`` need.

    ``languages`` is e.g. "es,en" (``pieces.LANGUAGES``; "card" = the card's 16); ``corpus`` a UTF-8
    text file whose lines are tokenized in full. ``words`` is how many of each language's most
    frequent words are tokenized, from ``words_for(language, n)`` (default: wordfreq).
    ``source_label`` replaces the source path in the manifest (export --languages trims a folder
    that is gone afterwards). Raises ``ParityError`` if a covered text's
    vector changed.
    """
    from mstsb_onnx.errors import ParityError

    require("onnx", extra="trim")
    source, output = Path(model_dir).expanduser().resolve(), Path(output).expanduser().resolve()
    if source == output:
        raise ExportError(f"{output} is the folder being trimmed; write the trimmed model elsewhere")
    manifest = read_manifest(source)
    verify_files(source, manifest)
    langs = pieces.parse_languages(languages) if languages else ()
    _check_narrowing(manifest.raw, source, langs)
    lines = read_corpus(corpus) if corpus is not None else []
    if not langs and not lines:
        raise ExportError("nothing to keep: pass --languages (e.g. es,en) and/or --corpus FILE")
    check_replaceable(output, force)
    doc, tokenize = _load_tokenizer(source)
    kept, by_rule = _select(source, manifest.raw, doc, tokenize, langs, lines, words,
                            words_for or pieces.word_list, log)
    rows = int(manifest.raw["vocab_size"])
    with atomic_folder(output, force) as tmp:
        _write_folder(source, tmp, doc, kept, rows)
        groups = _texts_by_group(lines)
        trim = _trim_record(source_label or str(source), manifest.raw, langs, lines, words, kept, by_rule, tokenize,
                            groups)
        written = _trimmed_manifest(tmp, manifest.raw, trim, len(kept))
        write_manifest(tmp, written)
        kept_set, prompt = set(kept), manifest.default_prompt
        parity = compare(Embedder(source, threads=threads), Embedder(tmp, threads=threads, verify="off"),
                         groups, lambda t: all(i in kept_set for i in tokenize([prompt + t])[0]))
        log(f"parity: {parity['covered']} covered texts, max abs diff {parity['covered_max_abs_diff']:.1e}; "
            f"{parity['changed']} segmented differently" + (f" (min cosine {parity['changed_min_cosine']:.4f})"
                                                             if parity["changed"] else ""))
        if parity["covered_max_abs_diff"] != 0.0:
            raise ParityError(f"trimming changed the vector of a text whose pieces were all kept "
                              f"(max abs diff {parity['covered_max_abs_diff']:.2e}); this is a bug, please report it")
        written["trim"]["parity"] = parity  # the files are as hashed above: only the record grows
        write_manifest(tmp, written)
        (tmp / CARD_NAME).write_text(model_card(written, output), encoding="utf-8")
    size = sum(p.stat().st_size for p in output.iterdir() if p.is_file())
    log(f"wrote {output} ({size / 1e6:.1f} MB, {len(kept):,} pieces)")
    return TrimResult(output, written)
