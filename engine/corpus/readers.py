"""Read texts to embed from files or stdin: one per line, JSONL, or CSV/TSV -- streaming.

Yields ``Row(id, text)`` where ``id`` is the 1-based line (text, JSONL) or record (CSV) number,
and ``BadRow(id, reason)`` for rows that cannot be embedded: empty, not text, not UTF-8, not
JSON. The caller decides to skip or stop; nothing is dropped silently. Memory stays flat: rows are
read one at a time. It does not embed or write (``bulk.py``, ``sinks.py``).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mstsb_onnx.errors import InputError

FORMATS = ("text", "jsonl", "csv", "tsv")


@dataclass(frozen=True)
class Row:
    id: int
    text: str


@dataclass(frozen=True)
class BadRow:
    id: int
    reason: str


def guess_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(suffix, "text")


def _open(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from e


def _split_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Lines ending in LF, CRLF or a lone CR (classic Mac files): binary iteration splits on LF only."""
    for raw in stream:
        if b"\r" not in raw.rstrip(b"\r\n"):
            yield raw
            continue
        yield from re.split(rb"(?<=\r)(?!\n)", raw)


def _decoded_lines(stream: BinaryIO, bad: list[BadRow], lines: Callable[[BinaryIO], Iterator[bytes]] = _split_lines,
                   ) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(lines(stream), start=1):
        if not raw:
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a byte-order mark (spreadsheet and Windows exports) is not text
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append(BadRow(number, f"not UTF-8 (byte {e.start} of the line)"))


def read_rows(path: str, fmt: str | None = None, field: str = "text") -> Iterator[Row | BadRow]:
    """Rows of ``path`` (``-`` for stdin) in order. ``field`` names the JSONL key / CSV column."""
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
    stream = _open(path)
    try:
        yield from _ROWS[fmt](stream, field)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def check_text(number: int, text: object, what: str) -> Row | BadRow:
    """A row, or why it cannot be embedded: not a str, or blank."""
    if not isinstance(text, str):
        return BadRow(number, f"{what} is {type(text).__name__}, not text")
    if not text.strip():
        return BadRow(number, "empty")
    return Row(number, text)


def _text_rows(stream: BinaryIO, field: str) -> Iterator[Row | BadRow]:
    bad: list[BadRow] = []
    for number, line in _decoded_lines(stream, bad):
        yield from bad
        bad.clear()
        yield check_text(number, line.rstrip("\r\n"), "line")
    yield from bad


def _jsonl_rows(stream: BinaryIO, field: str) -> Iterator[Row | BadRow]:
    bad: list[BadRow] = []
    for number, line in _decoded_lines(stream, bad):
        yield from bad
        bad.clear()
        if not line.strip():
            yield BadRow(number, "empty")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield BadRow(number, f"not JSON ({e.msg})")
            continue
        if not isinstance(obj, dict) or field not in obj:
            yield BadRow(number, f"no {field!r} field")
            continue
        yield check_text(number, obj[field], f"field {field!r}")
    yield from bad


def _delimited_rows(stream: BinaryIO, field: str, delimiter: str) -> Iterator[Row | BadRow]:
    bad: list[BadRow] = []
    # csv reads CR itself (and a quoted field may hold one): its lines are split on LF only.
    lines = (line for _, line in _decoded_lines(stream, bad, iter))
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    if field not in header:
        raise InputError(f"column {field!r} not in the header {header}; pick one with --column")
    col = header.index(field)
    for record in reader:
        yield from bad
        bad.clear()
        number = reader.line_num
        if col >= len(record):
            yield BadRow(number, f"row has {len(record)} columns, no {field!r}")
            continue
        yield check_text(number, record[col], f"column {field!r}")
    yield from bad


_ROWS = {
    "text": _text_rows,
    "jsonl": _jsonl_rows,
    "csv": lambda s, f: _delimited_rows(s, f, ","),
    "tsv": lambda s, f: _delimited_rows(s, f, "\t"),
}

