"""Results -> one leaderboard DataFrame: loading, newest-result selection, seeds, statistics, Pareto.

Which files count (documented in `peftbench compare --help` too):

- A suite folder (it has `results/`, `cancelled_results/` or `temporary_results/`): the main
  results in `results/` and the failed/cancelled runs in `cancelled_results/`.
  `temporary_results/` only when asked (`include_temporary`): those runs were made from an
  unclean or non-main checkout, or outside git; when they are all there is, the error says so.
- A file that `results.load` refuses is skipped with a warning on stderr (an error with `strict`).
- Any other folder: every `*.json` in it is a result file (the published results are such a folder).
- A file: that result.

Rows:

- Successful runs are ranked. Per experiment and seed the newest run (by `created_at`, then file
  time) is kept; an experiment with several seeds becomes one row with the mean of every number,
  the standard deviation of the test accuracy and the number of seeds. Runs made with `--set`
  overrides that changed the config (run_info `overrides`) are another configuration of the
  experiment: a row of their own (`config_key`), the overrides in column `overrides`.
- Every failed or cancelled run is its own row with its status and error, whatever else exists
  for the experiment: a failure is never dropped. `superseded` says that a successful result of
  the same experiment is newer, so the failure no longer stands for it. Failure rows take no part
  in the ranking statistics (best tier, Pareto front).

Statistics:

- The 95% interval of the test accuracy is the Wilson score interval on n test items, n taken
  from the saved predictions (rows with split "test") when present, else train_config
  `test_size`, else the 1,319 items of GSM8K test; `n_test_source` says which. With several
  seeds the test item stays the unit: every seed answers the same items, so the accuracy (the
  mean over seeds, which is the mean over items of each item's share of seeds answering it
  right) gets the interval of n items, not of n x seeds (two seeds of the same 6 items are
  still 6 items). An item's share lies in [0, 1], so its variance is at most that of one
  answer and the interval errs wide. `test_acc_std` shows the seed-to-seed spread.
- `near_best`: not significantly worse than the best run at the 5% level, see
  `stats.indistinguishable_from_best`: paired over the test items when both rows have
  predictions on the same items (McNemar for one seed each; with several seeds the sign test on
  each item's share of seeds right), else the two-proportion z-test on n items.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from peftbench import tasks
from peftbench.analysis import tuned
from peftbench.scoring import stats
from peftbench.errors import suggest
from peftbench.experiment.suite import overrides_text
from peftbench.errors import ResultError, UserError
from peftbench.analysis.families import family_name, variant_label
from peftbench.analysis.filters import BOOL, NUMBER, TEXT, compile_filter
from peftbench.record.results import (
    ACCEL_MEM_99,
    ACCEL_MEM_AVG,
    ACCEL_MEM_MAX,
    CPU_PEAK_RSS,
    M_FORGETTING,
    META_INFO,
    M_STEP,
    M_TEST_ACC,
    M_TEST_ACC_FLEX,
    M_TOKENS_PER_SEC,
    M_TRAIN_LOSS,
    M_TRAIN_TOTAL_TOKENS,
    M_VALID_ACC,
    RI_CREATED_AT,
    RI_ERROR_MSG,
    RI_EXPERIMENT_NAME,
    RI_OVERRIDES,
    RI_PEFT_CONFIG,
    RI_SEED,
    RI_TOTAL_TIME,
    RI_TRAIN_CONFIG,
    RUN_INFO,
    TI_EVAL_ENGINE_USED,
    TI_EVAL_TIME,
    TI_FILE_SIZE,
    TI_FORGETTING_TIME,
    TI_METRICS,
    TI_NUM_TOTAL_PARAMS,
    TI_NUM_TRAINABLE_PARAMS,
    TI_STATUS,
    TI_TEST_TIME,
    TI_TRAIN_TIME,
    TRAIN_INFO,
    Status,
    final_metrics,
    named_predictions_path,
    predictions_path_for,
    read_predictions,
)
from peftbench.record.results import load as load_result
from peftbench.record.results import SET_N, M_TEST_SETS, task_name
from peftbench.record.hardware import hardware_label
from peftbench.experiment.suite import CANCELLED_RESULTS, RESULTS, TEMPORARY_RESULTS, parse_result_name

if TYPE_CHECKING:  # imported by the functions that use them: `--help` and `status` load this module
    import numpy as np
    import pandas as pd

GSM8K_TEST_SIZE = 1319  # items in GSM8K's test split (openai/grade-school-math)

HIGHER = "higher"
LOWER = "lower"


@dataclass(frozen=True)
class Column:
    """One leaderboard column: what users type (`name`), what they read (`label`), whether higher
    or lower is better (None when neither), how to show a value (`fmt`) and what it means."""
    name: str
    label: str
    kind: str  # analysis.filters NUMBER / TEXT / BOOL
    fmt: str  # "text", "pct", "bytes", "seconds", "count", "rate", "float", "pvalue", "bool"
    help: str
    direction: str | None = None


COLUMNS: tuple[Column, ...] = (
    Column("family", "family", TEXT, "text", "method family (PEFT type; Full fine-tuning without PEFT config)"),
    Column("variant", "variant", TEXT, "text", "variant inside the family (DoRA, rsLoRA, LoRA+, ...; the family name when plain)"),
    Column("experiment", "experiment", TEXT, "text", "<method>/<name>"),
    Column("task", "task", TEXT, "text", "the task the run was trained and tested on (peftbench.tasks; results of "
           "schema version 1 are metamathqa)"),
    Column("overrides", "--set", TEXT, "text", "the --set overrides that made the run's config differ from its "
           "experiment's files (such runs are in temporary_results/ and get a row of their own)"),
    Column("test_acc", "test acc", NUMBER, "pct", "test accuracy, the task's headline (GSM8K: strict answer format; "
           "commonsense: unweighted mean over its sets), mean over seeds", HIGHER),
    Column("test_acc_lo", "95% lo", NUMBER, "pct", "lower end of the 95% Wilson interval of test_acc"),
    Column("test_acc_hi", "95% hi", NUMBER, "pct", "upper end of the 95% Wilson interval of test_acc"),
    Column("test_acc_std", "acc std", NUMBER, "pct", "standard deviation of test_acc over seeds (needs >= 2 seeds)"),
    Column("n_seeds", "seeds", NUMBER, "count", "number of seeds averaged in this row"),
    Column("n_test", "n test", NUMBER, "count", "test items behind the interval (an item answered by several seeds "
           "counts once)"),
    Column("n_test_source", "n from", TEXT, "text", "where n_test comes from: predictions, the result's test sets, "
           "test_size or gsm8k (1,319)"),
    Column("near_best", "~best", BOOL, "bool", "not significantly worse than the best run (5% level)"),
    Column("p_vs_best", "p vs best", NUMBER, "pvalue", "p-value of the test against the best run"),
    Column("best_test", "test vs best", TEXT, "text", "test behind p_vs_best: mcnemar (paired items), sign test "
           "(paired items, rows of several seeds) or z-test"),
    Column("test_acc_flex", "flex acc", NUMBER, "pct", "test accuracy, flexible answer extraction (GSM8K-graded tasks)", HIGHER),
    Column("valid_acc", "valid acc", NUMBER, "pct", "last validation accuracy during training", HIGHER),
    Column("forgetting", "forgetting", NUMBER, "float", "forgetting metric of the run (lower is better)", LOWER),
    Column("mem_max", "mem max", NUMBER, "bytes", "accelerator memory, maximum reserved", LOWER),
    Column("mem_avg", "mem avg", NUMBER, "bytes", "accelerator memory, average reserved over steps", LOWER),
    Column("mem_99", "mem p99", NUMBER, "bytes", "accelerator memory, 99th percentile reserved", LOWER),
    Column("cpu_rss", "cpu rss", NUMBER, "bytes", "peak resident memory of a CPU run", LOWER),
    Column("train_time", "train time", NUMBER, "seconds", "training time", LOWER),
    Column("total_time", "total time", NUMBER, "seconds", "whole run, evaluation included", LOWER),
    Column("eval_time", "eval time", NUMBER, "seconds", "validation passes during training", LOWER),
    Column("test_time", "test time", NUMBER, "seconds", "generation and grading on the test split", LOWER),
    Column("forgetting_time", "forget time", NUMBER, "seconds", "the forgetting measure, before and after training", LOWER),
    Column("eval_engine", "engine", TEXT, "text", "evaluation engine that ran (dynamic, static; null: not recorded, the static loop)"),
    Column("hardware", "hardware", TEXT, "text", "accelerator, else CPU model [PyTorch CPU capability], that made the run"),
    Column("tokens_per_s", "tokens/s", NUMBER, "rate", "training throughput: mean of the logged tokens/sec", HIGHER),
    Column("file_size", "file size", NUMBER, "bytes", "size of the saved adapter (or model)", LOWER),
    Column("trainable_params", "trainable", NUMBER, "count", "number of trainable parameters", LOWER),
    Column("trainable_pct", "trainable %", NUMBER, "pct", "trainable parameters as a share of all parameters", LOWER),
    Column("total_params", "params", NUMBER, "count", "all parameters of the model"),
    Column("status", "status", TEXT, "text", "success, cancelled or failed (unknown when the file has none)"),
    Column("error", "error", TEXT, "text", "error message of a failed or cancelled run"),
    Column("tuned", "tuned", BOOL, "bool", "chosen by `peftbench tune` on validation data: the <name>-tuned "
           "experiment of a tuning record in results/tuning/"),
    Column("tune_trials", "tune trials", NUMBER, "count", "trials of the search behind a tuned row"),
    Column("tune_steps", "tune steps", NUMBER, "count", "training steps of each trial of that search"),
    Column("tune_budget", "tuned with", TEXT, "text", "a tuned row's search budget: trials x steps, validation "
           "items, sampler, measured time"),
    Column("ranked", "ranked", BOOL, "bool", "a successful main result competing on the leaderboard (not a failure row)"),
    Column("superseded", "superseded", BOOL, "bool", "a failure row whose experiment has a newer successful result"),
    Column("seeds", "seed", TEXT, "text", "seed(s) of the run(s) in this row"),
    Column("created_at", "created", TEXT, "text", "creation time of the (newest) run"),
    Column("pareto", "pareto", BOOL, "bool", "on the Pareto front of the two --pareto metrics"),
    Column("path", "file", TEXT, "text", "result file (the newest one for several seeds)"),
)
COLUMN_BY_NAME = {c.name: c for c in COLUMNS}
FILTER_COLUMNS = {c.name: c.kind for c in COLUMNS}
NUMERIC_COLUMNS = [c.name for c in COLUMNS if c.kind == NUMBER]

# Columns averaged over seeds. The interval and n are recomputed instead (the items are the unit).
_MEAN_OVER_SEEDS = [c for c in NUMERIC_COLUMNS if c not in
                    ("test_acc_lo", "test_acc_hi", "test_acc_std", "n_seeds", "n_test", "p_vs_best")]


def column(name: str) -> Column:
    """The registered column `name`; a typo gets "did you mean ...? available: ..."."""
    try:
        return COLUMN_BY_NAME[name]
    except KeyError:
        raise UserError(f"unknown column {name!r};{suggest(name, COLUMN_BY_NAME)}") from None


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Run:
    """One result file as read: where it came from, the normalised result, its predictions."""
    path: Path
    origin: str  # "main", "cancelled", "temporary" (suite folders) or "file" (given directly)
    result: dict[str, Any]
    predictions: list[dict[str, Any]] | None = field(default=None, repr=False)


def find_result_files(paths: Sequence[str | os.PathLike], include_temporary: bool = False
                      ) -> list[tuple[Path, str]]:
    """(file, origin) for every result file named by `paths` (suites, folders or files), each once."""
    if not paths:
        raise UserError("give at least one suite folder or result file")
    found: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_file():
            found.append((path, "file"))
        elif any((path / sub).is_dir() for sub in (RESULTS, CANCELLED_RESULTS, TEMPORARY_RESULTS)):
            folders = [(RESULTS, "main"), (CANCELLED_RESULTS, "cancelled")]
            if include_temporary:
                folders.append((TEMPORARY_RESULTS, "temporary"))
            for sub, origin in folders:
                found += [(f, origin) for f in sorted((path / sub).glob("*.json"))]
        else:
            files = sorted(path.glob("*.json"))
            if not files:
                raise UserError(f"{path}: no result files (*.json) and no {RESULTS}/, {CANCELLED_RESULTS}/ or {TEMPORARY_RESULTS}/ folder")
            found += [(f, "file") for f in files]
    seen: set[Path] = set()
    unique = []
    for f, origin in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, origin))
    return unique


def read_run(path: Path, origin: str = "file") -> Run:
    """Read one result file and its predictions; ResultError (a UserError) names the file and
    the reason when either cannot be used."""
    result = load_result(path)
    _clean_metrics(result)
    return Run(path=path, origin=origin, result=result, predictions=_read_predictions_of(path, result))


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_runs(paths: Sequence[str | os.PathLike], include_temporary: bool = False, strict: bool = False,
              warn: Callable[[str], None] = _warn) -> list[Run]:
    """Every result named by `paths` (see `find_result_files`). An unreadable file is skipped
    with a warning naming it and the reason, so that one bad file does not hide all the others;
    `strict` makes it an error instead. Nothing readable at all is an error that says why."""
    files = find_result_files(paths, include_temporary)
    if not files:
        raise UserError(f"no result files found in {', '.join(map(str, paths))}{_temporary_hint(paths, include_temporary)}")
    runs, skipped = [], []
    for f, origin in files:
        try:
            runs.append(read_run(f, origin))
        except ResultError as exc:
            if strict:
                raise
            skipped.append(str(exc))
            warn(f"warning: skipped {exc}")
    if not runs:
        raise UserError("no readable result files:\n" + "\n".join(f"  - {s}" for s in skipped))
    return runs


def _temporary_hint(paths: Sequence[str | os.PathLike], include_temporary: bool) -> str:
    """Why a suite shows nothing when its only results are in temporary_results/."""
    if include_temporary:
        return ""
    if any(any((Path(p) / TEMPORARY_RESULTS).glob("*.json")) for p in paths if Path(p).is_dir()):
        return (f"; {TEMPORARY_RESULTS}/ holds results (runs made outside branch main or from a dirty "
                f"tree, or outside git): add --include-temporary to read them")
    return ""


def _clean_metrics(result: dict[str, Any]) -> None:
    """Keep only well-formed metrics entries (objects), so that hand-edited or truncated files
    still load; what is dropped was never usable."""
    metrics = result[TRAIN_INFO].get(TI_METRICS)
    result[TRAIN_INFO][TI_METRICS] = [m for m in metrics if isinstance(m, dict)] if isinstance(metrics, list) else []


def _read_predictions_of(path: Path, result: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Predictions saved beside the result: the file named in run_info["predictions"]["file"],
    else `<base>.predictions.jsonl.gz`. None when there are none; an unreadable file is an error."""
    named = named_predictions_path(path, result[RUN_INFO])
    for candidate in ([named] if named else []) + [predictions_path_for(path)]:
        if candidate.is_file():
            try:
                rows = read_predictions(candidate)
            except (OSError, EOFError, ValueError) as exc:
                raise ResultError(path, f"its predictions file {candidate.name} is unreadable: {exc}") from None
            return [r for r in rows if isinstance(r, dict)]
    return None


