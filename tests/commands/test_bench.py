"""`peftbench bench` on the tiny suite: both comparisons printed, as tables and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.cli import main


def test_bench_prints_the_evaluation_and_the_training_comparison(tiny_suite, capsys):
    assert main(["bench", str(tiny_suite), "--items", "5", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "evaluation:" in out and "dynamic vs static:" in out and "identical up to the grader's cut point" in out
    assert "training: lora/tiny-r4, 3 steps" in out and "HF Trainer + peft" in out and "peftbench vs Trainer:" in out


def test_bench_json_holds_both_measurements(tiny_suite, capsys):
    assert main(["bench", str(tiny_suite), "--items", "5", "--steps", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ev, tr = report["eval"], report["train"]
    assert ev["items"] == 5 and ev["static"]["engine_used"] == "static" and ev["dynamic"]["engine_used"] == "dynamic"
    # the tiny model never writes EOS nor a cut point: both engines write the same texts
    assert ev["identical_share"] == 1.0 and ev["accuracy_difference_items"] == 0
    assert len(tr["peftbench"]["losses"]) == len(tr["hf_trainer"]["losses"]) == 3
    assert tr["max_loss_rel_diff"] < 1e-5 and tr["throughput_ratio"] > 0
    assert report["machine"]["device"] == "cpu" and report["machine"]["cpu_kernels"]
    # two rounds by default, each measured; greedy generation repeats itself exactly
    assert ev["rounds"] == tr["rounds"] == 2
    assert len(ev["round_speedups"]) == len(ev["static"]["round_seconds"]) == 2
    assert len(tr["round_ratios"]) == len(tr["hf_trainer"]["round_seconds"]) == 2
    assert ev["static"]["rounds_identical"] and ev["dynamic"]["rounds_identical"]
    assert ev["static"]["seconds"] == pytest.approx(sum(ev["static"]["round_seconds"]) / 2)


def test_bench_pins_the_cpu_kernels_as_run_does_for_a_deterministic_suite(tiny_suite):
    """A fresh process (kernels are pinned before torch loads): with deterministic: true the
    bench runs on the AVX2 kernels that `peftbench run` would use, and says so."""
    import os
    import subprocess
    import sys

    from peftbench.record.hardware import cpu_info
    from peftbench.record.hardware import PORTABLE_ENV

    if "avx2" not in cpu_info()["cpu_flags"]:
        pytest.skip("no AVX2 on this CPU: nothing to pin to")
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}

    def machine(deterministic: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "peftbench.cli", "bench", str(tiny_suite), "--only", "eval",
                               "--items", "2", "--rounds", "1", "--json", "--set", f"deterministic={deterministic}"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["machine"]

    assert machine("true")["cpu_kernels"] == "AVX2 (pinned)"
    assert not machine("false")["cpu_kernels"].endswith("(pinned)")


def test_bench_alternates_which_side_goes_first():
    from peftbench.commands.bench import _orders

    assert _orders(("a", "b"), 3) == [("a", "b"), ("b", "a"), ("a", "b")]
    assert _orders(("a", "b"), 1) == [("a", "b")]


def test_bench_refuses_bad_input_with_exit_2(tiny_suite, tmp_path, capsys):
    assert main(["bench", str(tiny_suite), "--items", "0"]) == 2
    assert "--items must be >= 1" in capsys.readouterr().err
    assert main(["bench", str(tiny_suite), "--rounds", "0"]) == 2
    assert "--rounds must be >= 1" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench", str(empty)]) == 2
    assert "no experiments/lora" in capsys.readouterr().err


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_refuses_clearly_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: make gpu-check runs for real there")
    assert _gpu_check().main() == 2
    assert "gpu-check: no CUDA device is visible" in capsys.readouterr().err


def test_gpu_check_names_what_a_result_lacks():
    check = _gpu_check()
    cpu_result = {"train_info": {"status": "success", "cpu_peak_rss": 10**9, "eval_engine_used": "dynamic"},
                  "meta_info": {"system_info": {"accelerator": None}}, "run_info": {}}
    problems = check.result_problems(cpu_result)
    assert any("accelerator_memory_max" in p for p in problems) and any("system_info.driver" in p for p in problems)
    cuda_result = {"train_info": {"status": "success", "accelerator_memory_max": 2e9, "eval_engine_used": "dynamic",
                                  "accelerator_memory_reserved_avg": 1e9, "accelerator_memory_reserved_99th": 1.5e9},
                   "meta_info": {"system_info": {"accelerator": "NVIDIA H200", "driver": "cuda 12.8, nvidia driver 570",
                                                 "driver_version": "570"}}, "run_info": {}}
    assert check.result_problems(cuda_result) == []
