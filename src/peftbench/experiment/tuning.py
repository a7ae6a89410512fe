"""`peftbench tune`: the search space, the choice among trials, the tuning record and the tuned
experiment. The Optuna study and the trial runs are in `tuning_study`; this module holds the
rules, so that they can be tested without training anything.

Protocol (docs/tuning.md says why):
- every trial is an ordinary run with the space's overrides, `max_steps = eval_steps =` the step
  budget and `tune_valid_size` > 0, which validates on rows of the eval dataset's *train* split
  drawn with their own seed and never generates on the test split;
- the choice is the successful trial with the highest validation accuracy; ties go to the lower
  validation loss, then to the simpler setting (`simplicity_key`); failed and cancelled trials
  are recorded as such and never chosen;
- each search (space, sampler and budget) has its own record,
  `results/tuning/<method>--<name>--<search id>.tuning.json`: the space, the sampler, the budget
  (trials x steps, measured seconds), every trial and the choice, with the paired difference
  between the best and the runner-up on the validation items; a second search never replaces
  the record of the first;
- `<name>-tuned/` holds the choice of one record, the one whose `tuned_experiment` names it; a
  search whose choice differs changes it only when forced, and says what changes.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.errors import ConfigError, UserError
from peftbench.experiment import config as C
from peftbench.experiment.suite import RESULTS
from peftbench.fs import atomic_write_bytes, atomic_write_json
from peftbench.scoring import stats

RECORD_SCHEMA_VERSION = 1
RECORD_KIND = "peftbench-tuning"
TUNING_DIR = "tuning"  # results/tuning/: beside the results, out of the leaderboard's *.json glob
RECORD_SUFFIX = ".tuning.json"
TUNED_SUFFIX = "-tuned"
SAMPLERS = ("grid", "tpe")
DEFAULT_TUNE_VALID_SIZE = 200
DEFAULT_TPE_TRIALS = 20
# Fields the protocol sets itself: a --param on them would change the budget, not the method.
RESERVED_KEYS = {"max_steps": "--budget-steps", "eval_steps": "--budget-steps",
                 "tune_valid_size": "--tune-valid-size", "seed": "the suite's seed (one seed per search)"}
# Trial statuses in the record: those of a run, and "cancelled" ones are run again by the next tune.
SUCCESS, FAILED, CANCELLED = "success", "failed", "cancelled"


@dataclass(frozen=True)
class Param:
    """One searched field: `key` as typed (`optimizer_kwargs.lr`, `r`), whether it is a training
    or a PEFT field, and its candidate values typed by the field."""

    key: str
    target: str  # "train" or "peft"
    values: tuple[Any, ...]


def parse_param_specs(specs: list[str] | None) -> list[tuple[str, list[str]]]:
    """`KEY=V1,V2,...` -> (KEY, [texts]); all problems reported together (UserError)."""
    problems, out, seen = [], [], set()
    for spec in specs or []:
        key, sep, text = spec.partition("=")
        key = key.strip()
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not sep or not key or not values:
            problems.append(f"--param {spec!r}: expected KEY=V1,V2,... e.g. optimizer_kwargs.lr=1e-4,3e-4,1e-3")
        elif key.partition(".")[0] in RESERVED_KEYS:
            problems.append(f"--param {key}: set by the tuning protocol; use {RESERVED_KEYS[key.partition('.')[0]]}")
        elif key in seen:
            problems.append(f"--param {key}: given twice; list all its values in one --param")
        elif len(dict.fromkeys(values)) < 2:
            problems.append(f"--param {spec!r}: one value, so nothing is being chosen; give two or more values "
                            "(a fixed value belongs in the experiment's own files)")
        else:
            seen.add(key)
            out.append((key, list(dict.fromkeys(values))))
    if not out and not problems:
        problems.append("no --param given: name at least one field to search, e.g. --param optimizer_kwargs.lr=1e-4,1e-3")
    if problems:
        raise ConfigError(problems, "search space")
    return out


def type_space(raw: list[tuple[str, list[str]]], exp: C.Experiment) -> list[Param]:
    """Type each value by its field: a training field as `--set` types it, a PEFT field as JSON
    (checked against the type of the experiment's current value). Bad values surface later too,
    when each trial's config is validated, before anything runs."""
    problems: list[str] = []
    space: list[Param] = []
    peft_fields = _peft_fields(exp)
    for key, texts in raw:
        top = key.partition(".")[0]
        if top in C.FIELDS:
            try:
                values = [_train_value(key, t) for t in texts]
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            space.append(Param(key, "train", tuple(values)))
        elif key in peft_fields:
            values = [C._parse_value(t) for t in texts]  # the `--set` value syntax: JSON, else text
            current = getattr(exp.peft_config, key)
            wrong = [v for v in values if not _same_kind(current, v)]
            if wrong:
                problems.append(f"--param {key}: {', '.join(map(repr, wrong))} do not fit {key} "
                                f"(currently {current!r} in {exp.experiment_name})")
                continue
            space.append(Param(key, "peft", tuple(values)))
        else:
            # not C.suggest: its list of every training and PEFT field would run to 2,000 characters
            close = difflib.get_close_matches(key, sorted(set(C.FIELDS) | peft_fields), n=1, cutoff=0.6)
            where = "training fields (README.md)" + (f" and {type(exp.peft_config).__name__} fields" if peft_fields else "")
            problems.append(f"--param {key}: not a field of {exp.experiment_name};"
                            + (f" did you mean {close[0]!r}?" if close else f" searched: {where}"))
    if problems:
        raise ConfigError(problems, f"search space for {exp.experiment_name}")
    return space


def _peft_fields(exp: C.Experiment) -> set[str]:
    if exp.peft_config is None:
        return set()
    return {f.name for f in dataclasses.fields(exp.peft_config)} - {"peft_type", "task_type", "base_model_name_or_path",
                                                                    "revision", "inference_mode", "peft_version"}


def _same_kind(current: Any, value: Any) -> bool:
    if current is None or value is None:
        return True
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, (int, float)):
        return isinstance(value, (int, float)) and (isinstance(current, float) or isinstance(value, int))
    return isinstance(value, type(current))


