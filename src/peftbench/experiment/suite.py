"""Suites and experiments on disk: discovery, names, where results go.

A suite is a folder with `default_training_params.json`, `experiments/<method>/<name>/` and the
results folders. The repository root is the MetaMathQA suite; `demo/` is the CPU demo suite."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from peftbench.experiment.config import ADAPTER_CONFIG_FILE, DEFAULTS_FILE, EXPERIMENTS_DIR, TRAINING_PARAMS_FILES
from peftbench.errors import UserError
from peftbench.record.results import Status

RESULTS = "results"  # success on branch main with a clean tree
TEMPORARY_RESULTS = "temporary_results"  # success anywhere else
CANCELLED_RESULTS = "cancelled_results"  # cancelled and failed runs
STATE_DIR = ".peftbench"  # checkpoints and locks of the suite; ignored by git and by the dirty check


def is_experiment_dir(path: Path) -> bool:
    """`<suite>/experiments/<method>/<name>/` holding an adapter config or training params."""
    return (path.is_dir() and path.parent.parent.name == EXPERIMENTS_DIR
            and any((path / f).is_file() for f in (ADAPTER_CONFIG_FILE, *TRAINING_PARAMS_FILES)))


def discover_experiments(root: str | Path) -> list[Path]:
    """All experiment folders at or below `root` (a suite, its experiments folder, a method
    folder, one experiment, or any folder holding suites), found recursively, sorted."""
    root = Path(root).resolve()
    if not root.exists():
        raise UserError(f"{str(root)!r} does not exist")
    if is_experiment_dir(root):
        return [root]
    # A suite's experiments are those under its own experiments/ folder: the repository root is a
    # suite that holds the demo suite, and `run-all` on it must not run the demo too.
    search = root / EXPERIMENTS_DIR if (root / DEFAULTS_FILE).is_file() and (root / EXPERIMENTS_DIR).is_dir() else root
    found = set()
    for marker in (ADAPTER_CONFIG_FILE, *TRAINING_PARAMS_FILES):
        for path in search.rglob(marker):
            if is_experiment_dir(path.parent) and STATE_DIR not in path.parts:
                found.add(path.parent)
    return sorted(found)


def suite_of(experiment_dir: Path) -> Path:
    suite = experiment_dir.parent.parent.parent
    if not (suite / DEFAULTS_FILE).is_file():
        raise UserError(f"{suite} has no {DEFAULTS_FILE}")
    return suite


def result_stem(method: str, name: str, seed: int, default_seed: int) -> str:
    """`<method>--<name>`, plus `--seed<N>` when the seed is not the suite's default."""
    stem = f"{method}--{name}"
    return stem if seed == default_seed else f"{stem}--seed{seed}"


def timestamp(now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H-%M-%S")


def result_path(suite: Path, stem: str, status: Status, main_and_clean: bool, stamp: str) -> Path:
    """Where a finished run's result goes (see README, "Where results go")."""
    if status is Status.SUCCESS and main_and_clean:
        return suite / RESULTS / f"{stem}.json"
    folder = TEMPORARY_RESULTS if status is Status.SUCCESS else CANCELLED_RESULTS
    path = suite / folder / f"{stem}--{stamp}.json"
    n = 1
    while path.exists():  # two runs finishing in the same second must not overwrite each other
        n += 1
        path = suite / folder / f"{stem}--{stamp}-{n}.json"
    return path


def state_dir(suite: Path) -> Path:
    return suite / STATE_DIR
