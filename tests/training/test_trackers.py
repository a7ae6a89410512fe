"""Experiment trackers (`report_to`): one real run on the tiny suite reported to every installed
tracker, then each tracker's own store read back with the tracker's own reader and held against
the result JSON. No mocks: TensorBoard event files through EventAccumulator, MLflow's local
store through MlflowClient, trackio's local SQLite store through its SQLiteStorage, wandb's
offline run folder. A tracker whose extra is not installed is skipped with the reason."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from peftbench.cli import main
from peftbench.errors import ConfigError
from peftbench.experiment.config import REPORT_TO_CHOICES, build_train_config
from peftbench.record import results as R
from peftbench.training import trackers as T


# tracker -> the module its extra installs
EXTRA_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio", "wandb": "wandb"}
INSTALLED = [name for name, module in EXTRA_MODULES.items() if importlib.util.find_spec(module) is not None]


def _need(name: str) -> None:
    if name not in INSTALLED:
        pytest.skip(f"extra {name!r} not installed: pip install 'peftbench[{name}]'")


def _result(suite: Path) -> dict:
    [path] = (suite / "temporary_results").glob("*.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def tracked_run(make_suite, tmp_path_factory, tiny_model_dir):
    """One LoRA run on the tiny suite, reported to every installed tracker, offline."""
    if not INSTALLED:
        pytest.skip("no tracker extra installed (tensorboard, mlflow, trackio, wandb)")
    suite = make_suite(tmp_path_factory.mktemp("tracked") / "suite", tiny_model_dir)
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_DIR", "WANDB_API_KEY", "WANDB_PROJECT"):
            mp.delenv(var, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("TRACKIO_DIR", str(suite / ".peftbench" / "trackio"))
        code = main(["run", "--no-progress", "--clean", str(suite / "experiments/lora/tiny-r4"),
                     "--set", f"report_to={','.join(INSTALLED)}"])
    assert code == 0
    return suite, _result(suite)


def _valid_entries(result):
    return [m for m in result["train_info"]["metrics"] if R.M_VALID_ACC in m]


# ----------------------------------------------------------------------------------------------
# the setting


@pytest.mark.parametrize("report_to, names", [
    ("none", []), (None, []), ("tensorboard", ["tensorboard"]), (["mlflow", "wandb"], ["mlflow", "wandb"]),
    ("tensorboard,mlflow", ["tensorboard", "mlflow"]), (" trackio , trackio ", ["trackio"]), (["none"], []),
])
def test_report_to_names_the_trackers_like_transformers(report_to, names):
    assert T.tracker_names(report_to) == names


def test_every_accepted_name_has_a_tracker():
    assert set(REPORT_TO_CHOICES) - {"none"} == set(T.TRACKERS)


def test_an_unknown_tracker_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"report_to: unknown tracker 'tensorbord'; did you mean 'tensorboard'"):
        build_train_config([("--set", {"report_to": "tensorbord"})])
    with pytest.raises(ConfigError, match="report_to: unknown tracker 'comet'"):
        build_train_config([("x", {"report_to": ["mlflow", "comet"]})])


def test_report_to_does_not_change_the_run_key():
    from peftbench.record import runkey

    def key(cfg):
        return runkey.run_key(runkey.run_key_inputs(cfg.to_dict(), None, "cpu", {}, {"id": "m"}))

    assert key(build_train_config([])) == key(build_train_config([("x", {"report_to": ["tensorboard", "wandb"]})]))


def test_bad_report_to_on_the_command_line_exits_2_without_a_traceback(tiny_suite, capsys):
    code = main(["run", str(tiny_suite / "experiments/lora/tiny-r4"), "--set", "report_to=tensorbaord"])
    assert code == 2
    err = capsys.readouterr().err
    assert "report_to: unknown tracker 'tensorbaord'" in err and "Traceback" not in err
    assert not (tiny_suite / "temporary_results").exists()


# ----------------------------------------------------------------------------------------------
# the group: a failing tracker costs nothing


class _FailsOnSecondLog(T.NullTracker):
    """A tracker whose backend goes away mid-run (a stand-in for a lost server)."""

    name = "tensorboard"

    def __init__(self):
        self.calls = 0

    def start(self, run):
        self.run_id = "r1"

    def log(self, values, step):
        self.calls += 1
        if self.calls == 2:
            raise ConnectionError("server went away")


def test_a_tracker_that_fails_mid_run_warns_once_and_is_recorded(tmp_path):
    warnings = []
    tracker = _FailsOnSecondLog()
    group = T.Trackers([tracker], warnings.append)
    group._call("start", T.RunDescription("m/n-seed0", {}, {"experiment": "m/n"}, tmp_path))
    for step in range(1, 5):
        group.log_step(step, loss=1.0, learning_rate=1e-3, tokens_per_sec=10.0, memory=None)
    summary = group.finish(R.empty_result(), "success")
    assert tracker.calls == 2  # nothing is sent to a failed tracker again
    assert len(warnings) == 1 and "tracker tensorboard failed" in warnings[0] and "server went away" in warnings[0]
    assert summary == {"tensorboard": {"run_id": "r1", "location": None, "failed": True,
                                       "error": "log: ConnectionError: server went away"}}


def test_no_tracker_is_the_null_group(tmp_path):
    group = T.Trackers.start("none", T.RunDescription("m/n-seed0", {}, {}, tmp_path), warn=pytest.fail)
    group.log_step(1, 1.0, 1e-3, 1.0, 1)
    assert group.finish(R.empty_result(), "success") is None  # run_info.trackers: null


def test_a_tracker_that_cannot_start_leaves_the_run_a_success(tiny_suite, monkeypatch, capsys):
    _need("mlflow")
    # a store MLflow cannot create: its folder does not exist and cannot be made (a file is in the way)
    (tiny_suite / "blocker").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_suite / 'blocker' / 'mlflow.db'}")
    code = main(["run", "--no-progress", "--clean", str(tiny_suite / "experiments/lora/tiny-r4"),
                 "--set", "report_to=mlflow", "--set", "max_steps=2"])
    assert code == 0
    result = _result(tiny_suite)
    assert result["train_info"]["status"] == "success"
    record = result["run_info"]["trackers"]["mlflow"]
    assert record["failed"] is True and record["error"].startswith("start: ")
    err = capsys.readouterr().err
    assert err.count("warning: tracker mlflow failed") == 1


# ----------------------------------------------------------------------------------------------
# each tracker read back with its own reader


def test_run_info_names_each_trackers_run(tracked_run):
    _, result = tracked_run
    records = result["run_info"]["trackers"]
    assert set(records) == set(INSTALLED)
    for name, record in records.items():
        assert record["failed"] is False and record["error"] is None, (name, record)
        assert record["run_id"], name


def test_tensorboard_event_files_hold_the_results_numbers(tracked_run):
    _need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    suite, result = tracked_run
    record = result["run_info"]["trackers"]["tensorboard"]
    assert Path(record["location"]).is_relative_to(suite / ".peftbench" / "tensorboard")
    events = EventAccumulator(record["location"], size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    valid = _valid_entries(result)
    scalars = events.Scalars("eval/valid_accuracy")
    assert [s.step for s in scalars] == [m[R.M_STEP] for m in valid]
    assert [s.value for s in scalars] == pytest.approx([m[R.M_VALID_ACC] for m in valid])
    assert len(events.Scalars(T.STEP_LOSS)) == result["run_info"]["train_config"]["max_steps"]
    final, train = R.final_metrics(result), result["train_info"]
    assert events.Scalars("final/test_accuracy")[0].value == pytest.approx(final[R.M_TEST_ACC])
    assert events.Scalars("final/forgetting")[0].value == pytest.approx(final[R.M_FORGETTING], rel=1e-6)
    assert events.Scalars("final/file_size")[0].value == pytest.approx(train["file_size"], rel=1e-6)
    assert events.Scalars("final/num_trainable_params")[0].value == train["num_trainable_params"]
    assert events.Scalars("final/test_time")[0].value == pytest.approx(train["test_time"], rel=1e-6)

    def text(tag):  # SummaryWriter.add_text stores a text under "<tag>/text_summary"
        return events.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()

    assert text("status") == "success"
    assert text("run_key") == result["run_info"]["run_key"]


def test_mlflow_local_store_holds_the_results_numbers(tracked_run):
    _need("mlflow")
    from mlflow.tracking import MlflowClient

    suite, result = tracked_run
    record = result["run_info"]["trackers"]["mlflow"]
    assert record["location"] == f"sqlite:///{(suite / '.peftbench' / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=record["location"])
    run = client.get_run(record["run_id"])
    assert run.info.run_name == "lora/tiny-r4-seed0" and run.info.status == "FINISHED"
    assert run.data.tags["run_key"] == result["run_info"]["run_key"] and run.data.tags["status"] == "success"
    assert run.data.params["train_config.max_steps"] == "4"
    assert run.data.params["peft_config.r"] == "4"
    history = client.get_metric_history(record["run_id"], "eval/valid_accuracy")
    valid = _valid_entries(result)
    assert sorted((m.step, m.value) for m in history) == [(e[R.M_STEP], e[R.M_VALID_ACC]) for e in valid]
    final, train = R.final_metrics(result), result["train_info"]
    assert run.data.metrics["final/test_accuracy"] == final[R.M_TEST_ACC]
    assert run.data.metrics["final/test_accuracy_flexible"] == final[R.M_TEST_ACC_FLEX]
    assert run.data.metrics["final/forgetting"] == final[R.M_FORGETTING]
    assert run.data.metrics["final/cpu_peak_rss"] == train[R.CPU_PEAK_RSS]
    assert run.data.metrics["final/num_total_params"] == train["num_total_params"]
    assert len(client.get_metric_history(record["run_id"], T.STEP_LR)) == 4


def test_trackio_local_store_holds_the_results_numbers(tracked_run):
    _need("trackio")
    from trackio.sqlite_storage import SQLiteStorage

    _, result = tracked_run
    record = result["run_info"]["trackers"]["trackio"]
    logs = SQLiteStorage.get_logs(T.PROJECT, run_id=record["run_id"])
    valid = _valid_entries(result)
    assert [(row["step"], row["eval/valid_accuracy"]) for row in logs if "eval/valid_accuracy" in row] == \
        [(m[R.M_STEP], m[R.M_VALID_ACC]) for m in valid]
    assert len([row for row in logs if T.STEP_LOSS in row]) == 4
    [final_row] = [row for row in logs if "final/test_accuracy" in row]
    final, train = R.final_metrics(result), result["train_info"]
    assert final_row["final/test_accuracy"] == final[R.M_TEST_ACC]
    assert final_row["final/forgetting"] == final[R.M_FORGETTING]
    assert final_row["final/file_size"] == train["file_size"]
    config = SQLiteStorage.get_run_config(T.PROJECT, run_id=record["run_id"])
    assert config["run_key"] == result["run_info"]["run_key"] and config["train_config.max_steps"] == "4"
    assert logs[-1][T.STATUS_METRIC] == T.STATUS_CODE["success"]


def test_wandb_writes_an_offline_run_folder_named_by_its_id(tracked_run):
    _need("wandb")
    suite, result = tracked_run
    record = result["run_info"]["trackers"]["wandb"]
    folder = Path(record["location"])
    assert folder.is_dir() and folder.name.startswith("offline-run-") and folder.name.endswith(record["run_id"])
    assert folder.is_relative_to(suite / ".peftbench" / "wandb")
    assert (folder / f"run-{record['run_id']}.wandb").is_file()


def test_run_all_passes_report_to_through_and_it_does_not_change_the_run_key(tiny_suite):
    _need("tensorboard")
    import shutil

    shutil.rmtree(tiny_suite / "experiments" / "full-finetuning")  # one run is enough
    assert main(["run-all", str(tiny_suite), "--set", "report_to=tensorboard", "--set", "max_steps=2"]) == 0
    result = _result(tiny_suite)
    record = result["run_info"]["trackers"]["tensorboard"]
    assert record["failed"] is False and Path(record["location"]).is_dir()
    # the tracker does not change the numbers: the run key without it is the one recorded
    from peftbench.experiment.config import load_experiment
    from peftbench.record import runkey

    plain = load_experiment(tiny_suite / "experiments" / "lora" / "tiny-r4", {"max_steps": 2})
    assert runkey.compute(plain, "cpu")[0] == result["run_info"]["run_key"]


def test_without_a_listening_tracker_the_step_loss_is_never_read(tmp_path):
    class Unreadable:  # a device loss whose reading would make the host wait for the device
        def __float__(self):
            raise AssertionError("the loss was read")

    group = T.Trackers.none()
    group.log_step(1, Unreadable(), 1e-3, 1.0, 1)
    assert not group.listening


def test_a_failed_run_is_tagged_failed_in_the_tracker(tiny_suite, monkeypatch):
    _need("mlflow")
    from mlflow.tracking import MlflowClient

    from peftbench.training import loop

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(loop, "train_step", boom)
    code = main(["run", "--no-progress", str(tiny_suite / "experiments/lora/tiny-r4"), "--set", "report_to=mlflow"])
    assert code == 1
    [path] = (tiny_suite / "cancelled_results").glob("*.json")
    result = json.loads(path.read_text())
    record = result["run_info"]["trackers"]["mlflow"]
    run = MlflowClient(tracking_uri=record["location"]).get_run(record["run_id"])
    assert result["train_info"]["status"] == "failed"
    assert run.data.tags["status"] == "failed" and run.info.status == "FAILED"
