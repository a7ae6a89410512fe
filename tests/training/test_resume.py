"""Checkpoint and resume: a run killed hard continues from its last checkpoint and, on CPU, ends
with the same numbers and adapter bytes as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


from peftbench.record import lock as L  # noqa: E402
from peftbench.cli import main  # noqa: E402
from peftbench.training.reproduction import NOT_COMPARED  # noqa: E402
from peftbench.record.results import load as read_result  # noqa: E402

LORA = "experiments/lora/tiny-r4"
STEM = "lora--tiny-r4"


def deterministic_numbers(result: dict) -> dict:
    """What must not change between an interrupted and an uninterrupted run: every metric except
    timing and memory, and the bytes of the adapter."""
    metrics = [{k: v for k, v in entry.items() if k not in NOT_COMPARED} for entry in result["train_info"]["metrics"]]
    return {"metrics": metrics, "adapter_sha256": result["run_info"]["adapter_sha256"],
            "predictions_sha256": result["run_info"]["predictions"]["sha256"]}


def only_result(suite: Path) -> dict:
    [path] = sorted((suite / "temporary_results").glob("*.json"))
    return read_result(path)


def checkpoints(suite: Path) -> list[Path]:
    """The checkpoint files of a suite; each is named by its run's key."""
    return sorted((suite / ".peftbench" / "checkpoints").glob("*.pt"))


def child_env() -> dict[str, str]:
    # Same thread count as this process: CPU reductions may split work by thread.
    return dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def test_run_killed_after_a_checkpoint_resumes_there_and_matches_an_uninterrupted_run(make_suite, tmp_path, tiny_model_dir, capsys):
    # 40 steps, checkpoints at steps 10, 20, 30 and 40 (the last step, before the final validation).
    suite = make_suite(tmp_path / "killed", tiny_model_dir, max_steps=40, eval_steps=10)
    command = ["run", str(suite / LORA), "--no-progress", "--clean"]
    lock_file = suite / ".peftbench" / "locks" / f"{STEM}.lock"
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "peftbench.cli", *command], stdout=log, stderr=log, env=child_env())
        deadline = time.monotonic() + 300
        while not checkpoints(suite) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    [checkpoint] = checkpoints(suite)
    assert not (suite / "temporary_results").exists() and not (suite / "cancelled_results").exists()
    # A hard kill leaves the lock behind: same host, dead pid, so the next run takes it over.
    holder = L.read_holder(lock_file)
    assert holder["pid"] == proc.pid and holder["host"] == socket.gethostname() and L.is_stale(holder)

    assert main(command) == 0  # the same command again
    err = capsys.readouterr().err
    assert f"taking over stale lock {lock_file} (pid {proc.pid} is gone)" in err
    resumed = only_result(suite)
    step = resumed["run_info"]["resumed_from_step"]
    assert step in (10, 20, 30, 40) and f"resuming from the checkpoint at step {step}" in err
    assert checkpoint.name == f"{resumed['run_info']['run_key']}.pt"
    assert not checkpoint.exists() and not lock_file.exists()  # removed after success

    fresh_suite = make_suite(tmp_path / "uninterrupted", tiny_model_dir, max_steps=40, eval_steps=10)
    assert main(["run", str(fresh_suite / LORA), "--no-progress", "--clean"]) == 0
    fresh = only_result(fresh_suite)
    assert fresh["run_info"]["resumed_from_step"] is None
    assert deterministic_numbers(resumed) == deterministic_numbers(fresh)
    assert [m["step"] for m in resumed["train_info"]["metrics"]] == [10, 20, 30, 40, 40]


def test_kept_checkpoint_is_resumed_by_default_and_ignored_with_no_resume(tiny_suite, capsys):
    # Tiny suite: 4 steps, checkpoints at step 2 and at the last step, 4, before the final validation.
    run = ["run", str(tiny_suite / LORA), "--no-progress", "--clean"]
    assert main([*run, "--keep-checkpoint"]) == 0
    first = read_result(max((tiny_suite / "temporary_results").glob("*.json"), key=os.path.getmtime))
    checkpoint = tiny_suite / ".peftbench" / "checkpoints" / f"{first['run_info']['run_key']}.pt"
    assert checkpoints(tiny_suite) == [checkpoint]

    assert main([*run, "--no-resume", "--keep-checkpoint"]) == 0
    from_scratch = read_result(max((tiny_suite / "temporary_results").glob("*.json"), key=os.path.getmtime))
    assert from_scratch["run_info"]["resumed_from_step"] is None
    assert "resuming" not in capsys.readouterr().err

    assert main(run) == 0
    resumed = read_result(max((tiny_suite / "temporary_results").glob("*.json"), key=os.path.getmtime))
    assert resumed["run_info"]["resumed_from_step"] == 4  # the final validation and the test are redone
    assert not checkpoint.exists()  # removed after success without --keep-checkpoint
    assert deterministic_numbers(first) == deterministic_numbers(from_scratch) == deterministic_numbers(resumed)


def test_checkpoint_of_another_config_is_neither_resumed_nor_deleted(tiny_suite, capsys):
    assert main(["run", str(tiny_suite / LORA), "--no-progress", "--clean", "--keep-checkpoint"]) == 0
    [checkpoint] = checkpoints(tiny_suite)
    assert main(["run", str(tiny_suite / LORA), "--no-progress", "--clean", "--set", "optimizer_kwargs.lr=0.002"]) == 0
    assert "resuming" not in capsys.readouterr().err
    newest = read_result(max((tiny_suite / "temporary_results").glob("*.json"), key=os.path.getmtime))
    assert newest["run_info"]["resumed_from_step"] is None
    # Checkpoints are keyed by run key: the other run's success removed its own, not this one.
    assert checkpoints(tiny_suite) == [checkpoint]


def test_an_interrupt_during_the_test_loses_no_training(tiny_suite, monkeypatch, capsys):
    from peftbench.training import runner

    real_evaluate = runner._evaluate_split

    def cancel_the_test(run, split, rows):
        if split == "test":
            raise KeyboardInterrupt
        return real_evaluate(run, split, rows)

    run = ["run", str(tiny_suite / LORA), "--no-progress", "--clean"]
    monkeypatch.setattr(runner, "_evaluate_split", cancel_the_test)
    assert main(run) == 130
    monkeypatch.undo()
    [checkpoint] = checkpoints(tiny_suite)
    assert torch.load(checkpoint, weights_only=True)["state"]["step"] == 4  # the last step of 4

    assert main(run) == 0
    resumed = read_result(max((tiny_suite / "temporary_results").glob("*.json"), key=os.path.getmtime))
    assert resumed["run_info"]["resumed_from_step"] == 4 and "resuming from the checkpoint at step 4" in capsys.readouterr().err
    assert [m["step"] for m in resumed["train_info"]["metrics"]] == [2, 4, 4]
    assert main([*run, "--no-resume"]) == 0
    fresh = read_result(max((tiny_suite / "temporary_results").glob("*.json"), key=os.path.getmtime))
    assert fresh["run_info"]["resumed_from_step"] is None
    assert deterministic_numbers(resumed) == deterministic_numbers(fresh)
    assert checkpoints(tiny_suite) == []