def _train_value(key: str, text: str) -> Any:
    parsed = C.parse_overrides([f"{key}={text}"])
    top, _, sub = key.partition(".")
    return parsed[top][sub] if sub else parsed[top]


def grid_size(space: list[Param]) -> int:
    return math.prod(len(p.values) for p in space)


def space_dict(space: list[Param]) -> dict[str, list[Any]]:
    return {p.key: list(p.values) for p in space}


def set_strings(overrides: dict[str, Any]) -> list[str]:
    """Training overrides as `--set KEY=VALUE` texts that `parse_overrides` reads back unchanged."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]


def split_overrides(space: list[Param], params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training overrides, PEFT overrides) of one trial's parameters."""
    target = {p.key: p.target for p in space}
    train = {k: v for k, v in params.items() if target[k] == "train"}
    peft = {k: v for k, v in params.items() if target[k] == "peft"}
    return train, peft


def params_id(params: dict[str, Any]) -> str:
    """Short stable name of a point of the space (for trial folder names)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------------------------
# the choice


def simplicity_key(space: list[Param], params: dict[str, Any]) -> tuple:
    """Smaller is simpler: PEFT fields first (capacity: a smaller rank), then training fields (a
    lower learning rate), each by value when a number, else by its position in the --param list."""
    ordered = [p for p in space if p.target == "peft"] + [p for p in space if p.target == "train"]
    key = []
    for p in ordered:
        v = params.get(p.key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            key.append((0, float(v)))
        else:
            key.append((1, float(p.values.index(v)) if v in p.values else math.inf))
    return tuple(key)


def rank_trials(trials: list[dict[str, Any]], space: list[Param]) -> list[dict[str, Any]]:
    """Successful trials with a validation accuracy, best first: accuracy (higher), validation
    loss (lower; a missing loss ranks after any measured one), simplicity, trial number."""
    ok = [t for t in trials if t.get("status") == SUCCESS and isinstance(t.get("valid_accuracy"), (int, float))]
    return sorted(ok, key=lambda t: (-t["valid_accuracy"], _loss(t), simplicity_key(space, t["overrides"]),
                                     t.get("number", 0)))


def _loss(trial: dict[str, Any]) -> float:
    """The validation loss for ranking; missing or non-finite ranks last (inf)."""
    loss = trial.get("valid_loss")
    return float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf


def choose(trials: list[dict[str, Any]], space: list[Param]) -> dict[str, Any] | None:
    """The choice: the best trial, why it beat the runner-up, and the runner-up. None when no
    trial succeeded (a failed trial is never a low score that could be chosen)."""
    ranked = rank_trials(trials, space)
    if not ranked:
        return None
    best = ranked[0]
    runner = ranked[1] if len(ranked) > 1 else None
    if runner is None:
        reason = "the only successful trial"
    elif runner["valid_accuracy"] < best["valid_accuracy"]:
        reason = "highest validation accuracy"
    elif _loss(runner) > _loss(best):
        reason = "tied on validation accuracy; lower validation loss"
    else:
        reason = "tied on validation accuracy and loss; the simpler setting"
    return {"number": best["number"], "overrides": best["overrides"], "run_key": best["run_key"],
            "valid_accuracy": best["valid_accuracy"], "valid_loss": best.get("valid_loss"), "reason": reason,
            "runner_up": None if runner is None else {
                "number": runner["number"], "overrides": runner["overrides"], "run_key": runner["run_key"],
                "valid_accuracy": runner["valid_accuracy"], "valid_loss": runner.get("valid_loss")},
            "paired_vs_runner_up": None}


def paired_difference(best_rows: list[dict[str, Any]], runner_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Best minus runner-up on the same validation items (paired bootstrap 95% interval, exact
    McNemar), from the two trials' validation predictions, matched by item id."""
    a = {r["item_id"]: bool(r["correct_strict"]) for r in best_rows if r.get("split") == "valid"}
    b = {r["item_id"]: bool(r["correct_strict"]) for r in runner_rows if r.get("split") == "valid"}
    if not a or a.keys() != b.keys():
        raise UserError("the two trials' validation items differ; no paired comparison")
    ids = sorted(a)
    cmp = stats.compare_paired([a[i] for i in ids], [b[i] for i in ids])
    return {"n": cmp.n, "diff": cmp.diff, "diff_lo": cmp.diff_lo, "diff_hi": cmp.diff_hi,
            "only_best": cmp.only_a, "only_runner_up": cmp.only_b, "p_mcnemar": cmp.p_mcnemar,
            "n_bootstrap": cmp.n_bootstrap, "coin_toss": cmp.diff_lo <= 0.0}


