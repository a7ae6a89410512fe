"""Issue 15 item 13: `peftbench report` must not make the suite's tree dirty, and a success that
goes to temporary_results/ (which compare hides) says why."""

from __future__ import annotations

import subprocess

import pytest

from peftbench.cli import main
from peftbench.record.provenance import git_state

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def _repo(path, branch="main"):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True)
    (path / "default_training_params.json").write_text("{}")
    subprocess.run([*GIT, "-C", str(path), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(path), "commit", "-qm", "suite"], check=True)
    return path


def test_a_clean_main_checkout_has_no_reason(tmp_path):
    state = git_state(_repo(tmp_path / "r"))
    assert state.is_main_and_clean and state.why_not_main_and_clean is None


def test_an_untracked_report_is_named_as_the_reason(tmp_path):
    repo = _repo(tmp_path / "r")
    (repo / "report.html").write_text("<html></html>")
    assert git_state(repo).why_not_main_and_clean == "tree is dirty: ?? report.html"


def test_many_changes_are_summarised_and_not_recorded(tmp_path):
    repo = _repo(tmp_path / "r")
    for i in range(5):
        (repo / f"f{i}.txt").write_text("x")
    state = git_state(repo)
    assert state.why_not_main_and_clean == "tree is dirty: ?? f0.txt, ?? f1.txt, ?? f2.txt and 2 more"
    assert "changes" not in state.to_dict()  # results record diff_sha256, not file names


def test_another_branch_and_no_git_are_reasons(tmp_path):
    assert git_state(_repo(tmp_path / "r", branch="dev")).why_not_main_and_clean == "branch is dev, not main"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_state(outside).why_not_main_and_clean == "the suite is not inside a git repository"


def test_the_repository_ignores_the_default_report_file(repo_root):
    if subprocess.run(["git", "-C", str(repo_root), "rev-parse", "--is-inside-work-tree"], capture_output=True).returncode:
        pytest.skip(f"{repo_root} is not a git checkout (an unpacked archive)")
    for path in ("report.html", "demo/report.html"):
        proc = subprocess.run(["git", "-C", str(repo_root), "check-ignore", "-q", path])
        assert proc.returncode == 0, f"{path} is not ignored by .gitignore"


def test_a_run_sent_to_temporary_results_says_why(make_suite, tiny_model_dir, tmp_path, capsys):
    repo = tmp_path / "repo"
    suite = make_suite(repo, tiny_model_dir, max_steps=2, eval_steps=2, valid_size=2, test_size=2)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*GIT, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qm", "suite"], check=True)
    (repo / "report.html").write_text("<html></html>")  # what `peftbench report` used to leave behind

    assert main(["run", "--no-progress", "--clean", str(suite / "experiments/lora/tiny-r4")]) == 0
    err = capsys.readouterr().err
    assert "temporary_results" in err and "(not results/: tree is dirty: ?? report.html)" in err


# --- a run whose config differs from the committed files (--set) ------------------------------


def _committed_suite(make_suite, tiny_model_dir, repo):
    suite = make_suite(repo, tiny_model_dir, max_steps=2, eval_steps=1, valid_size=2, test_size=2)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*GIT, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qm", "suite"], check=True)
    return suite


def _status_line(capsys, *argv):
    assert main(["status", *map(str, argv)]) == 0
    return next(line for line in capsys.readouterr().out.splitlines() if "lora/tiny-r4" in line)