def rows_of_test_split(run: Run) -> list[dict[str, Any]] | None:
    """The run's prediction rows of the test split, or None without predictions."""
    if run.predictions is None:
        return None
    return [r for r in run.predictions if r.get("split") == "test"]


def headline_field(run: Run) -> str:
    """The predictions field of the headline grade of the run's task ("correct_strict" for GSM8K)."""
    name = task_name(run.result)
    return f"correct_{tasks.get(name).grade_names[0]}" if name in tasks.names() else "correct_strict"


def correct_by_item(run: Run, field: str | None = None) -> dict[str, bool]:
    """item_id -> correct (`field`, by default the task's headline grade), over the run's test
    predictions. UserError when the run has no predictions, no test rows, a row without item_id
    or `field`, or an item_id seen twice."""
    field = field or headline_field(run)
    rows = rows_of_test_split(run)
    if rows is None:
        raise UserError(f"{run.path}: no predictions file ({predictions_path_for(run.path).name}); "
                        "a paired comparison needs the per-item results of both runs")
    if not rows:
        raise UserError(f"{run.path}: the predictions hold no test items (split == 'test')")
    correct: dict[str, bool] = {}
    for row in rows:
        item = row.get("item_id")
        if not isinstance(item, str) or field not in row:
            raise UserError(f"{run.path}: a test prediction lacks item_id or {field}: {sorted(row)}")
        if item in correct:
            raise UserError(f"{run.path}: test item {item} appears twice in the predictions")
        correct[item] = bool(row[field])
    return correct


