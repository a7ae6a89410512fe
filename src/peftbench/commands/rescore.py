"""`peftbench rescore`: recompute the accuracies of finished runs from their saved predictions
with the current grader, without a model (and without importing torch)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench import tasks
from peftbench.record import results
from peftbench.commands.options import number_above
from peftbench.errors import ExitCode, UserError
from peftbench.fs import atomic_write_json
from peftbench.tasks.base import Task

HELP = "recompute accuracies from saved predictions with the current grader"
DESCRIPTION = """\
Recompute every accuracy of a result from the predictions saved beside it
(<base>.predictions.jsonl.gz) with the current grader of the result's task, and print old -> new
per metric: the test accuracies of the final metrics entry (every grade of the task, and per
test set), the valid accuracies of the last validation entry. No model is loaded.

Without --write nothing changes on disk. With --write the predictions rows (extracted answers
and correct flags) and the result (accuracies, predictions sha256, meta_info.grader_version)
are rewritten atomically; everything else in the result stays as it was."""

# (split of the predictions rows, the key that marks its metrics entry)
_SPLITS = (("test", results.M_TEST_ACC), ("valid", results.M_VALID_ACC))


def configure(parser) -> None:
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULT_JSON",
                        help="result files written by `peftbench run`")
    parser.add_argument("--write", action="store_true",
                        help="update the result and predictions files in place (default: only print)")
    parser.add_argument("--allow-weak-sandbox", action="store_true",
                        help="code task: run the saved programs even where no network isolation is available "
                             "(the predictions record the isolation used)")
    parser.add_argument("--grading-workers", type=number_above(int, 0), default=None, metavar="N",
                        help="code task: sandboxes grading at once (default: the CPUs peftbench may use)")


@dataclass
class MetricChange:
    metric: str
    entry_index: int | None  # position in train_info["metrics"]; None: the result has no entry
    old: float | None
    new: float | None  # None: the predictions hold no row of this split


@dataclass
class Rescore:
    result_path: Path
    raw: dict[str, Any]  # the result as read with json, to be written back with few changes
    task: Task  # the result's task, whose grader regrades it
    predictions_path: Path
    rows: list[dict[str, Any]]  # regraded rows
    rows_changed: int
    split_counts: dict[str, int]
    changes: list[MetricChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    record_stale: bool = False  # run_info.predictions is absent or names another sha256
    per_set: dict[str, Any] | None = None  # the final entry's new "test sets", None: the result has none

    @property
    def old_grader_version(self) -> str | None:
        return (self.raw.get(results.META_INFO) or {}).get(results.MI_GRADER_VERSION)

    @property
    def needs_write(self) -> bool:
        return (self.rows_changed > 0 or self.record_stale or self.old_grader_version != self.task.grader_version
                or any(c.new is not None and c.entry_index is not None and c.old != c.new
                       for c in self.changes))


def run(args) -> int:
    plans, problems = [], []
    for path in args.results:
        try:
            plans.append(rescore_file(path, {"allow_weak_sandbox": args.allow_weak_sandbox,
                                             "grading_workers": args.grading_workers}))
        except UserError as exc:
            problems.append(str(exc))
    if problems:  # nothing is written unless every file can be rescored
        raise UserError("cannot rescore:\n" + "\n".join(f"  - {p}" for p in problems))
    for plan in plans:
        for warning in plan.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(format_report(plan))
        if args.write:
            if plan.needs_write:
                write(plan)
                print("  written")
            else:
                print("  unchanged, nothing written")
    if not args.write:
        print("(dry run: pass --write to update the files)")
    return ExitCode.OK


def _load_raw(path: Path) -> tuple[dict[str, Any], str]:
    """(the raw object, which is what gets written back; the result's task name)."""
    if not path.is_file():
        raise UserError(f"{path}: no such result file")
    raw, result = results.load_raw(path)
    return raw, results.task_name(result)


def _predictions_file(path: Path, raw: dict[str, Any], warnings: list[str]) -> tuple[Path, bool]:
    """The predictions file of a result and whether the result's record of it is stale."""
    info = raw[results.RUN_INFO].get(results.RI_PREDICTIONS)
    pred_path = results.named_predictions_path(path, raw[results.RUN_INFO])
    if pred_path is not None:
        if not pred_path.is_file():
            raise UserError(f"{path}: its predictions file {pred_path} is missing; "
                            "without it the run cannot be rescored (rerun it)")
        changed = results.predictions_changed(path, raw[results.RUN_INFO])
        if changed:
            warnings.append(f"{changed}, rescoring it as it is now")
            return pred_path, True
        return pred_path, not info.get("sha256")
    conventional = results.predictions_path_for(path)
    if conventional.is_file():
        warnings.append(f"{path}: names no predictions file; using {conventional.name} beside it")
        return conventional, True
    raise UserError(f"{path}: the run saved no predictions (no run_info.predictions and no "
                    f"{conventional.name}), so there is nothing to rescore; rerun it")


def _read_rows(pred_path: Path) -> list[dict[str, Any]]:
    try:
        rows = results.read_predictions(pred_path)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{pred_path}: not a readable predictions file ({exc})") from exc
    for i, row in enumerate(rows):
        missing = [k for k in ("split", "generated", "reference") if not isinstance(row, dict) or k not in row]
        if missing:
            raise UserError(f"{pred_path}: row {i} lacks {', '.join(missing)}")
    return rows


def _last_entry_with(metrics: list[dict[str, Any]], key: str) -> int | None:
    for i in range(len(metrics) - 1, -1, -1):
        if isinstance(metrics[i], dict) and key in metrics[i]:
            return i
    return None


def rescore_file(path: Path, settings: dict[str, Any] | None = None) -> Rescore:
    """Regrade the predictions of one result with its task's grader; changes nothing on disk."""
    path = Path(path)
    raw, task_name = _load_raw(path)
    task = tasks.get(task_name)
    warnings: list[str] = []
    pred_path, record_stale = _predictions_file(path, raw, warnings)
    old_rows = _read_rows(pred_path)

    rows, rows_changed, task_rows = [], 0, []
    for row in old_rows:
        try:
            task_rows.append(task.row_from_prediction(row))
        except (KeyError, ValueError) as exc:
            raise UserError(f"{pred_path}: a {row['split']} row cannot be graded by task {task.name!r}: "
                            f"it lacks {exc}") from None
    graded = task.grade_batch([row["generated"] for row in old_rows], task_rows, settings or {})
    for row, fields in zip(old_rows, graded):
        new_row = {**row, **fields}
        rows_changed += any(row.get(name) != value for name, value in fields.items())
        rows.append(new_row)

    metrics = raw[results.TRAIN_INFO].get(results.TI_METRICS) or []
    changes, per_set = [], None
    for split, entry_key in _SPLITS:
        index = _last_entry_with(metrics, entry_key)
        split_rows = [r for r in rows if r["split"] == split]
        accuracies, sets = task.accuracies(split, split_rows)
        for metric, new in accuracies.items():
            old = metrics[index].get(metric) if index is not None else None
            if not split_rows:
                new = None
            if old is None and new is None:
                continue  # a split the run never evaluated
            changes.append(MetricChange(metric, index, old, new))
        if split == "test" and index is not None and isinstance(metrics[index].get(results.M_TEST_SETS), dict) and sets:
            per_set = sets
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["split"]] = counts.get(row["split"], 0) + 1
    return Rescore(path, raw, task, pred_path, rows, rows_changed, counts, changes, warnings, record_stale, per_set)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_report(plan: Rescore) -> str:
    counts = ", ".join(f"{n} {split}" for split, n in sorted(plan.split_counts.items())) or "no"
    lines = [f"{plan.result_path}: {counts} rows, {plan.rows_changed} regraded "
             f"(task {plan.task.name}, grader {plan.old_grader_version or 'unknown'} -> {plan.task.grader_version})"]
    width = max((len(c.metric) for c in plan.changes), default=0)
    for c in plan.changes:
        line = f"  {c.metric:<{width}}  {_fmt(c.old)} -> {_fmt(c.new)}"
        if c.new is None:
            line += "  (no rows of this split in the predictions; kept)"
        elif c.entry_index is None:
            line += "  (the result has no metrics entry for it; not written)"
        elif c.old is not None and c.old != c.new:
            line += f"  ({c.new - c.old:+.4f})"
        lines.append(line)
    return "\n".join(lines)


def write(plan: Rescore) -> None:
    """Rewrite the predictions rows, then the result that names their new sha256 (both atomic)."""
    sha256 = results.write_predictions(plan.predictions_path, plan.rows)
    raw = plan.raw
    metrics = raw[results.TRAIN_INFO].get(results.TI_METRICS) or []
    for c in plan.changes:
        if c.new is not None and c.entry_index is not None:
            metrics[c.entry_index][c.metric] = c.new
    if plan.per_set is not None:
        final = next(i for i in range(len(metrics) - 1, -1, -1)
                     if isinstance(metrics[i], dict) and results.M_TEST_ACC in metrics[i])
        metrics[final][results.M_TEST_SETS] = plan.per_set
    info = raw[results.RUN_INFO].get(results.RI_PREDICTIONS)
    if not isinstance(info, dict):
        info = raw[results.RUN_INFO][results.RI_PREDICTIONS] = {}
    info["file"] = plan.predictions_path.name
    info["sha256"] = sha256
    meta = raw.get(results.META_INFO)
    if not isinstance(meta, dict):
        meta = raw[results.META_INFO] = {}
    meta[results.MI_GRADER_VERSION] = plan.task.grader_version
    atomic_write_json(plan.result_path, raw)
