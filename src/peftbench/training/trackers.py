"""Experiment trackers: a run reported to TensorBoard, MLflow, Trackio or Weights & Biases.

Chosen with the train-config field `report_to`, spelt as transformers' `TrainingArguments.report_to`
("none", one name, or a list). What a tracker receives:
- at the start: the resolved train and PEFT config as parameters; run key, experiment, seed and
  suite as tags; the run is named `<method>/<name>-seed<N>`;
- after every optimizer step: train loss, learning rate, tokens/s and memory (`train/*`);
- at every validation: the metrics entry the result records for it (`eval/*`);
- at the end: the final metrics entry (test accuracies, forgetting, ...) and the train_info
  figures (times, memory, parameter counts, file size) (`final/*`), and the status as a tag.

Trackers never cost a result: a tracker that cannot start (extra not installed, store not
writable) or raises later gives one warning, is replaced by the null tracker, and the result's
`run_info["trackers"]` records it as failed with the error. Everything is offline by default:
- tensorboard: event files under `<suite>/.peftbench/tensorboard/<run>/<UTC time>/`;
- mlflow: `MLFLOW_TRACKING_URI` if set, else a SQLite store `<suite>/.peftbench/mlflow.db`
  (MLflow 3 keeps its file store only in maintenance mode); experiment `MLFLOW_EXPERIMENT_NAME`
  or "peftbench";
- trackio: its local SQLite store, `TRACKIO_DIR` if set, else `<suite>/.peftbench/trackio`
  (trackio reads that variable once, when first imported); project "peftbench"; trackio has no
  tags, so the status is the last logged metric `status_code` (0 success, 1 failed, 2 cancelled);
- wandb: `WANDB_MODE` if set; else online with `WANDB_API_KEY`, offline without; files under
  `WANDB_DIR` or `<suite>/.peftbench/wandb`; project `WANDB_PROJECT` or "peftbench".
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from peftbench.record import results as R

PROJECT = "peftbench"
# train_info figures sent at the end, besides the final metrics entry
_FINAL_TRAIN_INFO = ("train_time", "eval_time", "test_time", "file_size", "num_trainable_params",
                     "num_total_params", R.ACCEL_MEM_MAX, R.ACCEL_MEM_AVG, R.ACCEL_MEM_99, R.CPU_PEAK_RSS)
# per-step metric names (tracker keys, not result keys: the result keeps no per-step values)
STEP_LOSS, STEP_LR, STEP_TOKENS_PER_SEC, STEP_MEMORY = "train/loss", "train/learning_rate", "train/tokens_per_sec", "train/memory"


def tracker_names(report_to: str | list[str] | None) -> list[str]:
    """The trackers `report_to` asks for, in order, without "none" or repeats. A string may list
    several names separated by commas ("tensorboard,mlflow", as `--set report_to=...` gives)."""
    if report_to is None:
        return []
    items = report_to.split(",") if isinstance(report_to, str) else list(report_to)
    names = [str(n).strip() for n in items]
    return [n for n in dict.fromkeys(names) if n and n != "none"]


def metric_key(result_key: str) -> str:
    """A result metric name as a tracker key: 'tokens / sec' -> 'tokens_per_sec',
    'valid accuracy flexible' -> 'valid_accuracy_flexible' (no spaces: TensorBoard and the
    wandb UI treat them badly)."""
    return result_key.replace(" / ", "_per_").replace(" ", "_")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as flat `a.b.c -> text` parameters (MLflow's parameters are strings)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return out


def _numbers(entry: dict[str, Any], prefix: str) -> dict[str, float]:
    return {prefix + metric_key(k): float(v) for k, v in entry.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def final_values(result: dict[str, Any]) -> dict[str, float]:
    """What the end of a run reports: the final metrics entry and the train_info figures, as
    `final/<key>`; values that were not measured (None) are left out."""
    info = result[R.TRAIN_INFO]
    values = _numbers(R.final_metrics(result), "final/")
    values.update(_numbers({k: info.get(k) for k in _FINAL_TRAIN_INFO}, "final/"))
    return values


def validation_values(entry: dict[str, Any]) -> dict[str, float]:
    """A validation's metrics entry as `eval/<key>` (step excluded: it is the x axis)."""
    return _numbers({k: v for k, v in entry.items() if k != R.M_STEP}, "eval/")