def paired_correctness(run_a: Run, run_b: Run, field: str | None = None) -> tuple[list[str], list[bool], list[bool]]:
    """The test items of two runs matched by item_id: (ids, A correct, B correct), in A's order.
    Refuses (UserError) what `correct_by_item` refuses, and two runs whose test items differ:
    a paired comparison needs the very same items."""
    a, b = correct_by_item(run_a, field), correct_by_item(run_b, field)
    if a.keys() != b.keys():
        shared = len(a.keys() & b.keys())
        raise UserError(
            f"the two runs were tested on different items: {len(a)} items in {run_a.path.name}, "
            f"{len(b)} in {run_b.path.name}, {shared} in common; compare runs tested on the same test set")
    ids = list(a)
    return ids, [a[i] for i in ids], [b[i] for i in ids]


# ---------------------------------------------------------------------------------------------
# One row per run


def _num(value: Any) -> float | None:
    """A finite number as float, else None (booleans, strings and NaN are not measurements)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def experiment_name(run: Run) -> str:
    """run_info experiment_name, else "<method>/<name>" from the file name
    (`<method>--<name>[--seed<N> | --<timestamp>].json`)."""
    name = run.result[RUN_INFO].get(RI_EXPERIMENT_NAME)
    if isinstance(name, str) and name.strip():
        return name.strip()
    parsed = parse_result_name(run.path.name)
    if parsed:
        return parsed.experiment_name
    parts = run.path.name.removesuffix(".json").split("--")  # a foreign name: its first two parts
    return f"{parts[0]}/{parts[1]}" if len(parts) >= 2 else parts[0]


def run_seed(run: Run) -> int | None:
    info = run.result[RUN_INFO]
    for value in (info.get(RI_SEED), _dict(info.get(RI_TRAIN_CONFIG)).get("seed")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    parsed = parse_result_name(run.path.name)
    return parsed.seed if parsed else None


def created_at(run: Run) -> datetime | None:
    """When the run was made: run_info created_at (ISO 8601), else the file's modification time."""
    value = run.result[RUN_INFO].get(RI_CREATED_AT)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    try:
        return datetime.fromtimestamp(run.path.stat().st_mtime, tz=timezone.utc)
    except OSError:
        return None


