"""Vocabulary trimming: same pieces and bit-identical vectors on covered text, renumbering, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer

from mstsb_onnx import Embedder, ExportError, ModelFolderError
from mstsb_onnx.export import pieces
from mstsb_onnx.export.trim import remap_tokenizer, trim_folder
from mstsb_onnx.manifest import sha256_file

from conftest import _quiet, copy_folder, manifest_of, tiny_lines

EN_WORDS = ["the", "a", "man", "woman", "is", "playing", "guitar", "dog", "runs", "in", "park", "cat", "sleeps"]
ES_WORDS = ["el", "la", "hombre", "mujer", "toca", "guitarra", "perro", "corre", "parque", "gato", "duerme"]


def fake_words(language: str, n: int) -> list[str]:
    """Word lists for the tiny model's tests (the wordfreq ones are tested on the stand-in)."""
    return {"en": EN_WORDS, "es": ES_WORDS}.get(language, [])[:n]


def pieces_of(folder: Path, texts: list[str]) -> list[list[str]]:
    tok = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    return [e.tokens for e in tok.encode_batch(texts, add_special_tokens=True)]


def vocab_of(folder: Path) -> list[str]:
    return [p for p, _ in json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]]


@pytest.fixture(scope="module")
def tiny_trimmed(tiny_int8: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text("A man is playing a guitar.\nUn hombre toca la guitarra.\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("trimmed") / "model"
    return trim_folder(tiny_int8, out, languages="es,en", corpus=corpus, words_for=fake_words, log=_quiet).path


def test_covered_texts_keep_their_pieces_and_vectors_bit_for_bit(tiny_int8: Path, tiny_trimmed: Path) -> None:
    lines = tiny_lines()
    kept = set(vocab_of(tiny_trimmed))
    before, after = pieces_of(tiny_int8, lines), pieces_of(tiny_trimmed, lines)
    covered = [t for t, p in zip(lines, before) if set(p) <= kept]
    assert 5 <= len(covered) < len(lines)  # both kinds occur, so both halves below are exercised
    for text, p_before, p_after in zip(lines, before, after):
        if text in covered:
            assert p_after == p_before, text
    a = Embedder(tiny_int8).encode(covered, batch_size=8)
    b = Embedder(tiny_trimmed).encode(covered, batch_size=8)
    assert np.array_equal(a, b)


def test_uncovered_text_is_segmented_into_kept_pieces_not_unk(tiny_int8: Path, tiny_trimmed: Path) -> None:
    lines = [t for t in tiny_lines() if t.strip()]
    src, out = (HFTokenizer.from_file(str(f / "tokenizer.json")) for f in (tiny_int8, tiny_trimmed))
    unk_src, unk_out = src.token_to_id("<unk>"), out.token_to_id("<unk>")
    singles = {p.replace("▁", "") for p in vocab_of(tiny_trimmed) if len(p.replace("▁", "")) == 1}
    changed = 0
    for text in lines:
        before, after = src.encode(text).ids, out.encode(text).ids
        changed += [src.id_to_token(i) for i in before] != [out.id_to_token(i) for i in after]
        if unk_src not in before and set(text.replace(" ", "")) <= singles:
            assert unk_out not in after, text  # its characters were kept: never <unk>
    assert changed > 0
    assert np.isfinite(Embedder(tiny_trimmed).encode(lines)).all()


def test_manifest_records_the_trim(tiny_int8: Path, tiny_trimmed: Path) -> None:
    import onnx

    m, src = manifest_of(tiny_trimmed), manifest_of(tiny_int8)
    trim = m["trim"]
    assert trim["source"]["files"] == src["files"] and trim["source"]["vocab_size"] == src["vocab_size"]
    assert trim["languages"] == ["en", "es"] and trim["corpus"]["lines"] == 2
    rows = len(vocab_of(tiny_trimmed))
    assert m["vocab_size"] == trim["pieces_kept"] == rows < src["vocab_size"]
    assert trim["pieces_removed"] == src["vocab_size"] - rows
    # every kept piece is counted under exactly one rule
    by_rule = trim["pieces_by_rule"]
    assert sum(by_rule.values()) == rows and by_rule["words"] > 0 and by_rule["characters"] > 0
    graph = onnx.load(str(tiny_trimmed / "model.onnx"))
    tables = [t for t in graph.graph.initializer if t.name.startswith("encoder.embeddings.word_embeddings")]
    assert tables and all(t.dims[0] == rows for t in tables)
    for name, digest in m["files"].items():
        assert sha256_file(tiny_trimmed / name) == digest
    assert trim["parity"]["covered"] > 0 and trim["parity"]["covered_max_abs_diff"] == 0.0
    assert "Vocabulary trim" in (tiny_trimmed / "README.md").read_text()


def test_ids_are_renumbered_everywhere() -> None:
    """A hand-made Unigram tokenizer: specials, unk in the middle, <mask> last, post-processor ids."""
    from tokenizers import models, pre_tokenizers, processors

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("▁a", -1.0), ("<unk>", 0.0), ("▁b", -2.0),
             ("c", -3.0), ("▁ab", -4.0), ("z", -9.0), ("<mask>", 0.0), ("▁", -5.0)]
    tok = HFTokenizer(models.Unigram(vocab, unk_id=4, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    doc = json.loads(tok.to_str())
    assert tok.encode("a c <mask>").ids == [0, 3, 10, 6, 10, 9, 2]
    trimmed = HFTokenizer.from_str(json.dumps(remap_tokenizer(doc, [0, 1, 2, 3, 4, 6, 8, 9, 10])))
    enc = trimmed.encode("a c <mask>")  # covered: same pieces, new ids (c 6->5, ▁ 10->8, <mask> 9->7)
    assert enc.tokens == ["<s>", "▁a", "▁", "c", "▁", "<mask>", "</s>"] and enc.ids == [0, 3, 8, 5, 8, 7, 2]
    assert trimmed.token_to_id("<unk>") == 4
    # "▁b" and "▁ab" are gone: "ab" falls back to kept pieces, and "b" (no piece left) to <unk>.
    assert trimmed.encode("ab").ids == [0, 3, 4, 2]
    with pytest.raises(ExportError, match="would be removed"):
        remap_tokenizer(doc, [0, 1, 3, 4, 9])  # drops </s>, which the post-processor uses


def test_refusals(tiny_int8: Path, tiny_trimmed: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"unknown language 'xx'.*supported: card.*es"):
        trim_folder(tiny_int8, tmp_path / "a", languages="es,xx", words_for=fake_words, log=_quiet)
    with pytest.raises(ExportError, match="already trimmed to en, es; de would need"):
        trim_folder(tiny_trimmed, tmp_path / "b", languages="de,en", words_for=fake_words, log=_quiet)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine\nna\xefve\n".encode("latin-1"))
    with pytest.raises(ExportError, match=r"latin1.txt, line 2: not UTF-8"):
        trim_folder(tiny_int8, tmp_path / "c", corpus=bad, log=_quiet)
    with pytest.raises(ModelFolderError, match="not written by `mstsb-onnx export`"):
        trim_folder(tmp_path, tmp_path / "d", languages="en", words_for=fake_words, log=_quiet)
    with pytest.raises(ExportError, match="already exists; pass --force"):
        trim_folder(tiny_int8, tiny_trimmed, languages="en", words_for=fake_words, log=_quiet)
    with pytest.raises(ExportError, match="nothing to keep"):
        trim_folder(tiny_int8, tmp_path / "e", log=_quiet)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half folders left behind


def test_narrowing_a_trimmed_folder_works(tiny_trimmed: Path, tmp_path: Path) -> None:
    out = trim_folder(tiny_trimmed, tmp_path / "en", languages="en", words_for=fake_words, log=_quiet).path
    assert len(vocab_of(out)) < len(vocab_of(tiny_trimmed))
    assert manifest_of(out)["trim"]["source"]["trim"]["languages"] == ["en", "es"]


def test_interrupted_trim_leaves_no_folder(tiny_int8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mstsb_onnx.export import trim

    def boom(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trim, "slice_graph", boom)
    with pytest.raises(KeyboardInterrupt):
        trim_folder(tiny_int8, tmp_path / "out", languages="en", words_for=fake_words, log=_quiet)
    assert list(tmp_path.iterdir()) == []


def test_export_with_languages_writes_only_the_trimmed_folder(tiny_src: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from mstsb_onnx.export import export_model

    monkeypatch.setattr(pieces, "word_list", fake_words)
    out = export_model(str(tiny_src), tmp_path / "model", languages="es,en", log=_quiet).path
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    m = manifest_of(out)
    assert m["trim"]["languages"] == ["en", "es"] and "exported in the same run" in m["trim"]["source"]["path"]
    assert m["parity"]["model"]  # the export's torch parity figures travel with the trimmed folder
    Embedder(out).encode(["A man is playing a guitar."])


def test_cli_trim_and_info(tiny_int8: Path, tmp_path: Path) -> None:
    run = [sys.executable, "-m", "mstsb_onnx.cli"]
    bad = subprocess.run([*run, "trim", str(tiny_int8), "-o", str(tmp_path / "x"), "--languages", "klingon"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "unknown language 'klingon'" in bad.stderr
    corpus = tmp_path / "c.txt"
    corpus.write_text("A man is playing a guitar.\n", encoding="utf-8")
    ok = subprocess.run([*run, "trim", str(tiny_int8), "-o", str(tmp_path / "t"), "--corpus", str(corpus)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    info = subprocess.run([*run, "info", str(tmp_path / "t")], capture_output=True, text=True)
    shown = json.loads(info.stdout)
    assert shown["trim"]["corpus"]["lines"] == 1 and shown["vocab_size"] == shown["trim"]["pieces_kept"]


def test_trimmed_copy_is_independent_of_the_source(tiny_trimmed: Path, tiny_int8: Path, tmp_path: Path) -> None:
    """The trimmed folder loads and embeds after its source is gone (nothing points back into it)."""
    src = copy_folder(tiny_int8, tmp_path / "src")
    out = trim_folder(src, tmp_path / "out", languages="en", words_for=fake_words, log=_quiet).path
    text = ["A man is playing a guitar."]
    expected = Embedder(out).encode(text)
    import shutil

    shutil.rmtree(src)
    assert np.array_equal(Embedder(out).encode(text), expected)


def held_out_sentences(sts_csv: Path) -> dict[str, list[str]]:
    import csv

    out: dict[str, set[str]] = {}
    with open(sts_csv, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            first, second = row["task"].split(";")
            out.setdefault(first, set()).add(row["sentence1"])
            out.setdefault(second, set()).add(row["sentence2"])
    return {k: sorted(v) for k, v in out.items()}


def exact_share(before: list[list[str]], kept: set[str]) -> float:
    return sum(set(p) <= kept for p in before) / len(before)


# The floor: sentences tokenized exactly as before, per language, on text not used to choose.
MIN_COVERAGE = 0.97


@pytest.mark.slow
def test_standin_es_en_trim_on_real_sentences(standin_exports: dict[str, Path], sts_data: Path,
                                              tmp_path: Path) -> None:
    """wordfreq's lists on the real XLM-R vocabulary: coverage of held-out es/en sentences, and
    covered sentences embed bit for bit as before (int8, batches of 32)."""
    src = standin_exports["int8"]
    out = trim_folder(src, tmp_path / "es-en", languages="es,en", log=_quiet).path
    kept = set(vocab_of(out))
    sentences = held_out_sentences(sts_data)
    for lang in ("es", "en"):
        before = pieces_of(src, sentences[lang])
        assert exact_share(before, kept) >= MIN_COVERAGE, lang
        covered = [t for t, p in zip(sentences[lang], before) if set(p) <= kept][:256]
        assert pieces_of(out, covered) == pieces_of(src, covered)
        assert np.array_equal(Embedder(src).encode(covered), Embedder(out).encode(covered)), lang
    assert exact_share(pieces_of(src, sentences["ja"]), kept) < 0.5  # a language it was not trimmed for


@pytest.mark.slow
def test_card_languages_selection_covers_every_language(standin: Path, sts_data: Path) -> None:
    from mstsb_onnx.export.trim import _load_tokenizer, _tokenizer_ids

    doc, tokenize = _load_tokenizer(standin)
    vocab = [(p, s) for p, s in doc["model"]["vocab"]]
    sel = pieces.choose_pieces(vocab, _tokenizer_ids(doc) | {1}, tokenize, languages=pieces.parse_languages("card"))
    kept = {vocab[i][0] for i in sel.ids}
    tok = HFTokenizer.from_file(str(standin / "tokenizer.json"))
    for lang, texts in held_out_sentences(sts_data).items():
        before = [e.tokens for e in tok.encode_batch(texts, add_special_tokens=False)]
        assert exact_share(before, kept) >= MIN_COVERAGE, lang


HAND_VOCAB = [("<unk>", 0.0), ("▁iPhone", -8.0), ("▁IPHONE", -9.0), ("iPhone", -9.5), ("▁phone", -7.0),
              ("▁soruş", -9.0), ("▁soru", -8.0), ("▁so", -5.0), ("▁Soruş", -10.0), ("▁soruşturma", -9.0),
              ("▁McCain", -11.0), ("▁mccain", -12.0), ("turma", -9.0), ("ş", -6.0), ("sor", -9.0), ("ma", -7.0),
              ("rmak", -9.0)]


def test_case_variants_are_every_cased_spelling_of_a_listed_word() -> None:
    index = pieces._PieceIndex(HAND_VOCAB)
    got = {HAND_VOCAB[i][0] for i in index.case_variants(["iphone", "mccain", "phone"])}
    # lower-case pieces are not case variants: tokenizing the word list keeps those
    assert got == {"▁iPhone", "▁IPHONE", "iPhone", "▁McCain"}


def test_stems_are_word_initial_pieces_of_three_or_more_letters() -> None:
    index = pieces._PieceIndex(HAND_VOCAB)
    got = {HAND_VOCAB[i][0] for i in index.stems(["soruşturma", "Soruşturma"])}
    # "▁so" is too short, the whole word is the word list's own business
    assert got == {"▁soru", "▁soruş", "▁Soruş"}


def test_inner_pieces_spell_a_stretch_after_the_first_letter() -> None:
    index = pieces._PieceIndex(HAND_VOCAB)
    got = {HAND_VOCAB[i][0] for i in index.inner(["soruşturma"])}
    # "sor" starts the word (that is a stem's place, with the mark), "ş" is a single character,
    # "rmak" runs past the word's end
    assert got == {"turma", "ma"}


def test_selection_keeps_case_variants_stems_and_inner_pieces_of_listed_words() -> None:
    vocab = HAND_VOCAB
    by_piece = {p: i for i, (p, _) in enumerate(vocab)}

    def tokenize(texts: list[str]) -> list[list[int]]:  # each form is one piece when the vocab has it
        return [[by_piece.get("▁" + t.lstrip('"'), 0)] for t in texts]

    sel = pieces.choose_pieces(vocab, {0}, tokenize, languages=["tr"], words_for=lambda _lang, _n: ["soruşturma", "iphone"])
    kept = {vocab[i][0] for i in sel.ids}
    assert {"▁soruşturma", "▁iPhone", "▁IPHONE", "iPhone", "▁soruş", "▁soru", "▁Soruş", "turma", "ma"} <= kept
    assert "▁McCain" not in kept and "▁phone" not in kept and "sor" not in kept and "rmak" not in kept
    assert sel.added["case variants"] > 0 and sel.added["stems"] > 0 and sel.added["inner pieces"] > 0


def test_a_trimmed_folder_has_the_usual_permissions(tiny_trimmed: Path) -> None:
    import os
    import stat

    mask = os.umask(0)
    os.umask(mask)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in [tiny_trimmed, *tiny_trimmed.rglob("*")]}
    assert modes[tiny_trimmed.name] == 0o777 & ~mask
    assert all(mode == 0o666 & ~mask for name, mode in modes.items() if name != tiny_trimmed.name)
