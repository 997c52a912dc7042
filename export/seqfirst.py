"""Run a BERT-family encoder in sequence-first layout ([tokens, batch, hidden]) for export.

Why: transformers lays activations out batch-first, so every attention layer splits heads with
Transpose(0, 2, 1, 3) on Q and V, (0, 2, 3, 1) on K and merges them back: four full copies of the
activations per layer, which onnxruntime's CPU kernels do slowly (5-12.5 ms of 156-181 ms of
kernel time at 32 x 32 on XLM-R base, 2 threads, in two profiles). With tokens first, a head
split is a free reshape to [tokens, batch * heads, head_dim], and the transposes that remain are
the kind onnxruntime folds into its FusedMatMul (``transBatchA/B``) at load: one copy per layer
is left, on the attention output. Linear layers, LayerNorm and GELU act on the last axis and do
not care about the layout.

The module reuses the loaded model's own submodules (embeddings, Q/K/V, output, FFN), so weights
and every elementwise step are the model's; only the attention's reshapes and matmuls are written
here, in the same order of operations as transformers' eager attention. The export checks the
result against the untouched torch reference like any other graph.

It applies only where the layout change is known to be exact: BERT/RoBERTa/XLM-R-style encoders
with absolute position embeddings and no decoder parts. ``supports`` says whether a model has that
structure and ``agrees`` runs both forwards on a batch and compares them, so a transformers
release that changes what these modules do is caught before tracing; anything else is exported as
transformers runs it.
"""

from __future__ import annotations

import math
from typing import Any

# What the rewrite reads from each layer's self-attention module.
_SELF_ATTENTION_ATTRS = ("query", "key", "value", "num_attention_heads", "attention_head_size")


def supports(model: Any) -> bool:
    """Whether ``model`` has the BERT-family structure this module rewrites, and nothing else."""
    cfg = getattr(model, "config", None)
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if cfg is None or layers is None or len(layers) == 0:
        return False
    if not (hasattr(model, "embeddings") and hasattr(model, "get_extended_attention_mask")):
        return False
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return False
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        return False
    for layer in layers:
        attn = getattr(layer, "attention", None)
        sa = getattr(attn, "self", None)
        if sa is None or not all(hasattr(sa, a) for a in _SELF_ATTENTION_ATTRS):
            return False
        if getattr(sa, "position_embedding_type", "absolute") != "absolute":
            return False
        if not (hasattr(attn, "output") and hasattr(layer, "intermediate") and hasattr(layer, "output")):
            return False
        if getattr(layer, "add_cross_attention", False) or getattr(layer, "is_decoder", False):
            return False
    return True


def encode(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """Last hidden state [batch, tokens, hidden], computed tokens-first; ``model`` in eval mode."""
    import torch

    batch, tokens = input_ids.shape
    hidden = model.embeddings(input_ids=input_ids)
    # transformers' additive mask: 0 where attended, the dtype's minimum where padded, [b, 1, 1, L];
    # repeated per head once here, so the scores stay [b*h, L, L] in every layer (no reshapes).
    bias = model.get_extended_attention_mask(attention_mask, input_ids.shape)
    x = hidden.transpose(0, 1).contiguous()  # [L, b, H], one copy per forward
    head_bias: dict[int, torch.Tensor] = {}
    for layer in model.encoder.layer:
        sa = layer.attention.self
        heads, size = sa.num_attention_heads, sa.attention_head_size
        if heads not in head_bias:
            head_bias[heads] = bias.expand(batch, heads, 1, tokens).reshape(batch * heads, 1, tokens)
        shape = (tokens, batch * heads, size)  # head split: a reshape, no copy
        q = sa.query(x).reshape(shape).transpose(0, 1)  # [b*h, L, d]
        k = sa.key(x).reshape(shape).permute(1, 2, 0)  # [b*h, d, L]
        v = sa.value(x).reshape(shape).transpose(0, 1)  # [b*h, L, d]
        scores = torch.matmul(q, k) / math.sqrt(size) + head_bias[heads]  # [b*h, L, L]
        probs = torch.softmax(scores, dim=-1)
        context = torch.matmul(probs, v)  # [b*h, L, d]
        context = context.transpose(0, 1).reshape(tokens, batch, heads * size)
        attended = layer.attention.output(context, x)
        x = layer.output(layer.intermediate(attended), attended)
    return x.transpose(0, 1)


# Measured max |difference| on the tests' small models: 1.2e-7 (XLM-R), 3.6e-7 (BERT); 6.6e-7 through
# the stand-in's whole exported fp32 graph against the torch reference. A real disagreement (a changed
# module) is orders larger.
AGREE_ATOL = 1e-4


def agrees(model: Any, input_ids: Any, attention_mask: Any, atol: float = AGREE_ATOL) -> bool:
    """Whether ``encode`` reproduces ``model``'s own forward on this batch, at attended positions."""
    import torch

    with torch.inference_mode():
        expected = model(input_ids=input_ids, attention_mask=attention_mask)[0]
        try:
            got = encode(model, input_ids, attention_mask)
        except (AttributeError, TypeError, ValueError, RuntimeError):  # a module with another interface
            return False
    if got.shape != expected.shape:
        return False
    real = attention_mask.bool()
    return bool(torch.allclose(got[real], expected[real], atol=atol, rtol=0))
