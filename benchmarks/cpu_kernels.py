"""What `deterministic: true` costs on a CPU: the demo's LoRA experiment, shortened, run with and
without the pinned AVX2 kernels (training/cpu_kernels.py), alternating so that both settings
see the same machine load, each in a fresh `peftbench run` process. Prints training and test
generation seconds per setting and the pinned/unpinned ratios.

    .venv/bin/python benchmarks/cpu_kernels.py [--repeats 2] [--steps 10] [--test-size 20]

A ratio above 1 means the pinned kernels are slower. Results land in a scratch copy of the demo
suite, never in demo/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = Path("experiments/lora/smollm2-rank16")


def one_run(suite: Path, deterministic: bool, steps: int, test_size: int) -> dict[str, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [sys.executable, "-m", "peftbench.cli", "run", str(suite / EXPERIMENT), "--no-progress", "--clean",
           "--no-resume", "--set", f"max_steps={steps}", "--set", f"eval_steps={steps}", "--set", "valid_size=1",
           "--set", f"test_size={test_size}", "--set", f"deterministic={'true' if deterministic else 'false'}"]
    before = set(suite.glob("*results/*.json"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    [path] = set(suite.glob("*results/*.json")) - before
    result = json.loads(path.read_text())
    info = result["train_info"]
    return {"train": info["train_time"], "test": info.get("test_time") or float("nan"),
            "pinned": result["meta_info"]["system_info"].get("cpu_kernels_pinned")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per run (default 10)")
    parser.add_argument("--test-size", type=int, default=20, help="test items generated per run (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peftbench-bench-kernels-") as tmp:
        suite = Path(shutil.copytree(REPO / "demo", Path(tmp) / "demo",
                                     ignore=shutil.ignore_patterns("*results", ".peftbench")))
        times: dict[bool, list[dict]] = {False: [], True: []}
        for i in range(args.repeats):
            for deterministic in (False, True) if i % 2 == 0 else (True, False):
                times[deterministic].append(one_run(suite, deterministic, args.steps, args.test_size))
                t = times[deterministic][-1]
                print(f"run {i + 1} {'pinned  ' if deterministic else 'unpinned'}: train {t['train']:.1f} s, "
                      f"test {t['test']:.1f} s (cpu_kernels_pinned={t['pinned']})", flush=True)
    print(f"\n{'':10} {'unpinned':>10} {'pinned':>10} {'ratio':>7}")
    for phase in ("train", "test"):
        free = statistics.median(t[phase] for t in times[False])
        pinned = statistics.median(t[phase] for t in times[True])
        print(f"{phase + ' s':10} {free:10.1f} {pinned:10.1f} {pinned / free:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
