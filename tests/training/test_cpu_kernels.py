"""Portable CPU kernels (`deterministic: true`): runs made under different kernel dispatch
levels give the same bits once pinned, and every result records the hardware that decided them.

Different CPUs are simulated on one machine with the variables each library reads when it loads:
ATEN_CPU_CAPABILITY (PyTorch), MKL_ENABLE_INSTRUCTIONS (MKL), ONEDNN_MAX_CPU_ISA (oneDNN), and the
thread count. Each run is a fresh `peftbench run` process: pinning must happen before torch loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench.record import hardware
from peftbench.training import cpu_kernels

NUMBERS_THAT_MUST_MATCH = ("train loss", "valid accuracy", "test accuracy", "forgetting", "train total tokens")


def test_pinning_sets_every_library_variable_in_a_fresh_process():
    env: dict[str, str] = {"ATEN_CPU_CAPABILITY": "default"}
    outcome = cpu_kernels.pin_portable_kernels(env, cpu_flags=["avx", "avx2"], torch_loaded=False)
    if platform.machine().lower() not in ("x86_64", "amd64"):
        assert not outcome.pinned and "x86-64" in outcome.reason
        return
    assert outcome.pinned
    assert env == hardware.PORTABLE_ENV  # a caller's lower or higher level is replaced
    assert hardware.pinned_level(env, torch_capability="AVX2") == "AVX2"
    assert hardware.pinned_level(env, torch_capability="AVX512") is None  # set too late


def test_pinning_refuses_when_it_cannot_take_effect():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 only")
    env: dict[str, str] = {}
    no_avx2 = cpu_kernels.pin_portable_kernels(env, cpu_flags=["avx"], torch_loaded=False)
    assert not no_avx2.pinned and "AVX2" in no_avx2.reason and env == {}
    too_late = cpu_kernels.pin_portable_kernels(env, cpu_flags=["avx2"], torch_loaded=True)
    assert not too_late.pinned and "torch was loaded" in too_late.reason and env == {}


def test_system_info_names_the_cpu_and_its_kernel_libraries():
    from peftbench.record import provenance

    info = provenance.system_info("cpu")
    for key in ("cpu_model", "cpu_vendor", "cpu_flags", "torch_cpu_capability", "mkl_version", "onednn_version",
                "torch_threads", "cpu_kernels_pinned", "accelerator", "compute_capability", "cuda_version",
                "cudnn_version", "driver_version"):
        assert key in info, key
    if Path("/proc/cpuinfo").exists():
        assert info["cpu_model"] and info["cpu_vendor"]
    assert all(flag.startswith(hardware.KERNEL_FLAG_PREFIXES) for flag in info["cpu_flags"])
    assert info["accelerator"] is None and info["cuda_version"] is None


def test_hardware_label_and_differences():
    a = {"cpu_model": "Xeon", "torch_cpu_capability": "AVX512", "mkl_version": "2024.2"}
    b = {"cpu_model": "EPYC", "torch_cpu_capability": "AVX2", "mkl_version": "2024.2"}
    assert hardware.hardware_label(a) == "Xeon [AVX512]"
    assert hardware.hardware_label({"accelerator": "NVIDIA L40S", "cpu_model": "Xeon"}) == "NVIDIA L40S"
    assert hardware.hardware_label({}) == "unknown"
    assert hardware.hardware_differences(a, b) == ["cpu_model: Xeon vs EPYC", "torch_cpu_capability: AVX512 vs AVX2"]


def _run(suite: Path, out: Path, env_extra: dict[str, str], deterministic: bool) -> tuple[str, dict]:
    env = {k: v for k, v in os.environ.items() if k not in hardware.KERNEL_ENV_VARS}
    env.update(env_extra, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [sys.executable, "-m", "peftbench.cli", "run", str(suite / "experiments" / "lora" / "tiny-r4"),
           "--output-dir", str(out), "--no-progress", "--set", f"deterministic={'true' if deterministic else 'false'}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result_path] = [p for p in suite.glob("*results/*.json") if p.stat().st_mtime_ns == max(
        q.stat().st_mtime_ns for q in suite.glob("*results/*.json"))]
    result = json.loads(result_path.read_text())
    adapter = hashlib.sha256((out / "adapter_model.safetensors").read_bytes()).hexdigest()
    return adapter, result


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or not hardware.has_flag("avx2"),
                    reason="portable kernels need an x86-64 CPU with AVX2")
def test_deterministic_runs_are_identical_across_simulated_cpus(tiny_suite, tmp_path):
    machines = {
        "natural": {},
        "avx2 cpu": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
        "no vector kernels, one thread": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"},
    }
    seen = {}
    for label, env in machines.items():
        adapter, result = _run(tiny_suite, tmp_path / label.replace(" ", "_"), env, deterministic=True)
        info = result["meta_info"]["system_info"]
        assert info["cpu_kernels_pinned"] == "AVX2" and info["torch_cpu_capability"] == "AVX2", (label, info)
        metrics = [{k: m.get(k) for k in NUMBERS_THAT_MUST_MATCH} for m in result["train_info"]["metrics"]]
        seen[label] = (adapter, metrics)
    first = next(iter(seen.values()))
    for label, value in seen.items():
        assert value == first, f"{label} differs from the natural run"
