"""Exceptions that decide the exit status of a command.

A `UserError` is bad input (a config typo, a missing folder): the CLI prints its message and
exits with status 2, without a traceback unless --debug is given. Anything else that escapes a
run is a failure of the run itself and is recorded as such.

`ExitCode` is the one list of exit statuses; every place that decides one returns a member.
"""

from __future__ import annotations

import difflib
import os
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a run failed (or, for run-all, was cancelled from outside)
    BAD_INPUT = 2  # a UserError: nothing was run or written
    CANCELLED = 130  # Ctrl+C or SIGTERM: 128 + SIGINT, as a shell reports it


class UserError(Exception):
    """Bad input from the user; the message says what to change."""


class ConfigError(UserError):
    """One or more problems in a configuration, all reported together."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {source} ({len(self.problems)} problem(s)):\n{lines}")


class ResultError(UserError):
    """A result file that cannot be used: unreadable, truncated, not a result, a newer schema,
    impossible values. Raised by `record.results.load`, the one reader of result files."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: unreadable result ({reason})")


class RunCancelled(BaseException):
    """Raised inside a run when the process got SIGTERM (Ctrl+C stays a KeyboardInterrupt).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way (logging's
    handlers, a tracker call, a library's retry loop) takes a cancel for an error and goes on."""


def suggest(name: str, choices) -> str:
    """The "did you mean ...? available: ..." tail of a message about an unknown name."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    hint = f" did you mean {close[0]!r}?" if close else ""
    return f"{hint} available: {', '.join(sorted(choices))}"
