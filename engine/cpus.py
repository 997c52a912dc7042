"""What this CPU offers the runtime: usable cores, and whether its int8 kernels may saturate.

Cores: the affinity mask, capped by the cgroup CPU quota.

onnxruntime and ``os.cpu_count()`` see the machine's cores; a container limited to 2 CPUs on a
64-core host would start 64 threads. Pure standard library, so the CLI and the server's config
can ask without loading onnxruntime.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), if any."""
    try:
        quota, period = (CGROUP_ROOT / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((CGROUP_ROOT / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """Cores this process may run on: affinity mask, capped by the cgroup quota, at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit)))
    return max(1, n)


CPUINFO = Path("/proc/cpuinfo")
# Instructions with which onnxruntime's x64 u8s8 kernels accumulate in int32 (no int16 saturation).
_INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.lru_cache(maxsize=8)
def cpu_fields(cpuinfo: Path = CPUINFO) -> Mapping[str, str]:
    """The first processor's entries in ``/proc/cpuinfo`` (empty where it cannot be read).

    Read once per process: every session's options ask, and the CPU does not change.
    """
    fields: dict[str, str] = {}
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():  # the blank line after the first processor's block
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return MappingProxyType({})
    return MappingProxyType(fields)


def u8s8_may_saturate(cpuinfo: Path = CPUINFO, machine: str | None = None) -> bool:
    """True where onnxruntime's x64 u8s8 int8 GEMMs may saturate: x86-64 without VNNI or AMX.

    Those kernels sum pairs of products in int16 (``vpmaddubsw``). When ``/proc/cpuinfo`` cannot
    be read, or has no flags, on an x86-64 machine the answer is True: the precise kernels are
    slower, never wrong. Other architectures (ARM) have no such kernels.
    """
    machine = (machine or platform.machine()).lower()
    if machine not in {"x86_64", "amd64", "x64"}:
        return False
    flags = cpu_fields(cpuinfo).get("flags")
    return flags is None or not (_INT8_DOT_FLAGS & set(flags.split()))
