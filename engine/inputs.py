"""Check what users pass to ``encode`` before anything reaches the tokenizer or onnxruntime.

sentence-transformers conventions: one ``str`` gives one vector, a list (or any iterable of
texts) gives a matrix. Items must be ``str``; ``bytes`` are accepted when they are UTF-8.
Everything else is refused with an error that names the index and the type, so nothing is
silently embedded as its ``repr``. ``is_count`` is the test every count option (batch sizes,
threads, limits) passes.
"""

from __future__ import annotations

from collections.abc import Iterable

from mstsb_onnx.errors import InputError


def _decode(item: bytes, where: str) -> str:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{where} is bytes that are not valid UTF-8 (byte {e.start}: {item[e.start:e.start + 1]!r}); "
            "decode it with the right codec and pass str"
        ) from e


def is_count(value: object, at_least: int = 1) -> bool:
    """An int (``True`` is not one) of at least ``at_least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= at_least


def as_text_list(texts: object) -> tuple[list[str], bool]:
    """Return ``(texts as a list of str, whether a single text was given)``."""
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, (bytes, bytearray)):
        return [_decode(bytes(texts), "the text")], True
    if texts is None or not isinstance(texts, Iterable) or isinstance(texts, dict):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    if isinstance(texts, (set, frozenset)):
        raise TypeError(f"texts is a {type(texts).__name__}, whose order is arbitrary: no vector could be matched to "
                        "its text; pass a list (e.g. sorted(texts))")
    return [as_text(item, f"texts[{i}]") for i, item in enumerate(texts)], False


def as_text(item: object, where: str) -> str:
    """One text: a str, or UTF-8 bytes decoded; anything else is a TypeError naming ``where``."""
    if isinstance(item, str):
        return item
    if isinstance(item, (bytes, bytearray)):
        return _decode(bytes(item), where)
    raise TypeError(f"{where} is {type(item).__name__}, expected str")
