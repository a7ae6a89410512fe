"""Provenance: every result says which code, libraries, machine and command made it, with all the
inputs of its run key; the git state decides where a result goes, and writing results (or run
state) never makes the next run's tree dirty."""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
peft = pytest.importorskip("peft")


from peftbench.record import runkey  # noqa: E402
from peftbench.record import provenance
from peftbench.experiment import suite as S  # noqa: E402
from peftbench.cli import main  # noqa: E402
from peftbench.fs import sha256_file  # noqa: E402
from peftbench.record.results import Status  # noqa: E402
from peftbench.record.results import load as read_result  # noqa: E402

LORA = "experiments/lora/tiny-r4"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=repo, check=True, capture_output=True,
                          text=True, env=dict(os.environ, **GIT_ENV)).stdout


def init_repo(repo: Path) -> str:
    """Commit everything in `repo` on branch main; return the commit."""
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "suite")
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def repo_suite(make_suite, tmp_path, tiny_model_dir) -> tuple[Path, Path, str]:
    """A suite in a subfolder of a fresh git repository on main with a clean tree, no .gitignore."""
    repo = tmp_path / "repo"
    suite = make_suite(repo / "bench", tiny_model_dir)
    return repo, suite, init_repo(repo)


def test_run_on_clean_main_goes_to_results_records_its_provenance_and_leaves_the_tree_clean(repo_suite, capsys):
    repo, suite, commit = repo_suite
    assert main(["run", str(suite / LORA), "--no-progress", "--clean", "--keep-checkpoint"]) == 0
    path = suite / "results" / "lora--tiny-r4.json"
    result = read_result(path)
    info, meta = result["run_info"], result["meta_info"]

    # Results and run state are really there for git to see, but do not count as changes.
    untracked = git(repo, "status", "--porcelain", "--untracked-files=all")
    assert "bench/results/lora--tiny-r4.json" in untracked and "bench/.peftbench/checkpoints/" in untracked
    state = provenance.git_state(suite)
    assert (state.branch, state.commit, state.dirty, state.is_main_and_clean) == ("main", commit, False, True)
    assert main(["run-all", str(suite), "--dry-run"]) == 0
    assert any(line.startswith("lora/tiny-r4") and line.endswith("up to date")
               for line in capsys.readouterr().out.splitlines())

    assert info["git"] == {"root": str(repo.resolve()), "branch": "main", "commit": commit, "dirty": False,
                           "diff_sha256": None}
    assert info["peft_branch"] == "main" and info["suite"] == "bench"
    assert info["command"] == [sys.executable, *sys.orig_argv[1:]]  # as typed; a child records `-m peftbench.cli run DIR`
    assert info["hostname"] == socket.gethostname()
    assert {"accelerator", "driver"} <= set(meta["system_info"]) and meta["system_info"]["device"] == "cpu"
    assert meta["package_info"]["peft-version"] == peft.__version__ and "peft-commit-hash" in meta["package_info"]
    assert info["predictions"]["sha256"] == sha256_file(path.with_name(info["predictions"]["file"]))

    # Everything the run key is made of is recorded, and the key is the hash of it.
    inputs = info["run_key_inputs"]
    assert set(inputs) == {"train_config", "peft_config", "datasets", "model", "code", "libraries"}
    assert info["run_key"] == runkey.run_key(inputs)
    assert inputs["code"] == runkey.code_identity() and meta["code_sha256"] == inputs["code"]["sources_sha256"]
    assert inputs["libraries"] == runkey.library_versions()
    # local paths are identified by content hashes (datasets/model), not by where they lie
    local = {k: "<local>" for k in ("model_id", "train_dataset", "eval_dataset", "forgetting_dataset")}
    expected = {**info["train_config"], "device": "cpu", **local}
    for field in runkey.NUMBER_NEUTRAL_FIELDS:  # how often to checkpoint, which trackers watch
        del expected[field]
    assert inputs["train_config"] == expected
    assert inputs["peft_config"]["r"] == 4 and "peft_version" not in inputs["peft_config"]
    assert all(len(inputs["datasets"][role]["sha256"]) == 64 for role in ("train", "eval", "forgetting"))
    assert len(inputs["model"]["local_sha256"]) == 64