@dataclass
class RunDescription:
    """What every tracker is told when a run starts."""

    run_name: str  # "<method>/<name>-seed<N>"
    params: dict[str, str]  # flat config
    tags: dict[str, str]  # run key, experiment, seed, suite
    state_dir: Path  # <suite>/.peftbench: default home of the local stores


# ----------------------------------------------------------------------------------------------
# the trackers: each has start / log / finish and says where its run is (run_id, location)


class NullTracker:
    """The stand-in for no tracker (report_to "none") and for a tracker that failed."""

    name = "none"
    run_id: str | None = None
    location: str | None = None

    def start(self, run: RunDescription) -> None:
        pass

    def log(self, values: dict[str, float], step: int) -> None:
        pass

    def finish(self, status: str) -> None:
        pass


class TensorBoardTracker(NullTracker):
    name = "tensorboard"

    def start(self, run: RunDescription) -> None:
        from torch.utils.tensorboard import SummaryWriter

        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        folder = run.state_dir / "tensorboard" / run.run_name / stamp
        self._writer = SummaryWriter(log_dir=str(folder))
        self.run_id, self.location = f"{run.run_name}/{stamp}", str(folder)
        self._writer.add_text("config", _markdown_json(run.params), 0)
        for key, value in run.tags.items():
            self._writer.add_text(key, str(value), 0)

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)

    def finish(self, status: str) -> None:
        self._writer.add_text("status", status, 0)
        self._writer.close()


class MlflowTracker(NullTracker):
    name = "mlflow"
    # peftbench status -> MLflow RunStatus
    _STATUS = {"success": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}

    def start(self, run: RunDescription) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            run.state_dir.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(run.state_dir / 'mlflow.db').resolve()}"
        self._client = client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or PROJECT
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        self.run_id = client.create_run(experiment_id, run_name=run.run_name, tags=run.tags).info.run_id
        self.location = uri
        from mlflow.entities import Param

        params = [Param(k, v[:6000]) for k, v in run.params.items()]  # MLflow caps a value at 6000 chars
        for i in range(0, len(params), 100):  # and a batch at 100 parameters
            client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def finish(self, status: str) -> None:
        self._client.set_tag(self.run_id, "status", status)
        self._client.set_terminated(self.run_id, self._STATUS.get(status, "FAILED"))


class TrackioTracker(NullTracker):
    name = "trackio"

    def start(self, run: RunDescription) -> None:
        # trackio reads TRACKIO_DIR once, when first imported: set it before that, unless the user did.
        os.environ.setdefault("TRACKIO_DIR", str(run.state_dir / "trackio"))
        with contextlib.redirect_stdout(sys.stderr):  # its banner is not the command's output
            import trackio

            self._run = trackio.init(project=PROJECT, name=run.run_name, config={**run.params, **run.tags},
                                     embed=False, auto_log_cpu=False, auto_log_gpu=False)
        self.run_id = self._run.id
        from trackio.utils import TRACKIO_DIR

        self.location = str(TRACKIO_DIR)

    def log(self, values: dict[str, float], step: int) -> None:
        self._run.log(values, step=step)

    def finish(self, status: str) -> None:
        # trackio has no tags, and stores the config with the first log only: the status is a
        # metric, STATUS_CODE (0 success, 1 failed, 2 cancelled)
        self._run.log({STATUS_METRIC: float(STATUS_CODE[status])})
        with contextlib.redirect_stdout(sys.stderr):
            self._run.finish()


STATUS_METRIC, STATUS_CODE = "status_code", {"success": 0, "failed": 1, "cancelled": 2}


class WandbTracker(NullTracker):
    name = "wandb"

    def start(self, run: RunDescription) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        folder = Path(os.environ.get("WANDB_DIR") or run.state_dir / "wandb")
        folder.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, name=run.run_name,
                               config={"params": run.params, **run.tags}, dir=str(folder), mode=mode,
                               tags=[run.tags["experiment"]])
        self.run_id, self.location = self._run.id, str(Path(self._run.dir).parent)

    def log(self, values: dict[str, float], step: int) -> None:
        self._run.log(values, step=step)

    def finish(self, status: str) -> None:
        self._run.tags = tuple(self._run.tags) + (status,)
        self._run.summary["status"] = status
        self._run.finish(exit_code=0 if status == "success" else 1)


TRACKERS: dict[str, type[NullTracker]] = {
    t.name: t for t in (TensorBoardTracker, MlflowTracker, TrackioTracker, WandbTracker)}


