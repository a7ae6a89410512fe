"""`peftbench compare`: the leaderboard of a suite or of result files, as a table, Markdown, CSV
or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from peftbench import tasks
from peftbench.analysis import cross_task
from peftbench.analysis import leaderboard as compare
from peftbench.analysis.leaderboard import COLUMNS, by_task, format_value
from peftbench.analysis.texttable import format_table
from peftbench.commands.options import add_result_reading_options
from peftbench.errors import ExitCode, UserError, suggest

HELP = "leaderboard of results: accuracy with 95% intervals, cost, failures"
DESCRIPTION = """\
Show one row per experiment: its newest successful main result, or with several seeds the mean,
standard deviation and number of seeds. Failed and cancelled runs get a row each with their
status and error (never dropped; `superseded` marks those with a newer successful result).

Tasks: results of different tasks (run_info.task; files of schema version 1 are metamathqa) are
never ranked against each other. The table and Markdown formats print one leaderboard per task,
then, when there are several, the cross-task view: experiments as rows, tasks (and the sets of
a task with several test sets) as columns, each cell the accuracy with its interval and rank, and
who leads each column. --task NAME shows one task only. CSV and JSON hold every task's rows with
their `task` column.

What is read:
  SUITE folder (has results/ or cancelled_results/): results/ and cancelled_results/
               (temporary_results/ too with --include-temporary)
  other folder: every *.json in it            file: that result
  Default: the current folder. Result files of the original PEFT method comparison load too.
  A file that is not a readable result (truncated, a newer schema_version, an accuracy outside
  [0, 1], ...) is skipped with a warning on stderr naming it and the reason; --strict makes it an
  error (exit 2). A suite whose results are all in temporary_results/ needs --include-temporary.

