"""The hardware and kernel libraries that decide a run's last bits, as recorded in
`meta_info.system_info`.

Floating-point sums depend on the code path a library picks for the CPU it runs on: PyTorch's
own kernels dispatch on its "CPU capability" (default, AVX2, AVX512), MKL on the instruction
sets it finds, oneDNN on its maximum ISA. Two machines with the same software can therefore
train to adapters that differ in the last bits, which a sensitive method amplifies. These fields
let a reader see why two results differ; they stay out of the run key, so a result remains
valid on another machine (`compare` warns when a leaderboard mixes hardware, `diff` and
`reproduce` name both sides).

Also here, because a plan and a run must agree on them: the device a run uses (`resolve_device`:
its kind is part of the run key) and whether this process runs with the portable CPU kernels that
`peftbench run` pins for a deterministic run (`pinned_level`; training/cpu_kernels.py pins them).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from typing import Any

from peftbench.errors import UserError

# CPU flags that select kernels (x86: /proc/cpuinfo names). Others (sse2, ...) are on every
# x86-64 CPU and say nothing.
KERNEL_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c")
# Environment variables that restrict or pin the kernel paths; recorded when set.
KERNEL_ENV_VARS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
                   "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

# The code paths `peftbench run` pins for a deterministic run on a CPU (training/cpu_kernels.py
# says why these). ATEN_CPU_CAPABILITY: PyTorch's dispatch level. MKL_CBWR: MKL's conditional
# numerical reproducibility branch, the AVX2 code path on any CPU that has it; STRICT also makes
# it independent of the thread count (measured: "AVX2" alone gave different adapters with 1 and 2
# threads, "AVX2,STRICT" the same). ONEDNN_MAX_CPU_ISA (and its older name DNNL_MAX_CPU_ISA):
# the highest ISA oneDNN may use.
PORTABLE_LEVEL = "AVX2"
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
}


def _proc_cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (Linux), else {}."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    block = text.split("\n\n", 1)[0]
    info = {}
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def cpu_info() -> dict[str, Any]:
    """CPU model, vendor and the instruction-set flags that select kernels. Pure reading of
    the operating system: no torch."""
    raw = _proc_cpuinfo()
    flags = raw.get("flags", raw.get("Features", "")).split()
    model = raw.get("model name") or raw.get("Model") or platform.processor() or None
    if model is None and platform.system() == "Darwin":
        model = _sysctl("machdep.cpu.brand_string")
    return {
        "cpu_model": model,
        "cpu_vendor": raw.get("vendor_id") or raw.get("CPU implementer") or None,
        "cpu_flags": sorted(f for f in set(flags) if f.startswith(KERNEL_FLAG_PREFIXES)),
        "cpu_count": os.cpu_count(),
    }


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def has_flag(flag: str) -> bool:
    return flag in cpu_info()["cpu_flags"]


_MKL_RE = re.compile(r"Math Kernel Library Version ([\d.]+)")
_ONEDNN_RE = re.compile(r"(?:MKL-DNN|oneDNN) v([\w.\-]+)")


def kernel_libraries() -> dict[str, Any]:
    """PyTorch's CPU capability in this process, the MKL and oneDNN versions it was built with,
    its thread count, and the kernel environment variables that are set."""
    import torch

    config = torch.__config__.show()
    mkl = _MKL_RE.search(config)
    onednn = _ONEDNN_RE.search(config)
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        capability = None
    return {
        "torch_cpu_capability": capability,
        "mkl_version": mkl.group(1) if mkl else None,
        "onednn_version": onednn.group(1) if onednn else None,
        "torch_threads": torch.get_num_threads(),
        "kernel_env": {name: os.environ[name] for name in KERNEL_ENV_VARS if name in os.environ},
    }


def gpu_info(device: str) -> dict[str, Any]:
    """Accelerator model, compute capability, CUDA/cuDNN and driver versions (None on a CPU)."""
    import torch

    info: dict[str, Any] = {"accelerator": None, "compute_capability": None, "cuda_version": None,
                            "cudnn_version": None, "driver": None, "driver_version": None}
    if device.startswith("cuda"):
        dev = torch.device(device)
        info["accelerator"] = torch.cuda.get_device_name(dev)
        major, minor = torch.cuda.get_device_capability(dev)
        info["compute_capability"] = f"{major}.{minor}"
        info["cuda_version"] = torch.version.cuda
        info["cudnn_version"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info["driver_version"] = _nvidia_driver()
        # `driver` keeps the one-line form older results have ("cuda 12.4, nvidia driver 550.54")
        info["driver"] = f"cuda {torch.version.cuda}" + (
            f", nvidia driver {info['driver_version']}" if info["driver_version"] else "")
    elif device.startswith("xpu"):
        info["accelerator"] = torch.xpu.get_device_name(torch.device(device))
    elif device == "mps":
        info["accelerator"] = "Apple MPS"
    return info


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def resolve_device(requested: str) -> str:
    """`auto` picks cuda, then xpu, then mps, else cpu. An explicit device must exist."""
    import torch

    available = {
        "cuda": torch.cuda.is_available(),
        "xpu": hasattr(torch, "xpu") and torch.xpu.is_available(),
        "mps": hasattr(torch.backends, "mps") and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if requested == "auto":
        return next(kind for kind in ("cuda", "xpu", "mps", "cpu") if available[kind])
    kind = requested.split(":")[0]
    if not available.get(kind, False):
        raise UserError(f"device {requested!r} is not available on this machine; use device \"auto\" or \"cpu\"")
    return requested


def pinned_level(environ: dict[str, str] | None = None, torch_capability: str | None = None) -> str | None:
    """PORTABLE_LEVEL when this process runs with the pinned paths, else None. With
    `torch_capability` (torch.backends.cpu.get_cpu_capability()), PyTorch must report it too."""
    env = os.environ if environ is None else environ
    if any(env.get(k) != v for k, v in PORTABLE_ENV.items()):
        return None
    if torch_capability is not None and torch_capability.upper() != PORTABLE_LEVEL:
        return None
    return PORTABLE_LEVEL


def hardware_label(system_info: dict[str, Any] | None) -> str:
    """A short name of the machine that made a result: the accelerator when there was one, else
    the CPU model with PyTorch's capability ("Intel Xeon ... [AVX512]"); "unknown" for results
    that predate these fields."""
    info = system_info or {}
    if info.get("accelerator"):
        return str(info["accelerator"])
    model = info.get("cpu_model")
    if not model:
        return "unknown"
    capability = info.get("torch_cpu_capability")
    return f"{model} [{capability}]" if capability else str(model)


def hardware_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """The recorded hardware and kernel fields in which two results differ, as 'field: a vs b'."""
    a, b = a or {}, b or {}
    fields = ("accelerator", "compute_capability", "cuda_version", "cudnn_version", "driver_version",
              "cpu_model", "torch_cpu_capability", "mkl_version", "onednn_version", "torch_threads",
              "cpu_kernels_pinned")
    return [f"{name}: {a.get(name)} vs {b.get(name)}" for name in fields
            if name in a and name in b and a.get(name) != b.get(name)]