def _markdown_json(data: dict[str, Any]) -> str:
    # TensorBoard renders text as Markdown: indent by 4 spaces for a code block
    return "\n".join("    " + line for line in json.dumps(data, indent=2, sort_keys=True).splitlines())


# ----------------------------------------------------------------------------------------------
# the group the runner holds


class Trackers:
    """The trackers of one run behind one interface. Each call goes to every tracker; a tracker
    that raises is reported once through `warn`, swapped for the null tracker, and recorded as
    failed in `summary()`. `Trackers([])` is the stand-in for report_to "none"."""

    def __init__(self, trackers: list[NullTracker], warn: Callable[[str], None]):
        self._live = list(trackers)
        self._warn = warn
        self._records: dict[str, dict[str, Any]] = {
            t.name: {"run_id": None, "location": None, "failed": False, "error": None} for t in trackers}
        self._step = 0

    @classmethod
    def none(cls) -> "Trackers":
        """The stand-in group of a run with report_to "none" (and of one not started yet)."""
        return cls([], warn=lambda msg: None)

    @classmethod
    def start(cls, report_to, run: RunDescription, warn: Callable[[str], None]) -> "Trackers":
        trackers = [TRACKERS[name]() for name in tracker_names(report_to)]
        group = cls(trackers, warn)
        group._call("start", run)
        return group

    def _call(self, method: str, *args) -> None:
        for i, tracker in enumerate(self._live):
            if type(tracker) is NullTracker:
                continue
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker never costs a result
                record = self._records[tracker.name]
                record.update(failed=True, error=f"{method}: {type(exc).__name__}: {exc}")
                hint = f" (pip install 'peftbench[{tracker.name}]')" if isinstance(exc, ImportError) else ""
                self._warn(f"warning: tracker {tracker.name} failed ({record['error']}){hint}; "
                           "the run goes on without it")
                self._live[i] = NullTracker()
            else:
                self._records[tracker.name].update(run_id=tracker.run_id, location=tracker.location)

    def log_step(self, step: int, loss: float, learning_rate: float | None, tokens_per_sec: float | None,
                 memory: int | None) -> None:
        """One optimizer step. memory: reserved bytes on an accelerator, resident set size on CPU.
        `loss` may be a device tensor: it is read (a wait for the device) only when a tracker listens."""
        self._step = step
        if not self.listening:
            return
        values = {STEP_LOSS: loss, STEP_LR: learning_rate, STEP_TOKENS_PER_SEC: tokens_per_sec, STEP_MEMORY: memory}
        self._call("log", {k: float(v) for k, v in values.items() if v is not None}, step)

    @property
    def listening(self) -> bool:
        """Whether any tracker still receives values (none asked for, or all failed: False)."""
        return any(type(t) is not NullTracker for t in self._live)

    def log_validation(self, entry: dict[str, Any]) -> None:
        """A validation's metrics entry, as the result records it."""
        self._step = entry.get(R.M_STEP, self._step)
        self._call("log", validation_values(entry), self._step)

    def finish(self, result: dict[str, Any], status: str) -> dict[str, dict[str, Any]] | None:
        """Send the final figures of `result` and the status, close every tracker, and return what
        goes into run_info["trackers"] (None when no tracker was asked for)."""
        final = final_values(result)
        if final:
            self._call("log", final, R.final_metrics(result).get(R.M_STEP, self._step))
        self._call("finish", status)
        self._live = []
        return self.summary() or None

    def summary(self) -> dict[str, dict[str, Any]]:
        """name -> {run_id, location, failed, error} for every tracker asked for."""
        return {name: dict(record) for name, record in self._records.items()}


def describe_run(exp, run_key: str | None, suite_label: str, state_dir: Path) -> RunDescription:
    """The name, parameters and tags of `exp` for the trackers."""
    cfg = exp.train_config
    params = flatten({"train_config": cfg.to_dict()})
    if exp.peft_config is not None:
        data = exp.peft_config.to_dict()
        params.update(flatten({"peft_config": {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()}}))
    tags = {"run_key": run_key or "", "experiment": exp.experiment_name, "seed": str(cfg.seed),
            "suite": suite_label, "method": exp.method}
    return RunDescription(f"{exp.experiment_name}-seed{cfg.seed}", params, tags, Path(state_dir))
