"""Executors: how the runs of a plan are carried out, one fresh `peftbench run` process each.

    from peftbench.experiment.executors import RunItem, Settings, execute
    outcomes = execute([RunItem(path, seed=0, overrides=("max_steps=20",))], Settings(executor="ray"))
    outcomes.interrupted   # True when Ctrl+C / SIGTERM stopped the driver (exit status 130)

An item is one (experiment folder, seed, `--set` overrides) run; `execute` returns one `Outcome`
per item, in the order given. Two executors sit behind the same call:
- `local` (local.py): one run after another in this machine's child processes (the default);
- `ray` (ray.py): each run is a Ray task that starts the child on a worker, over every GPU of
  this machine or of a cluster; results come back to this process, which writes them.
Both take the experiment's lock before a run and check, just before it starts, that it is still
stale (unless `Settings.force`), so two drivers on one suite never run the same experiment twice.
A child tells its driver what it did in a small JSON file (child.py), never in its log text.
What the executors and their children share (items, settings, outcomes) is in base.py.

Nothing here imports torch or ray at import time: `ray` is an optional extra, loaded by the ray
executor when it is asked for."""

from __future__ import annotations

from peftbench.errors import UserError
from peftbench.experiment.executors import local
from peftbench.experiment.executors import ray as ray_executor
from peftbench.experiment.executors.base import (EXECUTORS, RAN, STATUSES, Outcome, Outcomes, RunItem, Settings,
                                                 Terminated)

__all__ = ["EXECUTORS", "RAN", "STATUSES", "Outcome", "Outcomes", "RunItem", "Settings", "Terminated", "execute"]


def execute(items: list[RunItem], settings: Settings) -> Outcomes:
    """Run `items` with the executor `settings.executor`; one Outcome per item, in order.

    Raises UserError for bad settings (an unknown executor, ray missing or unreachable) before
    anything runs."""
    if settings.executor == "local":
        return local.execute(items, settings)
    if settings.executor == "ray":
        return ray_executor.execute(items, settings)
    raise UserError(f"unknown executor {settings.executor!r}; available: {', '.join(EXECUTORS)}")
