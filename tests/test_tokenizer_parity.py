"""The runtime tokenizer gives the transformers tokenizer's ids, id for id, on the real XLM-R vocab."""

from __future__ import annotations

from pathlib import Path

import pytest

from mstsb_onnx.export.probes import edge_cases, probe_set
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
