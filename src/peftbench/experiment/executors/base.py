"""What the executors (local.py, ray.py) and their child runs (child.py) share: the items to
run, the driver's settings, and what became of each item."""

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


class Terminated(BaseException):
    """SIGTERM to the driver, raised in its main thread so the running experiments can be told.
    A BaseException for the reason RunCancelled is one: no `except Exception` may swallow it."""

