"""The search of `peftbench tune` for one experiment: an Optuna study whose trials are ordinary
peftbench runs in child processes, keyed by run key so that nothing is trained twice.

Where things go (`<suite>` is the experiment's suite):
- `<suite>/.peftbench/tuning/<method>--<name>/`: a suite of its own for the trials (the suite's
  defaults, one experiment folder per point of the space, their results folders) and the Optuna
  study (`study.db`, SQLite), so that trial results never reach the suite's leaderboard and a
  study interrupted half-way resumes where it stopped;
- `<suite>/results/tuning/<method>--<name>--<search id>.tuning.json`: the record of this search
  (tuning.py), version-controlled; the search id is a hash of the space, sampler and budget.

Every trial's run key is computed before it runs: a key one of the experiment's records already
holds, or a result of the trial suite with that key, is reused instead of run. So `tune` twice
with one space runs nothing the second time, and a wider space runs only the new points.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peftbench.errors import UserError
from peftbench.experiment import planning
from peftbench.experiment import config as C
from peftbench.experiment import suite as S
from peftbench.experiment import tuning as T
from peftbench.experiment.executors import RunItem, Settings, execute
from peftbench.fs import atomic_write_json
from peftbench.record import runkey
from peftbench.record import results as R
from peftbench.record.hardware import resolve_device
from peftbench.tasks.sources import TUNE_SPLIT_SEED


@dataclass
class TuneOptions:
    trials: int | None = None  # None: the whole grid (grid), DEFAULT_TPE_TRIALS (tpe)
    sampler: str = "grid"
    budget_steps: int | None = None  # None: the experiment's own max_steps
    tune_valid_size: int = T.DEFAULT_TUNE_VALID_SIZE
    executor: str = "local"
    force: bool = False  # change a <name>-tuned/ that holds other values (tuning.update_tuned_experiment)
    verbose: bool = False
    progress: bool = True
    command: str = ""
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


@dataclass
class TuneOutcome:
    experiment: str
    record_path: Path
    record: dict[str, Any]
    ran: int  # trials trained by this call
    reused: int  # trials answered from the record or an earlier result
    tuned_dir: Path | None
    cancelled: bool = False
    kept: bool = False  # <name>-tuned/ holds another choice and was left alone (no --force)


class TrialsCancelled(Exception):
    """Ctrl+C or SIGTERM during a trial: the trial recorded itself as cancelled."""


class _TrialFailed(Exception):
    """A trial that failed: Optuna records the trial as FAIL (never as a low value)."""


def study_trials(opts: TuneOptions, space: list[T.Param]) -> int:
    size = T.grid_size(space)
    if opts.sampler == "grid":
        return min(opts.trials or size, size)
    return opts.trials or T.DEFAULT_TPE_TRIALS


def budget_overrides(exp: C.Experiment, opts: TuneOptions) -> dict[str, Any]:
    """The protocol's own overrides: the step budget, one validation at its end, the tuning split."""
    steps = opts.budget_steps if opts.budget_steps is not None else exp.train_config.max_steps
    return {"max_steps": steps, "eval_steps": steps, "tune_valid_size": opts.tune_valid_size}


