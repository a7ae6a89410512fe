"""`peftbench reproduce RESULT_JSON`: re-run what a result records and compare the numbers."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
from pathlib import Path

from peftbench.analysis import leaderboard, reproducibility
from peftbench.analysis.texttable import format_table
from peftbench.errors import ExitCode, UserError
from peftbench.experiment.config import load_experiment
from peftbench.record import runkey
from peftbench.record import results as R
from peftbench.record.hardware import resolve_device
from peftbench.record.results import Status
from peftbench.training import reproduction as P
from peftbench.training.runner import RunOptions, run_experiment

HELP = "re-run the experiment a result file records and check that its numbers come out the same"
DESCRIPTION = """\
Rebuild the experiment from the result file alone (its recorded training config and PEFT config)
in a scratch folder, run it there, and compare every number the run records: each numeric key of
each metrics entry (losses, accuracies, sample and token counts), the final test accuracies and
forgetting included. Timing and memory figures are not compared. Your results folders are not
touched.

The tolerance is absolute; the default 0 asks for identical numbers, which a CPU run on the same
hardware gives. When numbers differ, the two runs' test answers are compared item by item (as
`peftbench diff` does: McNemar exact test, paired-bootstrap interval of the difference) and the
verdict is one of:
  identical                 every number the same (or "within tolerance" with --tolerance)
  within run-to-run noise   numbers differ, but the test answers do not differ beyond chance (p >= 0.05)
  different                 they do, or a recorded accuracy does not match its own predictions
It names the hardware and library differences it sees (another CPU, GPU, MKL or torch version
changes the last bits; `deterministic: true` pins the CPU kernels, see the README).
Local model or data paths recorded in the result must still exist.

Exit status: 0 identical, within tolerance or within run-to-run noise; 1 different (or the run
failed); 2 bad input (not a successful result, missing local files); 130 cancelled.

examples:
  peftbench reproduce results/lora--llama-3.2-3B-rank32.json
  peftbench reproduce demo/temporary_results/lora--smollm2-rank16--2026-01-01T10-00-00.json --tolerance 1e-6
"""


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("result", metavar="RESULT_JSON", help="a result file of a successful run")
    parser.add_argument("--tolerance", type=_tolerance, default=0.0,
                        help="largest absolute difference accepted per number (default: 0, identical)")
    parser.add_argument("--device", help="run on this device instead of the recorded one (e.g. cpu)")
    parser.add_argument("--keep", metavar="DIR",
                        help="rebuild and run in DIR and keep it (default: a temporary folder, removed afterwards)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print validation lines while training")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run(args) -> int:
    recorded = P.read_recorded(args.result)
    missing = P.missing_local_paths(recorded[R.RUN_INFO][R.RI_TRAIN_CONFIG])
    if missing:
        lines = "\n".join(f"  - {m}" for m in missing)
        raise UserError(f"{args.result} was made from local files that no longer exist:\n{lines}\n"
                        "put them back (with the same content) to reproduce this run")
    with _workdir(args.keep) as folder:
        reproduced_path, code = _rerun(recorded, folder, args)
        if reproduced_path is None:
            return code
        reproduced = R.load(reproduced_path)
        # read both prediction files while the scratch folder still exists
        verdict_runs = (leaderboard.read_run(Path(args.result)), leaderboard.read_run(Path(reproduced_path)))
    rows = P.compare(recorded, reproduced, args.tolerance)
    print(format_rows(rows))
    _print_adapter_hashes(recorded, reproduced)
    bad = [r for r in rows if not r.ok]
    where = f"the reproduced run is kept in {folder}" if args.keep else "scratch folder removed"
    if bad:
        print(f"NOT REPRODUCED: {len(bad)} of {len(rows)} numbers outside tolerance {args.tolerance:g} ({where})")
    else:
        print(f"reproduced: all {len(rows)} numbers within tolerance {args.tolerance:g} ({where})")
    verdict = reproducibility.judge(*verdict_runs, numbers_ok=not bad, tolerance=args.tolerance)
    print(reproducibility.render(verdict))
    return ExitCode.OK if verdict.reproduced else ExitCode.FAILED


def _rerun(recorded: dict, folder: Path, args) -> tuple[Path | None, int]:
    """Rebuild and run; (reproduced result path, 0), or (None, exit status) when the run did not succeed."""
    try:
        exp_dir = P.rebuild(recorded, folder, args.device)
    except FileExistsError as exc:
        raise UserError(f"{exc.filename} already exists; give --keep an empty or new folder") from None
    exp = load_experiment(exp_dir)
    key, inputs = runkey.compute(exp, resolve_device(exp.train_config.device).split(":")[0])
    recorded_inputs = recorded[R.RUN_INFO].get(R.RI_RUN_KEY_INPUTS)
    for warning in P.version_warnings(recorded_inputs, inputs):
        print(f"warning: {warning}; numbers may differ for that reason", file=sys.stderr)
    if key == recorded[R.RUN_INFO].get(R.RI_RUN_KEY):
        print("run key: same as recorded (configs, data, model, code and libraries all match)", file=sys.stderr)
    elif recorded_inputs:
        print(f"run key differs from the recorded one: {runkey.explain_difference(recorded_inputs, inputs)}",
              file=sys.stderr)
    print(f"reproducing {exp.experiment_name} (seed {exp.train_config.seed}) in {folder}", file=sys.stderr, flush=True)
    opts = RunOptions(verbose=args.verbose, output_dir=str(Path(folder) / "adapter"), resume=False,
                      progress=args.progress, debug=args.debug)
    outcome = run_experiment(exp, opts, exp.train_config.seed)
    if outcome.status is not Status.SUCCESS:
        status = outcome.status.value if outcome.status is not None else "skipped"
        cause = outcome.error or outcome.message
        # Without --keep the scratch folder (and the result in it) is deleted on return: name the
        # cause here instead of a file that will not exist.
        where = (f"its files are kept in {folder}" if args.keep
                 else "its scratch folder is deleted; --keep FOLDER keeps the result and adapter")
        print(f"the reproduction did not succeed ({status}): {cause}; {where}", file=sys.stderr)
        return None, outcome.exit_code or ExitCode.FAILED
    return outcome.result_path, 0


@contextlib.contextmanager
def _workdir(keep: str | None):
    if keep:
        folder = Path(keep).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="peftbench-reproduce-") as tmp:
        yield Path(tmp)


def format_rows(rows) -> str:
    def cell(value) -> str:
        if value is None:
            return "null"
        return repr(value) if isinstance(value, float) else str(value)

    table = [[r.label, cell(r.recorded), cell(r.reproduced),
              "-" if r.difference is None else f"{r.difference:.3g}", "ok" if r.ok else "DIFFERS"] for r in rows]
    return format_table(["METRIC", "RECORDED", "REPRODUCED", "|DIFF|", "CHECK"], table, pad_last=False)


def _print_adapter_hashes(recorded: dict, reproduced: dict) -> None:
    """Not a pass/fail check (the tolerance is about numbers), but identical bytes are the
    strongest sign of an exact reproduction."""
    old, new = recorded[R.RUN_INFO].get(R.RI_ADAPTER_SHA256), reproduced[R.RUN_INFO].get(R.RI_ADAPTER_SHA256)
    if old is None or new is None:
        return
    print(f"adapter weights: {'identical' if old == new else 'differ'} (sha256 {old[:12]} recorded, {new[:12]} reproduced)")