def run_status(run: Run) -> str:
    status = run.result[TRAIN_INFO].get(TI_STATUS)
    return status if isinstance(status, str) and status else "unknown"


def is_ranked(run: Run) -> bool:
    """A run that competes on the leaderboard: a success outside cancelled_results/. A file
    without a status counts when it has a test accuracy (very old files recorded none)."""
    if run.origin == "cancelled":
        return False
    status = run_status(run)
    if status == Status.SUCCESS.value:
        return True
    return status == "unknown" and _num(final_metrics(run.result).get(M_TEST_ACC)) is not None


def tokens_per_second(result: dict[str, Any]) -> float | None:
    """Mean of the logged "tokens / sec" over the metrics entries; else train total tokens /
    train time."""
    import numpy as np

    rates = [r for r in (_num(m.get(M_TOKENS_PER_SEC)) for m in result[TRAIN_INFO][TI_METRICS]) if r is not None]
    if rates:
        return float(np.mean(rates))
    total = next((_num(m.get(M_TRAIN_TOTAL_TOKENS)) for m in reversed(result[TRAIN_INFO][TI_METRICS])
                  if _num(m.get(M_TRAIN_TOTAL_TOKENS)) is not None), None)
    train_time = _num(result[TRAIN_INFO].get(TI_TRAIN_TIME))
    return total / train_time if total is not None and train_time else None