class Search:
    """The trials of one experiment's search: folders, run keys, reuse and runs."""

    def __init__(self, exp: C.Experiment, space: list[T.Param], opts: TuneOptions):
        self.exp, self.space, self.opts = exp, space, opts
        self.trial_suite = S.state_dir(exp.suite_dir) / T.TUNING_DIR / exp.file_stem
        self.base = budget_overrides(exp, opts)
        self.record_path = self._record_path()
        self.previous = T.read_record(self.record_path) or {}
        # every trial ever recorded for this experiment, by run key: other searches too. A
        # failure without a result (the child died before its run began) is not the run's
        # outcome and runs again; a failed run (a NaN loss) would only fail again.
        recorded = [t for _, r in T.records_for(exp.suite_dir, exp.method, exp.name)
                    for t in (r.get("trials") or []) + (r.get("other_trials") or [])]
        self.known: dict[str, dict[str, Any]] = {
            t["run_key"]: t for t in recorded
            if isinstance(t, dict) and t.get("run_key")
            and (t.get("status") == T.SUCCESS or t.get("status") == T.FAILED and t.get("result"))}
        self.trials: dict[str, dict[str, Any]] = {}  # this search's trials by run key
        self.ran = self.reused = 0
        # whether <name>-tuned/ holds this search's choice (its record then names it)
        self.owns_tuned = T.tuned_owner(T.tuned_experiment_dir(exp)) == self.record_path

    def _record_path(self) -> Path:
        """This search's record: the one file named after the search id, or the experiment's
        single record of before there was one per search when that one is of this search."""
        exp = self.exp
        legacy = T.record_path(exp.suite_dir, exp.method, exp.name)
        record = T.read_record(legacy)
        if record is not None and (record.get("study") or {}).get("name") == self.study_name():
            return legacy
        return T.record_path(exp.suite_dir, exp.method, exp.name, self.search_id())

    # -- folders and keys ------------------------------------------------------------------------

    def prepare_trial(self, params: dict[str, Any], trial_suite: Path | None = None) -> tuple[C.Experiment, list[str]]:
        """The trial's experiment folder in the trial suite (or in `trial_suite`), loaded with its
        overrides, and the `--set` texts a child run gets. Raises ConfigError for a value the
        field refuses."""
        trial_suite = trial_suite or self.trial_suite
        self._write_suite_defaults(trial_suite)
        train, peft = T.split_overrides(self.space, params)
        trial_dir = trial_suite / C.EXPERIMENTS_DIR / self.exp.method / f"{self.exp.name}-t{T.params_id(params)}"
        trial_dir.mkdir(parents=True, exist_ok=True)

        if self.exp.adapter_config is not None:
            atomic_write_json(trial_dir / C.ADAPTER_CONFIG_FILE, {**self.exp.adapter_config, **peft})
        atomic_write_json(trial_dir / C.TRAINING_PARAMS_FILES[0], self.exp.training_params)
        sets = T.set_strings({**self.base, **train})
        return C.load_experiment(trial_dir, C.parse_overrides(sets)), sets

    def _write_suite_defaults(self, trial_suite: Path) -> None:
        """The trial suite runs with the suite's own defaults (copied as they are: relative data
        paths keep their meaning, they are read from the current folder)."""
        src, dest = self.exp.suite_dir / C.DEFAULTS_FILE, trial_suite / C.DEFAULTS_FILE
        if not dest.is_file() or dest.read_bytes() != src.read_bytes():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)

    def run_key(self, trial_exp: C.Experiment) -> str:
        return runkey.compute(trial_exp, resolve_device(trial_exp.train_config.device).split(":")[0])[0]

    def validate_space(self) -> None:
        """Load one trial config per value of each parameter (the others at their first value),
        so that a value a field refuses is bad input before anything runs. In a scratch folder,
        removed after: a refused search leaves no trial folders behind."""
        import tempfile

        first = {p.key: p.values[0] for p in self.space}
        with tempfile.TemporaryDirectory(prefix="peftbench-tune-check-") as scratch:
            for p in self.space:
                for value in p.values:
                    self.prepare_trial({**first, p.key: value}, Path(scratch))

    # -- one trial ------------------------------------------------------------------------------

    def trial(self, number: int, params: dict[str, Any]) -> dict[str, Any]:
        """Reuse or run the trial at `params`; returns its record entry."""
        trial_exp, sets = self.prepare_trial(params)
        key = self.run_key(trial_exp)
        if key in self.trials:  # a point the sampler proposed again: one entry, one run
            return self.trials[key]
        entry = self.known.get(key) or self._from_results(trial_exp, key)
        if entry is not None:
            self.reused += 1
            entry = {**entry, "overrides": params, "number": number}
        else:
            self.ran += 1
            entry = self._run(trial_exp, sets, key, number, params)
        self.trials[entry["run_key"]] = entry
        return entry

    def _from_results(self, trial_exp: C.Experiment, key: str) -> dict[str, Any] | None:
        """A finished result of the trial suite with this run key (the record may be lost)."""
        path = _result_with_key(self.trial_suite, _stem(trial_exp), key)
        return None if path is None else self._entry_from_result(path, key, 0, {}, None)

    def _run(self, trial_exp: C.Experiment, sets: list[str], key: str, number: int, params: dict[str, Any]) -> dict[str, Any]:
        self.opts.log(f"trial {number}: {trial_exp.experiment_name} with "
                      f"{', '.join(f'{k}={v}' for k, v in params.items())} ({self.base['max_steps']} steps)")
        started = time.monotonic()
        word, interrupted, path = run_child(trial_exp, sets, self.opts)
        seconds = time.monotonic() - started
        path = path if path is not None and path.is_file() else _result_with_key(self.trial_suite, _stem(trial_exp), key)
        if path is not None:
            # The key the run recorded for itself: it differs from `key` only when the training
            # code changed while the trial ran, and then the record must name what really ran.
            key = _load_result(path)["run_info"].get("run_key") or key
            entry = self._entry_from_result(path, key, number, params, seconds)
        else:  # the child wrote no result (killed, or bad input it found itself)
            status = T.CANCELLED if interrupted or word == "cancelled" else T.FAILED
            entry = _entry(number, params, key, status, seconds=seconds, error=f"no result written ({word})")
        if interrupted:
            self.trials[key] = {**entry, "status": T.CANCELLED}
            raise TrialsCancelled()
        detail = (f"valid acc {entry['valid_accuracy']}, valid loss {entry['valid_loss']}" if entry["status"] == T.SUCCESS
                  else entry["error"])
        self.opts.log(f"trial {number}: {entry['status']}: {detail}")
        return entry

    def _entry_from_result(self, path: Path, key: str, number: int, params: dict[str, Any],
                           seconds: float | None) -> dict[str, Any]:
        result = _load_result(path)
        status = result["train_info"].get("status") or T.FAILED
        last = next((m for m in reversed(result["train_info"]["metrics"]) if R.M_VALID_ACC in m), {})
        return _entry(number, params, key, status,
                      valid_accuracy=last.get(R.M_VALID_ACC) if status == T.SUCCESS else None,
                      valid_accuracy_flexible=last.get(R.M_VALID_ACC_FLEX) if status == T.SUCCESS else None,
                      valid_loss=last.get(R.M_VALID_LOSS) if status == T.SUCCESS else None,
                      seconds=result["run_info"].get("total_time") or seconds,
                      error=result["run_info"].get("error_msg") or "",
                      result=path.relative_to(self.exp.suite_dir).as_posix())

    # -- the study ------------------------------------------------------------------------------

    def optimize(self) -> bool:
        """Run the Optuna study until it has `study_trials` finished trials. Returns False when
        cancelled (the trials so far are kept)."""
        import optuna

        # Optuna would print a traceback for every failed trial; the search says it in one line.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        space = T.space_dict(self.space)
        sampler = (optuna.samplers.GridSampler(space, seed=0) if self.opts.sampler == "grid"
                   else optuna.samplers.TPESampler(seed=0))
        self.trial_suite.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(study_name=self.study_name(), storage=f"sqlite:///{self.trial_suite / 'study.db'}",
                                    sampler=sampler, direction="maximize", load_if_exists=True)
        finished = [t for t in study.trials if t.user_attrs.get("status") in (T.SUCCESS, T.FAILED)]
        # Trials answered in an earlier call: their entries go into this search's list again.
        for t in finished:
            self.trial(t.number, dict(t.params))
        # Cancelled points are tried again first (the grid counts a stopped trial as visited).
        done_params = [t.params for t in finished]
        for t in study.trials:
            if t.user_attrs.get("status") == T.CANCELLED and t.params not in done_params:
                study.enqueue_trial(dict(t.params), skip_if_exists=False)
                done_params.append(t.params)
        remaining = study_trials(self.opts, self.space) - len(finished)
        if remaining <= 0:
            return True

        def objective(trial):
            params = {p.key: trial.suggest_categorical(p.key, list(p.values)) for p in self.space}
            try:
                entry = self.trial(trial.number, params)
            except TrialsCancelled:
                trial.set_user_attr("status", T.CANCELLED)
                raise
            trial.set_user_attr("status", entry["status"])
            trial.set_user_attr("run_key", entry["run_key"])
            self.save()  # the record is up to date after every trial
            if entry["status"] != T.SUCCESS:
                raise _TrialFailed(entry.get("error") or entry["status"])
            return entry["valid_accuracy"]

        try:
            study.optimize(objective, n_trials=remaining, catch=(_TrialFailed,))
        except TrialsCancelled:
            return False
        return True

    def search_id(self) -> str:
        """One search per space, sampler and budget: a wider space is a new search (its known
        points are reused by run key), the same space resumes the stored one."""
        spec = {"space": T.space_dict(self.space), "sampler": self.opts.sampler, "budget": self.base}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]

    def study_name(self) -> str:
        """The Optuna study of this search (one per `search_id`)."""
        return f"{self.exp.file_stem}-{self.search_id()}"

    # -- the record -----------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        trials = sorted(self.trials.values(), key=lambda t: t["number"])
        chosen = T.choose(trials, self.space)
        if chosen is not None and chosen["runner_up"] is not None:
            chosen["paired_vs_runner_up"] = self._paired(chosen)
        ran = [t for t in trials if t["status"] in (T.SUCCESS, T.FAILED)]
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return {
            "schema_version": T.RECORD_SCHEMA_VERSION, "kind": T.RECORD_KIND,
            "experiment": self.exp.experiment_name,
            "tuned_experiment": f"{self.exp.method}/{self.exp.name}{T.TUNED_SUFFIX}" if self.owns_tuned else None,
            "created_at": self.previous.get("created_at") or now, "updated_at": now,
            "command": self.opts.command,
            "search_space": T.space_dict(self.space), "sampler": self.opts.sampler, "sampler_seed": 0,
            "budget": {"trials": len(ran), "trials_requested": study_trials(self.opts, self.space),
                       "steps_per_trial": self.base["max_steps"], "tune_valid_size": self.base["tune_valid_size"],
                       "tune_split_seed": _tune_split_seed(),
                       "seconds": round(sum(t.get("seconds") or 0.0 for t in ran), 3)},
            "selection": "validation accuracy, then validation loss, then the simpler setting; test data unused",
            "study": {"storage": (self.trial_suite / "study.db").relative_to(self.exp.suite_dir).as_posix(),
                      "name": self.study_name()},
            "trials": trials,
            "choice": chosen,
        }

    def _paired(self, chosen: dict[str, Any]) -> dict[str, Any] | None:
        rows = []
        for key in (chosen["run_key"], chosen["runner_up"]["run_key"]):
            rel = self.trials[key].get("result")
            path = self.exp.suite_dir / rel if rel else None
            pred = R.named_predictions_path(path, _load_result(path)["run_info"]) if path and path.is_file() else None
            if pred is None or not pred.is_file():
                return None  # predictions gone (a fresh clone has no .peftbench/): nothing to pair
            rows.append(R.read_predictions(pred))
        try:
            return T.paired_difference(*rows)
        except UserError:
            return None

    def save(self) -> dict[str, Any]:
        record = self.record()
        atomic_write_json(self.record_path, record)
        return record