# ----------------------------------------------------------------------------------------------
# the record


def record_path(suite: Path, method: str, name: str, search_id: str | None = None) -> Path:
    """`results/tuning/<method>--<name>--<search id>.tuning.json`, the record of one search;
    without a search id the name records had before there was one per search."""
    stem = f"{method}--{name}" + (f"--{search_id}" if search_id else "")
    return Path(suite) / RESULTS / TUNING_DIR / f"{stem}{RECORD_SUFFIX}"


def records_for(suite: Path, method: str, name: str) -> list[tuple[Path, dict[str, Any]]]:
    """(path, record) of every search of experiment `<method>/<name>`, oldest first. A file that
    is not a readable record is left out (it belongs to nobody)."""
    folder = record_path(suite, method, name).parent
    found = []
    for path in sorted(folder.glob(f"{method}--{name}*{RECORD_SUFFIX}")):
        try:
            record = read_record(path)
        except UserError:
            continue
        if record is not None and record.get("experiment") == f"{method}/{name}":
            found.append((path, record))
    return sorted(found, key=lambda pr: (str(pr[1].get("created_at") or ""), pr[0].name))


def read_record(path: Path) -> dict[str, Any] | None:
    """A tuning record, or None when there is none; a file that is not one is a UserError."""
    if not path.is_file():
        return None
    data = C.read_json_file(path)
    if not isinstance(data, dict) or data.get("kind") != RECORD_KIND:
        raise UserError(f"{path}: not a peftbench tuning record (kind {RECORD_KIND!r})")
    if not isinstance(data.get("schema_version"), int) or data["schema_version"] > RECORD_SCHEMA_VERSION:
        raise UserError(f"{path}: unsupported tuning record schema_version {data.get('schema_version')!r}")
    return data


def budget_summary(record: dict[str, Any]) -> str:
    """"3 trials x 4 steps on 200 validation items, 41 s": how a row says what its tuning cost."""
    b = record.get("budget") or {}
    seconds = b.get("seconds")
    time_text = "" if not isinstance(seconds, (int, float)) else (
        f", {seconds / 60:.1f} min" if seconds >= 60 else f", {seconds:.0f} s")
    return (f"{b.get('trials')} trials x {b.get('steps_per_trial')} steps on {b.get('tune_valid_size')} "
            f"validation items ({record.get('sampler')}){time_text}")


# ----------------------------------------------------------------------------------------------
# the tuned experiment


def tuned_experiment_dir(exp: C.Experiment) -> Path:
    return exp.path.parent / f"{exp.name}{TUNED_SUFFIX}"


def tuned_owner(tuned_dir: Path) -> Path | None:
    """The record whose choice `<name>-tuned/` holds: the one of its base experiment's records
    that names it as `tuned_experiment` (the newest, should two do after an interrupted write).
    None when no record names the folder."""
    if not tuned_dir.name.endswith(TUNED_SUFFIX):
        return None
    suite, method = tuned_dir.parent.parent.parent, tuned_dir.parent.name
    base = tuned_dir.name[: -len(TUNED_SUFFIX)]
    owners = [(str(r.get("updated_at") or ""), path) for path, r in records_for(suite, method, base)
              if r.get("tuned_experiment") == f"{method}/{tuned_dir.name}"]
    return max(owners)[1] if owners else None


def is_tuned_output(exp_dir: Path) -> bool:
    """An experiment folder that `tune` wrote: `<name>-tuned` named by one of its base's records."""
    return tuned_owner(exp_dir) is not None