def number_of_test_items(run: Run) -> tuple[int, str]:
    """Number of test items behind the accuracy, and where that number comes from."""
    rows = rows_of_test_split(run)
    if rows:
        return len(rows), "predictions"
    sets = final_metrics(run.result).get(M_TEST_SETS)
    counts = [_num(f.get(SET_N)) for f in sets.values() if isinstance(f, dict)] if isinstance(sets, dict) else []
    if counts and all(c is not None for c in counts):
        return int(sum(counts)), "test sets"
    configured = _dict(run.result[RUN_INFO].get(RI_TRAIN_CONFIG)).get("test_size")
    if isinstance(configured, int) and not isinstance(configured, bool) and configured > 0:
        return configured, "test_size"
    return GSM8K_TEST_SIZE, "gsm8k"


def last_value(result: dict[str, Any], key: str) -> float | None:
    """The last logged value of metric `key` over the metrics entries."""
    for entry in reversed(result[TRAIN_INFO][TI_METRICS]):
        value = _num(entry.get(key))
        if value is not None:
            return value
    return None


def learning_curve(result: dict[str, Any]) -> dict[str, list[float | None]]:
    """Validation accuracy and train loss against step, from the intermediate metrics entries
    (the final entry, holding the test accuracy, is left out: it is not a validation point)."""
    steps, valid, loss = [], [], []
    for entry in result[TRAIN_INFO][TI_METRICS]:
        step = _num(entry.get(M_STEP))
        if step is None or M_TEST_ACC in entry:
            continue
        steps.append(step)
        valid.append(_num(entry.get(M_VALID_ACC)))
        loss.append(_num(entry.get(M_TRAIN_LOSS)))
    return {"step": steps, "valid_acc": valid, "train_loss": loss}


def run_row(run: Run) -> dict[str, Any]:
    """The leaderboard fields of one run, missing values as None."""
    info, train = run.result[RUN_INFO], run.result[TRAIN_INFO]
    final = final_metrics(run.result)
    peft_config = info.get(RI_PEFT_CONFIG) if isinstance(info.get(RI_PEFT_CONFIG), dict) else None
    train_config = _dict(info.get(RI_TRAIN_CONFIG))
    n_test, n_source = number_of_test_items(run)
    acc = _num(final.get(M_TEST_ACC))
    trainable, total = _num(train.get(TI_NUM_TRAINABLE_PARAMS)), _num(train.get(TI_NUM_TOTAL_PARAMS))
    error = info.get(RI_ERROR_MSG)
    when = created_at(run)
    return {
        "family": family_name(peft_config, train_config),
        "variant": variant_label(peft_config, train_config),
        "experiment": experiment_name(run),
        "task": task_name(run.result),
        "overrides": overrides_text(_dict(info.get(RI_OVERRIDES))) or None,
        "test_acc": acc,
        "n_test": float(n_test),
        "n_test_source": n_source,
        "test_acc_flex": _num(final.get(M_TEST_ACC_FLEX)),
        "valid_acc": last_value(run.result, M_VALID_ACC),
        "forgetting": _num(final.get(M_FORGETTING)),
        "mem_max": _num(train.get(ACCEL_MEM_MAX)),
        "mem_avg": _num(train.get(ACCEL_MEM_AVG)),
        "mem_99": _num(train.get(ACCEL_MEM_99)),
        "cpu_rss": _num(train.get(CPU_PEAK_RSS)),
        "train_time": _num(train.get(TI_TRAIN_TIME)),
        "total_time": _num(info.get(RI_TOTAL_TIME)),
        "eval_time": _num(train.get(TI_EVAL_TIME)),
        "test_time": _num(train.get(TI_TEST_TIME)),
        "forgetting_time": _num(train.get(TI_FORGETTING_TIME)),
        "eval_engine": train.get(TI_EVAL_ENGINE_USED),
        "hardware": hardware_label(_dict(run.result.get(META_INFO)).get("system_info")),
        "tokens_per_s": tokens_per_second(run.result),
        "file_size": _num(train.get(TI_FILE_SIZE)),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": trainable / total if trainable is not None and total else None,
        "status": run_status(run),
        "error": str(error) if error else None,
        "seeds": _seed_text(run_seed(run)),
        "created_at": when.isoformat() if when else None,
        "path": str(run.path),
        "_sets": set_figures(final),
        **tuned.row_fields(run.path, experiment_name(run)),
    }


def set_figures(final: dict[str, Any]) -> dict[str, tuple[float, int]]:
    """{test set: (headline accuracy, items)} of a final metrics entry; {} without per-set figures."""
    sets = final.get(M_TEST_SETS)
    out = {}
    for name, figures in (sets.items() if isinstance(sets, dict) else ()):
        acc, n = _num(_dict(figures).get(M_TEST_ACC)), _num(_dict(figures).get(SET_N))
        if acc is not None and n:
            out[str(name)] = (acc, int(n))
    return out