def test_a_set_run_on_a_clean_main_leaves_results_alone_and_compare_marks_it(make_suite, tiny_model_dir, tmp_path, capsys):
    import json

    suite = _committed_suite(make_suite, tiny_model_dir, tmp_path / "repo")
    exp = suite / "experiments" / "lora" / "tiny-r4"
    assert main(["run", "--no-progress", "--clean", str(exp)]) == 0
    main_result = suite / "results" / "lora--tiny-r4.json"
    before = main_result.read_bytes()
    capsys.readouterr()

    sets = ["--set", "max_steps=1", "--set", "optimizer_kwargs.lr=0.5"]
    assert main(["run", "--no-progress", "--clean", str(exp), *sets]) == 0
    err = capsys.readouterr().err
    assert ("(not results/: config differs from the committed files: --set max_steps=1, optimizer_kwargs.lr=0.5)"
            in err), err
    assert main_result.read_bytes() == before  # the committed experiment's result is untouched
    [temporary] = sorted((suite / "temporary_results").glob("lora--tiny-r4--*.json"))
    assert json.loads(temporary.read_text())["run_info"]["overrides"] == {"max_steps": 1, "optimizer_kwargs": {"lr": 0.5}}

    # the plain experiment is up to date by its own result; the --set run by the temporary one
    assert "up to date" in _status_line(capsys, suite) and "lora--tiny-r4.json" in _status_line(capsys, suite)
    assert "up to date" in _status_line(capsys, suite, *sets)

    assert main(["compare", str(suite), "--include-temporary", "--format", "json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["experiment"] == "lora/tiny-r4"]
    assert sorted((r["overrides"] or "") for r in rows) == ["", "max_steps=1, optimizer_kwargs.lr=0.5"]
    assert main(["compare", str(suite), "--include-temporary"]) == 0
    table = capsys.readouterr().out
    assert "--set" in table.splitlines()[0] and "max_steps=1, optimizer_kwargs.lr=0.5" in table


def test_run_all_with_set_writes_no_main_result_and_plans_consistently(make_suite, tiny_model_dir, tmp_path, capsys):
    suite = _committed_suite(make_suite, tiny_model_dir, tmp_path / "repo")
    assert main(["run-all", str(suite), "--set", "max_steps=1"]) == 0
    capsys.readouterr()
    assert not any((suite / "results").glob("*.json"))  # nothing there is reproducible from the tree
    assert len(list((suite / "temporary_results").glob("*.json"))) == 2
    assert main(["run-all", str(suite), "--set", "max_steps=1", "--dry-run"]) == 0
    assert "2 to skip" in capsys.readouterr().out  # the same --set again: up to date
    assert main(["run-all", str(suite), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 to run, 0 to skip" in out and out.count("never run") == 2  # the plain experiments have no result


def test_overrides_that_change_nothing_or_only_the_seed_or_a_tracker_do_not_count(tiny_suite):
    from peftbench.experiment.config import load_experiment

    exp_dir = tiny_suite / "experiments" / "lora" / "tiny-r4"
    same = load_experiment(exp_dir, {"max_steps": 4, "seed": 3, "report_to": "none", "optimizer_kwargs": {"lr": 1e-3}})
    assert same.config_overrides == {}
    changed = load_experiment(exp_dir, {"max_steps": 2, "optimizer_kwargs": {"lr": 1e-3, "weight_decay": 0.5}})
    assert changed.config_overrides == {"max_steps": 2, "optimizer_kwargs": {"weight_decay": 0.5}}


def test_the_default_report_goes_to_the_suites_state_folder_and_leaves_the_tree_clean(tmp_path, make_result, write_run,
                                                                                    capsys, monkeypatch):
    repo = _repo(tmp_path / "r")  # a suite of one's own in git, without this repository's .gitignore
    write_run(repo / "results" / "lora--a.json", make_result("lora/a", 0.5))
    monkeypatch.chdir(repo)
    assert main(["report"]) == 0
    report = repo / ".peftbench" / "report.html"
    assert report.read_text().startswith("<!DOCTYPE html>")
    assert f"wrote {report.relative_to(repo)}" in capsys.readouterr().out
    assert "1 experiment, 0 failed or cancelled runs" in report.read_text()
    assert not (repo / "report.html").exists()
    state = git_state(repo)
    assert state.is_main_and_clean and state.why_not_main_and_clean is None
