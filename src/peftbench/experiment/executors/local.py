"""The local executor: the runs one after another, each in a fresh `peftbench run` child process
on this machine (so that memory statistics start clean). Stops early only when cancelled."""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from peftbench.experiment import planning
from peftbench.experiment.config import parse_overrides
from peftbench.experiment.executors import child
from peftbench.experiment.executors.base import Outcome, Outcomes, RunItem, Settings, Terminated
from peftbench.signals import sigterm_raises


def execute(items: list[RunItem], settings: Settings) -> Outcomes:
    outcomes = Outcomes()
    with sigterm_raises(lambda signum: Terminated()):
        try:
            for n, item in enumerate(items, 1):
                why = f": {item.reason}" if item.reason else ""
                print(f"\n[{n}/{len(items)}] {item.experiment} (seed {item.seed}){why}", file=sys.stderr, flush=True)
                now = recheck(item, settings)
                if now is not None:
                    # Another driver did it or is doing it: a child would only find that out
                    # after seconds of imports.
                    print(f"  {now.detail}: not started", file=sys.stderr, flush=True)
                    outcomes.append(now)
                    continue
                outcome, interrupted = _run_child(item, settings)
                outcomes.append(outcome)
                if interrupted:
                    outcomes.interrupted = True
                    break
        except (KeyboardInterrupt, Terminated):  # between two runs: nothing to pass on
            outcomes.interrupted = True
    outcomes += [Outcome(i, "not started", "run-all was cancelled") for i in items[len(outcomes):]]
    return outcomes


def recheck(item: RunItem, settings: Settings) -> Outcome | None:
    """None when `item` is still to run as things stand now (earlier runs of this and of other
    drivers included); else its skipped or invalid outcome."""
    [now] = planning.plan([str(item.path)], [item.seed], force=settings.force,
                          overrides=parse_overrides(list(item.overrides)))
    if now.action == "run":
        return None
    return Outcome(item, "invalid" if now.action == "invalid" else "skipped", now.reason)


def _run_child(item: RunItem, settings: Settings) -> tuple[Outcome, bool]:
    """Run one experiment in a child process. Returns its outcome and whether the driver was
    cancelled meanwhile (the child was then told to stop and recorded itself as cancelled)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="peftbench-outcome-") as tmp:
        outcome_file = Path(tmp) / "outcome.json"
        # A session of its own keeps the terminal's Ctrl+C away from the child: the driver passes
        # exactly one signal on. A second SIGINT could hit the child while it writes its result.
        proc = subprocess.Popen(child.command(item, settings, outcome_file), stderr=subprocess.PIPE,
                                start_new_session=True)
        tee = _Tee(proc.stderr)
        interrupted = False
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:
                interrupted = True
                _send(proc, signal.SIGINT)
            except Terminated:
                interrupted = True
                _send(proc, signal.SIGTERM)
        tee.join()
        reported = child.read_outcome(outcome_file)
    return child.judge(item, code, reported, time.monotonic() - started, child.last_line(tee.text())), interrupted


def _send(proc: subprocess.Popen, signum: int) -> None:
    print(f"run-all: cancelling; passing {signal.Signals(signum).name} to the running experiment "
          f"(pid {proc.pid}) and waiting for it to record itself", file=sys.stderr, flush=True)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signum)


class _Tee:
    """Copy a child's stderr to ours as it comes (progress bars included) and keep its end: the
    last line names the error of a child that died without writing its outcome file."""

    KEEP = 16_384  # characters

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