Statistics:
  test acc [lo, hi]  95% Wilson score interval on n test items; n comes from the saved
                     predictions when present, else the result's per-set counts, else
                     train_config test_size, else GSM8K test's 1,319 (column n_test_source).
                     With seeds the item stays the unit: n items, not n x seeds (the seeds
                     answer the same items); see acc std too. A headline that is the mean over
                     several test sets gets the interval of that mean (docs/comparing.md).
  ~best              not significantly worse than the best (5% level): exact McNemar on the
                     shared test items when both have predictions (several seeds: the sign
                     test on each item's share of seeds right), else two-proportion z-test.
                     No multiple-comparison correction: a screening mark.
  --set              a run whose --set overrides changed the config (in temporary_results/)
                     is a row of its own, its overrides in this column.

Filter language (--filter): Python's comparison syntax, parsed to a tree and never run:
  family == "LoRA" and test_acc > 0.4      "rank32" in experiment   (substring test)
  family in ("LoRA", "IA3")                not near_best      error != null
  Operators: == != < <= > >= (chains: 0.3 < test_acc < 0.5) and or not in, not in ( ).
  Missing values equal only null. Accuracies are fractions (0.4), memory in bytes, times in
  seconds. At most 2,000 characters and 32 levels of nesting.

Columns: `peftbench compare --list-columns` lists names, directions and meanings.
Examples:
  peftbench compare ../shared/data/peft-results --pareto mem_max,test_acc --filter pareto
  peftbench compare . --sort train_time:asc --columns experiment,test_acc,train_time
  peftbench compare . --filter "tuned and tune_steps >= 500"   # rows chosen by `peftbench tune`
"""

# Columns of the human-readable formats when --columns is not given; empty ones are left out.
DEFAULT_COLUMNS = (
    "family", "variant", "experiment", "overrides", "test_acc", "near_best", "test_acc_flex", "forgetting",
    "mem_max", "mem_avg", "mem_99", "cpu_rss", "train_time", "total_time", "tokens_per_s",
    "file_size", "trainable_params", "trainable_pct", "tune_budget", "pareto", "status", "error",
)
FORMATS = ("table", "markdown", "csv", "json")
ERROR_WIDTH = 60  # characters of an error message shown in a table; csv/json keep all of it


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", default=["."], metavar="SUITE_OR_RESULT",
                        help="suite folders, folders of result files, or result files (default: .)")
    parser.add_argument("--sort", default="test_acc",
                        help="COL[:asc|:desc][,COL...]; a bare column sorts best first (default: test_acc)")
    parser.add_argument("--columns", help="comma-separated columns to show, or 'all'")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--filter", metavar="EXPR", help='keep rows matching EXPR, e.g. \'family == "LoRA" and test_acc > 0.4\'')
    parser.add_argument("--pareto", metavar="X,Y",
                        help="mark the rows on the Pareto front of two columns (column `pareto`), e.g. mem_max,test_acc")
    parser.add_argument("--task", metavar="NAME",
                        help="show only the results of this task (e.g. metamathqa, commonsense); default: every task found")
    add_result_reading_options(parser)
    parser.add_argument("--list-columns", action="store_true", help="list the columns and exit")


def run(args: argparse.Namespace) -> int:
    if args.list_columns:
        print(list_columns())
        return ExitCode.OK
    runs = compare.load_runs(args.paths, include_temporary=args.include_temporary, strict=args.strict)
    runs = select_task(runs, args.task)
    board = compare.leaderboard(runs)  # before --filter: the cross-task view shows every row
    frame = board
    for warning in (compare.engine_mix_warning(frame), compare.hardware_mix_warning(frame)):
        if warning:
            print(warning, file=sys.stderr)
    if args.pareto:
        frame = compare.mark_pareto(frame, *compare.parse_pareto_axes(args.pareto))
    frame = compare.filter_rows(frame, args.filter)
    frame = compare.sort_rows(frame, args.sort)
    machine = args.format in ("csv", "json")
    if machine:
        shown = compare.select_columns(frame, args.columns, default=[c.name for c in compare.COLUMNS])
        sys.stdout.write(render(shown, frame, args.format))
        return ExitCode.OK
    task_names = list(dict.fromkeys(frame["task"])) if len(frame) else []
    for task in task_names:
        part = frame[frame["task"] == task].reset_index(drop=True)
        shown = compare.select_columns(part, args.columns, default=DEFAULT_COLUMNS)
        if len(task_names) > 1:
            sys.stdout.write(("\n" if task != task_names[0] else "") + _task_heading(task, args.format))
        sys.stdout.write(render(shown, part, args.format))
    if not task_names:
        sys.stdout.write(render(frame, frame, args.format))
    if len(task_names) > 1:
        sys.stdout.write("\n" + cross_task.render_text(cross_task.build(runs, board)))
    return ExitCode.OK


def select_task(runs, task: str | None):
    """The runs of `task` (all when None); a task no result has is bad input, with the tasks found."""
    if task is None:
        return runs
    grouped = by_task(runs)
    if task not in grouped:
        raise UserError(f"--task: no result of task {task!r} here;{suggest(task, grouped)}")
    return grouped[task]


def _task_heading(task: str, fmt: str) -> str:
    description = tasks.describe(task)
    return f"## task {task}: {description}\n\n" if fmt == "markdown" else f"task {task}: {description}\n"


def list_columns() -> str:
    width = max(len(c.name) for c in COLUMNS)
    lines = [f"{'column':<{width}}  better   meaning"]
    for c in COLUMNS:
        lines.append(f"{c.name:<{width}}  {c.direction or '':<7}  {c.help}")
    return "\n".join(lines)


def render(shown, full, fmt: str) -> str:
    """The selected columns in `fmt`. `full` holds every column of the same rows: the human
    formats read the interval and seed spread from it to show them beside the accuracy."""
    if fmt == "csv":
        return _whole_counts(shown).to_csv(index=False)
    if fmt == "json":
        return json.dumps(compare.records(_whole_counts(shown)), indent=2, ensure_ascii=False) + "\n"
    if not len(full):
        return "no rows match.\n" if fmt == "table" else ""
    columns = [compare.column(n) for n in shown.columns]
    header = [_header(c) for c in columns]
    body = [[_cell(c, row) for c in columns] for row in compare.records(full)]
    if fmt == "markdown":
        return _markdown(header, body)
    return format_table(header, body, right=[c.kind == "number" for c in columns], rule=True) + "\n" + _legend(full)


def _whole_counts(frame):
    """Count columns (items, seeds, parameters) as integers where every value is whole: the
    leaderboard keeps all numbers as floats (a mean over seeds may not be whole), but a reader of
    csv or json must see 6, not 6.0."""
    out = frame.copy()
    for name in out.columns:
        values = out[name].dropna()
        if compare.column(name).fmt == "count" and (values == values.round()).all():
            out[name] = out[name].astype("Int64")
    return out


def _header(col) -> str:
    return "test acc % [95% CI]" if col.name == "test_acc" else col.label


def _cell(col, row: dict[str, Any]) -> str:
    text = " ".join(format_value(col, row[col.name], row).split())  # one line: errors hold newlines
    if col.name == "error" and len(text) > ERROR_WIDTH:
        text = text[: ERROR_WIDTH - 1] + "…"
    return text


def _markdown(header: list[str], body: list[list[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _legend(full) -> str:
    """What the table alone does not say: where n came from, what ~best means, the failures."""
    sources = full["n_test_source"].value_counts().to_dict()
    notes = [
        "95% CI: Wilson interval on n test items, n from " +
        ", ".join(f"{_N_SOURCES.get(k, k)} ({v} rows)" for k, v in sorted(sources.items())) + ".",
        "~best: not significantly worse than the best at the 5% level (paired predictions: McNemar, or the sign test over "
        "items for several seeds; else z-test).",
    ]
    failures = int((~full["ranked"].astype(bool)).sum())
    if failures:
        notes.append(f"{failures} run(s) without a successful result (failed, cancelled, no status) listed with their status and error.")
    return "\n" + "\n".join(notes) + "\n"


_N_SOURCES = {"predictions": "saved predictions", "test_size": "train_config test_size",
              "gsm8k": "GSM8K test size 1,319", "mixed": "mixed sources"}
