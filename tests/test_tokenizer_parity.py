"""The runtime tokenizer gives the transformers tokenizer's ids, id for id, on the real XLM-R vocab."""

from __future__ import annotations

from pathlib import Path

import pytest

from mstsb_onnx.probes import edge_cases, probe_set
from mstsb_onnx.tokenizer import Tokenizer

EDGE = edge_cases()
PROBES = [(f"{lang}[{i}]", t) for lang, texts in probe_set().items() for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def hf_tokenizer(standin: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(standin))


@pytest.fixture(scope="module")
def exported_tokenizer(standin_exports: dict[str, Path]) -> Path:
    return standin_exports["int8"] / "tokenizer.json"


@pytest.mark.parametrize("max_length", [128, 16, 512], ids=lambda n: f"max{n}")
@pytest.mark.parametrize("text", list(EDGE.values()), ids=list(EDGE))
def test_edge_cases_match_transformers(hf_tokenizer, exported_tokenizer: Path, text: str, max_length: int) -> None:
    ours = Tokenizer.from_file(exported_tokenizer, max_length, pad_id=1).encode([text])[0]
    theirs = hf_tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    assert ours == theirs
    assert len(ours) <= max_length


@pytest.mark.parametrize("prompt", ["", "query: "], ids=["no-prompt", "query-prompt"])
def test_probe_set_matches_transformers(hf_tokenizer, exported_tokenizer: Path, prompt: str) -> None:
    texts = [prompt + t for _, t in PROBES]
    ours = Tokenizer.from_file(exported_tokenizer, 128, pad_id=1).encode(texts)
    theirs = hf_tokenizer(texts, truncation=True, max_length=128)["input_ids"]
    mismatched = [label for (label, _), a, b in zip(PROBES, ours, theirs) if a != b]
    assert mismatched == []
    # The long probes really are truncated, so truncation parity was exercised.
    assert max(map(len, ours)) == 128


def test_known_xlmr_ids(exported_tokenizer: Path) -> None:
    tok = Tokenizer.from_file(exported_tokenizer, 128, pad_id=1)
    assert tok.encode(["Hello world", "最後の例文"]) == [[0, 35378, 8999, 2], [0, 6, 135652, 13506, 2564, 2]]


def test_ten_thousand_characters_truncate_to_max_length(exported_tokenizer: Path) -> None:
    ids = Tokenizer.from_file(exported_tokenizer, 128, pad_id=1).encode([EDGE["very_long"]])[0]
    assert len(EDGE["very_long"]) == 10_000
    assert len(ids) == 128 and ids[0] == 0 and ids[-1] == 2


def _sentencepiece_only_folder(root: Path) -> Path:
    """A tiny random XLM-R whose tokenizer is only sentencepiece.bpe.model (no tokenizer.json),
    as older checkpoints are saved."""
    import sentencepiece as spm
    from conftest import tiny_lines
    from transformers import XLMRobertaTokenizer

    from testmodels.xlmr import save_random_xlmr

    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(t.split()) for t in tiny_lines() if t.strip()), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(root / "sp"), vocab_size=500,
                                   model_type="unigram", character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0,
                                   pad_id=-1, hard_vocab_limit=False, minloglevel=2)
    folder = root / "model"
    tok = XLMRobertaTokenizer(vocab_file=str(root / "sp.model"))
    tok.save_pretrained(str(folder))
    save_random_xlmr(folder, dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64))
    assert not (folder / "tokenizer.json").exists() and (folder / "sentencepiece.bpe.model").exists()
    return folder


def test_a_sentencepiece_only_folder_exports_with_token_parity(tmp_path: Path) -> None:
    """The exporter writes tokenizer.json from the fast tokenizer transformers builds out of the
    .model file; the export's own id-for-id and vector parity checks must pass."""
    from conftest import _quiet, manifest_of

    from mstsb_onnx import Embedder
    from mstsb_onnx.export import export_model
    from mstsb_onnx.export.reference import TorchReference
    from mstsb_onnx.export.source import resolve_source

    folder = _sentencepiece_only_folder(tmp_path)
    out = export_model(str(folder), tmp_path / "out", quantize="none", log=_quiet).path
    assert (out / "tokenizer.json").is_file() and manifest_of(out)["parity"]["model"]
    texts = list(EDGE.values()) + [t for _, t in PROBES[:20]]
    ref = TorchReference(resolve_source(str(folder))).encode(texts, batch_size=8)
    assert abs(Embedder(out).encode(texts) - ref).max() < 1e-4  # fp32 tolerance of export/parity.py


def test_a_folder_without_tokenizer_files_is_refused_by_name(tmp_path: Path, tiny_src: Path) -> None:
    from conftest import copy_folder

    from mstsb_onnx.errors import ExportError
    from mstsb_onnx.export import export_model

    folder = copy_folder(tiny_src, tmp_path / "src")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ExportError, match="no tokenizer files .*tokenizer.json.*sentencepiece.bpe.model"):
        export_model(str(folder), tmp_path / "out", quantize="none")
    assert not (tmp_path / "out").exists()
