"""Results are never lost or silently replaced, and one rule decides what an unreadable result is
in every command (issue 15 items 1, 2, 9, 14):

- an experiment name that could share a result file with another is bad input (exit 2);
- a run never replaces the main result of another experiment;
- an unreadable or newer-schema main result is "unreadable result (<reason>)" in status and
  run-all and is left alone, unless --force, which moves it aside (never deletes it);
- compare and report skip an unreadable file with a warning (an error with --strict) and read a
  suite that has only temporary_results/ when asked to, saying why otherwise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from peftbench.cli import main  # noqa: E402
from peftbench.experiment import suite as S  # noqa: E402
from peftbench.record import results as R  # noqa: E402

LORA = "experiments/lora/tiny-r4"
MAIN_RESULT = "results/lora--tiny-r4.json"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
TRUNCATED = '{"schema_version": 1, "run_info": {"experiment_name": "lora/tiny-r4"}, "train_in'


def _git_main_clean(repo: Path) -> None:
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "suite"]):
        subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=repo, check=True, capture_output=True,
                       env=dict(os.environ, **GIT_ENV))


# --- item 1: names that could collide ---------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-r4--seed1", "tiny-r4--2026-01-02T03-04-05", "a--b", "tiny-"])
def test_a_name_that_could_share_a_result_file_is_bad_input_and_nothing_is_written(tiny_suite, tiny_lora, capsys, name):
    exp = tiny_suite / "experiments" / "lora" / name
    exp.mkdir()
    (exp / "adapter_config.json").write_text(json.dumps(tiny_lora))
    assert main(["run", str(exp), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"experiment name {name!r}" in err and "two experiments could share one result file" in err
    assert "Traceback" not in err
    assert main(["status", str(exp)]) == 2
    assert re.search(rf"lora/{re.escape(name)}\s+0\s+INVALID\s+.*two experiments could share", capsys.readouterr().out)
    assert not any((tiny_suite / d).exists() for d in (S.RESULTS, S.TEMPORARY_RESULTS, S.CANCELLED_RESULTS))


def test_the_main_result_of_another_experiment_is_never_replaced(make_result, write_run, tmp_path):
    suite = tmp_path / "s"
    foreign = write_run(suite / MAIN_RESULT, make_result("lora/tiny-r4--seed1", 0.5))
    before = foreign.read_bytes()
    messages = []
    path = S.checked_result_path(suite, "lora--tiny-r4", R.Status.SUCCESS, True, "2026-01-02T03-04-05", "lora/tiny-r4",
                                 messages.append)
    assert path == suite / S.TEMPORARY_RESULTS / "lora--tiny-r4--2026-01-02T03-04-05.json"
    assert foreign.read_bytes() == before
    assert messages == [f"{foreign} holds the result of experiment 'lora/tiny-r4--seed1', not 'lora/tiny-r4': "
                        f"left alone; this result goes to {path}"]
    # its own experiment's result is replaced, as before
    assert S.checked_result_path(suite, "lora--tiny-r4", R.Status.SUCCESS, True, "T", "lora/tiny-r4--seed1",
                                 messages.append) == foreign


def test_an_unreadable_main_result_is_moved_aside_not_replaced(tmp_path):
    suite = tmp_path / "s"
    (suite / "results").mkdir(parents=True)
    (suite / MAIN_RESULT).write_text(TRUNCATED)
    (suite / "results/lora--tiny-r4.predictions.jsonl.gz").write_bytes(b"old predictions")
    messages = []
    path = S.checked_result_path(suite, "lora--tiny-r4", R.Status.SUCCESS, True, "2026-01-02T03-04-05", "lora/tiny-r4",
                                 messages.append)
    assert path == suite / MAIN_RESULT and not path.exists()
    aside = suite / "results/lora--tiny-r4.json.unreadable-2026-01-02T03-04-05"
    assert aside.read_text() == TRUNCATED
    assert (suite / "results/lora--tiny-r4.predictions.jsonl.gz.unreadable-2026-01-02T03-04-05").read_bytes() == b"old predictions"
    assert messages[0].startswith(f"moved the unreadable result {suite / MAIN_RESULT} aside to {aside} (not valid JSON")


# --- item 2: unreadable and newer results in status and run-all --------------------------------


@pytest.mark.parametrize("content, reason", [
    (TRUNCATED, "not valid JSON (truncated?)"),
    ('{"schema_version": 3, "run_info": {"experiment_name": "lora/tiny-r4"}, "train_info": {"status": "success"}}',
     "unsupported schema_version 3"),
], ids=["truncated", "newer-schema"])
def test_status_and_run_all_leave_an_unreadable_result_alone_and_say_why(tiny_suite, capsys, content, reason):
    main_result = tiny_suite / MAIN_RESULT
    main_result.parent.mkdir()
    main_result.write_text(content)
    assert main(["status", str(tiny_suite / LORA)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("lora/tiny-r4"))
    assert re.search(r"^lora/tiny-r4\s+0\s+skip\s+\?\s+\S*results/lora--tiny-r4.json\s+unreadable result \(", line), line
    assert reason in line and "left alone (--force moves it aside and runs)" in line
    assert main(["run-all", str(tiny_suite / LORA), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "nothing to run" in out and f"unreadable result ({reason}" in out
    assert main_result.read_text() == content
    assert not (tiny_suite / S.TEMPORARY_RESULTS).exists()


def test_list_shows_the_same_unreadable_reason(tiny_suite, capsys):
    (tiny_suite / "results").mkdir()
    (tiny_suite / MAIN_RESULT).write_text(TRUNCATED)
    main(["list", str(tiny_suite), "--no-params"])
    assert re.search(r"lora/tiny-r4\s+unreadable result \(not valid JSON \(truncated\?\)", capsys.readouterr().out)


def test_run_all_force_moves_an_unreadable_main_result_aside_and_replaces_it(make_suite, tmp_path, tiny_model_dir, capsys):
    suite = make_suite(tmp_path / "repo", tiny_model_dir)
    _git_main_clean(suite)
    (suite / "results").mkdir()
    (suite / MAIN_RESULT).write_text(TRUNCATED)
    assert main(["run-all", str(suite / LORA), "--force", "--no-progress"]) == 0
    assert "forced (unreadable result (not valid JSON" in capsys.readouterr().out
    [aside] = (suite / "results").glob("lora--tiny-r4.json.unreadable-*")
    assert aside.read_text() == TRUNCATED  # moved, never deleted
    assert R.load(suite / MAIN_RESULT)[R.TRAIN_INFO][R.TI_STATUS] == "success"
    assert main(["status", str(suite / LORA)]) == 0
    assert "unreadable" not in capsys.readouterr().out


# --- item 14 and 9: compare and report ----------------------------------------------------------


@pytest.fixture
def temporary_only_suite(make_result, write_run, tmp_path) -> Path:
    suite = tmp_path / "new-suite"
    write_run(suite / S.TEMPORARY_RESULTS / "lora--a--2026-01-02T03-04-05.json", make_result("lora/a", 0.5))
    return suite


def test_compare_reads_a_suite_with_only_temporary_results_when_asked_and_says_why_otherwise(temporary_only_suite, capsys):
    assert main(["compare", str(temporary_only_suite)]) == 2
    err = capsys.readouterr().err
    assert "temporary_results/ holds results" in err and "--include-temporary" in err
    assert main(["compare", str(temporary_only_suite), "--include-temporary"]) == 0
    assert "lora/a" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["compare", "report"])
def test_one_unreadable_file_is_skipped_with_a_warning_and_refused_with_strict(
        make_result, write_run, tmp_path, capsys, command):
    write_run(tmp_path / "results" / "lora--a.json", make_result("lora/a", 0.5))
    write_run(tmp_path / "results" / "lora--b.json", make_result("lora/b", 5.0))  # not a fraction
    (tmp_path / "results" / "lora--c.json").write_text("[" * 100_000)  # nested too deeply
    extra = ["-o", str(tmp_path / "r.html")] if command == "report" else []
    assert main([command, str(tmp_path), *extra]) == 0
    captured = capsys.readouterr()
    assert f"warning: skipped {tmp_path / 'results' / 'lora--b.json'}: unreadable result (test accuracy 5.0 is not a " \
           "fraction in [0, 1])" in captured.err
    assert f"{tmp_path / 'results' / 'lora--c.json'}: unreadable result (" in captured.err
    assert "Traceback" not in captured.err
    if command == "compare":
        assert "lora/a" in captured.out and "lora/b" not in captured.out
    assert main([command, str(tmp_path), "--strict", *extra]) == 2
    assert "unreadable result (" in capsys.readouterr().err
