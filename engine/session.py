"""Create the onnxruntime session with every option set explicitly.

Defaults that onnxruntime would otherwise pick for us are wrong for a CPU server: it sizes its
thread pool from the machine's core count, not from the cores this process may use. Threads come
from ``cpus.available_cpus`` (affinity mask and cgroup quota); the other options are fixed so that
runs are reproducible. It does not tokenize or pool; see ``embedder``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from mstsb_onnx.cpus import available_cpus, u8s8_may_saturate
from mstsb_onnx.errors import ModelFolderError
from mstsb_onnx.inputs import is_count
from mstsb_onnx.ortimport import load_onnxruntime

ort = load_onnxruntime()  # before any other onnxruntime import: a pinned process would load it slow
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile  # noqa: E402

# An execution provider's name, or (name, its options) as onnxruntime.InferenceSession takes them.
Provider = str | tuple[str, dict[str, str]]

# Graph rewrites we turn off: onnxruntime's CPU SkipLayerNormalization is slower than the
# Add + LayerNormalization it would replace, and its BiasGelu slower than Add + Gelu
# (docs/performance.md, "What won").
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion", "BiasGeluFusion")


def session_options(threads: int | None = None, spin: bool = True) -> ort.SessionOptions:
    """Explicit options: intra-op threads, one inter-op thread, sequential, full optimisation.

    ``spin=False`` stops idle worker threads from spinning, which matters when several sessions
    or processes share the cores (a server); spinning helps single-stream latency.
    """
    if threads is not None and not is_count(threads):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or available_cpus()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_cpu_mem_arena = True
    # Shapes change with every batch, so recorded memory patterns would never be reused.
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    # On x64 CPUs without VNNI (AVX2, plain AVX-512) the u8s8 int8 kernels saturate int16 sums and
    # return wrong vectors; this rewrites those GEMMs to u8u8 (onnxruntime PR #12088). On VNNI and
    # AMX CPUs it changes no output but slows int8 1.6-3x, so it is set only where it is needed
    # (cost and effect in docs/performance.md).
    so.add_session_config_entry("session.x64quantprecision", "1" if u8s8_may_saturate() else "0")
    return so


def make_session(
    model_path: Path,
    threads: int | None = None,
    providers: Sequence[Provider] | None = None,
    spin: bool = True,
    entering: threading.Event | None = None,
) -> ort.InferenceSession:
    """A CPU session with ``session_options``.

    ``entering`` is set once onnxruntime is inside ``initialize_session`` (graph optimisation and
    weight pre-packing, ~75% of creation), which runs without the GIL; it is set on return or
    error too. See ``Embedder`` for why a caller waits for it.
    """
    if entering is None:
        return _create(model_path, threads, providers, spin)
    previous = sys.getprofile()
    sys.setprofile(_signal_on_initialize(entering))  # this thread only
    try:
        return _create(model_path, threads, providers, spin)
    finally:
        sys.setprofile(previous)
        entering.set()


def _create(model_path: Path, threads: int | None, providers: Sequence[Provider] | None,
            spin: bool) -> ort.InferenceSession:
    if isinstance(providers, str):  # one name; list() would split it into characters
        providers = [providers]
    providers = list(providers) if providers else ["CPUExecutionProvider"]
    names = [p if isinstance(p, str) else p[0] for p in providers]  # (name, options) pairs as onnxruntime takes them
    unknown = [n for n in names if n not in ort.get_available_providers()]
    if unknown:
        raise ValueError(
            f"execution provider(s) {unknown} are not available in this onnxruntime build; "
            f"available: {ort.get_available_providers()}"
        )
    try:
        return ort.InferenceSession(
            str(model_path), sess_options=session_options(threads, spin), providers=providers,
            disabled_optimizers=list(DISABLED_OPTIMIZERS),
        )
    except (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile) as e:
        raise ModelFolderError(f"onnxruntime could not load {model_path}: {e}") from e


def _signal_on_initialize(entering: threading.Event) -> Callable[[FrameType, str, object], None]:
    # onnxruntime creates a session in two GIL-free C++ calls (load, then initialize_session)
    # joined by Python glue. Work that holds the GIL, started before the second call, stalls the
    # glue and so the whole session. If a future onnxruntime renames the call, ``entering`` is
    # still set when creation ends: the overlap is lost, nothing breaks.
    def hook(frame: FrameType, event: str, arg: object) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") == "initialize_session":
            entering.set()

    return hook
