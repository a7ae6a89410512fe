"""run-all and status: the plan says why each experiment runs or not, only stale experiments run,
each in a fresh `python -m peftbench.cli run` process, and the summary and exit status tell the
outcome. Runs that need real child processes are kept to three (each costs a fresh import of
torch, transformers and peft)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")


import peftbench  # noqa: E402
from peftbench.experiment import planning  # noqa: E402
from peftbench.cli import build_parser, main  # noqa: E402
from peftbench.commands import run_all  # noqa: E402
from peftbench.experiment.executors import RunItem, child  # noqa: E402
from peftbench.record.results import load as read_result  # noqa: E402

LORA = "experiments/lora/tiny-r4"
FULL = "experiments/full-finetuning/tiny"


@pytest.fixture(scope="module")
def populated(make_suite, tmp_path_factory, tiny_model_dir) -> Path:
    """A tiny suite whose two experiments each have one up-to-date result (made in-process)."""
    suite = make_suite(tmp_path_factory.mktemp("populated") / "suite", tiny_model_dir)
    assert main(["run", str(suite / LORA), str(suite / FULL), "--no-progress", "--clean"]) == 0
    return suite


@pytest.fixture
def suite(populated, tmp_path) -> Path:
    """A private copy of the populated suite. Its data paths still point at the original's files,
    which no test changes, so the copied results stay up to date."""
    return Path(shutil.copytree(populated, tmp_path / "suite"))


def plan_lines(out: str) -> dict[str, str]:
    """experiment -> its line of a printed plan or summary table."""
    lines = {}
    for line in out.splitlines():
        first = line.split("  ")[0].strip()
        if "/" in first and not first.startswith(("temporary", "results")):
            lines[first] = line
    return lines


def result_files(suite: Path, folder: str = "temporary_results") -> list[Path]:
    return sorted((suite / folder).glob("*.json"))


def test_dry_run_lists_each_experiment_with_its_reason_and_runs_nothing(tiny_suite, capsys):
    assert main(["run-all", str(tiny_suite), "--dry-run"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    assert set(lines) == {"full-finetuning/tiny", "lora/tiny-r4"}
    assert all("will run" in line and line.endswith("never run") for line in lines.values())
    assert not any((tiny_suite / d).exists() for d in ("results", "temporary_results", "cancelled_results"))


def test_changed_training_params_rerun_exactly_that_experiment_and_invalid_configs_do_not_stop_the_rest(tiny_lora, suite, capsys):
    (suite / FULL / "training_params.json").write_text(json.dumps({"optimizer_kwargs": {"lr": 2e-4}}))
    bad = suite / "experiments" / "lora" / "typo"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps(tiny_lora))
    (bad / "training_params.json").write_text(json.dumps({"max_stepz": 3}))
    before = result_files(suite)

    assert main(["run-all", str(suite), "--dry-run"]) == 2
    lines = plan_lines(capsys.readouterr().out)
    assert "will run" in lines["full-finetuning/tiny"] and "config changed (optimizer_kwargs)" in lines["full-finetuning/tiny"]
    assert "skip" in lines["lora/tiny-r4"] and "up to date" in lines["lora/tiny-r4"]
    assert "INVALID" in lines["lora/typo"] and "'max_stepz'" in lines["lora/typo"] and "did you mean 'max_steps'" in lines["lora/typo"]
    assert result_files(suite) == before

    # The real thing: the changed experiment runs in a child process, the others do not.
    assert main(["run-all", str(suite), "--no-progress"]) == 2
    out = capsys.readouterr().out
    summary = plan_lines(out.split("OUTCOME")[-1])
    assert re.search(r"full-finetuning/tiny\s+0\s+success\s+\d+\.\ds\s+\S*full-finetuning--tiny--", summary["full-finetuning/tiny"])
    assert "skipped" in summary["lora/tiny-r4"] and "up to date" in summary["lora/tiny-r4"]
    assert "invalid" in summary["lora/typo"]
    assert "ran 1 (1 success, 0 failed, 0 cancelled), skipped 1, invalid 1" in out
    new = sorted(set(result_files(suite)) - set(before))
    assert [p.name.split("--2")[0] for p in new] == ["full-finetuning--tiny"]
    recorded = read_result(new[0])["run_info"]
    assert recorded["train_config"]["optimizer_kwargs"] == {"lr": 2e-4}
    # The child's exact command line, `python -m peftbench.cli run ...` as typed.
    assert recorded["command"][0] == sys.executable and recorded["command"][1:4] == ["-m", "peftbench.cli", "run"]
    assert recorded["command"][3:-2] == ["run", str(suite / FULL), "--seed", "0", "--if-stale", "--no-progress", "--clean"]
    assert recorded["command"][-2] == "--outcome-file"

    # Right after a complete run-all, the next one runs nothing and says why.
    shutil.rmtree(bad)
    assert main(["run-all", str(suite), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "nothing to run" in out and "ran 0 (" in out
    assert all("up to date" in line for line in plan_lines(out.split("OUTCOME")[0]).values())
    assert len(result_files(suite)) == len(before) + 1


def test_failed_run_does_not_stop_the_loop_and_ctrl_c_cancels_the_running_one_and_prints_the_summary(make_suite, 
        tmp_path, tiny_model_dir, capsys):
    # Long enough that the first checkpoint (step 10) comes well before the end.
    suite = make_suite(tmp_path / "suite", tiny_model_dir, max_steps=300, eval_steps=10)
    # Its config passes every check before the run; loading its weights raises once the run has started.
    broken_model = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken-model"))
    (broken_model / "model.safetensors").write_bytes(b"not a safetensors file" * 10)
    failing = suite / "experiments" / "full-finetuning" / "a-broken-model"  # sorted first
    failing.mkdir()
    (failing / "training_params.json").write_text(json.dumps({"model_id": str(broken_model)}))
    checkpoints = suite / ".peftbench" / "checkpoints"

    finished = threading.Event()

    def press_ctrl_c_once_training_is_under_way():
        while not any(checkpoints.glob("*.pt")):  # the broken model never trains: the first is full-finetuning/tiny's
            if finished.wait(0.05):
                return  # run-all ended without ever training: never signal the test process
        os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends run-all on Ctrl+C

    presser = threading.Thread(target=press_ctrl_c_once_training_is_under_way, daemon=True)
    presser.start()
    try:
        code = main(["run-all", str(suite), "--no-progress"])
    finally:
        finished.set()
        presser.join()
    out = capsys.readouterr().out
    assert code == 130
    summary = plan_lines(out.split("OUTCOME")[-1])
    assert "failed" in summary["full-finetuning/a-broken-model"]
    assert "cancelled" in summary["full-finetuning/tiny"]
    assert "not started" in summary["lora/tiny-r4"]
    statuses = {p.name.split("--2")[0]: read_result(p)["train_info"]["status"] for p in result_files(suite, "cancelled_results")}
    assert statuses == {"full-finetuning--a-broken-model": "failed", "full-finetuning--tiny": "cancelled"}
    assert not (suite / "temporary_results").exists()


def test_set_overrides_count_in_the_plan(suite, capsys):
    assert main(["run-all", str(suite), "--dry-run"]) == 0
    assert all("up to date" in line for line in plan_lines(capsys.readouterr().out).values())
    assert main(["run-all", str(suite), "--dry-run", "--set", "max_steps=2"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    assert all("will run" in line and "config changed (max_steps)" in line for line in lines.values()), lines


def test_seeds_give_one_plan_line_each_and_non_default_seeds_their_own_result_name(suite, capsys):
    items = planning.plan([str(suite / LORA)], [0, 1])
    assert [(i.seed, i.stem, i.action, i.reason) for i in items] == [
        (0, "lora--tiny-r4", "skip", "up to date"), (1, "lora--tiny-r4--seed1", "run", "never run")]
    assert main(["run-all", str(suite), "--dry-run", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"lora/tiny-r4\s+1\s+will run\s+never run", out)
    assert re.search(r"lora/tiny-r4\s+0\s+skip\s+up to date", out)


def test_force_plans_up_to_date_experiments_again(suite, capsys):
    assert main(["run-all", str(suite), "--dry-run", "--force"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    assert all("will run" in line and "forced (up to date)" in line for line in lines.values())


def test_each_planned_run_is_checked_again_just_before_it_starts(suite, capsys):
    # A plan made earlier, when the experiments were stale; meanwhile (say, by another run-all)
    # both got up-to-date results. No child process may be started for them.
    stale_plan = [dataclasses.replace(i, action="run", reason="never run") for i in planning.plan([str(suite)], None)]
    args = build_parser().parse_args(["run-all", str(suite)])
    outcomes, interrupted = run_all._run_plan(stale_plan, args)
    assert not interrupted
    assert [(o.status, o.detail, o.seconds) for o in outcomes] == [("skipped", "up to date", None)] * 2
    assert "up to date: not started" in capsys.readouterr().err


def test_each_run_is_a_fresh_cli_process_with_the_options_passed_through(suite):
    args = build_parser().parse_args(["run-all", str(suite), "--set", "max_steps=3", "--set", "optimizer_kwargs.lr=0.01",
                                      "--no-resume", "--keep-checkpoint", "--no-progress", "-v"])
    [plan_item] = [i for i in planning.plan([str(suite / LORA)], [1])]
    item = RunItem(plan_item.path, plan_item.seed, tuple(args.overrides))
    assert child.command(item, run_all.settings_of(args), "/tmp/o.json") == [
        sys.executable, "-m", "peftbench.cli", "run", str(suite / LORA), "--seed", "1", "--if-stale",
        "--set", "max_steps=3", "--set", "optimizer_kwargs.lr=0.01", "--no-resume", "--keep-checkpoint",
        "--no-progress", "-v", "--clean", "--outcome-file", "/tmp/o.json"]
    forced = build_parser().parse_args(["run-all", str(suite), "--force"])
    assert "--if-stale" not in child.command(item, run_all.settings_of(forced))  # --force must not be undone by the child
    # adapters are deleted after each run unless asked to keep them
    kept = build_parser().parse_args(["run-all", str(suite), "--keep-adapters"])
    assert "--clean" not in child.command(item, run_all.settings_of(kept))


def test_a_change_to_training_code_or_the_tasks_grader_marks_its_experiments_stale_and_another_tasks_does_not(suite, tmp_path, monkeypatch, capsys):
    # The code identity hashes TRAINING_SOURCES next to peftbench/__init__.py: point it at a copy
    # of the package and edit the copy, never the real sources.
    copy = Path(shutil.copytree(Path(peftbench.__file__).parent, tmp_path / "pkg" / "peftbench",
                                ignore=shutil.ignore_patterns("__pycache__")))
    monkeypatch.setattr(peftbench, "__file__", str(copy / "__init__.py"))
    assert main(["run-all", str(suite), "--dry-run"]) == 0
    assert all("up to date" in line for line in plan_lines(capsys.readouterr().out).values())

    with open(copy / "tasks" / "commonsense.py", "a") as f:  # another task's module: not this suite's
        f.write("\n# an edit of the commonsense task\n")
    assert main(["run-all", str(suite), "--dry-run"]) == 0
    assert all("up to date" in line for line in plan_lines(capsys.readouterr().out).values())

    with open(copy / "scoring" / "grader.py", "a") as f:  # the grader of this suite's task (metamathqa)
        f.write("\n# an edit of the GSM8K grader\n")
    assert main(["run-all", str(suite), "--dry-run"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    assert all("will run" in line and "code changed (sources_sha256)" in line for line in lines.values())

    with open(copy / "training" / "loop.py", "a") as f:
        f.write("\n# an edit of the training loop\n")
    assert main(["run-all", str(suite), "--dry-run"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    assert set(lines) == {"full-finetuning/tiny", "lora/tiny-r4"}
    assert all("will run" in line and "code changed (sources_sha256)" in line for line in lines.values())


def test_a_new_module_in_the_training_folder_marks_every_experiment_stale(suite, tmp_path, monkeypatch, capsys):
    # Nobody lists the new file anywhere: the code identity walks the training folder.
    copy = Path(shutil.copytree(Path(peftbench.__file__).parent, tmp_path / "pkg" / "peftbench",
                                ignore=shutil.ignore_patterns("__pycache__")))
    monkeypatch.setattr(peftbench, "__file__", str(copy / "__init__.py"))
    assert main(["status", str(suite)]) == 0
    assert "code changed" not in capsys.readouterr().out

    (copy / "training" / "packing.py").write_text("def pack(rows):\n    return rows\n")
    assert main(["status", str(suite)]) == 0
    out = capsys.readouterr().out
    assert out.count("code changed (sources_sha256)") == 2, out


def test_status_shows_the_plan_with_the_newest_result_and_its_test_accuracy(suite, monkeypatch, capsys):
    (suite / FULL / "training_params.json").write_text(json.dumps({"optimizer_kwargs": {"lr": 3e-4}}))
    monkeypatch.chdir(suite)
    before = _outside_state_dir(suite)
    assert main(["status"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    accuracy = read_result(result_files(suite)[-1])["train_info"]["metrics"][-1]["test accuracy"]
    assert re.search(rf"lora/tiny-r4\s+0\s+skip\s+{100 * accuracy:.1f}%\s+temporary_results/lora--tiny-r4--\S+\.json\s+up to date",
                     lines["lora/tiny-r4"])
    assert re.search(r"full-finetuning/tiny\s+0\s+will run\s+\S+%\s+temporary_results/full-finetuning--tiny--\S+\s+config changed",
                     lines["full-finetuning/tiny"])
    assert _outside_state_dir(suite) == before  # status writes nothing but its plan cache
    assert (suite / ".peftbench" / "plan-cache.json").is_file()


def _outside_state_dir(suite: Path) -> list[Path]:
    return sorted(p.relative_to(suite) for p in suite.rglob("*") if ".peftbench" not in p.relative_to(suite).parts)


def test_a_folder_without_experiments_is_bad_input(tmp_path, capsys):
    assert main(["run-all", str(tmp_path)]) == 2
    assert "no experiment folders found" in capsys.readouterr().err


RESULT = "/s/temporary_results/lora--tiny-r4--2026-11-30T00-00-00.json"


@pytest.mark.parametrize("reported, code, last, outcome, detail", [
    ({"status": "success", "result_path": RESULT}, 0, "", "success", RESULT),
    ({"status": "skipped", "detail": "up to date (/s/results/a.json)", "result_path": "/s/results/a.json"}, 0, "",
     "skipped", "up to date (/s/results/a.json)"),
    ({"status": "cancelled", "result_path": "/s/cancelled_results/a.json"}, 130, "", "cancelled", "/s/cancelled_results/a.json"),
    ({"status": "failed", "result_path": "/s/cancelled_results/a.json", "error": "RuntimeError: boom"}, 1, "", "failed",
     "/s/cancelled_results/a.json"),
    ({"status": "invalid", "detail": "peftbench run: error: device 'cuda' is not available on this machine"}, 2, "",
     "invalid", "peftbench run: error: device 'cuda' is not available on this machine"),
    (None, -signal.SIGKILL, "step 10/40 ...", "failed", "killed by SIGKILL; no result written"),
    # The printed text decorates the message of a child that died; it never decides the outcome.
    (None, 1, "lora/tiny-r4 (seed 0): success: /s/x.json\nMemoryError", "failed",
     "exit status 1, no result written: MemoryError"),
])
def test_a_child_is_judged_by_its_outcome_file_and_its_exit_status(tmp_path, reported, code, last, outcome, detail):
    item = RunItem(Path("/s/experiments/lora/tiny-r4"), 0)
    path = tmp_path / "outcome.json"
    if reported is not None:
        path.write_text(json.dumps({"experiment": "lora/tiny-r4", "seed": 0, **reported}))
    judged = child.judge(item, code, child.read_outcome(path), 1.0, child.last_line(last))
    assert (judged.status, judged.detail) == (outcome, detail)


def test_the_ray_executor_without_ray_installed_is_bad_input_and_runs_nothing(tiny_suite, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is missing
    assert main(["run-all", str(tiny_suite), "--executor", "ray"]) == 2
    assert "--executor ray needs Ray, an optional extra: pip install 'peftbench[ray]'" in capsys.readouterr().err
    assert not (tiny_suite / "temporary_results").exists() and not (tiny_suite / "cancelled_results").exists()


def test_ray_options_without_the_ray_executor_are_bad_input(tiny_suite, capsys):
    assert main(["run-all", str(tiny_suite), "--address", "auto"]) == 2
    assert "--address only apply to --executor ray" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["run-all", str(tiny_suite), "--executor", "ray", "--cpus-per-run", "0"])
    assert exc.value.code == 2 and "expected a number > 0, got '0'" in capsys.readouterr().err