def tune_experiment(exp: C.Experiment, space: list[T.Param], opts: TuneOptions) -> TuneOutcome:
    """Search, record, and write `<name>-tuned/` from the choice (when a trial succeeded; a
    folder holding other values only with opts.force, see `tuning.update_tuned_experiment`)."""
    search = Search(exp, space, opts)
    completed = search.optimize()
    record = search.save()
    tuned_dir, kept = None, False
    if completed and record["choice"] is not None:
        update = T.update_tuned_experiment(exp, space, record["choice"], search.record_path, force=opts.force)
        opts.log(update.message)
        kept = update.kept
        if update.owned:
            tuned_dir = T.tuned_experiment_dir(exp)
            search.owns_tuned = True
            record = search.save()  # names the folder first, then the records it replaced stop naming it
            T.disown_others(exp, search.record_path)
    return TuneOutcome(exp.experiment_name, search.record_path, record, search.ran, search.reused, tuned_dir,
                       cancelled=not completed, kept=kept)


# ----------------------------------------------------------------------------------------------
# helpers


def _entry(number: int, params: dict[str, Any], key: str, status: str, *, valid_accuracy=None,
           valid_accuracy_flexible=None, valid_loss=None, seconds=None, error: str = "", result=None) -> dict[str, Any]:
    return {"number": number, "overrides": params, "run_key": key, "status": status,
            "valid_accuracy": valid_accuracy, "valid_accuracy_flexible": valid_accuracy_flexible,
            "valid_loss": valid_loss, "seconds": seconds, "result": result, "error": error}


