"""The runner end to end on a tiny suite: result fields, statuses, placement, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peftbench import fs
from peftbench.record import results as R
from peftbench.cli import main



def _only_result(folder: Path) -> dict:
    files = [p for p in folder.glob("*.json")]
    assert len(files) == 1, files
    with open(files[0]) as f:
        return json.load(f), files[0]


def test_lora_run_writes_a_result_with_every_field(tiny_suite, capsys):
    code = main(["run", "-v", "--no-progress", "--clean", str(tiny_suite / "experiments/lora/tiny-r4")])
    assert code == 0
    result, path = _only_result(tiny_suite / "temporary_results")  # not a git repo: never "main"
    assert path.name.startswith("lora--tiny-r4--")
    assert result["schema_version"] == R.SCHEMA_VERSION
    info, train, meta = result["run_info"], result["train_info"], result["meta_info"]
    assert info["experiment_name"] == "lora/tiny-r4"
    assert info["train_config"]["max_steps"] == 4 and info["train_config"]["optimizer_kwargs"] == {"lr": 1e-3}
    assert info["peft_config"]["peft_type"] == "LORA" and info["peft_config"]["r"] == 4
    assert info["error_msg"] == "" and info["git"]["root"] is None and info["peft_branch"] is None
    assert len(info["run_key"]) == 64 and set(info["run_key_inputs"]) == {
        "train_config", "peft_config", "datasets", "model", "code", "libraries"}
    assert info["hostname"] and info["command"]
    assert train["status"] == "success"
    assert train[R.CPU_PEAK_RSS] > 10_000_000 and train[R.ACCEL_MEM_MAX] is None
    for key in ("train_time", "eval_time", "test_time"):
        assert train[key] > 0
    assert info["total_time"] >= train["train_time"] + train["eval_time"]
    assert train["num_trainable_params"] == 2 * 2 * (32 * 4 + 4 * 32) - 2 * (4 * 32 - 4 * 16)  # q: 32->32, v: 32->16
    assert train["num_total_params"] > train["num_trainable_params"]
    assert train["file_size"] > 0
    metrics = train["metrics"]
    assert [m[R.M_STEP] for m in metrics] == [2, 4, 4]
    for m in metrics[:2]:
        for key in (R.M_VALID_ACC, R.M_VALID_ACC_FLEX, R.M_TRAIN_LOSS, R.M_TRAIN_SAMPLES, R.M_TRAIN_TIME,
                    R.M_EVAL_TIME, R.M_TOKENS_PER_SEC, R.M_ELAPSED):
            assert m[key] is not None, key
    final = metrics[-1]
    assert 0 <= final[R.M_TEST_ACC] <= 1 and 0 <= final[R.M_TEST_ACC_FLEX] <= 1
    # the task is recorded, and its one test set's figures equal the headline
    assert info["task"] == {"name": "metamathqa", "version": "1"}
    assert final[R.M_TEST_SETS] == {"gsm8k": {R.SET_N: 6, R.M_TEST_ACC: final[R.M_TEST_ACC],
                                              R.M_TEST_ACC_FLEX: final[R.M_TEST_ACC_FLEX]}}
    assert final[R.M_TRAIN_SAMPLES] == 8 and final[R.M_TRAIN_TOTAL_TOKENS] > 0
    assert isinstance(final[R.M_FORGETTING], float)
    assert meta["model_info"]["source"] == "local" and len(meta["model_info"]["local_sha256"]) == 64
    assert set(meta["dataset_info"]) == {"train", "eval", "forgetting"}
    assert meta["dataset_info"]["eval"]["test_rows"] == 6
    assert meta["package_info"]["torch-version"] and meta["package_info"]["peft-version"]
    assert meta["system_info"]["device"] == "cpu" and meta["grader_version"]
    # predictions: the last validation pass and the test set
    preds = R.read_predictions(R.predictions_path_for(path))
    assert info["predictions"]["sha256"] == fs.sha256_file(R.predictions_path_for(path))
    assert [r["split"] for r in preds] == ["valid"] * 4 + ["test"] * 6
    grading = {"extracted", "extracted_flexible", "correct_strict", "correct_flexible"}  # the metamathqa task's
    assert set(preds[0]) == set(R.PREDICTION_FIELDS) | grading
    assert set(preds[-1]) == set(R.PREDICTION_FIELDS) | grading | {"test_set"} and preds[-1]["test_set"] == "gsm8k"
    assert sum(r["correct_strict"] for r in preds if r["split"] == "test") / 6 == final[R.M_TEST_ACC]
    assert info["adapter_dir"] is None  # --clean removed it
    assert "success: result written to" in capsys.readouterr().err


def test_full_finetuning_trains_every_parameter_and_sizes_it(tiny_suite):
    assert main(["run", "--no-progress", str(tiny_suite / "experiments/full-finetuning/tiny")]) == 0
    result, _ = _only_result(tiny_suite / "temporary_results")
    train = result["train_info"]
    assert result["run_info"]["peft_config"] is None
    assert train["num_trainable_params"] == train["num_total_params"]
    assert train["file_size"] == 4 * train["num_total_params"]  # float32


def test_max_steps_zero_evaluates_the_untrained_model(tiny_suite):
    code = main(["run", "--no-progress", "--set", "max_steps=0", str(tiny_suite / "experiments/lora/tiny-r4")])
    assert code == 0
    result, _ = _only_result(tiny_suite / "temporary_results")
    assert result["train_info"]["metrics"][-1][R.M_STEP] == 0
    assert result["train_info"]["metrics"][-1][R.M_TEST_ACC] is not None
    assert result["train_info"]["metrics"][-1][R.M_FORGETTING] == pytest.approx(0.0, abs=1e-6)
    assert result["train_info"]["num_trainable_params"] == 0 and result["train_info"]["file_size"] == 0
    assert result["run_info"]["adapter_dir"] is None


def test_an_exception_is_recorded_as_failed_not_cancelled(tiny_suite, monkeypatch):
    from peftbench.training import loop as train

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(train, "train_step", boom)
    code = main(["run", "--no-progress", str(tiny_suite / "experiments/lora/tiny-r4")])
    assert code == 1
    result, path = _only_result(tiny_suite / "cancelled_results")
    assert result["train_info"]["status"] == "failed"
    assert "CUDA out of memory (simulated)" in result["run_info"]["error_msg"]
    assert "Traceback" in result["run_info"]["traceback"] and "boom" in result["run_info"]["traceback"]
    assert not (tiny_suite / "temporary_results").exists() or not list((tiny_suite / "temporary_results").glob("*.json"))


def _run_with_third_step(tiny_suite, monkeypatch, at_third_step) -> tuple[int, dict, int]:
    """Run lora/tiny-r4 with `at_third_step()` called before its third training step (which
    then runs unless that raised). Returns the exit code, the one result in cancelled_results and
    how many steps were started."""
    from peftbench.training import loop as train

    real_step, calls = train.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            at_third_step()
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", step)
    code = main(["run", "--no-progress", str(tiny_suite / "experiments/lora/tiny-r4")])
    result, _ = _only_result(tiny_suite / "cancelled_results")
    return code, result, len(calls)


def test_ctrl_c_is_recorded_as_cancelled_with_the_metrics_so_far(tiny_suite, monkeypatch):
    def interrupt():
        raise KeyboardInterrupt

    code, result, _ = _run_with_third_step(tiny_suite, monkeypatch, interrupt)
    assert code == 130
    assert result["train_info"]["status"] == "cancelled"
    assert [m[R.M_STEP] for m in result["train_info"]["metrics"]] == [2]  # the validation before the cancel
    assert result["run_info"]["predictions"] is not None  # what it had: the validation rows


def test_a_sigterm_whose_raise_is_swallowed_still_cancels_the_run_at_the_next_step(tiny_suite, monkeypatch):
    """The handler raises wherever the main thread is; code there that swallows everything (a
    bare except in a library, a finalizer) must not turn the cancel into more training."""
    def sigterm_inside_a_bare_except():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here and raises into this block
        except BaseException:  # noqa: BLE001 - the swallowing under test
            pass

    code, result, steps = _run_with_third_step(tiny_suite, monkeypatch, sigterm_inside_a_bare_except)
    assert code == 130
    assert result["train_info"]["status"] == "cancelled"
    assert "SIGTERM" in result["run_info"]["error_msg"]
    assert steps == 3, "no step after the signal"


def test_a_sigterm_inside_an_except_exception_is_not_taken_for_an_error(tiny_suite, monkeypatch):
    """logging's handlers and the tracker calls catch Exception; a cancel raised there must pass."""
    def sigterm_inside_except_exception():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except Exception:  # noqa: BLE001 - must not catch a cancel
            pytest.fail("the cancel was caught as an error")

    code, result, steps = _run_with_third_step(tiny_suite, monkeypatch, sigterm_inside_except_exception)
    assert code == 130
    assert result["train_info"]["status"] == "cancelled"
    assert steps == 3


