"""Memory measurements of a run: reserved accelerator memory per training step, or the CPU
process's resident set size where there is no accelerator."""

from __future__ import annotations

import math
import resource
import sys
from typing import Any

from peftbench.record import results as R


def memory_snapshot(device: str) -> tuple[int | None, int | None]:
    """(reserved, allocated) bytes on an accelerator; (None, None) on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device)
    if device.startswith("xpu"):
        return torch.xpu.memory_reserved(device), torch.xpu.memory_allocated(device)
    return None, None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        return None


def percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def mean(values) -> float | None:
    return sum(values) / len(values) if values else None


def memory_summary(mem_reserved: list[int], device: str) -> dict[str, Any]:
    """train_info memory fields: accelerator reserved memory over the training steps
    (`mem_reserved`, bytes per step), or the CPU peak RSS when there are none."""
    import torch

    if mem_reserved:
        peak = torch.cuda.max_memory_reserved(device) if device.startswith("cuda") else max(mem_reserved)
        return {R.ACCEL_MEM_MAX: int(max(peak, max(mem_reserved))),
                R.ACCEL_MEM_AVG: int(mean(mem_reserved)),
                R.ACCEL_MEM_99: int(percentile(mem_reserved, 99))}
    return {R.CPU_PEAK_RSS: peak_rss_bytes()}
