"""Import onnxruntime with every CPU in the affinity mask, then give the caller its mask back.

onnxruntime 1.32 on x86-64 settles part of its int8 GEMM path when its native module loads, from
the CPUs the loading thread may run on: a process held to one CPU before that import ran its int8
GEMMs 2.4x slower than the same process held to the same CPU after it (docs/performance.md, "A
process held to one core"). Servers run exactly that way (one worker per core under ``taskset``),
so the import widens the loading thread's mask to every CPU for the import only and restores it.
Where a cgroup cpuset forbids the other CPUs, the kernel keeps the mask inside the cpuset and
nothing changes. It does not move the process off its cores after the import, and it cannot help
when onnxruntime was imported before ``mstsb_onnx`` (``sys.modules`` already holds it).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType


def import_with_every_cpu(name: str, importer: Callable[[str], ModuleType] = importlib.import_module) -> ModuleType:
    """``importer(name)`` with the calling thread allowed on every CPU, its own mask restored after."""
    if name in sys.modules or not hasattr(os, "sched_setaffinity"):
        return importer(name)
    mask = os.sched_getaffinity(0)
    every = set(range(os.cpu_count() or 1)) | mask
    if every == mask:
        return importer(name)
    try:
        os.sched_setaffinity(0, every)
    except OSError:  # a mask the kernel will not take: import as we are
        return importer(name)
    try:
        return importer(name)
    finally:
        os.sched_setaffinity(0, mask)


def load_onnxruntime() -> ModuleType:
    return import_with_every_cpu("onnxruntime")
