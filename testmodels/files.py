"""Write the files of an XLM-R folder offline: the fast tokenizer and the sentence-transformers files.

Dev tooling for tests and benchmarks (needs the `export` extra plus `sentencepiece`), never
imported by the runtime. What it does not do: build weights (``testmodels.xlmr``,
``testmodels.standin``) or download anything.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


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
