"""The figure check: every measured figure README.md and docs/ quote is in the results file it cites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import figures


def test_every_figure_the_docs_quote_is_in_the_results_file_they_cite() -> None:
    misses = figures.check()
    assert not misses, "\n".join(map(str, misses))


def _doc(tmp_path: Path, text: str, results: dict[str, str]) -> list[str]:
    (tmp_path / "results").mkdir()
    for name, content in results.items():
        (tmp_path / "results" / name).write_text(content, encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(text, encoding="utf-8")
    return [m.figure for m in figures.check_doc(doc, {}, root=tmp_path)]


TABLE = "| engine | sent/s |\n|---|---|\n| ours | 319.9 |\n"


@pytest.mark.parametrize(("text", "missing"), [
    ("Ours: 319.9 sent/s ([run](results/run.md)).\n", []),
    ("Ours: 271.4 sent/s ([run](results/run.md)).\n", ["271.4"]),
    ("Ours: 319.9 sent/s, no source named.\n", ["319.9"]),
    ("Settings are code: `64 MiB`, ratios like `0.99` are thresholds ([run](results/run.md)).\n", []),
    ("A shape 32 x 32 and a version like 1.20.1 are not figures.\n", []),
    ("## A\n\nFrom [run](results/run.md).\n\nLater: 319.9 sent/s.\n\n## B\n\nAgain 319.9 sent/s.\n", ["319.9"]),
], ids=["held", "stale", "unsourced", "code-skipped", "not-figures", "source-per-section"])
def test_a_figure_must_be_in_the_results_file_its_paragraph_or_section_cites(tmp_path: Path, text: str,
                                                                             missing: list[str]) -> None:
    assert _doc(tmp_path, text, {"run.md": TABLE}) == missing


def test_json_values_count_at_the_quoted_precision_and_in_ms_or_percent(tmp_path: Path) -> None:
    results = {"run.md": "see run.json\n", "run.json": json.dumps({"s": 0.01334, "ratio": 0.8567, "n": 1276.0})}
    text = "13.3 ms, 86% and 1,276 MiB, but not 13.4 ms ([run](results/run.md)).\n"
    assert _doc(tmp_path, text, results) == ["13.4"]


def test_a_table_is_checked_against_the_source_its_caption_names(tmp_path: Path) -> None:
    text = "| a | b |\n|---|---|\n| ours | 319.9 |\n| old | 211.3 |\n\nFrom [run](results/run.md).\n"
    assert _doc(tmp_path, text, {"run.md": TABLE}) == ["211.3"]


def test_the_model_cards_own_figure_is_accepted_only_beside_its_link(tmp_path: Path) -> None:
    url = next(iter(figures.EXTERNAL))
    assert _doc(tmp_path, f"The card reports 0.8359 ([card]({url})).\n\nAgain 0.8359.\n", {}) == ["0.8359"]
