"""The built-in multilingual probe set: export-time parity, ``mstsb-onnx check``, calibration, bench.

Short sentences in each of the card's 16 languages plus, per language, one long text (the short
ones joined and repeated) that passes 128 tokens so truncation is exercised; and tokenizer edge
cases (empty, whitespace, emoji, ZWJ, combining marks, RTL, CJK, a 10,000-character text). The
texts are data in ``probes.json``; this module only expands them. Pure Python, no heavy imports:
the runtime owns it, the exporter reads it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).with_name("probes.json")
LONG_REPEAT = 4


@lru_cache(maxsize=1)
def _load() -> dict:
    return json.loads(_DATA.read_text(encoding="utf-8"))


def probe_set() -> dict[str, list[str]]:
    """Language code -> sentences (short ones, then one long one)."""
    out: dict[str, list[str]] = {}
    for lang, sentences in _load()["languages"].items():
        out[lang] = list(sentences) + [" ".join(sentences * LONG_REPEAT)]
    return out


def edge_cases() -> dict[str, str]:
    """Case id -> text, for tokenizer parity and robustness tests."""
    out: dict[str, str] = {}
    for name, value in _load()["edge_cases"].items():
        if isinstance(value, dict):
            text = value["repeat"] * (value["chars"] // len(value["repeat"]) + 1)
            value = text[: value["chars"]]
        out[name] = value
    return out
