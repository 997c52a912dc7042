"""Export encoder + pooling (+ Dense, + Normalize) as one fp32 ONNX graph.

Inputs ``input_ids`` and ``attention_mask`` (int64, [batch, sequence], both axes dynamic), output
``sentence_embedding`` [batch, dim]. Pooling happens in the graph, as the card computes it
(mask-weighted mean with the denominator clamped at 1e-9). Uses the legacy TorchScript exporter
(``dynamo=False``) with eager attention: measured here, it is the only path whose graph
onnxruntime fuses into Attention nodes, and it needs no onnxscript. BERT-family encoders are
traced in sequence-first layout (``seqfirst.py``: fewer transposes), anything else as
transformers runs it; ``layout`` picks one explicitly.

It does not smooth or quantize (``smooth.py``, ``quantize.py``).
"""

from __future__ import annotations

from pathlib import Path

from mstsb_onnx.export import seqfirst
from mstsb_onnx.export.dense import dense_stack, output_dim
from mstsb_onnx.export.deps import require
from mstsb_onnx.errors import ExportError
from mstsb_onnx.export.reference import load_model, pool
from mstsb_onnx.export.source import SourceModel

OPSET = 17
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAME = "sentence_embedding"
LAYOUTS = ("auto", "sequence-first", "batch-first")
DENSE_SCOPE = "st_dense"  # the attribute holding the Dense modules, hence their node names' scope
DENSE_NODES = rf"^/{DENSE_SCOPE}/"  # the pipeline keeps these fp32 (not smoothed, not quantized)


def load_encoder(src: SourceModel):
    require()
    return load_model(src, attn_implementation="eager")


def usable_positions(encoder) -> int | None:
    """How many tokens the encoder can embed, or None when it has no absolute position table.

    RoBERTa-family embeddings number positions from ``padding_idx + 1`` (XLM-R: 514 rows, 512
    usable); sentence-transformers reads the same attribute for the same reason.
    """
    import torch

    emb = getattr(encoder, "embeddings", None)
    table = getattr(emb, "position_embeddings", None)
    if not isinstance(table, torch.nn.Embedding):
        return None
    pad = getattr(emb, "padding_idx", None)
    return table.num_embeddings - (pad + 1 if isinstance(pad, int) else 0)


def export_fp32(src: SourceModel, out_path: Path, opset: int = OPSET, layout: str = "auto") -> dict:
    """Write the fp32 graph to ``out_path``; returns hidden size, heads, vocab size, word-embedding
    rows, pad id, layout, and the max_seq_length to use (``src``'s, cut to the usable positions when
    it came from the default or the tokenizer's own limit; an explicit one that does not fit is an
    ExportError)."""
    require()
    import torch

    encoder = load_encoder(src)
    if layout not in LAYOUTS:
        raise ExportError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    max_seq_length = src.max_seq_length
    positions = usable_positions(encoder)
    if positions is not None and max_seq_length > positions:
        if src.max_seq_length_from not in ("default", "tokenizer_config.json"):  # asked for explicitly
            raise ExportError(
                f"max_seq_length {max_seq_length} (from {src.max_seq_length_from}) is longer than the "
                f"{positions} positions {type(encoder).__name__} can embed (config max_position_embeddings "
                f"{encoder.config.max_position_embeddings}); pass --max-seq-length {positions} or less"
            )
        # Our default, or sentence-transformers' own cap (max_position_embeddings, which counts the
        # padding offset's rows): nobody asked for more than the model holds.
        max_seq_length = positions
    # A dummy batch with padding, so the traced graph is the padded-batch path; ids valid for any vocab.
    pad = encoder.config.pad_token_id or 0
    ids = torch.tensor([[3, 4, 5, 6, 7], [3, 4, 5, pad, pad]], dtype=torch.long) % encoder.config.vocab_size
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long)
    fits = layout != "batch-first" and seqfirst.supports(encoder) and seqfirst.agrees(encoder, ids, mask)
    if layout == "sequence-first" and not fits:
        raise ExportError(f"{type(encoder).__name__} is not a BERT-family encoder with absolute positions whose "
                          "sequence-first forward matches its own; the sequence-first layout does not apply "
                          "(use --layout auto or batch-first)")
    if layout == "auto":
        layout = "sequence-first" if fits else "batch-first"
    tokens_first = layout == "sequence-first"
    hidden_size = int(encoder.config.hidden_size)
    dense = dense_stack(src.dense, hidden_size)

    class PooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.st_dense = dense  # named as DENSE_SCOPE

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            if tokens_first:
                hidden = seqfirst.encode(self.encoder, input_ids, attention_mask)
            else:
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            emb = self.st_dense(pool(hidden, attention_mask, src.pooling))
            if src.normalize:
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            return emb

    with torch.inference_mode():
        torch.onnx.export(
            PooledEncoder().eval(),
            (ids, mask),
            str(out_path),
            input_names=INPUT_NAMES,
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                OUTPUT_NAME: {0: "batch"},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    cfg = encoder.config
    return {
        "hidden_size": hidden_size,
        "dim": output_dim(src.dense, hidden_size),
        "num_attention_heads": int(cfg.num_attention_heads),
        "vocab_size": int(cfg.vocab_size),
        "embedding_rows": int(encoder.get_input_embeddings().num_embeddings),
        "layout": layout,
        "max_seq_length": max_seq_length,
    }
