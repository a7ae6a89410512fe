"""Exceptions that decide the exit status of a command.

A `UserError` is bad input (a config typo, a missing folder): the CLI prints its message and
exits with status 2, without a traceback unless --debug is given. Anything else that escapes a
run is a failure of the run itself and is recorded as such.
"""


class UserError(Exception):
    """Bad input from the user; the message says what to change."""


class ConfigError(UserError):
    """One or more problems in a configuration, all reported together."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {source} ({len(self.problems)} problem(s)):\n{lines}")


class RunCancelled(Exception):
    """Raised inside a run when the user pressed Ctrl+C or the process got SIGTERM."""
