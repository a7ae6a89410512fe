"""Experiment locks: one run of an experiment (and seed) at a time, across shells, and across
machines sharing a filesystem.

Two files per lock, in `<suite>/.peftbench/locks/`:

- `<stem>.lock.flock`: the lock itself, an OS file lock taken through `filelock`. The kernel drops
  it when its process ends, however it ends (kill -9, a container restart), so a dead run never
  blocks a later one.
- `<stem>.lock`: a JSON note `{"pid", "host", "started_at"}` written by the holder, for the
  "being run by pid N on HOST since T" message; deleted on release.

A note without a held file lock is left over: its writer died, or was an older peftbench that
wrote notes only. It is judged by `is_stale`: an unusable note (no pid, `{"pid": "abc"}`, `[]`)
is stale; on this host, a note whose pid is gone, or whose pid now belongs to a process started
after the note (a pid reused after a restart), is stale; a note from another host is respected,
since its process cannot be checked from here. A stale note is taken over with a message.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peftbench.fs import atomic_write_json, read_json_or_none

# How long `acquire` waits for the file lock: a planning process (`status`) holds it for a
# moment to see whether anyone else does; a real holder keeps it for the whole run.
_ACQUIRE_WAIT_S = 1.0
# `started_at` is written to the second after the process started: a process created more
# than this many seconds after it cannot be the note's writer.
_START_SLACK_S = 2.0


class LockHeld(Exception):
    def __init__(self, path: Path, holder: dict):
        self.path, self.holder = path, holder
        super().__init__(f"{path.stem} is being run by pid {holder.get('pid')} on {holder.get('host')} "
                         f"since {holder.get('started_at')} (lock file {path})")


def flock_path(note: Path) -> Path:
    return note.with_name(note.name + ".flock")


def read_holder(path: Path) -> dict | None:
    """The note at `path` as a dict, or None when there is none or it is not a JSON object."""
    note = read_json_or_none(path)
    return note if isinstance(note, dict) else None


def _pid(holder: dict) -> int | None:
    pid = holder.get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def _started_at(holder: dict) -> float | None:
    try:
        return _dt.datetime.strptime(str(holder.get("started_at")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def _process_start(pid: int) -> float | None:
    """When process `pid` of this host started (seconds since the epoch); None when it is gone."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:  # exists but cannot be inspected (another user's): count it as alive
        return 0.0


def is_stale(holder: dict | None) -> bool:
    """Whether a note left without its file lock can be taken over (see the module docstring)."""
    if holder is None or _pid(holder) is None:
        return True  # unusable: a writer died between create and write, or a hand-made file
    if holder.get("host") != socket.gethostname():
        return False
    started = _process_start(_pid(holder))
    if started is None:
        return True
    noted = _started_at(holder)
    return noted is not None and started > noted + _START_SLACK_S


def _file_lock(note: Path):
    from filelock import FileLock

    return FileLock(str(flock_path(note)), thread_local=False)


def running_holder(note: Path) -> dict | None:
    """Who runs the experiment of lock `note` now, or None when nobody does. Writes nothing
    unless a lock file already exists (then it holds it for a moment to test it)."""
    from filelock import Timeout

    holder = read_holder(note)
    if flock_path(note).exists():
        lock = _file_lock(note)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return holder or {"pid": None, "host": None, "started_at": None}
        lock.release()
    if note.exists() and not is_stale(holder):
        return holder
    return None


@dataclass
class ExperimentLock:
    path: Path  # the note; the file lock is `flock_path(path)`
    log: Callable[[str], None] = print
    _lock: Any = field(default=None, init=False, repr=False)

    def acquire(self) -> "ExperimentLock":
        from filelock import Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = _file_lock(self.path)
        try:
            lock.acquire(timeout=_ACQUIRE_WAIT_S)
        except Timeout:
            raise LockHeld(self.path, read_holder(self.path) or {}) from None
        try:
            if self.path.exists():
                holder = read_holder(self.path)
                if not is_stale(holder):
                    raise LockHeld(self.path, holder)
                pid = holder.get("pid") if holder else None
                self.log(f"taking over stale lock {self.path} (pid {pid} is gone)")
            atomic_write_json(self.path, {"pid": os.getpid(), "host": socket.gethostname(),
                                          "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        return self

    def release(self) -> None:
        if self._lock is None:
            return
        holder = read_holder(self.path)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self._lock.release()
        self._lock = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
