"""Offline graph optimisation with onnxruntime's transformer fusions.

Fuses the exported BERT-family graph (attention, skip-layernorm, bias-gelu, layernorm) with
``onnxruntime.transformers.optimizer`` before quantization. Whether the fused graph is the one
we ship is decided by measurement (README, "Export recipe"); this module only produces it and
reports which fusions happened. It does not quantize.
"""

from __future__ import annotations

from pathlib import Path


def optimize_fp32(in_path: Path, out_path: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Write the fused graph; returns the count of each fused operator."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # EmbedLayerNormalization would swallow the word-embedding Gather, which quantize.py
    # replaces with a per-row int8 table; keep the embeddings as plain ops.
    options.enable_embed_layer_norm = False
    model = optimize_model(
        str(in_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
        optimization_options=options, opt_level=0, use_gpu=False,
    )
    model.save_model_to_file(str(out_path))
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
