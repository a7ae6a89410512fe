"""What needs running: for each experiment and seed, compare the run key of its configs today
with the run keys recorded in its results, and say why it is or is not up to date.

Which results count: on branch main with a clean tree only `results/` (a result made from a dirty
tree must not stand in for a main result); elsewhere `results/` and `temporary_results/`.
Failed and cancelled attempts come from `cancelled_results/`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.experiment import suite as S
from peftbench.errors import UserError
from peftbench.record.results import Status, normalize_result

_STAMP = r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d(?:-\d+)?"


@dataclass
class Recorded:
    path: Path
    status: str
    run_key: str | None
    run_key_inputs: dict | None
    created_at: str
    error: str


def _read(path: Path) -> Recorded | None:
    try:
        with open(path, encoding="utf-8") as f:
            result = normalize_result(json.load(f))
    except (OSError, ValueError):
        return None  # not a result (or unreadable): status shows nothing rather than crash
    info = result["run_info"]
    return Recorded(path, result["train_info"].get("status") or "", info.get("run_key"), info.get("run_key_inputs"),
                    info.get("created_at") or "", info.get("error_msg") or "")


def recorded_results(suite: Path, stem: str) -> dict[str, list[Recorded]]:
    """Results of one stem by folder, newest first."""
    pattern = re.compile(re.escape(stem) + r"--" + _STAMP + r"\.json$")
    out: dict[str, list[Recorded]] = {}
    for folder in (S.RESULTS, S.TEMPORARY_RESULTS, S.CANCELLED_RESULTS):
        d = suite / folder
        if not d.is_dir():
            out[folder] = []
            continue
        names = [p for p in d.iterdir() if p.name == f"{stem}.json" or pattern.match(p.name)]
        found = [r for r in map(_read, names) if r is not None]
        out[folder] = sorted(found, key=lambda r: (r.created_at, r.path.name), reverse=True)
    return out


def find_up_to_date(suite: Path, stem: str, run_key: str, main_and_clean: bool) -> Path | None:
    recorded = recorded_results(suite, stem)
    folders = (S.RESULTS,) if main_and_clean else (S.RESULTS, S.TEMPORARY_RESULTS)
    for folder in folders:
        for r in recorded[folder]:
            if r.status == Status.SUCCESS.value and r.run_key == run_key:
                return r.path
    return None


@dataclass
class PlanItem:
    experiment: str  # method/name
    path: Path
    seed: int
    stem: str
    action: str  # "run", "skip" or "invalid"
    reason: str
    result: Path | None = None


def decide(suite: Path, stem: str, run_key: str, inputs: dict[str, Any], main_and_clean: bool) -> tuple[str, str, Path | None]:
    """(action, reason, newest relevant result) for one experiment and seed."""
    from peftbench.record.runkey import explain_difference

    recorded = recorded_results(suite, stem)
    folders = (S.RESULTS,) if main_and_clean else (S.RESULTS, S.TEMPORARY_RESULTS)
    successes = sorted((r for f in folders for r in recorded[f] if r.status == Status.SUCCESS.value),
                       key=lambda r: r.created_at, reverse=True)
    current = [r for r in successes if r.run_key == run_key]
    if current:
        return "skip", "up to date", current[0].path
    attempts = recorded[S.CANCELLED_RESULTS]
    newest_attempt = attempts[0] if attempts else None
    if newest_attempt and (not successes or newest_attempt.created_at >= successes[0].created_at):
        what = "cancelled" if newest_attempt.status == Status.CANCELLED.value else "failed"
        detail = f": {newest_attempt.error[:80]}" if newest_attempt.error else ""
        return "run", f"last attempt {what}{detail}", newest_attempt.path
    if successes:
        return "run", explain_difference(successes[0].run_key_inputs, inputs), successes[0].path
    return "run", "never run", None


def plan(targets: list[str], seeds: list[int] | None, force: bool = False,
         overrides: dict[str, Any] | None = None) -> list[PlanItem]:
    """The plan for every experiment below `targets` and every seed (default: the suite's).

    `overrides` are the parsed `--set` values a run would get: they change the run key, so an
    up-to-date check without them would skip runs the user asked for."""
    from peftbench.experiment import config as C
    from peftbench.record import lock as L
    from peftbench.record import provenance
    from peftbench.record import runkey
    from peftbench.training.modeling import resolve_device

    items: list[PlanItem] = []
    exp_dirs = [d for t in targets for d in S.discover_experiments(t)]
    if not exp_dirs:
        raise UserError(f"no experiment folders found under {', '.join(targets)}")
    git_cache: dict[Path, Any] = {}
    for exp_dir in dict.fromkeys(exp_dirs):
        suite = S.suite_of(exp_dir)
        default_seed = C.suite_default_seed(suite)
        git = git_cache.setdefault(suite, provenance.git_state(suite))
        for seed in seeds if seeds is not None else [None]:
            exp_overrides = dict(overrides or {}, **({"seed": seed} if seed is not None else {}))
            name = f"{exp_dir.parent.name}/{exp_dir.name}"
            try:
                exp = C.load_experiment(exp_dir, exp_overrides)
                device = resolve_device(exp.train_config.device)
            except UserError as exc:
                problems = getattr(exc, "problems", None) or [str(exc)]
                items.append(PlanItem(name, exp_dir, seed if seed is not None else default_seed, "", "invalid",
                                      "invalid config: " + "; ".join(problems)))
                continue
            seed_value = exp.train_config.seed
            stem = S.result_stem(exp.method, exp.name, seed_value, default_seed)
            key, inputs = runkey.compute(exp, device.split(":")[0])
            action, reason, path = decide(suite, stem, key, inputs, git.is_main_and_clean)
            holder = L.read_holder(S.state_dir(suite) / "locks" / f"{stem}.lock")
            if holder is not None and not L.is_stale(holder):
                action, reason = "skip", f"running now (pid {holder.get('pid')} on {holder.get('host')})"
            elif force and action == "skip":
                action, reason = "run", f"forced ({reason})"
            items.append(PlanItem(name, exp_dir, seed_value, stem, action, reason, path))
    return items
