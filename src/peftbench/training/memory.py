"""Memory measurements of a run: reserved accelerator memory per training step, or the CPU
process's resident set size where there is no accelerator; and, before a run, what its weights
need against what the machine has (`weights_bytes`, `machine_memory`, used by meta_check)."""

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


# Bytes a frozen base weight takes when bitsandbytes quantizes the model (int8: 1, nf4: half).
_QUANTIZED_BYTES = {"int8": 1.0, "int4": 0.5}


def weights_bytes(model: Any, dtype_name: str) -> int:
    """Bytes the parameters of `model` (built on the meta device in the run's dtype, adapter
    included) take: numel x element size, frozen weights at their quantized size for int8/int4.
    A lower bound of what training needs: gradients, optimizer state and activations come on top."""
    quantized = _QUANTIZED_BYTES.get(dtype_name)
    total = 0.0
    for p in model.parameters():
        size = p.element_size() if quantized is None or p.requires_grad else min(p.element_size(), quantized)
        total += p.numel() * size
    return int(total)


def machine_memory(device: str) -> tuple[int, str]:
    """(bytes, what they are) that a run's weights must fit in: the accelerator's total memory on
    cuda or xpu, else the machine's RAM (mps shares it). Total, not currently free: what other
    processes hold changes from minute to minute, and a refusal must mean "cannot ever fit"."""
    import torch

    kind, _, index = device.partition(":")
    if kind in ("cuda", "xpu"):
        backend = getattr(torch, kind)
        i = int(index) if index else backend.current_device()
        return backend.get_device_properties(i).total_memory, f"the memory of {kind}:{i} ({backend.get_device_name(i)})"
    import psutil

    return psutil.virtual_memory().total, "this machine's RAM"


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"