def _stem(trial_exp: C.Experiment) -> str:
    return S.result_stem(trial_exp.method, trial_exp.name, trial_exp.train_config.seed,
                         C.suite_default_seed(trial_exp.suite_dir))


def _result_with_key(trial_suite: Path, stem: str, key: str) -> Path | None:
    """The newest success, else the newest failure, of `stem` with run key `key`."""
    recorded = [r for rs in planning.recorded_results(trial_suite, stem).values() for r in rs if r.run_key == key]
    for status in (T.SUCCESS, T.FAILED, T.CANCELLED):
        found = sorted((r for r in recorded if r.status == status), key=lambda r: r.created_at, reverse=True)
        if found:
            return found[0].path
    return None


def _load_result(path: Path) -> dict[str, Any]:
    return R.load(path)  # ResultError (a UserError) names the file and the reason


def _tune_split_seed() -> int:
    return TUNE_SPLIT_SEED


def run_child(trial_exp: C.Experiment, sets: list[str], opts: TuneOptions) -> tuple[str, bool, Path | None]:
    """Run one trial as a child `peftbench run` through run-all's executors (local or Ray).
    Returns the outcome word, whether the user cancelled meanwhile (the child then recorded
    itself as cancelled), and the result the child wrote (None when it wrote none)."""
    item = RunItem(trial_exp.path, trial_exp.train_config.seed, overrides=tuple(sets),
                   experiment=trial_exp.experiment_name, reason="tuning trial")
    # force: the search decided by run key that this trial must run; no second up-to-date check
    settings = Settings(executor=opts.executor, force=True, progress=opts.progress, verbose=opts.verbose)
    outcomes = execute([item], settings)
    outcome = outcomes[0]
    return outcome.status, outcomes.interrupted, None if outcome.result_path is None else Path(outcome.result_path)