def tuned_files(exp: C.Experiment, space: list[Param], chosen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The files of `<name>-tuned/`: the experiment's own with the chosen values, at its full step
    count (the budget was for the search). The experiment file replaces whole values, so a key
    `a.b` writes the whole mapping a."""
    train, peft = split_overrides(space, chosen["overrides"])
    params = dict(exp.training_params)
    resolved = exp.train_config.to_dict()
    for key, value in train.items():
        top, _, sub = key.partition(".")
        params[top] = {**params.get(top, resolved[top]), sub: value} if sub else value
    files = {C.TRAINING_PARAMS_FILES[0]: params}
    if exp.adapter_config is not None:
        files[C.ADAPTER_CONFIG_FILE] = {**exp.adapter_config, **peft}
    return files


def file_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`file key: old -> new` for every key that differs between two sets of files."""
    changes = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name) or {}, new.get(name) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key, _UNSET) != b.get(key, _UNSET):
                changes.append(f"{name} {key}: {_shown(a.get(key, _UNSET))} -> {_shown(b.get(key, _UNSET))}")
    return changes


_UNSET = object()


def _shown(value: Any) -> str:
    return "(not set)" if value is _UNSET else json.dumps(value)


@dataclass(frozen=True)
class TunedUpdate:
    """What `update_tuned_experiment` did: whether `<name>-tuned/` now holds this search's choice
    (`owned`), whether it was left holding other values for want of --force (`kept`), in words."""
    owned: bool
    kept: bool
    message: str


def update_tuned_experiment(exp: C.Experiment, space: list[Param], chosen: dict[str, Any], record_file: Path,
                            force: bool = False) -> TunedUpdate:
    """Write the choice of the search recorded in `record_file` into `<name>-tuned/`, and the
    method README's line for it. A folder that holds other values (an earlier search's choice,
    or this search's before more trials changed it) is changed only with `force`, and the message
    lists each change either way. UserError for a folder `tune` did not write."""
    dest = tuned_experiment_dir(exp)
    rel = dest.relative_to(exp.suite_dir).as_posix()
    files = tuned_files(exp, space, chosen)
    values = ", ".join(f"{k}={v}" for k, v in chosen["overrides"].items())
    if not dest.exists():
        _write_tuned(exp, dest, files, chosen, record_file)
        return TunedUpdate(True, False, f"wrote {rel} with {values}")
    owner = tuned_owner(dest)
    if owner is None:
        raise UserError(f"{dest} exists and was not written by `peftbench tune`; rename it or remove it")
    current = {name: C.read_json_file(dest / name) for name in files if (dest / name).is_file()}
    changes = "; ".join(file_changes(current, files))
    if not changes:
        if owner == record_file:
            _readme_line(exp, chosen, record_file)
        return TunedUpdate(owner == record_file, False, f"{rel} already holds {values}; unchanged")
    owner_rel = owner.relative_to(exp.suite_dir).as_posix()
    if not force:
        return TunedUpdate(False, True, f"{rel} kept: it holds the choice of {owner_rel}, and this search chose "
                                        f"{values}; --force would change {changes}")
    _write_tuned(exp, dest, files, chosen, record_file)
    return TunedUpdate(True, False, f"{rel} changed (--force; it held the choice of {owner_rel}): {changes}")


def disown_others(exp: C.Experiment, owner: Path) -> None:
    """After `owner` took `<name>-tuned/` over, the records that named it no longer do: each
    says which record replaced its choice (one record names a tuned folder at any time)."""
    tuned = f"{exp.method}/{exp.name}{TUNED_SUFFIX}"
    for path, record in records_for(exp.suite_dir, exp.method, exp.name):
        if path != owner and record.get("tuned_experiment") == tuned:
            atomic_write_json(path, {**record, "tuned_experiment": None,
                                     "tuned_experiment_replaced_by": owner.relative_to(exp.suite_dir).as_posix()})


def _write_tuned(exp: C.Experiment, dest: Path, files: dict[str, dict[str, Any]], chosen: dict[str, Any],
                 record_file: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        atomic_write_json(dest / name, content)
    _readme_line(exp, chosen, record_file)


def _readme_line(exp: C.Experiment, chosen: dict[str, Any], record_file: Path) -> None:
    readme = exp.path.parent / "README.md"
    tuned = f"{exp.name}{TUNED_SUFFIX}"
    values = ", ".join(f"{k}={v}" for k, v in chosen["overrides"].items())
    rel = record_file.relative_to(exp.suite_dir).as_posix()
    line = (f"- `{tuned}`: `{exp.name}` with {values}, chosen by `peftbench tune` on validation data only "
            f"(record: `{rel}`).")
    lines = readme.read_text(encoding="utf-8").splitlines() if readme.is_file() else [f"# {exp.method}", ""]
    lines = [ln for ln in lines if not ln.startswith(f"- `{tuned}`:")] + [line]
    atomic_write_bytes(readme, ("\n".join(lines) + "\n").encode("utf-8"))
