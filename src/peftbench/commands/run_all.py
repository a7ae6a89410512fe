"""`peftbench run-all [SUITE_OR_EXPERIMENT_DIR...]`: run every experiment that is not up to date,
one fresh process each, and end with a summary.

What is up to date is decided by `planning.plan` (the same table `peftbench status` prints); this
module only starts the runs, watches them and sums up."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from peftbench.training.signals import sigterm_raises

HELP = "run every experiment that is not up to date, each in a fresh process, then summarise"
DESCRIPTION = """\
Find every experiment below the given folders (default: the suite in the current folder), decide
for each one and each seed whether an up-to-date result exists, and run the others one after
another, each in a fresh `peftbench run` process (so that memory statistics start clean).

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
"""

# The line `peftbench run` ends each experiment with (commands/run.py):
#   "<method>/<name> (seed <N>): <success|failed|cancelled>: <result path>"  or  "...: skipped: <why>"
# It is the child's own account of what it did. Looking at the results folders instead would
# credit a child with a result that a concurrent run-all wrote meanwhile.
_REPORT = re.compile(r"^(?P<experiment>.+?) \(seed (?P<seed>-?\d+)\): (?P<word>success|failed|cancelled|skipped): (?P<rest>.*)$")

RAN = ("success", "failed", "cancelled")


@dataclass
class Outcome:
    item: object  # planning.PlanItem
    outcome: str  # success, failed, cancelled, skipped, invalid or "not started"
    detail: str
    seconds: float | None = None


def configure(parser: argparse.ArgumentParser) -> None:
    from peftbench.commands.run import add_common_run_options

    parser.add_argument("targets", nargs="*", default=["."], metavar="SUITE_OR_EXPERIMENT_DIR",
                        help="suite, experiments folder, method folder or experiment (default: .)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan with the reason for each line; run nothing")
    parser.add_argument("--force", action="store_true", help="also rerun experiments whose result is up to date")
    parser.add_argument("-v", "--verbose", action="store_true", help="pass -v to every run")
    parser.add_argument("--keep-adapters", action="store_true",
                        help="keep each trained adapter in its temporary folder (default: delete it after the "
                             "run; a suite of 70 experiments would otherwise leave gigabytes in the temp folder)")
    add_common_run_options(parser)


def run(args) -> int:
    from peftbench.experiment import planning
    from peftbench.commands.status import format_plan, plan_counts, seeds_of
    from peftbench.experiment.config import parse_overrides

    items = planning.plan(args.targets, seeds_of(args), force=args.force, overrides=parse_overrides(args.overrides))
    print(format_plan(items))
    print(plan_counts(items), flush=True)
    if args.dry_run:
        return 2 if any(i.action == "invalid" for i in items) else 0
    if not any(i.action == "run" for i in items):
        print("nothing to run: see the reason on each line above")
    outcomes, interrupted = _run_plan(items, args)
    print()
    print(format_summary(outcomes))
    return exit_status(outcomes, interrupted)


def _run_plan(items, args) -> tuple[list[Outcome], bool]:
    """Run the plan's `run` lines one after another. Stops early only when cancelled."""
    outcomes: list[Outcome] = []
    to_run = [i for i in items if i.action == "run"]
    done = 0
    interrupted = False
    with sigterm_raises(lambda signum: _Terminated()):
        try:
            for item in items:
                if item.action != "run":
                    word = "invalid" if item.action == "invalid" else "skipped"
                    outcomes.append(Outcome(item, word, item.reason))
                    continue
                done += 1
                print(f"\n[{done}/{len(to_run)}] {item.experiment} (seed {item.seed}): {item.reason}",
                      file=sys.stderr, flush=True)
                now = _recheck(item, args)
                if now.action != "run":
                    # Another run-all did it or is doing it: a child would only find that out
                    # after seconds of imports.
                    print(f"  {now.reason}: not started", file=sys.stderr, flush=True)
                    outcomes.append(Outcome(item, "invalid" if now.action == "invalid" else "skipped", now.reason))
                    continue
                outcome, interrupted = _run_child(item, args)
                outcomes.append(outcome)
                if interrupted:
                    break
        except (KeyboardInterrupt, _Terminated):  # between two runs: nothing to pass on
            interrupted = True
    seen = {id(o.item) for o in outcomes}
    outcomes += [Outcome(i, "not started", "run-all was cancelled") for i in items if id(i) not in seen]
    return outcomes, interrupted


def _recheck(item, args):
    """The plan line of `item` as it stands now, earlier runs of this and other run-alls included."""
    from peftbench.experiment import planning
    from peftbench.experiment.config import parse_overrides

    [now] = planning.plan([str(item.path)], [item.seed], force=args.force, overrides=parse_overrides(args.overrides))
    return now


