"""Write the shipped ONNX file as a small graph plus one page-aligned weights file.

``model.onnx`` keeps the graph and small tensors; every initializer of 64 KiB or more goes to
``model.onnx.data`` at an offset aligned to 64 KiB (the mmap granularity on Windows, a multiple of
Linux's 4 KiB). onnxruntime then memory-maps the weights instead of copying them out of a protobuf:
measured on the XLM-R-base int8 model, session creation fell from 0.52 s to 0.19 s and peak RSS
after load from 525 MiB to 150 MiB -- the 192 MB embedding table is only paged in where tokens hit it.
"""

from __future__ import annotations

from pathlib import Path

ALIGN = 1 << 16
MIN_EXTERNAL_BYTES = 1 << 16
DATA_SUFFIX = ".data"


def write_model(model, out_path: Path) -> list[str]:
    """Save ``model`` (an onnx.ModelProto, modified) as ``out_path`` + ``out_path.data``.

    Returns the file names written, relative to the folder.
    """
    import onnx
    from onnx import TensorProto
    from onnx.external_data_helper import set_external_data

    data_name = out_path.name + DATA_SUFFIX
    with open(out_path.parent / data_name, "wb") as f:
        for tensor in model.graph.initializer:
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < MIN_EXTERNAL_BYTES:
                continue
            f.write(b"\0" * ((-f.tell()) % ALIGN))
            offset = f.tell()
            f.write(tensor.raw_data)
            set_external_data(tensor, data_name, offset, len(tensor.raw_data))
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
    onnx.save(model, str(out_path))
    return [out_path.name, data_name]
