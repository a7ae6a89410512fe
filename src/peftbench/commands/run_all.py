"""`peftbench run-all [SUITE_OR_EXPERIMENT_DIR...]`: run every experiment that is not up to date,
one fresh process each, and end with a summary.

What is up to date is decided by `planning.plan` (the same table `peftbench status` prints); this
module only starts the runs, watches them and sums up."""

from __future__ import annotations

import argparse

from peftbench.analysis.texttable import format_table
from peftbench.commands.options import add_common_run_options, number_above, seeds_of
from peftbench.commands.status import format_plan, plan_counts, suite_column
from peftbench.errors import ExitCode, UserError
from peftbench.experiment import executors, planning
from peftbench.experiment.config import parse_overrides
from peftbench.experiment.executors import EXECUTORS, RAN, Outcome, Outcomes, RunItem, Settings
from peftbench.experiment.executors.ray import CONNECT_TIMEOUT_S

HELP = "run every experiment that is not up to date, each in a fresh process, then summarise"
DESCRIPTION = """\
Find every experiment below the given folders (default: the suite in the current folder), decide
for each one and each seed whether an up-to-date result exists, and run the others one after
another, each in a fresh `peftbench run` process (so that memory statistics start clean). With
--executor ray each run is a Ray task instead: one per GPU of this machine or of a Ray cluster,
with the results written here, into the suite's folders, as a local run would.

A result is up to date when its run key matches: same configs, seed, data, model, training code
and library versions. Anything else is run again, and the plan says why: never run, config
changed, data/model changed, code changed, library changed, last attempt failed or cancelled.
A failed run does not stop the others; an invalid config is reported and skipped. Two run-all
processes on one suite share the work: just before each run, and again by the run itself after
taking the experiment's lock, the experiment is checked to be still stale and not running.

Exit status: 0 every run succeeded (or nothing needed running), 1 a run failed or was cancelled
from outside, 2 an experiment config is invalid (the others still run), 130 cancelled (Ctrl+C or
SIGTERM: the running experiment records itself as cancelled and the summary is still printed).

examples:
  peftbench run-all                        # the suite in the current folder
  peftbench run-all demo/ --dry-run        # the plan, with the reason for each line
  peftbench run-all experiments/lora/ --seeds 0,1,2
  peftbench run-all demo/ --force --set max_steps=20
  peftbench run-all --executor ray                     # a fresh Ray instance here: one run per GPU
  peftbench run-all --executor ray --address auto      # join a running Ray cluster (docs/cluster.md)
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="*", default=["."], metavar="SUITE_OR_EXPERIMENT_DIR",
                        help="suite, experiments folder, method folder or experiment (default: .)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan with the reason for each line; run nothing")
    parser.add_argument("--force", action="store_true",
                        help="also rerun experiments whose result is up to date, and those whose main result is "
                             "unreadable (the old file is moved aside to <name>.json.unreadable-<time>, never deleted)")
    parser.add_argument("-v", "--verbose", action="store_true", help="pass -v to every run")
    parser.add_argument("--keep-adapters", action="store_true",
                        help="keep each trained adapter in its temporary folder (default: delete it after the "
                             "run; a suite of 70 experiments would otherwise leave gigabytes in the temp folder)")
    add_common_run_options(parser)
    add_executor_options(parser)


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """Where the runs go: one after another here (local), or as Ray tasks (docs/cluster.md)."""
    group = parser.add_argument_group("executor", "where the runs go (see docs/cluster.md)")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: one run after another on this machine (default); ray: one Ray task per run, "
                            "over every GPU of this machine or of a Ray cluster (needs pip install 'peftbench[ray]')")
    group.add_argument("--address", help="with --executor ray: join this running Ray cluster: auto (the one "
                                         "RAY_ADDRESS or the last `ray start` names), HOST:6379 or ray://HOST:10001; "
                                         f"an address that does not answer within {CONNECT_TIMEOUT_S} s is refused "
                                         "(exit 2). Default: "
                                         "start a fresh Ray instance on this machine and stop it at the end, never "
                                         "joining a cluster already running")
    group.add_argument("--gpus-per-run", type=number_above(float, 0, inclusive=True), metavar="N",
                       help="with --executor ray: GPUs each run reserves (default: 1 when the cluster has GPUs, else 0; "
                            "never two runs on one GPU, so memory figures stay clean)")
    group.add_argument("--cpus-per-run", type=number_above(float, 0), default=1.0, metavar="N",
                       help="with --executor ray: CPUs each run reserves (default: 1)")
    group.add_argument("--max-retries", type=number_above(int, 0, inclusive=True), default=1, metavar="N",
                       help="with --executor ray: start a run again up to N times when its node or worker process "
                            "is lost (default: 1); a run that fails by itself is never retried")


def settings_of(args) -> Settings:
    """The executor settings of run-all's command line. Ray options without --executor ray are
    bad input: silently ignoring --address would run a cluster's worth of runs on this machine."""
    ray_only = {"--address": args.address, "--gpus-per-run": args.gpus_per_run,
                "--cpus-per-run": args.cpus_per_run != 1.0 or None, "--max-retries": args.max_retries != 1 or None}
    given = [name for name, value in ray_only.items() if value is not None]
    if args.executor != "ray" and given:
        raise UserError(f"{', '.join(given)} only apply to --executor ray")
    return Settings(executor=args.executor, force=args.force, resume=args.resume, keep_checkpoint=args.keep_checkpoint,
                    progress=args.progress, verbose=args.verbose, keep_adapters=args.keep_adapters,
                    address=args.address, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                    max_retries=args.max_retries)