def test_an_error_raised_while_handling_ctrl_c_is_still_a_cancel(tiny_suite, monkeypatch):
    """torch.save interrupted mid-write raises a RuntimeError from its clean-up; the run was
    cancelled by the user, and its result must say so (seen in CI: Ctrl+C during a checkpoint)."""
    def interrupted_then_cleanup_fails():
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 0")

    code, result, _ = _run_with_third_step(tiny_suite, monkeypatch, interrupted_then_cleanup_fails)
    assert code == 130
    assert result["train_info"]["status"] == "cancelled"


def _start_run(suite: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"), OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    return subprocess.Popen([sys.executable, "-m", "peftbench.cli", "run", "-v", "--no-progress",
                             str(suite / "experiments/lora/tiny-r4"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_training(proc: subprocess.Popen, suite: Path, timeout: float = 120) -> None:
    """Wait until the run has written its first checkpoint: it is then training for sure."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list((suite / ".peftbench" / "checkpoints").glob("*.pt")) if (suite / ".peftbench" / "checkpoints").exists() else []:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("run did not reach its first checkpoint")


def _communicate_or_dump(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """communicate(), but a run still going after `timeout` is made to print every thread's stack
    (faulthandler on SIGABRT) so that the failure says where it was stuck."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"the run did not end within {timeout}s of the signal; its stderr ends with:\n{err[-8000:]}")


@pytest.mark.parametrize("sig,status,code", [(signal.SIGINT, "cancelled", 130), (signal.SIGTERM, "cancelled", 130)])
def test_a_signal_mid_run_writes_a_cancelled_result(make_suite, tmp_path, tiny_model_dir, sig, status, code):
    suite = make_suite(tmp_path / "s", tiny_model_dir, max_steps=100000, eval_steps=20, valid_size=2)
    proc = _start_run(suite)
    _wait_for_training(proc, suite)
    proc.send_signal(sig)
    out, err = _communicate_or_dump(proc, timeout=120)
    assert proc.returncode == code, err
    result, _ = _only_result(suite / "cancelled_results")
    assert result["train_info"]["status"] == status
    assert result["train_info"]["metrics"], "the validation entries before the signal are kept"


def test_results_on_main_with_a_clean_tree_go_to_results(make_suite, tmp_path, tiny_model_dir):
    repo = tmp_path / "repo"
    suite = make_suite(repo, tiny_model_dir)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "suite"], check=True)
    assert main(["run", "--no-progress", str(suite / "experiments/lora/tiny-r4")]) == 0
    result, path = _only_result(suite / "results")
    assert path.name == "lora--tiny-r4.json"
    assert result["run_info"]["git"]["branch"] == "main" and result["run_info"]["git"]["dirty"] is False
    # a new result must not make the next run dirty
    assert main(["run", "--no-progress", "--seed", "1", str(suite / "experiments/lora/tiny-r4")]) == 0
    assert (suite / "results" / "lora--tiny-r4--seed1.json").exists()
    # an edit elsewhere does
    (suite / "experiments/lora/tiny-r4/training_params.json").write_text('{"batch_size": 1}')
    assert main(["run", "--no-progress", str(suite / "experiments/lora/tiny-r4")]) == 0
    dirty, _ = _only_result(suite / "temporary_results")
    assert dirty["run_info"]["git"]["dirty"] is True and len(dirty["run_info"]["git"]["diff_sha256"]) == 64


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "r.json"
    fs.atomic_write_json(target, {"a": 1})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        fs.atomic_write_json(target, {"a": Unserialisable()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_run_py_at_the_repo_root_is_the_seed_entry_point(repo_root, tiny_suite):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    proc = subprocess.run([sys.executable, str(repo_root / "run.py"), "-v", "--no-progress", "--clean",
                           str(tiny_suite / "experiments/lora/tiny-r4")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stderr
    assert list((tiny_suite / "temporary_results").glob("lora--tiny-r4--*.json"))


def test_run_on_the_real_gsm8k_files(make_suite, shared_data, tmp_path, tiny_model_dir):
    suite = make_suite(tmp_path / "s", tiny_model_dir, eval_dataset=str(shared_data("gsm8k")), valid_size=3,
                       test_size=4)
    assert main(["run", "--no-progress", "--clean", str(suite / "experiments/lora/tiny-r4")]) == 0
    result, path = _only_result(suite / "temporary_results")
    eval_info = result["meta_info"]["dataset_info"]["eval"]
    assert eval_info["source"] == "local" and eval_info["test_rows"] == 4
    preds = R.read_predictions(R.predictions_path_for(path))
    test = [r for r in preds if r["split"] == "test"]
    assert test[0]["question"].startswith("Janet")  # the first GSM8K test question
    assert test[0]["reference"].endswith("#### 18")


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        fs.atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_rescore_of_a_fresh_run_reproduces_its_accuracies(tiny_suite, capsys):
    assert main(["run", "--no-progress", "--clean", str(tiny_suite / "experiments/lora/tiny-r4")]) == 0
    _, path = _only_result(tiny_suite / "temporary_results")
    before = path.read_bytes()
    capsys.readouterr()
    assert main(["rescore", str(path)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    assert main(["rescore", "--write", str(path)]) == 0
    assert path.read_bytes() == before  # the same grader finds nothing to change
