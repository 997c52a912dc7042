"""The torch reference: the model card's transformers + mean pooling code, and sentence-transformers.

This is what every ONNX figure is compared against. It follows the card literally:
``AutoTokenizer`` with ``padding=True, truncation=True, max_length=max_seq_length``, ``AutoModel``
(default attention implementation), and mask-weighted mean pooling with the denominator clamped
at 1e-9; cls and max pooling, Dense and Normalize follow sentence-transformers. It is deliberately
independent of the export graph (``graph.py``), so a bug there cannot hide here -- except for
Dense layers, which both build with ``dense.py``; the sentence-transformers reference checks those.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mstsb_onnx.errors import ExportError
from mstsb_onnx.export.deps import require
from mstsb_onnx.export.dense import dense_stack, output_dim
from mstsb_onnx.export.hub import CONVERT_PICKLES
from mstsb_onnx.export.source import SourceModel


def load_model(src: SourceModel, **kwargs: object):
    """``AutoModel.from_pretrained`` on safetensors weights only, in eval mode.

    A folder that has only pickled weights (pytorch_model.bin) is refused instead of unpickled:
    nothing a user passes in is executed. ``kwargs`` go to ``from_pretrained``.
    """
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(src.model_dir), trust_remote_code=False, use_safetensors=True, **kwargs)
    except OSError as e:
        pickled = sorted(p.name for p in src.model_dir.glob("*.bin")) if src.model_dir.is_dir() else []
        raise ExportError(
            f"{src.model_dir}: could not load safetensors weights ({e})"
            + (f"; found only pickled {pickled}, which are never loaded -- {CONVERT_PICKLES}" if pickled else "")
        ) from e
    return model.eval()


def pool(token_embeddings, attention_mask, pooling: str):  # torch tensors in, torch tensor out
    """One of ``manifest.POOLING_MODES``, computed as sentence-transformers' Pooling does."""
    import torch

    if pooling == "cls":
        return token_embeddings[:, 0]
    if pooling == "lasttoken":
        # The last real token of each row (right or left padding alike), as sentence-transformers
        # finds it; int32 because onnxruntime has no int64 ReduceMax/ArgMax on CPU.
        seq_len = token_embeddings.shape[1]
        values, back = attention_mask.to(torch.int32).flip(1).max(1)
        back = torch.where(values == 0, seq_len - 1, back)
        index = (seq_len - back - 1).unsqueeze(-1).unsqueeze(1).expand(-1, 1, token_embeddings.shape[-1])
        mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
        return torch.gather(token_embeddings * mask, 1, index).squeeze(1)
    mask = attention_mask.unsqueeze(-1).expand(token_embeddings.size()).to(token_embeddings.dtype)
    if pooling == "max":
        return torch.where(mask.bool(), token_embeddings, torch.finfo(token_embeddings.dtype).min).max(1).values
    if pooling == "weightedmean":  # position-weighted: token i (from 1) counts i times
        positions = torch.arange(1, token_embeddings.shape[1] + 1, dtype=token_embeddings.dtype)
        mask = mask * positions.unsqueeze(0).unsqueeze(-1)
    total = torch.sum(token_embeddings * mask, 1)
    count = torch.clamp(mask.sum(1), min=1e-9)
    return total / torch.sqrt(count) if pooling == "mean_sqrt_len_tokens" else total / count


def lower_case_first(tokenizer: object) -> None:
    """sentence-transformers 5's ``do_lower_case``: a Lowercase normalizer put in front of the fast
    tokenizer's own, unless it already has one. (sentence-transformers 2-4 called ``str.lower()``
    on each text instead; the two differ on a word-final capital sigma: "ΟΔΟΣ" -> "οδοσ" / "οδος".)
    Applied to the tokenizer.json the runtime loads, so the runtime needs no case handling."""
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence

    backend = tokenizer.backend_tokenizer  # type: ignore[attr-defined]
    current = backend.normalizer
    parts = list(current) if isinstance(current, NormalizerSequence) else [] if current is None else [current]
    if not any(isinstance(n, Lowercase) for n in parts):
        backend.normalizer = NormalizerSequence([Lowercase(), *parts])


class TorchReference:
    """transformers + pooling, as the model card runs it (fp32, CPU)."""

    def __init__(self, src: SourceModel, threads: int | None = None) -> None:
        require()
        import torch
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # "pooler weights newly initialized": unused by pooling
        if threads:
            torch.set_num_threads(threads)
        self.src = src
        self.tokenizer = AutoTokenizer.from_pretrained(str(src.model_dir), trust_remote_code=False)
        if src.do_lower_case:
            lower_case_first(self.tokenizer)
        self.model = load_model(src)
        hidden_size = int(self.model.config.hidden_size)
        self.dense = dense_stack(src.dense, hidden_size)  # sentence-transformers Dense modules, if any
        self.dim = output_dim(src.dense, hidden_size)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.src.max_seq_length)
        return [list(ids) for ids in enc["input_ids"]]

    def encode(self, texts: Sequence[str], batch_size: int = 8, prompt: str | None = None) -> np.ndarray:
        import torch

        prefix = self.src.default_prompt if prompt is None else prompt
        texts = [prefix + t for t in texts]
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True,
                max_length=self.src.max_seq_length, return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
                emb = self.dense(pool(hidden, batch["attention_mask"], self.src.pooling))
                if self.src.normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            out.append(emb.float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class SentenceTransformersReference:
    """``SentenceTransformer(folder).encode``, for folders that are sentence-transformers models."""

    def __init__(self, src: SourceModel) -> None:
        require("sentence_transformers")
        from sentence_transformers import SentenceTransformer

        self.src = src
        self.model = SentenceTransformer(str(src.root), device="cpu", trust_remote_code=False,
                                         model_kwargs={"use_safetensors": True})
        # A --max-seq-length override applies to the reference too, or long texts could not agree.
        self.model.max_seq_length = src.max_seq_length

    def encode(self, texts: Sequence[str], batch_size: int = 8, prompt: str | None = None) -> np.ndarray:
        prefix = self.src.default_prompt if prompt is None else prompt
        return self.model.encode(list(texts), batch_size=batch_size, prompt=prefix, convert_to_numpy=True)
