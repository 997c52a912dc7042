"""Tokenize with the HF ``tokenizers`` library exactly as the exported model expects.

The exporter writes ``tokenizer.json`` from the transformers tokenizer it loaded and proves
id-for-id parity at export time; this module only has to reproduce the settings around it:
truncation at max_seq_length (special tokens included, as transformers counts), no padding
(the embedder pads per batch after sorting by length). It does not add prompts or pad batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer as HFTokenizer

from mstsb_onnx.errors import InputError, ModelFolderError


class TokenizerLike(Protocol):
    """What the embedder needs from a tokenizer; tests pass fakes of this shape."""

    pad_id: int

    def encode(self, texts: list[str]) -> list[list[int]]: ...

    def encode_flagged(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]: ...


class Tokenizer:
    def __init__(self, tokenizer: HFTokenizer, max_length: int, pad_id: int) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for <s> and </s>), got {max_length}")
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length, strategy="longest_first", direction="right")
        self._tok = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id
        # encode_batch_fast skips character offsets, which we never use.
        self._encode_batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    @classmethod
    def from_file(cls, path: Path, max_length: int, pad_id: int) -> Tokenizer:
        try:
            tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise ModelFolderError(f"could not read tokenizer {path}: {e}") from e
        return cls(tok, max_length, pad_id)

    def _encodings(self, texts: list[str]) -> list:
        try:
            return self._encode_batch(texts, add_special_tokens=True)
        except Exception as e:  # the Rust side reports every failure as a bare Exception
            raise InputError(unencodable(texts) or f"the tokenizer rejected the input: {e}") from e

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [enc.ids for enc in self._encodings(texts)]

    def encode_flagged(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Ids as ``encode``, and for each text whether truncation at max_length cut it."""
        encodings = self._encodings(texts)
        return [enc.ids for enc in encodings], [bool(enc.overflowing) for enc in encodings]

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)


def unencodable(texts: list[str], what: str = "texts") -> str | None:
    """Why the first text that cannot be UTF-8 encoded (a lone surrogate) cannot be, or None."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            return (f"{what}[{i}] cannot be encoded as UTF-8 (character {e.start} is a lone surrogate "
                    f"{text[e.start]!r}); clean the text before embedding it")
    return None


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence: int64 ``input_ids`` and ``attention_mask`` [b, L]."""
    width = max(map(len, seqs))
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
