"""`peftbench diff A.json B.json`: a paired comparison of two runs on the same test items."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from peftbench.analysis import leaderboard as compare
from peftbench.errors import ExitCode, UserError
from peftbench.record.hardware import hardware_differences, hardware_label
from peftbench.record.results import RUN_INFO, predictions_changed, task_name
from peftbench.scoring import stats
from peftbench.terminal import signed_points

HELP = "paired comparison of two results on the same test items (bootstrap CI, McNemar)"
DESCRIPTION = """\
Compare two runs item by item, from the predictions saved beside each result
(<result>.predictions.jsonl.gz, rows with split "test", matched by item_id):

  - both accuracies on the shared items,
  - the difference A - B with a 95% paired-bootstrap interval (items resampled with
    replacement; seeded, so the same inputs always give the same interval),
  - the exact McNemar p-value (two-sided, from the items exactly one run got right),
  - how many items only A, only B, both or neither got right.

Refuses results without predictions, two results of different tasks, and two results tested on
different items; warns when a predictions file is not the one its run wrote (its sha256 differs
from the recorded one). The grading is the task's headline grade (GSM8K: strict; --flexible: the
flexible one).
"""


# Resamples cost 32 bytes each (three multinomial counts and a mean, stats.paired_bootstrap):
# 1e6 take 32 MB; 1e7 took 320 MB and 1e9 would take 32 GB. The percentile bounds' Monte Carlo
# error at 1e6 resamples is ~0.01 points, far below any interval's width.
MAX_BOOTSTRAP = 1_000_000


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A.json", help="first result file")
    parser.add_argument("b", metavar="B.json", help="second result file")
    parser.add_argument("--flexible", action="store_true",
                        help="GSM8K-graded tasks: grade with flexible answer extraction instead of strict")
    parser.add_argument("--bootstrap", type=int, default=10_000, metavar="N",
                        help=f"bootstrap resamples, 100 to {MAX_BOOTSTRAP:,} (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.bootstrap < 100:
        raise UserError(f"--bootstrap must be at least 100 resamples for a 95% interval, got {args.bootstrap}")
    if args.bootstrap > MAX_BOOTSTRAP:
        raise UserError(f"--bootstrap {args.bootstrap:,} cannot be meant: at most {MAX_BOOTSTRAP:,} resamples "
                        "(memory grows with them; beyond 1e6 the interval's bounds move by far less than 0.1 point)")
    runs = []
    for raw in (args.a, args.b):
        path = Path(raw)
        if not path.is_file():
            raise UserError(f"{path}: no such result file")
        runs.append(compare.read_run(path))
        changed = predictions_changed(path, runs[-1].result[RUN_INFO])
        if changed:  # as rescore says it: the items compared are not those the run graded
            print(f"warning: {changed}; comparing it as it is now", file=sys.stderr)
    task_names = [task_name(r.result) for r in runs]
    if task_names[0] != task_names[1]:
        raise UserError(f"{runs[0].path.name} is a result of task {task_names[0]!r} and {runs[1].path.name} of task "
                        f"{task_names[1]!r}: a paired comparison needs two runs of the same task on the same items")
    field = compare.headline_field(runs[0])
    if args.flexible:
        if field != "correct_strict":
            raise UserError(f"--flexible: task {task_names[0]!r} has no flexible grade (its grade: {field[len('correct_'):]})")
        field = "correct_flexible"
    _, a, b = compare.paired_correctness(runs[0], runs[1], field)
    result = stats.compare_paired(a, b, n_bootstrap=args.bootstrap, seed=args.seed)
    names = [compare.experiment_name(r) for r in runs]
    system = [r.result.get("meta_info", {}).get("system_info") for r in runs]
    machines = [hardware_label(s) for s in system]
    if args.format == "json":
        out = {"a": {"experiment": names[0], "path": str(runs[0].path), "hardware": machines[0]},
               "b": {"experiment": names[1], "path": str(runs[1].path), "hardware": machines[1]},
               "grading": "flexible" if args.flexible else "strict", **dataclasses.asdict(result)}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(render_text(result, names, [str(r.path) for r in runs], args.flexible))
        # Another machine changes the last bits of every number (and all timings): say so.
        differences = hardware_differences(*system)
        sys.stdout.write(f"hardware      A {machines[0]}   B {machines[1]}"
                         + (f" (differ: {'; '.join(differences)})" if differences else "") + "\n")
    return ExitCode.OK


def render_text(r, names: list[str], paths: list[str], flexible: bool) -> str:
    grading = "flexible" if flexible else "strict"
    verdict = "significant" if r.p_mcnemar < 0.05 else "not significant"
    return "\n".join([
        f"A: {names[0]}  ({paths[0]})",
        f"B: {names[1]}  ({paths[1]})",
        f"test items: {r.n} shared (matched by item_id), {grading} grading",
        f"accuracy      A {r.acc_a * 100:.1f}%   B {r.acc_b * 100:.1f}%",
        f"A - B         {signed_points(r.diff)} points, 95% CI [{signed_points(r.diff_lo)}, {signed_points(r.diff_hi)}]"
        f" (paired bootstrap, {r.n_bootstrap:,} resamples, seed {r.seed})",
        f"only A right  {r.only_a}",
        f"only B right  {r.only_b}",
        f"both right    {r.both}",
        f"neither       {r.neither}",
        f"McNemar exact p = {r.p_mcnemar:.4g} ({verdict} at the 5% level)",
    ]) + "\n"
