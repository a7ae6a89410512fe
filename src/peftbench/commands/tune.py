"""`peftbench tune EXPERIMENT_OR_FOLDER --param KEY=V1,V2,...`: an equal-budget, validation-only
hyperparameter search per experiment, recorded beside the suite's results."""

from __future__ import annotations

import argparse
import sys

from peftbench.analysis.texttable import format_table
from peftbench.commands.options import number_above
from peftbench.errors import ConfigError, ExitCode, UserError
from peftbench.experiment import config as C
from peftbench.experiment import suite as S
from peftbench.experiment import tuning as T
from peftbench.experiment import tuning_study as TS
from peftbench.record.provenance import command_line
from peftbench.terminal import short_path

HELP = "search hyperparameters on validation data only, with the same budget for every method"
DESCRIPTION = """\
Search the values given with --param for each experiment at or below EXPERIMENT_OR_FOLDER (a
folder tunes every experiment below it with the same space and budget), choose on validation
data only, and record everything:

  every trial  an ordinary `peftbench run` in a child process with the trial's values,
               max_steps = --budget-steps, and tune_valid_size = --tune-valid-size: it validates
               on that many rows of the eval dataset's TRAIN split (their own fixed seed) and
               never generates on the test split (its result has no test accuracy)
  the choice   highest validation accuracy; ties: lower validation loss, then the simpler
               setting (smaller values of PEFT fields such as r, then of training fields such
               as the learning rate). Failed and cancelled trials are recorded, never chosen.
  the record   results/tuning/<method>--<name>--<search id>.tuning.json, one per search (space,
               sampler, budget): search space, sampler, budget (trials x steps, measured
               seconds), every trial (values, run key, validation accuracy and loss, time,
               status), the choice and its paired difference with the runner-up (95% bootstrap
               interval, McNemar) on the validation items
  the result   experiments/<method>/<name>-tuned/ with the chosen values (at the experiment's
               full max_steps), and a line in experiments/<method>/README.md; run it with
               `peftbench run` or `run-all` to get its test accuracy. When it already holds other
               values (an earlier search's choice) it is kept, and the command says what would
               change; --force changes it

Each --param needs two values or more (one value chooses nothing). Trials are keyed by run key:
`tune` again with the same space runs nothing, a wider space runs only the new points, a
cancelled trial runs again. Trial runs and the Optuna study (SQLite) live in
<suite>/.peftbench/tuning/, out of the leaderboard.

Exit status: 0 done, 1 a trial failed (recorded, never chosen) or no trial succeeded,
2 bad input (nothing run), 130 cancelled (the trials so far are recorded).

examples:
  peftbench tune demo/experiments/lora/smollm2-rank16/ --param optimizer_kwargs.lr=1e-4,3e-4,1e-3
  peftbench tune experiments/lora/ --param r=8,16,32 --param lora_alpha=16,32 --budget-steps 500
  peftbench tune experiments/ --param optimizer_kwargs.lr=1e-5,1e-4,1e-3 --sampler tpe --trials 8
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="EXPERIMENT_OR_FOLDER",
                        help="an experiment folder, or a folder whose experiments are all tuned alike")
    parser.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="a field to search and its values (repeatable): any training field as for "
                             "`run --set` (optimizer_kwargs.lr, batch_size, ...) or PEFT field (r, lora_alpha, ...)")
    parser.add_argument("--trials", type=number_above(int, 1, inclusive=True),
                        help=f"trials of the study (default: the whole grid for grid, {T.DEFAULT_TPE_TRIALS} for tpe)")
    parser.add_argument("--sampler", choices=T.SAMPLERS, default="grid",
                        help="Optuna sampler: grid (every combination) or tpe (default: grid)")
    parser.add_argument("--budget-steps", type=number_above(int, 1, inclusive=True),
                        help="training steps of every trial (default: the experiment's max_steps)")
    parser.add_argument("--tune-valid-size", type=number_above(int, 1, inclusive=True), default=T.DEFAULT_TUNE_VALID_SIZE,
                        help="validation items per trial, drawn from the eval dataset's train split "
                             f"(default: {T.DEFAULT_TUNE_VALID_SIZE})")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where trials run: local child processes, or run-all's Ray executor (default: local)")
    parser.add_argument("--force", action="store_true",
                        help="change an existing <name>-tuned/ that holds other values than this search's choice "
                             "(another search's, or this one's before); the changes are listed. Without it such a "
                             "folder is kept and the command says what it would change")
    parser.add_argument("-v", "--verbose", action="store_true", help="pass -v to every trial")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars in trials")


def run(args) -> int:
    if args.executor == "ray":
        _check_ray_executor()
    raw = T.parse_param_specs(args.params)
    found = S.discover_experiments(args.target)
    exp_dirs = [d for d in found if not T.is_tuned_output(d)]
    if not exp_dirs:
        raise UserError(_nothing_to_tune(args.target, found))
    opts = TS.TuneOptions(trials=args.trials, sampler=args.sampler, budget_steps=args.budget_steps,
                          tune_valid_size=args.tune_valid_size, executor=args.executor, force=args.force,
                          verbose=args.verbose, progress=args.progress, command=command_line())
    # Everything is checked before anything runs: a bad value for the tenth experiment must not
    # surface after nine searches.
    jobs, problems = [], []
    for exp_dir in exp_dirs:
        try:
            exp = C.load_experiment(exp_dir)
            space = T.type_space(raw, exp)
            TS.Search(exp, space, opts).validate_space()
        except ConfigError as exc:
            problems += [f"{exp_dir.parent.name}/{exp_dir.name}: {p}" for p in exc.problems]
            continue
        except UserError as exc:
            problems.append(f"{exp_dir.parent.name}/{exp_dir.name}: {exc}")
            continue
        if opts.budget_steps is None and exp.train_config.max_steps == 0:
            problems.append(f"{exp.experiment_name}: max_steps is 0 (an evaluation-only run); nothing to tune")
            continue
        jobs.append((exp, space))
    if problems:
        raise ConfigError(problems, "tune")
    outcomes = []
    for exp, space in jobs:
        print(f"tuning {exp.experiment_name}: {T.grid_size(space)} point(s), sampler {opts.sampler}, "
              f"{TS.study_trials(opts, space)} trial(s) x {TS.budget_overrides(exp, opts)['max_steps']} steps",
              file=sys.stderr, flush=True)
        outcome = TS.tune_experiment(exp, space, opts)
        outcomes.append(outcome)
        if outcome.cancelled:
            break
    print(format_summary(outcomes))
    if any(o.cancelled for o in outcomes):
        return ExitCode.CANCELLED
    failed = any(t["status"] != T.SUCCESS for o in outcomes for t in o.record["trials"])
    return ExitCode.FAILED if failed or any(o.record["choice"] is None for o in outcomes) else ExitCode.OK


def _nothing_to_tune(target: str, found) -> str:
    """Why `target` holds nothing to tune: no experiment at all, or only `<name>-tuned/` folders,
    which hold the choice of a search and are not searched again themselves."""
    if not found:
        return f"no experiment folders found under {target}"
    tuned = ", ".join(f"{d.parent.name}/{d.name}" for d in found)
    bases = ", ".join(str(d.with_name(d.name[: -len(T.TUNED_SUFFIX)])) for d in found)
    return (f"{target}: {tuned} holds the choice of an earlier `peftbench tune` (its record is in "
            f"results/{T.TUNING_DIR}/), not an experiment to search again; tune the experiment it came from "
            f"({bases}) with the values to compare")


def _check_ray_executor() -> None:
    """--executor ray needs run-all's Ray executor; say so when this checkout has none."""
    from importlib.util import find_spec

    if find_spec("peftbench.experiment.executors") is None or find_spec("peftbench.experiment.executors.ray") is None:
        raise UserError("--executor ray needs run-all's Ray executor (peftbench.experiment.executors.ray), "
                        "which this checkout does not have yet; use --executor local")


def format_summary(outcomes) -> str:
    rows = []
    for o in outcomes:
        choice = o.record.get("choice")
        paired = (choice or {}).get("paired_vs_runner_up")
        vs = "" if not paired else (f"{paired['diff'] * 100:+.1f} [{paired['diff_lo'] * 100:+.1f}, "
                                    f"{paired['diff_hi'] * 100:+.1f}]" + (" coin toss" if paired["coin_toss"] else ""))
        rows.append([o.experiment, f"{o.ran} ran, {o.reused} reused",
                     "cancelled" if o.cancelled else ("no successful trial" if choice is None else
                                                      ", ".join(f"{k}={v}" for k, v in choice["overrides"].items())),
                     "" if choice is None else f"{choice['valid_accuracy'] * 100:.1f}%", vs,
                     "kept (see above; --force)" if o.kept else "" if o.tuned_dir is None else short_path(o.tuned_dir),
                     short_path(o.record_path)])
    return format_table(["EXPERIMENT", "TRIALS", "CHOICE", "VALID ACC", "VS RUNNER-UP (PTS)", "TUNED EXPERIMENT",
                         "RECORD"], rows, pad_last=False)