def _seed_text(seed: int | None) -> str | None:
    return None if seed is None else str(seed)


# ---------------------------------------------------------------------------------------------
# The leaderboard


def config_key(run: Run) -> tuple[str, str]:
    """(experiment, its --set overrides as text): a run made with overrides is another config of
    the experiment, never a newer result of the plain one."""
    return experiment_name(run), overrides_text(_dict(run.result[RUN_INFO].get(RI_OVERRIDES)))


def newest_per_seed(runs: Iterable[Run]) -> dict[tuple[str, str], list[Run]]:
    """Ranked runs grouped by `config_key`, keeping per (config, seed) only the newest run."""
    newest: dict[tuple[tuple[str, str], int | None], Run] = {}
    for run in runs:
        if not is_ranked(run):
            continue
        key = (config_key(run), run_seed(run))
        if key not in newest or _time_key(run) > _time_key(newest[key]):
            newest[key] = run
    grouped: dict[tuple[str, str], list[Run]] = {}
    for (config, _), run in sorted(newest.items(), key=lambda kv: (kv[0][0], _seed_sort(kv[0][1]))):
        grouped.setdefault(config, []).append(run)
    return grouped


def _seed_sort(seed: int | None) -> int:
    return -1 if seed is None else seed


def _time_key(run: Run) -> tuple[float, str]:
    when = created_at(run)
    return (when.timestamp() if when else float("-inf"), str(run.path))


def aggregate_seeds(rows: list[dict[str, Any]], newest: dict[str, Any]) -> dict[str, Any]:
    """One row for one experiment from its per-seed rows: the texts of the `newest` one, the mean
    of each number, the spread of the test accuracy and the interval over the test items (each
    item once, however many seeds answered it: see the module docstring)."""
    import numpy as np

    out = dict(newest)
    out["n_seeds"] = float(len(rows))
    out["seeds"] = ",".join(r["seeds"] for r in rows if r["seeds"] is not None) or None
    if len(rows) == 1:
        out["test_acc_std"] = None
    else:
        for name in _MEAN_OVER_SEEDS:
            values = [r[name] for r in rows if r[name] is not None]
            out[name] = float(np.mean(values)) if values else None
        accs = [r["test_acc"] for r in rows if r["test_acc"] is not None]
        out["test_acc_std"] = float(np.std(accs, ddof=1)) if len(accs) >= 2 else None
        # The seeds share their test items; should their counts differ, the fewest items bound the interval.
        out["n_test"] = min((r["n_test"] for r in rows if r["test_acc"] is not None), default=newest["n_test"])
        sources = {r["n_test_source"] for r in rows}
        out["n_test_source"] = sources.pop() if len(sources) == 1 else "mixed"
    out["test_acc_lo"], out["test_acc_hi"] = accuracy_interval(out["test_acc"], out["n_test"], pooled_sets(rows))
    return out


