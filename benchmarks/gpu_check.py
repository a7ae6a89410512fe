"""`make gpu-check`: the checks that need a CUDA device, as one prepared script.

1. A short bfloat16 CUDA run of a small experiment (the demo suite's LoRA on SmolLM2-135M, which
   needs no hub access: 20 steps, 50 test items), in a copy of the suite under a temporary
   folder so that the repository gets no result files. The result must record the accelerator
   memory fields (max, reserved average and 99th percentile, all > 0), the accelerator's name
   and its driver, and the evaluation engine that ran.
2. `peftbench bench` on the same suite and device with a reduced item count (ITEMS, default
   200 prompts; STEPS training steps, default 20), printed and written as JSON beside the run.

Exit status: 0 all checks hold, 1 a check failed (each failure is printed), 2 no CUDA device
(nothing run). Output folder: $GPU_CHECK_OUT, else a new temporary folder (printed).

    make gpu-check                      # or: python benchmarks/gpu_check.py
    ITEMS=100 STEPS=10 make gpu-check
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo"
EXPERIMENT = "experiments/lora/smollm2-rank16"
RUN_SETTINGS = ["device=cuda", "dtype=bfloat16", "max_steps=20", "eval_steps=10", "valid_size=10", "test_size=50"]


def cuda_problem() -> str | None:
    """Why this machine cannot run the check, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else " is a CPU-only build")
        return f"no CUDA device is visible ({build}); gpu-check runs on a machine with an NVIDIA GPU"
    return None


def result_problems(result: dict) -> list[str]:
    """What a CUDA run's result lacks of the fields this check is about."""
    train, system = result.get("train_info", {}), result.get("meta_info", {}).get("system_info") or {}
    problems = []
    if train.get("status") != "success":
        problems.append(f"status is {train.get('status')!r}: {result.get('run_info', {}).get('error_msg')}")
    for key in ("accelerator_memory_max", "accelerator_memory_reserved_avg", "accelerator_memory_reserved_99th"):
        if not isinstance(train.get(key), (int, float)) or train[key] <= 0:
            problems.append(f"train_info.{key} is {train.get(key)!r}, expected bytes > 0")
    if train.get("cpu_peak_rss") is not None:
        problems.append("train_info.cpu_peak_rss is set on a CUDA run")
    for key in ("accelerator", "driver", "driver_version"):
        if not system.get(key):
            problems.append(f"meta_info.system_info.{key} is {system.get(key)!r}")
    if train.get("eval_engine_used") not in ("dynamic", "static"):
        problems.append(f"train_info.eval_engine_used is {train.get('eval_engine_used')!r}")
    return problems


def main() -> int:
    problem = cuda_problem()
    if problem:
        print(f"gpu-check: {problem}", file=sys.stderr)
        return 2
    out = Path(os.environ.get("GPU_CHECK_OUT") or tempfile.mkdtemp(prefix="peftbench-gpu-check-"))
    suite = out / "demo"
    shutil.copytree(DEMO, suite, ignore=shutil.ignore_patterns("results", "temporary_results", "cancelled_results",
                                                                ".peftbench"))
    print(f"gpu-check: working in {out}", flush=True)
    py = [sys.executable, "-m", "peftbench.cli"]
    sets = [a for s in RUN_SETTINGS for a in ("--set", s)]
    run = subprocess.run(py + ["run", "-v", "--no-progress", "--clean", str(suite / EXPERIMENT), *sets])
    results = sorted((suite / "temporary_results").glob("*.json")) + sorted((suite / "cancelled_results").glob("*.json"))
    if not results:
        print(f"gpu-check: FAILED: the run wrote no result (exit {run.returncode})", file=sys.stderr)
        return 1
    result = json.loads(results[-1].read_text())
    problems = result_problems(result)
    system = result["meta_info"].get("system_info") or {}
    print(f"run: {results[-1]}\n  accelerator {system.get('accelerator')}, driver {system.get('driver')}; memory max "
          f"{result['train_info'].get('accelerator_memory_max')} B; engine {result['train_info'].get('eval_engine_used')}")
    bench = subprocess.run(py + ["bench", str(suite), "--set", "device=cuda", "--set", "dtype=bfloat16",
                                 "--items", os.environ.get("ITEMS", "200"), "--steps", os.environ.get("STEPS", "20"),
                                 "--json"], capture_output=True, text=True)
    (out / "bench.json").write_text(bench.stdout)
    sys.stderr.write(bench.stderr[-4000:])
    if bench.returncode != 0:
        problems.append(f"peftbench bench exited {bench.returncode}")
    else:
        from peftbench.commands.bench import render

        print(render(json.loads(bench.stdout)))
    for p in problems:
        print(f"gpu-check: FAILED: {p}", file=sys.stderr)
    print(f"gpu-check: {'FAILED' if problems else 'passed'}; files in {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
