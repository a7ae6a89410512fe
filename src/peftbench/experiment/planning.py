"""What needs running: for each experiment and seed, compare the run key of its configs today
with the run keys recorded in its results, and say why it is or is not up to date.

Which results count: on branch main with a clean tree only `results/` (a result made from a dirty
tree must not stand in for a main result); elsewhere, and for a plan with `--set` overrides that
change the config (such a run never goes to `results/`: `suite.why_not_results`), `results/` and
`temporary_results/`. A result made with overrides has another run key than the plain
experiment, so it is never up to date for it. Failed and cancelled attempts come from
`cancelled_results/`.

A result file that `results.load` refuses (truncated, not a result, a newer schema) is never
taken for "never run": the main result `results/<stem>.json` is the file a run would replace, so
while it is unreadable the experiment is left alone ("unreadable result (<reason>)") unless
--force; a forced run then moves the file aside (`suite.checked_result_path`), never deletes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.errors import ResultError, UserError
from peftbench.experiment import plan_cache
from peftbench.experiment import config as C
from peftbench.experiment import suite as S
from peftbench.record import provenance, runkey
from peftbench.record import lock as L
from peftbench.record import results as R
from peftbench.record.results import Status
from peftbench.record.runkey import explain_difference

UNREADABLE = "unreadable"  # Recorded.status of a file `results.load` refuses


@dataclass
class Recorded:
    path: Path
    status: str  # a Status value, "" when the file has none, or UNREADABLE
    run_key: str | None
    run_key_inputs: dict | None
    created_at: str
    error: str  # the run's error_msg; for an UNREADABLE file, why it cannot be read
    overrides: dict = field(default_factory=dict)  # run_info overrides: the --set that changed the config


def _read(path: Path) -> Recorded:
    try:
        result = R.load(path)
    except ResultError as exc:
        return Recorded(path, UNREADABLE, None, None, "", exc.reason)
    info = result[R.RUN_INFO]
    overrides = info.get(R.RI_OVERRIDES)
    return Recorded(path, result[R.TRAIN_INFO].get(R.TI_STATUS) or "", info.get(R.RI_RUN_KEY),
                    info.get(R.RI_RUN_KEY_INPUTS), info.get(R.RI_CREATED_AT) or "", info.get(R.RI_ERROR_MSG) or "",
                    overrides if isinstance(overrides, dict) else {})


def recorded_results(suite: Path, stem: str) -> dict[str, list[Recorded]]:
    """Results of one stem by folder, newest first; unreadable files last, with their reason."""
    out: dict[str, list[Recorded]] = {}
    for folder in (S.RESULTS, S.TEMPORARY_RESULTS, S.CANCELLED_RESULTS):
        d = suite / folder
        if not d.is_dir():
            out[folder] = []
            continue
        names = [p for p in d.iterdir() if (parsed := S.parse_result_name(p.name)) and parsed.stem == stem]
        found = sorted(map(_read, names), key=lambda r: (r.created_at, r.path.name), reverse=True)
        out[folder] = [r for r in found if r.status != UNREADABLE] + [r for r in found if r.status == UNREADABLE]
    return out


def unreadable_main_result(recorded: dict[str, list[Recorded]]) -> Recorded | None:
    """The unreadable `results/<stem>.json`, the one file a run of the stem would replace."""
    return next((r for r in recorded[S.RESULTS] if r.status == UNREADABLE and S.parse_result_name(r.path.name).stamp is None),
                None)


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


def decide(suite: Path, stem: str, run_key: str, inputs: dict[str, Any], main_and_clean: bool,
           overrides: dict[str, Any] | None = None) -> tuple[str, str, Path | None]:
    """(action, reason, newest relevant result) for one experiment and seed. `main_and_clean`:
    a success would go to results/; `overrides`: the plan's config-changing --set overrides
    (`Experiment.config_overrides`), so that a stale run is explained against a result made
    the same way (a --set run is no earlier version of the plain experiment)."""
    recorded = recorded_results(suite, stem)
    folders = (S.RESULTS,) if main_and_clean else (S.RESULTS, S.TEMPORARY_RESULTS)
    successes = sorted((r for f in folders for r in recorded[f] if r.status == Status.SUCCESS.value),
                       key=lambda r: r.created_at, reverse=True)
    current = [r for r in successes if r.run_key == run_key]
    if current:
        return "skip", "up to date", current[0].path
    unreadable = unreadable_main_result(recorded)
    if unreadable is not None:
        return "skip", f"{UNREADABLE} result ({unreadable.error})", unreadable.path
    attempts = [r for r in recorded[S.CANCELLED_RESULTS] if r.status != UNREADABLE]
    newest_attempt = attempts[0] if attempts else None
    if newest_attempt and (not successes or newest_attempt.created_at >= successes[0].created_at):
        what = "cancelled" if newest_attempt.status == Status.CANCELLED.value else "failed"
        detail = f": {newest_attempt.error[:80]}" if newest_attempt.error else ""
        return "run", f"last attempt {what}{detail}", newest_attempt.path
    if successes:
        alike = [r for r in successes if r.overrides == (overrides or {})] or successes
        return "run", explain_difference(alike[0].run_key_inputs, inputs), alike[0].path
    return "run", "never run", None


def plan(targets: list[str], seeds: list[int] | None, force: bool = False,
         overrides: dict[str, Any] | None = None) -> list[PlanItem]:
    """The plan for every experiment below `targets` and every seed (default: the suite's).

    `overrides` are the parsed `--set` values a run would get: they change the run key, so an
    up-to-date check without them would skip runs the user asked for."""
    items: list[PlanItem] = []
    exp_dirs = [d for t in targets for d in S.discover_experiments(t)]
    if not exp_dirs:
        raise UserError(f"no experiment folders found under {', '.join(targets)}")
    git_cache: dict[Path, Any] = {}
    caches: dict[Path, plan_cache.PlanCache] = {}  # resolved configs by file content, per suite
    for exp_dir in dict.fromkeys(exp_dirs):
        suite = S.suite_of(exp_dir)
        default_seed = C.suite_default_seed(suite)
        if suite not in git_cache:  # five git commands: once per suite, not per experiment
            git_cache[suite] = provenance.git_state(suite)
            caches[suite] = plan_cache.PlanCache(suite)
        git, cache = git_cache[suite], caches[suite]
        for seed in seeds if seeds is not None else [None]:
            exp_overrides = dict(overrides or {}, **({"seed": seed} if seed is not None else {}))
            name = f"{exp_dir.parent.name}/{exp_dir.name}"
            try:
                exp = plan_cache.load_experiment(exp_dir, exp_overrides, cache)
                device = plan_cache.device_kind(exp.train_config.device, cache)
            except UserError as exc:
                problems = getattr(exc, "problems", None) or [str(exc)]
                items.append(PlanItem(name, exp_dir, seed if seed is not None else default_seed, "", "invalid",
                                      "invalid config: " + "; ".join(problems)))
                continue
            seed_value = exp.train_config.seed
            stem = S.result_stem(exp.method, exp.name, seed_value, default_seed)
            try:
                key, inputs = runkey.compute(exp, device)
            except UserError as exc:  # e.g. the demo's packaged model is not installed: this row only
                items.append(PlanItem(name, exp_dir, seed_value, stem, "invalid",
                                      "cannot be checked: " + " ".join(str(exc).split())))
                continue
            to_results = S.why_not_results(git, exp.config_overrides) is None
            action, reason, path = decide(suite, stem, key, inputs, to_results, exp.config_overrides)
            holder = L.running_holder(S.state_dir(suite) / "locks" / f"{stem}.lock")
            if holder is not None:
                action, reason = "skip", f"running now (pid {holder.get('pid')} on {holder.get('host')})"
            elif force and action == "skip":
                action, reason = "run", f"forced ({reason})"
            elif action == "skip" and reason.startswith(UNREADABLE):
                reason += "; left alone (--force moves it aside and runs)"
            items.append(PlanItem(name, exp_dir, seed_value, stem, action, reason, path))
    for cache in caches.values():
        cache.save()
    return items