def pooled_sets(rows: list[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    """Per test set, the mean accuracy over the rows (seeds) and its items, each item once (the
    seeds answer the same items; the fewest bound the interval); {} unless every row has the
    same sets."""
    import numpy as np

    names = [tuple(r.get("_sets") or {}) for r in rows]
    if not names or not names[0] or any(n != names[0] for n in names):
        return {}
    return {s: (float(np.mean([r["_sets"][s][0] for r in rows])), min(r["_sets"][s][1] for r in rows)) for s in names[0]}


def accuracy_interval(acc: float | None, n: float, sets: dict[str, tuple[float, int]] | None = None
                      ) -> tuple[float | None, float | None]:
    """The 95% interval of a headline accuracy on `n` items: the Wilson interval, or, when the
    headline is the unweighted mean over several test sets ({set: (accuracy, items)}), the
    interval of that mean, not of one pooled proportion. (None, None) when there is no accuracy
    in [0, 1] to bound (a hand-edited file may hold anything; a wrong number gets no interval
    rather than a crash)."""
    if acc is None or not 0.0 <= acc <= 1.0:
        return None, None
    if sets and len(sets) > 1:
        return stats.mean_of_proportions_interval([a for a, _ in sets.values()], [k for _, k in sets.values()])
    return stats.wilson_interval(acc, int(n))


def by_task(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs grouped by their task, tasks in name order: runs of different tasks are never ranked
    against each other."""
    grouped: dict[str, list[Run]] = {}
    for run in runs:
        grouped.setdefault(task_name(run.result), []).append(run)
    return dict(sorted(grouped.items()))


def leaderboard(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per experiment and task (its newest successful main result, seeds aggregated)
    plus one row per failed or cancelled run; columns as in COLUMNS (without `pareto`, see
    `mark_pareto`). The best tier is decided within each task; rows are sorted by task, then by
    test accuracy."""
    import pandas as pd

    frames = [_task_leaderboard(group) for group in by_task(runs).values()]
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def _task_leaderboard(runs: Sequence[Run]) -> pd.DataFrame:
    """The leaderboard of runs of one task."""
    import pandas as pd

    grouped = newest_per_seed(runs)
    ranked_rows = []
    candidates: list[stats.Candidate | None] = []
    for group in grouped.values():
        rows = [run_row(r) for r in group]
        newest = rows[max(range(len(group)), key=lambda i: _time_key(group[i]))]
        row = aggregate_seeds(rows, newest)
        row.update(ranked=True, superseded=False)
        ranked_rows.append(row)
        candidates.append(_candidate(row, group))
    for row, (near, p, test) in zip(ranked_rows, stats.indistinguishable_from_best(candidates)):
        row.update(near_best=near, p_vs_best=p, best_test=test)

    newest_success = {exp: max(_time_key(r) for r in group) for exp, group in grouped.items()}
    failure_rows = []
    for run in runs:
        if is_ranked(run):
            continue
        row = run_row(run)
        row.update(ranked=False, n_seeds=1.0, test_acc_std=None, near_best=False, p_vs_best=None, best_test=None)
        row["test_acc_lo"], row["test_acc_hi"] = accuracy_interval(row["test_acc"], row["n_test"], row["_sets"])
        newest = newest_success.get(config_key(run))
        row["superseded"] = newest is not None and newest > _time_key(run)
        failure_rows.append(row)

    names = [c.name for c in COLUMNS if c.name != "pareto"]
    frame = pd.DataFrame([{n: r.get(n) for n in names} for r in ranked_rows + failure_rows], columns=names)
    for name in NUMERIC_COLUMNS:
        if name in frame:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    return sort_rows(frame, "test_acc")


def engine_mix_warning(frame: pd.DataFrame) -> str | None:
    """A warning when the ranked rows were evaluated by different engines, else None. Results
    without eval_engine_used predate the field and were generated by the static loop."""
    ranked = frame[frame["ranked"] == True]  # noqa: E712 - a pandas mask
    engines = ranked["eval_engine"].where(ranked["eval_engine"].notna(), "static (not recorded)")
    counts = engines.value_counts()
    if len({name.split(" ")[0] for name in counts.index}) < 2:
        return None
    listed = ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))
    return (f"warning: this leaderboard mixes evaluation engines ({listed}); their greedy outputs agree up "
            "to float rounding, but eval and test times are not comparable across engines")


def hardware_mix_warning(frame: pd.DataFrame) -> str | None:
    """A warning when the ranked rows were made on different hardware: time, throughput and
    memory depend on it (accuracy does only in the last bits). Results that predate the field
    ("unknown") do not count as a second machine."""
    ranked = frame[frame["ranked"] == True]  # noqa: E712 - a pandas mask
    counts = ranked["hardware"][ranked["hardware"] != "unknown"].value_counts()
    if len(counts) < 2:
        return None
    listed = ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))
    return (f"warning: this leaderboard mixes hardware ({listed}); time, tokens/s and memory columns are "
            "not comparable across machines")


def _candidate(row: dict[str, Any], group: list[Run]) -> stats.Candidate | None:
    """The best-tier input of a row: its accuracy, its number of test items and, when every seed
    has predictions on the same items, each item's share of seeds that answered it right."""
    if row["test_acc"] is None:
        return None
    return stats.Candidate(accuracy=row["test_acc"], n=int(row["n_test"]), per_item=item_means(group))


def item_means(group: list[Run]) -> dict[str, float] | None:
    """item_id -> share of the runs (the seeds of one row) that answered it right; None when a
    run has no usable predictions or the runs were tested on different items (then there is
    nothing to pair, and the unpaired test applies)."""
    try:
        per_run = [correct_by_item(run) for run in group]
    except UserError:
        return None
    if not per_run or any(c.keys() != per_run[0].keys() for c in per_run):
        return None
    return {item: sum(c[item] for c in per_run) / len(per_run) for item in per_run[0]}


# ---------------------------------------------------------------------------------------------
# Pareto front, filtering, sorting, choosing columns


def pareto_front(x: Sequence[float], y: Sequence[float], x_higher: bool, y_higher: bool) -> np.ndarray:
    """Which points no other point dominates (at least as good on both axes, better on one).
    Points with a missing coordinate are never on the front."""
    import numpy as np

    xs = np.asarray(x, dtype=float) * (1 if x_higher else -1)  # turn both into "higher is better"
    ys = np.asarray(y, dtype=float) * (1 if y_higher else -1)
    valid = ~(np.isnan(xs) | np.isnan(ys))
    front = np.zeros(len(xs), dtype=bool)
    for i in np.flatnonzero(valid):
        others = valid.copy()
        others[i] = False
        dominated = others & (xs >= xs[i]) & (ys >= ys[i]) & ((xs > xs[i]) | (ys > ys[i]))
        front[i] = not dominated.any()
    return front


def parse_pareto_axes(spec: str) -> tuple[Column, Column]:
    """"X,Y" -> the two columns; both must be numbers with a better direction."""
    names = [s.strip() for s in spec.split(",")]
    if len(names) != 2 or not all(names):
        raise UserError(f"--pareto takes two columns as X,Y, got {spec!r}")
    cols = tuple(column(n) for n in names)
    for col in cols:
        if col.direction is None:
            ranked = ", ".join(c.name for c in COLUMNS if c.direction)
            raise UserError(f"column {col.name!r} has no better direction; Pareto columns: {ranked}")
    return cols  # type: ignore[return-value]