def child_command(item, args) -> list[str]:
    """`peftbench run` for one plan line, with the options given to run-all passed through."""
    cmd = [sys.executable, "-m", "peftbench.cli", "run", str(item.path), "--seed", str(item.seed)]
    if not args.force:
        # Re-checked under the experiment's lock: another run-all may have done it meanwhile.
        cmd.append("--if-stale")
    for pair in args.overrides:
        cmd += ["--set", pair]
    if not args.resume:
        cmd.append("--no-resume")
    if args.keep_checkpoint:
        cmd.append("--keep-checkpoint")
    if not args.progress:
        cmd.append("--no-progress")
    if args.verbose:
        cmd.append("-v")
    if not args.keep_adapters:
        cmd.append("--clean")
    return cmd


def _run_child(item, args) -> tuple[Outcome, bool]:
    """Run one experiment in a child process. Returns its outcome and whether run-all was
    cancelled meanwhile (the child was then told to stop and recorded itself as cancelled)."""
    started = time.monotonic()
    # A session of its own keeps the terminal's Ctrl+C away from the child: run-all passes exactly
    # one signal on. A second SIGINT could hit the child while it writes its cancelled result.
    proc = subprocess.Popen(child_command(item, args), stderr=subprocess.PIPE, start_new_session=True)
    tee = _Tee(proc.stderr)
    interrupted = False
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            interrupted = True
            _send(proc, signal.SIGINT)
        except _Terminated:
            interrupted = True
            _send(proc, signal.SIGTERM)
    tee.join()
    return classify(item, code, tee.text(), time.monotonic() - started), interrupted


def _send(proc: subprocess.Popen, signum: int) -> None:
    print(f"run-all: cancelling; passing {signal.Signals(signum).name} to the running experiment "
          f"(pid {proc.pid}) and waiting for it to record itself", file=sys.stderr, flush=True)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signum)


def classify(item, code: int, output: str, seconds: float | None) -> Outcome:
    """What a child did, from its report line and its exit status."""
    report = None
    for line in output.splitlines():
        match = _REPORT.match(line.strip().rsplit("\r", 1)[-1])
        if match and match["experiment"] == item.experiment and int(match["seed"]) == item.seed:
            report = match
    if report is not None:
        word, rest = report["word"], report["rest"]
        if word in RAN:
            from peftbench.commands.status import short_path

            rest = short_path(rest)
        return Outcome(item, word, rest, seconds)
    last = _last_line(output)
    if code == 2:
        return Outcome(item, "invalid", last or "bad input (exit status 2)", seconds)
    if code < 0:
        return Outcome(item, "failed", f"killed by {signal.Signals(-code).name}; no result written", seconds)
    if code == 130:
        return Outcome(item, "cancelled", "no result written" + (f": {last}" if last else ""), seconds)
    if code == 0:
        return Outcome(item, "success", "the run printed no report line", seconds)
    return Outcome(item, "failed", f"exit status {code}, no result written" + (f": {last}" if last else ""), seconds)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def exit_status(outcomes: list[Outcome], interrupted: bool) -> int:
    """130 cancelled; else 2 when a config is invalid; else 1 when a run did not succeed; else 0."""
    if interrupted:
        return 130
    words = {o.outcome for o in outcomes}
    if "invalid" in words:
        return 2
    return 1 if words & {"failed", "cancelled"} else 0


def format_summary(outcomes: list[Outcome]) -> str:
    from peftbench.analysis.texttable import format_table

    rows = [[o.item.experiment, str(o.item.seed), o.outcome, "-" if o.seconds is None else f"{o.seconds:.1f}s", o.detail]
            for o in outcomes]
    table = format_table(["EXPERIMENT", "SEED", "OUTCOME", "TIME", "RESULT OR REASON"], rows, pad_last=False)
    count = {w: sum(1 for o in outcomes if o.outcome == w) for w in (*RAN, "skipped", "invalid", "not started")}
    total = sum(o.seconds or 0.0 for o in outcomes)
    ran = sum(count[w] for w in RAN)
    line = (f"ran {ran} ({count['success']} success, {count['failed']} failed, {count['cancelled']} cancelled), "
            f"skipped {count['skipped']}, invalid {count['invalid']}, not started {count['not started']}; "
            f"{total:.1f}s of runs")
    return f"{table}\n{line}"


class _Terminated(Exception):
    """SIGTERM to run-all, raised in the main thread so the running experiment can be told."""


class _Tee:
    """Copy a child's stderr to ours as it comes (progress bars included) and keep its end,
    where the child's report line is."""

    KEEP = 16_384  # characters; the report line is the last one the child prints

    def __init__(self, stream):
        self._stream, self._out, self._kept = stream, sys.stderr, ""
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self._stream.fileno()
        while True:
            chunk = os.read(fd, 65536)
            text = decoder.decode(chunk, final=not chunk)
            if text:
                self._out.write(text)
                self._out.flush()
                self._kept = (self._kept + text)[-self.KEEP:]
            if not chunk:
                break
        self._stream.close()

    def join(self) -> None:
        self._thread.join()

    def text(self) -> str:
        return self._kept