def test_changes_outside_the_run_folders_make_the_tree_dirty_with_a_hash_of_the_diff(repo_suite):
    repo, suite, _ = repo_suite
    for folder in (*provenance.RUN_OUTPUT_DIRS, ".peftbench/locks"):
        (suite / folder).mkdir(parents=True, exist_ok=True)
        (suite / folder / "anything.json").write_text("{}")
    assert not provenance.git_state(suite).dirty

    params = suite / "default_training_params.json"
    params.write_text(params.read_text().replace('"max_steps": 4', '"max_steps": 3'))
    first = provenance.git_state(suite)
    assert first.dirty and len(first.diff_sha256) == 64 and not first.is_main_and_clean
    assert S.result_path(suite, "x", Status.SUCCESS, first.is_main_and_clean, "T").parent.name == "temporary_results"
    params.write_text(params.read_text().replace('"max_steps": 3', '"max_steps": 2'))
    assert provenance.git_state(suite).diff_sha256 != first.diff_sha256  # the hash follows the diff

    git(repo, "checkout", "-q", "--", ".")
    (repo / "notes.txt").write_text("new untracked file")
    assert provenance.git_state(suite).dirty
    (repo / "notes.txt").unlink()
    git(repo, "checkout", "-q", "-b", "feature")
    state = provenance.git_state(suite)
    assert (state.branch, state.dirty, state.is_main_and_clean) == ("feature", False, False)


def test_peft_commit_is_recorded_when_peft_is_installed_from_a_git_checkout(tmp_path, monkeypatch):
    checkout = tmp_path / "peft"
    checkout.mkdir()
    (checkout / "setup.py").write_text("# a checkout\n")
    commit = init_repo(checkout)
    real = importlib.metadata.distribution

    class EditableFromCheckout:
        version = peft.__version__

        def read_text(self, name):
            if name == "direct_url.json":  # what pip writes for `pip install -e <checkout>`
                return json.dumps({"url": checkout.as_uri(), "dir_info": {"editable": True}})
            return None

    monkeypatch.setattr(importlib.metadata, "distribution",
                        lambda name: EditableFromCheckout() if name == "peft" else real(name))
    info = provenance.package_versions()
    assert info["peft-commit-hash"] == commit
    assert info["torch-commit-hash"] is None  # a wheel, not a checkout
    (checkout / "setup.py").write_text("# edited\n")
    assert provenance.package_versions()["peft-commit-hash"] == commit + "-dirty"


def test_results_outside_a_git_repository_go_to_temporary_results_with_no_git_state(tmp_path):
    state = provenance.git_state(tmp_path)
    assert state.to_dict() == {"root": None, "branch": None, "commit": None, "dirty": False, "diff_sha256": None}
    assert S.result_path(tmp_path, "x", Status.SUCCESS, state.is_main_and_clean, "T").parent.name == "temporary_results"


def test_results_of_one_suite_do_not_make_a_nested_or_enclosing_suite_dirty(make_suite, tmp_path, tiny_model_dir):
    # The repository root is a suite and demo/ is another one inside it, as in this project.
    repo = make_suite(tmp_path / "repo", tiny_model_dir)
    demo = make_suite(repo / "demo", tiny_model_dir)
    init_repo(repo)
    for suite in (repo, demo):
        for folder in provenance.RUN_OUTPUT_DIRS:
            (suite / folder).mkdir(exist_ok=True)
            (suite / folder / "new-result.json").write_text("{}")
    assert not provenance.git_state(repo).dirty
    assert not provenance.git_state(demo).dirty
    (repo / "src.py").write_text("a real change")
    assert provenance.git_state(repo).dirty and provenance.git_state(demo).dirty
