"""Suites and experiments on disk: discovery, names, where results go.

A suite is a folder with `default_training_params.json`, `experiments/<method>/<name>/` and the
results folders. The repository root is the MetaMathQA suite; `demo/` is the CPU demo suite."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from peftbench.errors import ResultError, UserError
from peftbench.record import results as R
from peftbench.record.layout import (ADAPTER_CONFIG_FILE, CANCELLED_RESULTS, DEFAULTS_FILE, EXPERIMENTS_DIR, RESULTS,
                                     STATE_DIR, TEMPORARY_RESULTS, TRAINING_PARAMS_FILES)
from peftbench.record.results import Status, predictions_path_for


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


# Result file names: `<method>--<name>[--seed<N>][--<UTC time>[-<n>]].json`. "--" separates the
# parts, so a method or experiment name holding "--" (or starting or ending with "-") could make
# two experiments share one file: `lora/tiny--seed1` and `lora/tiny` with seed 1 would both be
# `lora--tiny--seed1.json`. `name_problems` refuses such names when an experiment is loaded;
# `parse_result_name` below is the one reader of these names.
SEP = "--"
_STAMP_RE = r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d(?:-\d+)?"
_PART = rf"(?:(?!{SEP}).)+"  # a method or name: anything without "--" (nor a newline: `.`)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # what `name_problems` refuses besides "--"
_NAME_RE = re.compile(rf"^(?P<stem>(?P<method>{_PART}){SEP}(?P<name>{_PART})(?:{SEP}seed(?P<seed>\d+))?)"
                      rf"(?:{SEP}(?P<stamp>{_STAMP_RE}))?\.json$")


def name_problems(method: str, name: str) -> list[str]:
    """Why `<method>/<name>` cannot name an experiment (empty when it can)."""
    problems = []
    for what, value in (("method folder", method), ("experiment name", name)):
        if _CONTROL.search(value):
            # `parse_result_name` cannot read such a name back (and a terminal cannot show it):
            # its results would never be found, and `status` would say "never run" for ever
            problems.append(f"{what} {value!r} holds a control character (a newline, a tab, ...): result files "
                            f"are named after it and could not be read back; rename the folder")
        elif SEP in value or value.startswith("-") or value.endswith("-"):
            problems.append(
                f"{what} {value!r} holds '{SEP}' or starts or ends with '-': result files are named "
                f"<method>{SEP}<name>[{SEP}seed<N>][{SEP}<time>].json, so two experiments could share "
                f"one result file; rename the folder (e.g. {value.replace(SEP, '-').strip('-')!r})")
    return problems


def result_stem(method: str, name: str, seed: int, default_seed: int) -> str:
    """`<method>--<name>`, plus `--seed<N>` when the seed is not the suite's default."""
    stem = f"{method}{SEP}{name}"
    return stem if seed == default_seed else f"{stem}{SEP}seed{seed}"


@dataclass(frozen=True)
class ResultName:
    """A result file name taken apart: `stem` is `<method>--<name>[--seed<N>]`."""
    stem: str
    method: str
    name: str
    seed: int | None  # None: the suite's default seed (not in the name)
    stamp: str | None  # None: a main result in results/

    @property
    def experiment_name(self) -> str:
        return f"{self.method}/{self.name}"


def parse_result_name(filename: str) -> ResultName | None:
    """The parts of a result file name, or None when it is not one (predictions, moved-aside
    files, anything else)."""
    match = _NAME_RE.match(filename)
    if match is None:
        return None
    seed = match["seed"]
    return ResultName(match["stem"], match["method"], match["name"], None if seed is None else int(seed), match["stamp"])


def timestamp(now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H-%M-%S")


def why_not_results(git, config_overrides: dict | None) -> str | None:
    """Why a successful run goes to temporary_results/ instead of results/, None when it does
    not. A result in results/ must be reproducible from the tree: made on branch main with a clean
    tree (`git`: record.provenance.GitState), from the config the committed files give (no
    `--set` override that changes it: `Experiment.config_overrides`, or run_info `overrides`)."""
    reasons = [git.why_not_main_and_clean] if git.why_not_main_and_clean else []
    if config_overrides:
        reasons.append(f"config differs from the committed files: --set {overrides_text(config_overrides)}")
    return "; ".join(reasons) or None


def overrides_text(overrides: dict[str, Any] | None) -> str:
    """`{"max_steps": 2, "optimizer_kwargs": {"lr": 0.5}}` -> "max_steps=2, optimizer_kwargs.lr=0.5",
    the `--set` form (a mapping's keys one by one, as `--set a.b=v` changes them)."""
    parts = []
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and value:
            parts += [f"{key}.{sub}={_set_text(v)}" for sub, v in value.items()]
        else:
            parts.append(f"{key}={_set_text(value)}")
    return ", ".join(parts)


def _set_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def result_path(suite: Path, stem: str, status: Status, main_and_clean: bool, stamp: str) -> Path:
    """Where a finished run's result goes (see README, "Where results go"). `main_and_clean`:
    `why_not_results` found no reason against results/."""
    if status is Status.SUCCESS and main_and_clean:
        return suite / RESULTS / f"{stem}.json"
    folder = TEMPORARY_RESULTS if status is Status.SUCCESS else CANCELLED_RESULTS
    path = suite / folder / f"{stem}--{stamp}.json"
    n = 1
    while path.exists():  # two runs finishing in the same second must not overwrite each other
        n += 1
        path = suite / folder / f"{stem}--{stamp}-{n}.json"
    return path


def move_aside(path: Path, stamp: str) -> Path:
    """Rename an unusable result (and its predictions) to `<name>.unreadable-<time>`, never
    deleting it. The new name does not end in .json, so no command reads it as a result again."""
    aside = path.with_name(f"{path.name}.unreadable-{stamp}")
    predictions = predictions_path_for(path)
    if predictions.exists():
        os.replace(predictions, predictions.with_name(f"{predictions.name}.unreadable-{stamp}"))
    os.replace(path, aside)
    return aside


def checked_result_path(suite: Path, stem: str, status: Status, main_and_clean: bool, stamp: str,
                        experiment_name: str, log: Callable[[str], None]) -> Path:
    """`result_path`, made safe for the existing main result it would replace: one of another
    experiment is left alone (the new result goes to temporary_results/ instead), an unreadable
    one is moved aside (`move_aside`). Only `results/<stem>.json` is ever replaced."""
    path = result_path(suite, stem, status, main_and_clean, stamp)
    if not path.exists() or path.parent.name != RESULTS:
        return path
    try:
        other = R.load(path)[R.RUN_INFO].get(R.RI_EXPERIMENT_NAME)
    except ResultError as exc:
        aside = move_aside(path, stamp)
        log(f"moved the unreadable result {path} aside to {aside} ({exc.reason})")
        return path
    if isinstance(other, str) and other and other != experiment_name:
        elsewhere = result_path(suite, stem, status, False, stamp)
        log(f"{path} holds the result of experiment {other!r}, not {experiment_name!r}: left alone; "
            f"this result goes to {elsewhere}")
        return elsewhere
    return path


def suite_label(suite_dir: Path, git_root: str | None) -> str:
    """How a result names its suite: the suite's folder relative to the repository root ("." for
    the root suite, "demo"), or its absolute path outside a repository."""
    if git_root:
        return os.path.relpath(suite_dir, git_root)
    return str(suite_dir)


def state_dir(suite: Path) -> Path:
    return suite / STATE_DIR
