"""Portable CPU kernels: with `deterministic: true`, pin PyTorch, MKL and oneDNN to the AVX2
code paths before torch loads, so that a CPU run gives the same bits on every x86-64 machine
with AVX2 (not only on machines of the same model).

Why these three: PyTorch's vectorised kernels (reductions, softmax, norms) dispatch on its CPU
capability, matrix products go through MKL, and some layers through oneDNN; each picks its own
code path per CPU (AVX2, AVX-512, AMX), and floating-point sums then differ in the last bits.
Measured on the tiny LoRA experiment of the tests, on one Xeon with AVX-512 and AMX: unpinned,
the natural run, ATEN_CPU_CAPABILITY=avx2, =default and MKL limited to AVX2 gave four different
adapters; pinned, the natural run, ATEN_CPU_CAPABILITY=default or =avx512 set by the caller, MKL
limited to AVX2 and one thread instead of two all gave the same adapter bits
(tests/training/test_cpu_kernels.py checks this on every change).

Each library reads its variable once, when it loads, so pinning must happen in the run's own
process before the first `import torch`; `peftbench run` calls `pin_portable_kernels` right after
reading the configs. A process that has already loaded torch cannot be pinned: the run goes on,
with a warning, and `system_info` records what was in force.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass

from peftbench.record.hardware import PORTABLE_ENV, PORTABLE_LEVEL, cpu_info

_X86_MACHINES = ("x86_64", "amd64", "i686", "i386")


@dataclass(frozen=True)
class PinOutcome:
    pinned: bool
    reason: str  # why not, or what was set


def pin_portable_kernels(environ: dict[str, str] | None = None, *, cpu_flags: list[str] | None = None,
                         torch_loaded: bool | None = None) -> PinOutcome:
    """Set PORTABLE_ENV in `environ` (os.environ by default) when that can still take effect.

    Not pinned, with the reason: a CPU that is not x86-64 or lacks AVX2 (there is no common
    level to pin to), or torch already loaded in this process (too late)."""
    env = os.environ if environ is None else environ
    if torch_loaded is None:
        torch_loaded = "torch" in sys.modules
    machine = platform.machine().lower()
    if machine not in _X86_MACHINES:
        return PinOutcome(False, f"not an x86-64 CPU ({machine}): CPU kernels not pinned")
    if cpu_flags is None:
        cpu_flags = cpu_info()["cpu_flags"]
    if "avx2" not in cpu_flags:
        return PinOutcome(False, "this CPU has no AVX2: CPU kernels not pinned")
    if torch_loaded and any(env.get(k) != v for k, v in PORTABLE_ENV.items()):
        return PinOutcome(False, "torch was loaded before the run could pin the CPU kernels: "
                                 "run `peftbench run` in a fresh process for portable results")
    env.update(PORTABLE_ENV)
    return PinOutcome(True, "CPU kernels pinned to " + PORTABLE_LEVEL)
