"""How many cores this process may use: the affinity mask, capped by the cgroup CPU quota.

onnxruntime and ``os.cpu_count()`` see the machine's cores; a container limited to 2 CPUs on a
64-core host would start 64 threads. Pure standard library, so the CLI and the server's config
can ask without loading onnxruntime.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

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
