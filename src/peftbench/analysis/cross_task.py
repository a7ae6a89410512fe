"""The cross-task view: does a method's ranking hold from one task to another?

Rows are experiments (`<method>/<name>`: suites that name the same configuration the same way line
up, as the demo's two suites do), columns are tasks, and for a task with several test sets
(commonsense) each set after the task's headline. A cell is the test accuracy with its 95%
interval and the experiment's rank in that column (1 = best; equal accuracies share a rank);
`leaders` says which experiment leads each column. Only ranked rows (successful main results,
seeds aggregated as on the leaderboard, without --set overrides) take part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from peftbench import tasks
from peftbench.analysis import leaderboard as lb
from peftbench.analysis.texttable import format_table


@dataclass(frozen=True)
class Cell:
    accuracy: float
    lo: float | None
    hi: float | None
    rank: int = 0


@dataclass
class CrossTask:
    columns: list[tuple[str, str | None]]  # (task, None) for a task's headline, (task, set) for a set
    rows: dict[str, dict[tuple[str, str | None], Cell]] = field(default_factory=dict)  # experiment -> cells
    labels: dict[str, str] = field(default_factory=dict)  # experiment -> "family / variant"

    @property
    def tasks(self) -> list[str]:
        return [t for t, s in self.columns if s is None]

    def leaders(self) -> dict[tuple[str, str | None], list[str]]:
        """Per column, the experiment(s) ranked first."""
        return {col: sorted(e for e, cells in self.rows.items() if col in cells and cells[col].rank == 1)
                for col in self.columns}


def column_label(column: tuple[str, str | None]) -> str:
    task, test_set = column
    return f"{task}: {test_set}" if test_set else task


def build(runs: Sequence[lb.Run], frame=None) -> CrossTask:
    """The cross-task view of `runs` (any mix of tasks and suites); `frame` is their leaderboard
    when the caller has it already (`leaderboard.leaderboard(runs)`)."""
    frame = lb.leaderboard(runs) if frame is None else frame
    records = lb.records(frame)
    view = CrossTask(columns=[])
    for task, group in lb.by_task(runs).items():
        # plain experiments only: a --set run is another config, not the experiment
        ranked = [r for r in records if r["task"] == task and r.get("ranked") and r.get("test_acc") is not None
                  and not r.get("overrides")]
        sets_by_experiment = {experiment: lb.pooled_sets([lb.run_row(r) for r in seeds])
                              for (experiment, overrides), seeds in lb.newest_per_seed(group).items() if not overrides}
        set_names = list(dict.fromkeys(s for sets in sets_by_experiment.values() if len(sets) > 1 for s in sets))
        view.columns.append((task, None))
        view.columns.extend((task, s) for s in set_names)
        for row in ranked:
            cells = view.rows.setdefault(row["experiment"], {})
            view.labels.setdefault(row["experiment"], _label(row))
            cells[(task, None)] = Cell(row["test_acc"], row.get("test_acc_lo"), row.get("test_acc_hi"))
            for set_name, (acc, n) in sets_by_experiment.get(row["experiment"], {}).items():
                if set_name in set_names:
                    cells[(task, set_name)] = Cell(acc, *lb.accuracy_interval(acc, n))
    for col in view.columns:
        _rank(view, col)
    return view


def _label(row: dict[str, Any]) -> str:
    family, variant = row.get("family") or "", row.get("variant") or ""
    return family if not variant or variant == family else f"{family} / {variant}"


def _rank(view: CrossTask, column: tuple[str, str | None]) -> None:
    """Competition ranking (1, 2, 2, 4) by accuracy, best first."""
    present = [(e, cells[column]) for e, cells in view.rows.items() if column in cells]
    ordered = sorted(present, key=lambda ec: -ec[1].accuracy)
    for experiment, cell in present:
        rank = 1 + sum(1 for _, other in ordered if other.accuracy > cell.accuracy)
        view.rows[experiment][column] = Cell(cell.accuracy, cell.lo, cell.hi, rank)


def ordered(view: CrossTask) -> list[str]:
    """The experiments by mean rank over the tasks (`mean_rank`), then by name."""
    return sorted(view.rows, key=lambda e: (mean_rank(view, e), e))


def to_records(view: CrossTask) -> list[dict[str, Any]]:
    """One dict per experiment, in `ordered` order: its label, mean rank and, per column,
    accuracy, interval and rank (JSON)."""
    out = []
    for experiment in ordered(view):
        cells = view.rows[experiment]
        record: dict[str, Any] = {"experiment": experiment, "method": view.labels.get(experiment),
                                  "mean_rank": mean_rank(view, experiment)}
        for col in view.columns:
            cell = cells.get(col)
            record[column_label(col)] = None if cell is None else {
                "accuracy": cell.accuracy, "lo": cell.lo, "hi": cell.hi, "rank": cell.rank}
        out.append(record)
    return out


def render_text(view: CrossTask) -> str:
    """The view as an aligned table, then one line per column saying who leads it."""
    if not view.rows:
        return "cross-task view: no successful results to compare.\n"
    order = ordered(view)
    header = ["experiment", "method"] + [column_label(c) for c in view.columns] + ["mean rank"]
    body = []
    for experiment in order:
        cells = view.rows[experiment]
        body.append([experiment, view.labels.get(experiment, "")]
                    + [_cell_text(cells.get(c)) for c in view.columns] + [f"{mean_rank(view, experiment):.1f}"])
    table = format_table(header, body, right=[False, False] + [True] * (len(view.columns) + 1), rule=True)
    leads = [f"  {column_label(c)}: {', '.join(names) or 'none'}" for c, names in view.leaders().items()]
    descriptions = [f"  {t}: {tasks.describe(t)}" for t in view.tasks]
    return ("cross-task view: test accuracy % [95% CI] #rank within the column (1 = best)\n" + table + "\n"
            + "leads:\n" + "\n".join(leads) + "\n" + "tasks:\n" + "\n".join(descriptions) + "\n")


def mean_rank(view: CrossTask, experiment: str) -> float:
    """Mean rank over the tasks' headline columns the experiment has (sets are not counted twice);
    a task it was not run on counts as last of that column plus one."""
    ranks = []
    for task in view.tasks:
        cell = view.rows[experiment].get((task, None))
        present = sum(1 for cells in view.rows.values() if (task, None) in cells)
        ranks.append(cell.rank if cell is not None else present + 1)
    return sum(ranks) / len(ranks) if ranks else 0.0


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    interval = "" if cell.lo is None or cell.hi is None else f" [{100 * cell.lo:.1f}, {100 * cell.hi:.1f}]"
    return f"{100 * cell.accuracy:.1f}{interval} #{cell.rank}"