def run(args) -> int:
    settings_of(args)  # bad executor options are reported before anything is planned
    items = planning.plan(args.targets, seeds_of(args), force=args.force, overrides=parse_overrides(args.overrides))
    print(format_plan(items))
    print(plan_counts(items), flush=True)
    if args.dry_run:
        return ExitCode.BAD_INPUT if any(i.action == "invalid" for i in items) else ExitCode.OK
    if not any(i.action == "run" for i in items):
        print("nothing to run: see the reason on each line above")
    outcomes, interrupted = _run_plan(items, args)
    print()
    print(format_summary(outcomes))
    return exit_status(outcomes, interrupted)


def _run_plan(items, args) -> tuple[list[Outcome], bool]:
    """Hand the plan's `run` lines to the executor; the other lines are skipped or invalid as
    planned. Returns the outcomes in plan order and whether run-all was cancelled."""
    to_run = [RunItem(i.path, i.seed, tuple(args.overrides), i.experiment, i.reason) for i in items if i.action == "run"]
    done = executors.execute(to_run, settings_of(args)) if to_run else Outcomes()
    ran = iter(done)
    outcomes = []
    for item in items:
        if item.action == "run":
            outcomes.append(next(ran))
        else:
            word = "invalid" if item.action == "invalid" else "skipped"
            outcomes.append(Outcome(RunItem(item.path, item.seed, (), item.experiment), word, item.reason))
    return outcomes, done.interrupted


def exit_status(outcomes: list[Outcome], interrupted: bool) -> int:
    """130 cancelled; else 2 when a config is invalid; else 1 when a run did not succeed; else 0."""
    if interrupted:
        return ExitCode.CANCELLED
    words = {o.status for o in outcomes}
    if "invalid" in words:
        return ExitCode.BAD_INPUT
    return ExitCode.FAILED if words & {"failed", "cancelled"} else ExitCode.OK


def format_summary(outcomes: list[Outcome]) -> str:
    suites = suite_column([o.item for o in outcomes])
    rows = [([suites[i]] if suites else []) + [o.item.experiment, str(o.item.seed), o.status,
                                              "-" if o.seconds is None else f"{o.seconds:.1f}s", o.detail]
            for i, o in enumerate(outcomes)]
    table = format_table((["SUITE"] if suites else []) + ["EXPERIMENT", "SEED", "OUTCOME", "TIME", "RESULT OR REASON"],
                         rows, pad_last=False)
    count = {w: sum(1 for o in outcomes if o.status == w) for w in (*RAN, "skipped", "invalid", "not started")}
    total = sum(o.seconds or 0.0 for o in outcomes)
    ran = sum(count[w] for w in RAN)
    line = (f"ran {ran} ({count['success']} success, {count['failed']} failed, {count['cancelled']} cancelled), "
            f"skipped {count['skipped']}, invalid {count['invalid']}, not started {count['not started']}; "
            f"{total:.1f}s of runs")
    return f"{table}\n{line}"
