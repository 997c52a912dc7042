"""onnxruntime's OpenVINO execution provider against its CPU one: does OpenVINO's kernels help us?

    python -m benchmarks.ovep --data ../shared/data/mstsb/sentences-unscored.csv   # --setup first

Runs in its own venv (``models/.ovep-venv``, made by ``--setup``: PyPI ``onnxruntime-openvino``
replaces ``onnxruntime`` there, so it cannot share the runtime's or the peers' venv). The
XLM-R-base-shaped model through ``Embedder.from_parts`` (our tokenizer, batching and checks), 2
threads, interleaved rounds, medians:

* ``ours int8``                    the shipped int8 export on the CPU execution provider
* ``ours int8, OpenVINO EP``       the same graph on the OpenVINO execution provider
* ``QDQ int8, CPU EP`` / ``OpenVINO EP``  our fp32 export quantized by onnxruntime's
  ``quantize_static`` (QDQ, static per-tensor uint8 activations, per-channel int8 weights on every
  MatMul, calibrated on 64 real sentences): the form OpenVINO's EP maps onto its int8 kernels
* ``fp32, OpenVINO EP``            the fp32 export on the OpenVINO execution provider

Each is first checked to compute the same function (cosine to the fp32 export on the CPU EP >= 0.99).
The onnxruntime here is the one ``onnxruntime-openvino`` pins, not the runtime's: compare within
this file only. Writes ``benchmarks/results/ovep.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.peers import RATIOS, RESULTS, THREADS, Batches, Encode, cell, same_function, summarize, timed, write_results

HERE = Path(__file__).resolve().parent
OVEP_VENV = "models/.ovep-venv"
PINS = ["onnxruntime-openvino==1.24.1"]
OURS = "ours int8"
CPU, OV = "CPUExecutionProvider", "OpenVINOExecutionProvider"
# engine name -> (model folder key, graph key, provider)
ENGINES = {OURS: ("int8", "int8", CPU), "ours int8, OpenVINO EP": ("int8", "int8", OV),
           "QDQ int8, CPU EP": ("fp32", "qdq", CPU), "QDQ int8, OpenVINO EP": ("fp32", "qdq", OV),
           "fp32, OpenVINO EP": ("fp32", "fp32", OV)}


def setup_venv(root: Path) -> None:
    """onnxruntime-openvino, this package's other runtime deps and onnx (for quantize_static) at our versions."""
    import importlib.metadata as md
    import venv

    venv.EnvBuilder(with_pip=True).create(root)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q"]
    same = [f"{d}=={md.version(d)}" for d in ("tokenizers", "numpy", "onnx")]
    subprocess.run([*pip, *PINS, *same], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(HERE.parent)], check=True)  # deps would pull onnxruntime


def qdq_graph(fp32: Path, out: Path, calibration: list[str]) -> Path:
    """``fp32``'s graph in QDQ form by ``quantize_static``; kept if already made from the same file."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from mstsb_onnx.manifest import sha256_file

    model, marker = out / "model.onnx", out / "made-from.txt"
    source = sha256_file(fp32 / "model.onnx")
    if model.is_file() and marker.is_file() and marker.read_text() == source:
        return model
    batches = Batches(fp32 / "tokenizer.json")  # one text per feed, as the OpenVINO peer is calibrated
    feeds = [{"input_ids": ids, "attention_mask": mask} for _, ids, mask in batches(calibration, 1)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    out.mkdir(parents=True, exist_ok=True)
    quantize_static(str(fp32 / "model.onnx"), str(model), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=["MatMul"], use_external_data_format=True)
    marker.write_text(source)
    return model


def engine(spec: tuple[str, str, str], folders: dict[str, Path], graphs: dict[str, Path]) -> Encode:
    """``Embedder`` over graph ``spec[1]`` on provider ``spec[2]``, with folder ``spec[0]``'s tokenizer and manifest."""
    from mstsb_onnx import Embedder
    from mstsb_onnx.manifest import read_manifest
    from mstsb_onnx.session import make_session
    from mstsb_onnx.tokenizer import Tokenizer

    folder_key, graph_key, provider = spec
    folder, manifest = folders[folder_key], read_manifest(folders[folder_key])
    providers = [(OV, {"device_type": "CPU", "num_of_threads": str(THREADS)}), CPU] if provider == OV else [CPU]
    tokenizer = Tokenizer.from_file(folder / "tokenizer.json", manifest.max_seq_length,
                                    int(manifest.raw.get("pad_token_id", 1)))
    emb = Embedder.from_parts(tokenizer, make_session(graphs[graph_key], THREADS, providers), manifest, path=folder)
    return lambda texts, bs: emb.encode(texts, batch_size=bs)


def markdown(r: dict) -> str:
    w = r["workloads"]
    lines = [f"OpenVINO execution provider (`benchmarks/ovep.py`, commit {r['code']['commit'][:12]}"
             f"{' dirty' if r['code']['dirty'] else ''}, {r['machine']['date']}; onnxruntime-openvino "
             f"{r['onnxruntime']}): XLM-R-base-shaped model, {THREADS} threads, {r['rounds']} interleaved rounds, "
             f"medians; {r['machine']['cpu']}. " + RATIOS, "",
             "| engine | real text batch 32, sent/s | 1 x 16 tokens, ms | 1 x 128 tokens, ms | worst cosine to fp32 |",
             "|---|---|---|---|---|"]
    for name in ENGINES:
        lines.append(f"| {name} | {cell(w['batch32'], name, False)} | {cell(w['1x16'], name, True)} | "
                     f"{cell(w['1x128'], name, True)} | "
                     f"{r['same_function'][name]:.5f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ovep", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="sentences-unscored.csv")
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--setup", action="store_true", help=f"build the venv {OVEP_VENV} and stop")
    p.add_argument("--report-only", action="store_true", help="rewrite ovep.md from ovep.json, measure nothing")
    args = p.parse_args(argv)
    if args.setup:
        setup_venv(Path(OVEP_VENV))
        return 0
    if args.report_only:
        write_results("ovep", json.loads((RESULTS / "ovep.json").read_text()), markdown)
        return 0
    if args.data is None:
        p.error("--data is required")
    import onnxruntime as ort

    from benchmarks.common import fixed_texts, load_sample, machine_info, paths_only
    from mstsb_onnx.export.provenance import code_revision

    code = code_revision()
    folders = paths_only(str(args.models_dir))
    graphs = {"int8": folders["int8"] / "model.onnx", "fp32": folders["fp32"] / "model.onnx",
              "qdq": qdq_graph(folders["fp32"], args.models_dir / "xlmr-base-random-qdq",
                               load_sample(args.data, 64, seed=1))}
    engines = {n: engine(spec, folders, graphs) for n, spec in ENGINES.items()}
    sample = load_sample(args.data, 256)
    checked = same_function(engines, engine(("fp32", "fp32", CPU), folders, graphs), sample[:64])
    workloads = {"batch32": (sample, 32), "1x16": (fixed_texts(folders, 16, 1), 1),
                 "1x128": (fixed_texts(folders, 128, 1), 1)}
    result = {"code": code, "machine": machine_info(), "onnxruntime": ort.__version__, "rounds": args.rounds,
              "same_function": checked, "workloads": summarize(timed(engines, workloads, args.rounds), workloads)}
    write_results("ovep", result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