def mark_pareto(frame: pd.DataFrame, x: Column, y: Column) -> pd.DataFrame:
    """Add the boolean `pareto` column: ranked rows on the front of (x, y); failure rows False."""
    import numpy as np

    out = frame.copy()
    front = np.zeros(len(out), dtype=bool)
    idx = np.flatnonzero(out["ranked"].to_numpy(dtype=bool))
    front[idx] = pareto_front(out[x.name].to_numpy()[idx], out[y.name].to_numpy()[idx],
                              x.direction == HIGHER, y.direction == HIGHER)
    out["pareto"] = front
    return out


def filter_rows(frame: pd.DataFrame, expression: str | None) -> pd.DataFrame:
    """Rows matching a filter expression (see `peftbench.analysis.filters`)."""
    import numpy as np

    if not expression:
        return frame
    compiled = compile_filter(expression, {n: k for n, k in FILTER_COLUMNS.items() if n in frame.columns})
    keep = [compiled.matches(row) for row in records(frame)]
    return frame[np.array(keep, dtype=bool)] if len(frame) else frame


def sort_rows(frame: pd.DataFrame, spec: str | None) -> pd.DataFrame:
    """Sort by "COL[:asc|:desc],..."; a bare column sorts best first by its direction (text and
    direction-less columns ascending). Missing values always go last; ties keep their order."""
    if not spec:
        return frame
    keys, ascending = [], []
    for part in (p.strip() for p in spec.split(",")):
        name, _, order = part.partition(":")
        col = column(name.strip())
        if col.name not in frame.columns:
            raise UserError(f"cannot sort by {col.name!r}: it is not in this table (use --pareto to add it)")
        order = order.strip().lower()
        if order not in ("", "asc", "desc"):
            raise UserError(f"sort order must be asc or desc, got {order!r} in {part!r}")
        keys.append(col.name)
        ascending.append(order == "asc" if order else col.direction != HIGHER)
    return frame.sort_values(keys, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def select_columns(frame: pd.DataFrame, spec: str | None, default: Sequence[str]) -> pd.DataFrame:
    """Columns by a comma-separated list (or "all"); without one the `default`, leaving out those
    that are empty in every row (no CPU memory in GPU runs, no flexible accuracy in old files)."""
    if spec and spec.strip() == "all":
        return frame
    if spec:
        names = [column(n.strip()).name for n in spec.split(",") if n.strip()]
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise UserError(f"column(s) {', '.join(missing)} not in this table (pareto needs --pareto X,Y)")
        return frame[names]
    names = [n for n in default if n in frame.columns and frame[n].notna().any()]
    return frame[names]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values, missing as None (for filters, JSON and the report)."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: _plain(v) for k, v in row.items()})
    return out


def _plain(value: Any) -> Any:
    import numpy as np
    import pandas as pd

    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


# ---------------------------------------------------------------------------------------------
# Values as people read them (the table of `compare` and the cells of the HTML report)


def format_value(col: Column, value: Any, row: dict[str, Any] | None = None) -> str:
    """A value as a person reads it: percentages, GiB, minutes, 9.2M parameters; "" when missing.
    The test accuracy also shows, from `row`, its seed spread and its 95% interval."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if col.name == "test_acc" and row is not None:
        return _accuracy_text(value, row)
    if col.fmt == "bool":
        return "yes" if value else ""
    if col.fmt == "pct":
        return _percent(value)
    if col.fmt == "bytes":
        return _bytes(value)
    if col.fmt == "seconds":
        return _duration(value)
    if col.fmt == "count":
        return _count(value)
    if col.fmt == "rate":
        return f"{value:,.0f}"
    if col.fmt == "pvalue":
        return "<0.001" if value < 0.001 else f"{value:.3f}"
    if col.fmt == "float":
        return f"{value:.4g}"
    return str(value)


def _accuracy_text(acc: float, row: dict[str, Any]) -> str:
    text = f"{acc * 100:.1f}"
    if row.get("test_acc_std") is not None:
        text += f" ±{row['test_acc_std'] * 100:.1f} (n={int(row['n_seeds'])})"
    if row.get("test_acc_lo") is not None and row.get("test_acc_hi") is not None:
        text += f" [{row['test_acc_lo'] * 100:.1f}, {row['test_acc_hi'] * 100:.1f}]"
    return text


def _percent(fraction: float) -> str:
    """One decimal from 1% up; below, three significant digits without an exponent, because the
    trainable share of a large model is often 0.0002% and one decimal would print 0.0%."""
    pct = fraction * 100
    if pct == 0 or abs(pct) >= 1:
        return f"{pct:.1f}%"
    return f"{pct:.{2 - math.floor(math.log10(abs(pct)))}f}%"


def _bytes(value: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _count(value: float) -> str:
    for suffix, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.0f}"
