"""Which leaderboard rows were tuned by `peftbench tune`, and with what budget.

A row is tuned when its experiment is the `tuned_experiment` of a tuning record beside the
results it was read from: `results/tuning/*.tuning.json` of the suite (for a result in
`results/`, `temporary_results/` or `cancelled_results/`), or `tuning/` beside a folder of result
files. The record says the budget (trials x steps, validation items, sampler, seconds) and holds
every trial, which the HTML report draws as validation accuracy per trial."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from peftbench.experiment import tuning as T
from peftbench.experiment.suite import RESULTS


@functools.lru_cache(maxsize=64)
def _records_in(folder: str, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    """(tuned experiment, record path) of every readable record in `folder`; unreadable files
    are not records and are left out (the leaderboard must load whatever lies beside it).
    Cached per folder and folder mtime (records are written by rename, which changes it): a
    leaderboard of hundreds of rows reads each record once."""
    out = []
    for path in sorted(Path(folder).glob(f"*{T.RECORD_SUFFIX}")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("kind") == T.RECORD_KIND and isinstance(data.get("tuned_experiment"), str):
            out.append((data["tuned_experiment"], str(path)))
    return tuple(out)


def record_for(result_path: str | Path, experiment: str) -> dict[str, Any] | None:
    """The tuning record that names `experiment` as its tuned experiment, near `result_path`."""
    folder = Path(result_path).parent
    for candidate in (folder / T.TUNING_DIR, folder.parent / RESULTS / T.TUNING_DIR):
        if candidate.is_dir():
            for tuned, path in _records_in(str(candidate.resolve()), candidate.stat().st_mtime_ns):
                if tuned == experiment:
                    return json.loads(Path(path).read_text(encoding="utf-8"))
    return None


def row_fields(result_path: str | Path, experiment: str) -> dict[str, Any]:
    """The leaderboard's tuning columns for one run: tuned, tune_trials, tune_steps, tune_budget."""
    record = record_for(result_path, experiment)
    if record is None:
        return {"tuned": False, "tune_trials": None, "tune_steps": None, "tune_budget": None}
    budget = record.get("budget") or {}
    return {"tuned": True, "tune_trials": _number(budget.get("trials")), "tune_steps": _number(budget.get("steps_per_trial")),
            "tune_budget": T.budget_summary(record)}


def trial_points(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The trials of a record as the report plots them: label, validation accuracy (None for a
    failed or cancelled trial: no score), status, and whether it is the choice."""
    chosen = (record.get("choice") or {}).get("run_key")
    points = []
    for t in record.get("trials") or []:
        overrides = t.get("overrides") or {}
        points.append({"label": ", ".join(f"{k.rpartition('.')[2]}={v}" for k, v in overrides.items()),
                       "valid_acc": _number(t.get("valid_accuracy")) if t.get("status") == T.SUCCESS else None,
                       "status": t.get("status"), "chosen": t.get("run_key") == chosen})
    return points


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
