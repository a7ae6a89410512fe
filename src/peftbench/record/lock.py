"""Experiment locks: one run of an experiment (and seed) at a time, across shells and machines
sharing a filesystem.

A lock is a file created with O_EXCL holding pid, host and start time. A lock whose process is
gone (same host, pid not alive) is stale and taken over with a message; a lock held from another
host is respected, since its process cannot be checked from here."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path


class LockHeld(Exception):
    def __init__(self, path: Path, holder: dict):
        self.path, self.holder = path, holder
        super().__init__(f"{path.stem} is being run by pid {holder.get('pid')} on {holder.get('host')} "
                         f"since {holder.get('started_at')} (lock file {path})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_stale(holder: dict | None) -> bool:
    if holder is None:
        return True  # unreadable: a writer died between create and write
    return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1)))


@dataclass
class ExperimentLock:
    path: Path
    log: callable = print

    def acquire(self) -> "ExperimentLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.path)
                if holder is None:
                    time.sleep(0.2)  # the holder may be writing it right now
                    holder = read_holder(self.path)
                if not is_stale(holder):
                    raise LockHeld(self.path, holder)
                if read_holder(self.path) != holder:
                    continue  # someone else took it over meanwhile: look again
                self.log(f"taking over stale lock {self.path} (pid {holder and holder.get('pid')} is gone)")
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise LockHeld(self.path, read_holder(self.path) or {})

    def release(self) -> None:
        holder = read_holder(self.path)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            os.unlink(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
