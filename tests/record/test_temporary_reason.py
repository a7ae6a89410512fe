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
