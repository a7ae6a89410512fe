"""`peftbench run EXPERIMENT_DIR...`: train, evaluate and record experiments in this process."""

from __future__ import annotations

import argparse
import sys

from peftbench.commands.options import (add_common_run_options, add_verbose_option, pin_cpu_kernels_if_deterministic,
                                        seed_list)
from peftbench.errors import ExitCode, UserError
from peftbench.experiment.config import load_experiment, parse_overrides, suite_default_seed
from peftbench.experiment.executors import child
from peftbench.terminal import printable
from peftbench.training.meta_check import check_builds
from peftbench.training.output import check_adapter_dir
from peftbench.training.runner import RunOptions, run_experiment

HELP = "train, evaluate and record one experiment (or several, one after another)"
DESCRIPTION = """\
Train the experiment's PEFT adapter (or the full model when the folder has no
adapter_config.json) on the suite's training data, evaluate it on the test split, and write one
JSON result (plus <result>.predictions.jsonl.gz) into the suite's results folders:

  results/<method>--<name>.json                      success, git branch main, clean tree
  temporary_results/<method>--<name>--<time>.json    success otherwise
  cancelled_results/<method>--<name>--<time>.json    cancelled (Ctrl+C, SIGTERM) or failed

Before anything runs, every experiment given is validated (ranges, finite numbers, a bare
{query} in query_template, greedy generation_kwargs; see the README) and its model and adapter
are built on the meta device, so that PEFT's own checks (target modules that match nothing) and a
model_id folder without a model are bad input: nothing is written.

Exit status: 0 success, 1 failed run, 2 bad input (nothing written), 130 cancelled.

examples:
  peftbench run -v experiments/lora/llama-3.2-3B-rank32/
  peftbench run demo/experiments/lora/smollm2-rank16/ --set max_steps=20 --set optimizer_kwargs.lr=1e-3
  peftbench run experiments/ia3/llama-3.2-3B-default/ --seeds 0,1,2
  peftbench run demo/experiments/lora/smollm2-rank16/ --set eos_loss_weight=0.5   # EOS weighs half in the loss
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR",
                        help="experiment folder(s): <suite>/experiments/<peft-method>/<name>/")
    add_verbose_option(parser, "print validation lines and progress details")
    parser.add_argument("--output-dir", help="save the trained adapter here (default: a temporary folder, printed); "
                                             "refused inside the suite's experiments/ folder and on a folder holding "
                                             "an experiment's config or the base model")
    parser.add_argument("--clean", action="store_true", help="delete the saved adapter after the run")
    parser.add_argument("--if-stale", action="store_true",
                        help="skip an experiment whose up-to-date result already exists (used by run-all)")
    # Hidden: how run-all (or tune) learns what its child did (experiment/executors/child.py).
    parser.add_argument("--outcome-file", help=argparse.SUPPRESS)
    parser.add_argument("--expected-run-key", help=argparse.SUPPRESS)
    add_common_run_options(parser)


def run(args) -> int:
    if not args.outcome_file:
        return _run(args)

    if len(args.experiments) * len(seed_list(args)) > 1:
        raise UserError("--outcome-file takes one experiment and one seed")
    try:
        return _run(args)
    except UserError as exc:
        # One line: it becomes a cell of run-all's summary table.
        message = " ".join(line.strip() for line in str(exc).splitlines())
        child.write_outcome(args.outcome_file, experiment=str(args.experiments[0]), seed=args.seed, status="invalid",
                            detail=f"peftbench run: error: {message}", error=message)
        raise


def _run(args) -> int:
    overrides = parse_overrides(args.overrides)
    # Before anything imports torch (loading an experiment imports peft): pinning the CPU
    # kernels only takes effect in a process that has not loaded them yet.
    pin_cpu_kernels_if_deterministic(args.experiments, overrides)

    # Validate everything before running anything: a typo in the third experiment must not
    # surface after two hours of training.

    jobs = []
    for path in args.experiments:
        for i, seed in enumerate(seed_list(args)):
            exp_overrides = dict(overrides, **({"seed": seed} if seed is not None else {}))
            exp = load_experiment(path, exp_overrides)
            if i == 0:  # model and adapter on the meta device: PEFT's own checks, nothing written
                check_builds(exp)
            jobs.append((exp, suite_default_seed(exp.suite_dir)))
    if args.output_dir:
        _check_output_dir(args, jobs)
    opts = RunOptions(verbose=args.verbose, output_dir=args.output_dir, clean=args.clean, resume=args.resume,
                      keep_checkpoint=args.keep_checkpoint, if_stale=args.if_stale, progress=args.progress,
                      debug=args.debug)
    worst = ExitCode.OK
    for exp, default_seed in jobs:
        outcome = run_experiment(exp, opts, default_seed)
        print(printable(f"{exp.experiment_name} (seed {exp.train_config.seed}): {outcome.message}"), file=sys.stderr)
        if args.outcome_file:
            _write_outcome(args, exp, outcome)
        if outcome.exit_code == ExitCode.CANCELLED:
            return ExitCode.CANCELLED
        worst = max(worst, ExitCode(outcome.exit_code))
    return worst


def _check_output_dir(args, jobs) -> None:
    """--output-dir takes one run, is not deleted by --clean, and replaces no config (output.py)."""
    from pathlib import Path

    if len(jobs) > 1:
        raise UserError("--output-dir takes one experiment and one seed; without it each adapter gets its own folder")
    if args.clean:
        # --clean deletes the adapter's folder, whole: with --output-dir, a folder the user named.
        raise UserError(f"--output-dir {args.output_dir} with --clean: --clean deletes the adapter folder after the "
                        "run, here the folder you named and all it holds. Give one or the other. Nothing was run.")
    check_adapter_dir(Path(args.output_dir), jobs[0][0])


def _write_outcome(args, exp, outcome) -> None:
    status = outcome.status.value if outcome.status is not None else "skipped"
    child.write_outcome(args.outcome_file, experiment=exp.experiment_name, seed=exp.train_config.seed,
                        status=status, result_path=outcome.result_path,
                        detail=outcome.message.removeprefix("skipped: ") if outcome.status is None else None,
                        error=outcome.error, run_key=outcome.run_key, expected_run_key=args.expected_run_key)
