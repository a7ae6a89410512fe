"""The contract between a driver (`run-all`, `tune`) and its child `peftbench run` process: the
command line, and the outcome file in which the child says what it did.

The child writes the outcome file (JSON, atomically) once its run is decided:

    {"experiment": "lora/tiny-r4", "seed": 0,
     "status": "success" | "failed" | "cancelled" | "skipped" | "invalid",
     "result_path": "/abs/suite/temporary_results/lora--tiny-r4--2026-...json" or null,
     "detail": "why it was skipped or invalid" or null,
     "error": "the run's error message" or null,
     "run_key": "sha256..." or null,  "run_key_matched": true | false | null,
     "host": "node7"}

`run_key_matched` compares the child's own run key with the one the driver planned with
(`--expected-run-key`); null when the driver gave none or the run never computed one. A child
that dies before writing the file (killed, or a crash outside the run) is judged by its exit
status alone. The log text of the child is never parsed: it goes to the terminal as it is."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import Any

from peftbench.experiment.executors.base import RAN, Outcome, RunItem, Settings
from peftbench.fs import atomic_write_json, read_json_or_none
from peftbench.terminal import short_path

OUTCOME_FILE_OPTION = "--outcome-file"
EXPECTED_RUN_KEY_OPTION = "--expected-run-key"


def command(item: RunItem, settings: Settings, outcome_file: str | Path | None = None,
            path: str | Path | None = None, if_stale: bool | None = None,
            expected_run_key: str | None = None, extra_overrides: tuple[str, ...] = ()) -> list[str]:
    """`peftbench run` for one item, with the driver's settings passed through.

    `path` replaces the item's folder (a staged copy on a Ray worker); `extra_overrides` come
    after the item's own (the staged paths of local data and model files)."""
    cmd = [sys.executable, "-m", "peftbench.cli", "run", str(path or item.path), "--seed", str(item.seed)]
    if (not settings.force) if if_stale is None else if_stale:
        # Re-checked under the experiment's lock: another driver may have done it meanwhile.
        cmd.append("--if-stale")
    for pair in (*item.overrides, *extra_overrides):
        cmd += ["--set", pair]
    if not settings.resume:
        cmd.append("--no-resume")
    if settings.keep_checkpoint:
        cmd.append("--keep-checkpoint")
    if not settings.progress:
        cmd.append("--no-progress")
    if settings.verbose:
        cmd.append("-v")
    if not settings.keep_adapters:
        cmd.append("--clean")
    if outcome_file is not None:
        cmd += [OUTCOME_FILE_OPTION, str(outcome_file)]
    if expected_run_key is not None:
        cmd += [EXPECTED_RUN_KEY_OPTION, expected_run_key]
    return cmd


def write_outcome(path: str | Path, *, experiment: str, seed: int | None, status: str,
                  result_path: Path | None = None, detail: str | None = None, error: str | None = None,
                  run_key: str | None = None, expected_run_key: str | None = None) -> None:
    """Called by the child (`peftbench run --outcome-file PATH`)."""
    matched = None if expected_run_key is None or run_key is None else run_key == expected_run_key
    atomic_write_json(path, {
        "experiment": experiment, "seed": seed, "status": status,
        "result_path": None if result_path is None else str(Path(result_path).resolve()),
        "detail": detail, "error": error, "run_key": run_key, "run_key_matched": matched,
        "host": socket.gethostname(),
    })


def read_outcome(path: str | Path) -> dict[str, Any] | None:
    """The child's outcome file, or None when it wrote none (or a partial one: never, it is
    written atomically, but a file from elsewhere may be anything)."""
    data = read_json_or_none(path)
    return data if isinstance(data, dict) and data.get("status") in (*RAN, "skipped", "invalid") else None


def judge(item: RunItem, code: int, reported: dict[str, Any] | None, seconds: float | None,
          last_line: str = "") -> Outcome:
    """What a child did: its outcome file when it wrote one, else its exit status (`last_line`,
    the last line it printed, only decorates the message of a child that died)."""
    if reported is not None:
        status = reported["status"]
        result = Path(reported["result_path"]) if reported.get("result_path") else None
        if status in RAN:
            detail = short_path(result) if result is not None else "no result written"
        else:
            detail = reported.get("detail") or reported.get("error") or status
        return Outcome(item, status, detail, seconds, result_path=result if status in RAN else None,
                       error=reported.get("error"), run_key=reported.get("run_key"),
                       run_key_matched=reported.get("run_key_matched"))
    if code == 2:
        return Outcome(item, "invalid", last_line or "bad input (exit status 2)", seconds)
    if code < 0:
        return Outcome(item, "failed", f"killed by {signal.Signals(-code).name}; no result written", seconds)
    if code == 130:
        return Outcome(item, "cancelled", "no result written" + (f": {last_line}" if last_line else ""), seconds)
    if code == 0:
        return Outcome(item, "success", "the run wrote no outcome file", seconds)
    return Outcome(item, "failed", f"exit status {code}, no result written" + (f": {last_line}" if last_line else ""),
                   seconds)


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""
