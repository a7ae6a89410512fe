"""`peftbench status [SUITE_OR_EXPERIMENT_DIR...]`: what `run-all` would do, and why, without running.

The table printing here is shared with `run-all`, so that both commands show the same plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from peftbench.analysis.texttable import format_table
from peftbench.commands.options import add_overrides_option, add_seed_options, seeds_of
from peftbench.errors import ExitCode, ResultError
from peftbench.experiment import planning
from peftbench.experiment.config import parse_overrides
from peftbench.record import results as R
from peftbench.terminal import short_path

HELP = "show which experiments are up to date and why the others would run"
DESCRIPTION = """\
For every experiment (and seed) below the given folders, say whether its newest result is up to
date, and if not, why `peftbench run-all` would run it: never run, config changed, data or model
changed, code or library changed, last attempt failed or cancelled, or running right now.
The newest relevant result and its test accuracy are shown beside it. Nothing is run; the only
file written is the plan cache <suite>/.peftbench/plan-cache.json (resolved configs by file
content: a second status with nothing changed imports neither peft nor torch). An experiment
whose run key cannot be computed (e.g. the demo's model package not installed) says why on its
own line; the others are still shown.
A main result that cannot be read (truncated, a newer schema_version, ...) shows as
"unreadable result (<reason>)" and is left alone: `run-all --force` moves it aside and runs.

Exit status: 0, or 2 when an experiment config is invalid (as for `run-all --dry-run`).

examples:
  peftbench status                 # the suite in the current folder
  peftbench status demo/ --seeds 0,1,2
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="*", default=["."], metavar="SUITE_OR_EXPERIMENT_DIR",
                        help="suite, experiments folder, method folder or experiment (default: .)")
    add_seed_options(parser, "show the state of runs")
    add_overrides_option(parser)


def run(args) -> int:
    items = planning.plan(args.targets, seeds_of(args), force=False, overrides=parse_overrides(args.overrides))
    print(format_plan(items, with_results=True))
    print(plan_counts(items))
    return ExitCode.BAD_INPUT if any(i.action == "invalid" for i in items) else ExitCode.OK


# ----------------------------------------------------------------------------------------------
# tables shared with run-all

ACTION_WORDS = {"run": "will run", "skip": "skip", "invalid": "INVALID"}


def suite_column(items) -> list[str] | None:
    """The suite of each item, when the items come from more than one suite (the demo's two
    suites name their experiments alike); None for one suite."""
    suites = [short_path(item.path.parents[2]) for item in items]
    return suites if len(set(suites)) > 1 else None


def format_plan(items, with_results: bool = False) -> str:
    """One line per experiment and seed: what run-all does with it and why (with the suite of
    each line when there are several)."""
    suites = suite_column(items)
    header = (["SUITE"] if suites else []) + ["EXPERIMENT", "SEED", "PLAN"]
    if with_results:
        header += ["TEST ACC", "NEWEST RESULT"]
    header.append("REASON")
    rows = []
    for i, item in enumerate(items):
        row = ([suites[i]] if suites else []) + [item.experiment, str(item.seed), ACTION_WORDS.get(item.action, item.action)]
        if with_results:
            row += [_test_accuracy(item.result), short_path(item.result) if item.result else "-"]
        row.append(item.reason)
        rows.append(row)
    return format_table(header, rows, pad_last=False)


def plan_counts(items) -> str:
    counts = {a: sum(1 for i in items if i.action == a) for a in ("run", "skip", "invalid")}
    text = f"{len(items)} experiment run(s): {counts['run']} to run, {counts['skip']} to skip"
    return text + (f", {counts['invalid']} invalid" if counts["invalid"] else "")


def _test_accuracy(path: Path | None) -> str:
    if path is None:
        return "-"

    try:
        result = R.load(path)
    except ResultError:
        return "?"  # the REASON column says why
    status = result[R.TRAIN_INFO].get(R.TI_STATUS)
    if status != R.Status.SUCCESS.value:
        return status or "?"
    accuracy = R.final_metrics(result).get(R.M_TEST_ACC)
    return "-" if accuracy is None else f"{100 * accuracy:.1f}%"
