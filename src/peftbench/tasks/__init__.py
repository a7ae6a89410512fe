"""Tasks: what a run learns and how it is tested, one module per task, registered by name.

A task owns its data (training rows, the validation pool, one or several named test sets), the
prompt and the training target, the default generation budget, the grading of one generated
text, the point after which generation may stop without changing any grade, and how its
metrics aggregate (`peftbench.tasks.base.Task`). The runner, the engines, `rescore`, `bench`,
`tune` and the leaderboard ask the task; no other module names a dataset or a grader.

Adding a task is adding one module here that defines a `Task` subclass and decorates it with
`@register`: modules of this package are discovered, never listed by hand.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from peftbench.errors import UserError, suggest
from peftbench.tasks.base import DEFAULT_TASK, Task, register, registered

__all__ = ["DEFAULT_TASK", "Task", "describe", "get", "names", "register"]

# modules of this package that hold no task
_NOT_TASKS = {"base", "sources"}


@functools.cache  # once per process: config validation asks for every experiment of a plan
def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_TASKS:
            importlib.import_module(f"{__name__}.{info.name}")


def names() -> list[str]:
    """Every registered task name, sorted."""
    _discover()
    return sorted(registered())


def get(name: str) -> Task:
    """The task registered as `name`; a UserError with "did you mean" for an unknown name."""
    _discover()
    tasks = registered()
    if not isinstance(name, str) or name not in tasks:
        raise UserError(f"task: unknown task {name!r};{suggest(str(name), tasks)}")
    return tasks[name]


def describe(name: str) -> str:
    """The task's one-line description, also for a name a result holds that no task here has."""
    return get(name).description if name in names() else "a task this peftbench does not know"
