"""sentence-transformers Dense modules rebuilt in torch from their safetensors weights.

A Dense module maps the pooled vector through ``activation(x @ W.T + b)`` (LaBSE and the
distiluse models end with one). ``source.py`` has already read the config and chosen the
activation from a fixed list; this module loads the weights (safetensors only: nothing pickled,
nothing imported by name) and checks their shapes. Both the export graph and the torch reference
use it, so they apply the same layers; the sentence-transformers reference, where installed,
checks both against the library's own Dense.

It does not export or quantize: the layers are traced with the encoder under the ``st_dense``
scope, whose nodes the int8 pass leaves fp32 (``pipeline.py``).
"""

from __future__ import annotations

from mstsb_onnx.errors import ExportError
from mstsb_onnx.export.deps import require
from mstsb_onnx.export.source import DenseSpec


def _linear(weight, bias):
    """``x @ weight.T + bias`` written as matmul: torch.onnx then writes MatMul (+ Add), not Gemm,
    which onnxruntime's quantizer would rename (Gemm -> *_MatMul) past our fp32 exclusion."""
    import torch

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight_t = torch.nn.Parameter(weight.float().t().contiguous(), requires_grad=False)
            self.bias = None if bias is None else torch.nn.Parameter(bias.float(), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.matmul(x, self.weight_t)
            return y if self.bias is None else y + self.bias

    return Linear()


def _activation(name: str):
    import torch

    return {"tanh": torch.nn.Tanh, "identity": torch.nn.Identity, "relu": torch.nn.ReLU,
            "gelu": torch.nn.GELU, "sigmoid": torch.nn.Sigmoid}[name]()


def output_dim(specs: list[DenseSpec], hidden_size: int) -> int:
    """The embedding's dimension: the last Dense module's outputs, else the encoder's hidden size."""
    return specs[-1].out_features if specs else hidden_size


def dense_stack(specs: list[DenseSpec], hidden_size: int):
    """A torch module applying every Dense in order to the pooled ``hidden_size`` vector (an
    identity when there are none); each module's in_features must match what reaches it."""
    require("torch", "safetensors")
    import torch
    from safetensors.torch import load_file

    layers = []
    previous_out = hidden_size
    for i, spec in enumerate(specs):
        if spec.in_features != previous_out:
            what = (f"the pooled vector's {previous_out} dimensions" if i == 0
                    else f"the previous module's {previous_out} outputs")
            raise ExportError(f"{spec.weights.parent}: in_features {spec.in_features} does not match {what}")
        try:
            tensors = load_file(str(spec.weights))
        except Exception as e:  # safetensors reports a corrupt header as several exception types
            raise ExportError(f"could not read {spec.weights}: {e}") from e
        expected = {"linear.weight": (spec.out_features, spec.in_features)}
        if spec.bias:
            expected["linear.bias"] = (spec.out_features,)
        for key, shape in expected.items():
            if key not in tensors or tuple(tensors[key].shape) != shape:
                got = tuple(tensors[key].shape) if key in tensors else "missing"
                raise ExportError(f"{spec.weights}: {key} should have shape {shape}, found {got}")
        layers += [_linear(tensors["linear.weight"], tensors.get("linear.bias") if spec.bias else None),
                   _activation(spec.activation)]
        previous_out = spec.out_features
    return torch.nn.Sequential(*layers).eval()
