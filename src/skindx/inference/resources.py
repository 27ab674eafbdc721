"""How many CPU threads this process should use: the one rule for training (torch) and
serving (ONNX Runtime).

`os.cpu_count()` counts the host's cores and ignores container limits, so a 2-CPU container on a
64-core host would start 64 threads that fight over 2 CPUs. The count here is the smallest of
  - OMP_NUM_THREADS, when set (the user's explicit choice, e.g. on a shared machine);
  - the CPUs this process may run on (`os.sched_getaffinity`: taskset, cpusets);
  - the CPU quota of its cgroup, rounded up (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` /
    `cpu.cfs_period_us`: `docker run --cpus`, Kubernetes CPU limits).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_cgroup_dirs(root: Path) -> list[Path]:
    """This process's cgroup directories (from /proc/self/cgroup), then the root itself."""
    dirs = []
    text = _read(Path("/proc/self/cgroup")) or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[2].startswith("/"):
            controllers = parts[1]
            rel = parts[2].lstrip("/")
            if controllers == "":  # v2
                dirs.append(root / rel)
            elif "cpu" in controllers.split(","):  # v1, e.g. "cpu,cpuacct"
                dirs.extend(root / name / rel for name in (controllers, "cpu", "cpu,cpuacct"))
    dirs.append(root)
    dirs.extend(root / name for name in ("cpu", "cpu,cpuacct"))
    return dirs


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in CPUs (e.g. 1.5), or None when there is none."""
    for folder in _own_cgroup_dirs(root):
        v2 = _read(folder / "cpu.max")
        if v2:
            quota, _, period = v2.partition(" ")
            if quota != "max" and quota.isdigit() and period.isdigit() and int(period) > 0:
                return int(quota) / int(period)
            if quota == "max":
                return None
        quota_v1, period_v1 = (
            _read(folder / "cpu.cfs_quota_us"),
            _read(folder / "cpu.cfs_period_us"),
        )
        if quota_v1 is not None and period_v1 is not None:
            try:
                quota, period = int(quota_v1), int(period_v1)
            except ValueError:
                continue
            return quota / period if quota > 0 and period > 0 else None
    return None


def cpu_threads(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Threads to use for CPU compute (at least 1); see the module docstring for the rule."""
    requested = os.environ.get("OMP_NUM_THREADS", "").strip()
    if requested.isdigit() and int(requested) > 0:
        return int(requested)
    count = _affinity_count()
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)
