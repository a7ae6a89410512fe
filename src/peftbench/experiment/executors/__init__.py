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

Nothing here imports torch or ray at import time: `ray` is an optional extra, loaded by the ray
executor when it is asked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXECUTORS = ("local", "ray")

# Words of Outcome.status. The first three are what a run that started records in its result.
RAN = ("success", "failed", "cancelled")
STATUSES = (*RAN, "skipped", "invalid", "not started")


@dataclass(frozen=True)
class RunItem:
    """One run: an experiment folder, a seed and `--set` overrides (KEY=VALUE, as typed)."""

    path: Path  # <suite>/experiments/<method>/<name>
    seed: int
    overrides: tuple[str, ...] = ()
    experiment: str = ""  # "<method>/<name>", for messages; derived from `path` when empty
    reason: str = ""  # why it runs (the plan's reason), for messages

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "overrides", tuple(self.overrides))
        if not self.experiment:
            object.__setattr__(self, "experiment", f"{self.path.parent.name}/{self.path.name}")


@dataclass
class Settings:
    """How to run: options passed to every child, and the executor's own."""

    executor: str = "local"  # one of EXECUTORS
    force: bool = False  # run even when an up-to-date result exists
    resume: bool = True  # continue from a checkpoint of the same run key (local executor)
    keep_checkpoint: bool = False
    progress: bool = True  # the child's progress bars
    verbose: bool = False
    keep_adapters: bool = False  # default: each child deletes its trained adapter (--clean)
    # ray executor only
    address: str | None = None  # a running Ray cluster ("auto", "ray://host:10001", ...); None: start one here
    gpus_per_run: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_run: float = 1.0
    max_retries: int = 1  # retries after a lost node or a killed worker process; failed runs never retry


@dataclass
class Outcome:
    """What became of one item."""

    item: RunItem
    status: str  # one of STATUSES
    detail: str  # the summary's "RESULT OR REASON" column: the result path, or why not
    seconds: float | None = None  # wall time of the run, None when none started
    result_path: Path | None = None  # the result this run wrote (in the suite's folders)
    retried: int = 0  # how many times the executor started the run again after a lost node/worker
    node: str | None = None  # where it ran (ray: node id; local: None)
    error: str | None = None  # the run's error message (failed, invalid)
    run_key: str | None = None  # the run key the run computed for itself
    run_key_matched: bool | None = None  # whether that key is the one the driver planned with


class Outcomes(list):
    """list[Outcome], plus whether the driver was interrupted (Ctrl+C or SIGTERM)."""

    interrupted: bool = False


def execute(items: list[RunItem], settings: Settings) -> Outcomes:
    """Run `items` with the executor `settings.executor`; one Outcome per item, in order.

    Raises UserError for bad settings (an unknown executor, ray missing or unreachable) before
    anything runs."""
    from peftbench.errors import UserError

    if settings.executor == "local":
        from peftbench.experiment.executors import local

        return local.execute(items, settings)
    if settings.executor == "ray":
        from peftbench.experiment.executors import ray as ray_executor

        return ray_executor.execute(items, settings)
    raise UserError(f"unknown executor {settings.executor!r}; available: {', '.join(EXECUTORS)}")


class Terminated(BaseException):
    """SIGTERM to the driver, raised in its main thread so the running experiments can be told.
    A BaseException for the reason RunCancelled is one: no `except Exception` may swallow it."""

