"""Check that every measured figure README.md and docs/ quote is held by the results file they cite.

    python -m benchmarks.figures          # or: make figures; exit 1 and a list when one is not

A paragraph (or list item, or table) that quotes figures names where they come from by linking a
results file (``benchmarks/results/*.md`` or ``*.json``, or ``benchmarks/RESULTS.md``). Each
figure in it -- a number with a decimal point or a thousands comma, or a number before a unit
(ms, s, MiB, MB, GiB, sent/s, x, %) -- must appear in one of the files it links (a paragraph
that links none: the files its section linked last above it): as written in a table there, or as
a JSON value rounded to the digits quoted (seconds may be quoted in ms, fractions in %). A figure
with no results file to trace it to fails too. Settings, thresholds and versions are written as
code (`64 MiB`, `>= 0.99`), which is not prose: fenced blocks, `inline` code and link targets are
skipped.

What it does not do: judge whether a figure is quoted with the right meaning, only that a reader
following the link finds it. The generated files (RESULTS.md, results/) are the sources, not
checked here.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
UNIT = r"(?:\s?(?:ms|s|MiB|MB|GiB|GB|sent/s|sentences/s|requests/s)|x|%)"  # 32 x 32 is a shape, 8.7x a ratio
# A figure: 1,276 / 319.9 / 0.99 / 7x / 18% / 795 MiB; not a version (1.20.1), an exponent (1e-6) or a word part.
FIGURE = re.compile(rf"(?<![\w.\-/])(\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+\.\d+|\d+(?={UNIT}(?![\w/])))(?![\w.]*\d)(?!e-)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Figures quoted from a page outside this repository, accepted where the paragraph links that page.
EXTERNAL = {"https://huggingface.co/AIDA-UPM/mstsb-paraphrase-multilingual-mpnet-base-v2": {"0.8359"}}
RESULT_LINK = re.compile(r"(?:^|/)(benchmarks/)?(results/[\w.\-]+\.(?:md|json)|RESULTS\.md)$")


@dataclass(frozen=True)
class Miss:
    doc: str
    line: int
    figure: str
    why: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.figure} -- {self.why}"


def blocks(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each prose block, code blocks removed.

    A block is a paragraph or a list item; a table is one block with the paragraph right after it
    (its caption, which names the source).
    """
    block: list[str] = []
    start, fenced, in_table = 0, False, False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        row = line.startswith("|")
        caption = in_table and not row and bool(line.strip()) and not line.startswith("#")
        new_item = bool(re.match(r"\s*([*-]|\d+\.)\s", line)) or line.startswith("#") or (row and not in_table)
        if fenced or (not line.strip() and not in_table) or (new_item and not caption):
            if block:
                yield start, " ".join(block)
            block = []
        if not line.strip():
            in_table = in_table and not block  # a blank line between a table and its caption keeps them together
            continue
        if fenced:
            continue
        if not block:
            start = n
        in_table = row or (in_table and not caption)
        block.append(line)
    if block:
        yield start, " ".join(block)


def prose(block: str) -> str:
    """The block without inline code, link targets, HTML comments and footnote-style references."""
    block = re.sub(r"<!--.*?-->", " ", block)
    block = re.sub(r"`[^`]*`", " ", block)
    return LINK.sub("]", block)


def linked_results(block: str, doc: Path) -> list[Path]:
    out = []
    for target in LINK.findall(block):
        path = (doc.parent / target.split("#")[0]).resolve()
        if RESULT_LINK.search(target.split("#")[0]) and path.is_file():
            out.append(path)
    return out


def _numbers(obj: object) -> Iterator[float]:
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


class Source:
    """A results file as a set of figures: its table text and, for a .md, its sibling .json's numbers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        texts = [path.read_text(encoding="utf-8")]
        if path.name == "RESULTS.md":  # it includes every sibling table
            texts += [p.read_text(encoding="utf-8") for p in sorted(RESULTS.glob("*.md"))]
        self.tokens = {t.replace(",", "") for text in texts for t in re.findall(r"\d[\d,]*\.?\d*", text)}
        jsons = [path] if path.suffix == ".json" else [path.with_suffix(".json")]
        if path.name == "RESULTS.md":
            jsons = sorted(RESULTS.glob("*.json"))
        self.values = [v for j in jsons if j.is_file() for v in _numbers(json.loads(j.read_text(encoding="utf-8")))]

    def holds(self, figure: str) -> bool:
        plain = figure.replace(",", "")
        if plain in self.tokens:
            return True
        digits = len(plain.split(".")[1]) if "." in plain else 0
        target = float(plain)
        for v in self.values:
            for scaled in (v, 1000 * v, 100 * v):
                if round(scaled, digits) == target or (digits == 0 and abs(scaled - target) < 0.5):
                    return True
        return False


def check_doc(doc: Path, sources: dict[Path, Source], root: Path = ROOT) -> list[Miss]:
    """Each block's figures against the results files it links or, linking none, the ones its section
    linked last above it (a source named once serves the paragraphs that follow it)."""
    misses: list[Miss] = []
    name = str(doc.relative_to(root))
    section_links: list[Path] = []
    for line, block in blocks(doc.read_text(encoding="utf-8")):
        if block.startswith("#"):
            section_links = []
            continue
        links = linked_results(block, doc) or section_links
        section_links = links
        quoted = {f for url, figs in EXTERNAL.items() if f"]({url})" in block for f in figs}
        figures = [f for f in FIGURE.findall(prose(block)) if f not in quoted]
        if not figures:
            continue
        if not links:
            misses += [Miss(name, line, f, "no results file linked in this paragraph or above it in its section")
                       for f in figures]
            continue
        found = [sources.setdefault(p, Source(p)) for p in links]
        misses += [Miss(name, line, f, "not in " + ", ".join(p.name for p in links))
                   for f in figures if not any(s.holds(f) for s in found)]
    return misses


def documents() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def check(docs: list[Path] | None = None) -> list[Miss]:
    sources: dict[Path, Source] = {}
    return [m for doc in docs or documents() for m in check_doc(doc, sources)]


def main() -> int:
    misses = check()
    for m in misses:
        print(m)
    print(f"{len(misses)} figure(s) not found in the results files they cite" if misses else "every quoted figure found")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
