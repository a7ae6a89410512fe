"""`peftbench tune`: the choice rules (pure, table-driven) and one search on the tiny suite.

The search tests share one module fixture: a grid of three learning rates with a 4-step budget
on 4 validation items, run through the CLI (each trial a child `peftbench run`). They run in
file order: later ones widen the space and search another field, each a search of its own with
its own record."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from peftbench.cli import main
from peftbench.errors import ConfigError
from peftbench.experiment import tuning as T

LRS = "1e-4,1e-3,1e-2"
ABSURD_LR = "1e20"  # AdamW steps of 1e20 make the loss NaN at step 2: the runner fails the run


def _trial(number, acc, loss=1.0, status="success", **overrides):
    return {"number": number, "overrides": overrides or {"optimizer_kwargs.lr": 1e-3}, "run_key": f"k{number}",
            "status": status, "valid_accuracy": acc, "valid_loss": loss}


SPACE = [T.Param("r", "peft", (8, 16)), T.Param("optimizer_kwargs.lr", "train", (1e-4, 1e-3))]


@pytest.mark.parametrize("trials, chosen, reason", [
    ([_trial(0, 0.4), _trial(1, 0.5), _trial(2, 0.3)], 1, "highest validation accuracy"),
    ([_trial(0, 0.5, loss=2.0), _trial(1, 0.5, loss=1.5)], 1, "lower validation loss"),
    ([_trial(0, 0.5, **{"r": 16, "optimizer_kwargs.lr": 1e-4}), _trial(1, 0.5, **{"r": 8, "optimizer_kwargs.lr": 1e-3})],
     1, "the simpler setting"),  # smaller rank first, before the learning rate
    ([_trial(0, 0.5, **{"r": 8, "optimizer_kwargs.lr": 1e-3}), _trial(1, 0.5, **{"r": 8, "optimizer_kwargs.lr": 1e-4})],
     1, "the simpler setting"),
    ([_trial(0, None, status="failed"), _trial(1, 0.1), _trial(2, None, status="cancelled")], 1, "the only successful"),
    ([_trial(0, 0.2, loss=math.nan), _trial(1, 0.2, loss=3.0)], 1, "lower validation loss"),
])
def test_choice_is_accuracy_then_loss_then_simplicity_and_never_a_failure(trials, chosen, reason):
    choice = T.choose(trials, SPACE)
    assert choice["number"] == chosen
    assert reason in choice["reason"]


def test_no_successful_trial_means_no_choice():
    assert T.choose([_trial(0, None, status="failed")], SPACE) is None


def test_paired_difference_reports_a_coin_toss():
    rows = lambda correct: [{"split": "valid", "item_id": f"i{i}", "correct_strict": c} for i, c in enumerate(correct)]
    paired = T.paired_difference(rows([1, 1, 0, 1]), rows([1, 0, 0, 1]))
    assert (paired["n"], paired["only_best"], paired["only_runner_up"]) == (4, 1, 0)
    assert paired["diff"] == pytest.approx(0.25) and paired["coin_toss"] and paired["p_mcnemar"] == 1.0


@pytest.mark.parametrize("specs, message", [
    (["optimizer_kwargs.lr"], "expected KEY=V1,V2"),
    (["max_steps=10,20"], "--budget-steps"),
    (["r=4,8", "r=8,16"], "given twice"),
    (["r=4"], "one value, so nothing is being chosen"),
    (["r=4,4"], "one value, so nothing is being chosen"),
    ([], "no --param given"),
])
def test_bad_param_specs_are_reported(specs, message):
    with pytest.raises(ConfigError, match=message):
        T.parse_param_specs(specs)


def test_bad_input_exits_2_and_runs_nothing(tiny_suite, capsys):
    exp = tiny_suite / "experiments" / "lora" / "tiny-r4"
    assert main(["tune", str(exp), "--param", "lora_alph=4,8"]) == 2
    assert "did you mean 'lora_alpha'?" in capsys.readouterr().err
    assert main(["tune", str(exp), "--param", "r=four,8"]) == 2
    assert not (tiny_suite / ".peftbench" / "tuning" / "lora--tiny-r4" / "temporary_results").exists()


def test_a_value_a_field_refuses_leaves_no_trial_folders_behind(tiny_suite, capsys):
    exp = tiny_suite / "experiments" / "lora" / "tiny-r4"
    assert main(["tune", str(exp), "--param", "optimizer_kwargs.lr=1e-3,-1", "--param", "warmup_ratio=0.1,0.2"]) == 2
    assert "optimizer_kwargs.lr: must be > 0, got -1" in capsys.readouterr().err
    assert not (tiny_suite / ".peftbench").exists()


def test_a_folder_is_checked_whole_before_anything_runs(tiny_suite, capsys):
    # r is a LoRA field: the full fine-tuning experiment below the same folder cannot take it
    assert main(["tune", str(tiny_suite / "experiments"), "--param", "r=4,8"]) == 2
    err = capsys.readouterr().err
    assert "full-finetuning/tiny: --param r: not a field" in err and "lora/tiny-r4" not in err
    assert not (tiny_suite / ".peftbench" / "tuning" / "lora--tiny-r4" / "temporary_results").exists()


def test_ray_executor_without_its_module_is_bad_input(tiny_suite, capsys):
    from importlib.util import find_spec

    if find_spec("peftbench.experiment.executors.ray") is not None:
        pytest.skip("this checkout has run-all's Ray executor: --executor ray runs trials through it")
    exp = tiny_suite / "experiments" / "lora" / "tiny-r4"
    assert main(["tune", str(exp), "--param", "optimizer_kwargs.lr=1e-3,1e-2", "--executor", "ray"]) == 2
    assert "use --executor local" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# one search on the tiny suite


def _tune(exp: Path, lrs: str, *extra: str) -> int:
    return main(["tune", str(exp), "--param", f"optimizer_kwargs.lr={lrs}", "--budget-steps", "4",
                 "--tune-valid-size", "4", "--no-progress", *extra])


def _records(suite: Path) -> dict[str, dict]:
    """The records of lora/tiny-r4's searches, by file name."""
    return {path.name: record for path, record in T.records_for(suite, "lora", "tiny-r4")}


def _record_of(suite: Path, space: dict) -> dict:
    [record] = [r for r in _records(suite).values() if r["search_space"] == space]
    return record


def _trial_results(suite: Path) -> list[Path]:
    return sorted((suite / ".peftbench" / "tuning" / "lora--tiny-r4").glob("*_results/*.json"))


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_model_dir, make_suite):
    """The tiny suite after `tune` over three learning rates, with the test split unreadable
    while it ran (garbage in test.jsonl): a trial that read it would fail."""
    suite = make_suite(tmp_path_factory.mktemp("tune") / "suite", tiny_model_dir)
    test_file = suite / "data" / "gsm8k" / "test.jsonl"
    good = test_file.read_text()
    test_file.write_text("this is not JSON: no trial may read the test split\n")
    code = _tune(suite / "experiments" / "lora" / "tiny-r4", LRS)
    test_file.write_text(good)
    [record] = _records(suite).values()
    return suite, code, record


def test_three_learning_rates_give_three_trials_and_the_record_names_the_best(searched):
    suite, code, record = searched
    assert code == 0
    assert record["search_space"] == {"optimizer_kwargs.lr": [1e-4, 1e-3, 1e-2]}
    assert record["budget"]["trials"] == 3 and record["budget"]["steps_per_trial"] == 4
    assert record["budget"]["seconds"] > 0
    assert len(_trial_results(suite)) == 3
    trials = record["trials"]
    assert sorted(t["overrides"]["optimizer_kwargs.lr"] for t in trials) == [1e-4, 1e-3, 1e-2]
    assert all(t["status"] == "success" and t["valid_loss"] is not None for t in trials)
    # the argmax of validation accuracy, ties by validation loss, read from the trial results
    by_result = {}
    for path in _trial_results(suite):
        result = json.loads(path.read_text())
        last = [m for m in result["train_info"]["metrics"] if "valid accuracy" in m][-1]
        by_result[result["run_info"]["run_key"]] = (last["valid accuracy"], -last["valid loss"])
    assert record["choice"]["run_key"] == max(by_result, key=by_result.get)
    assert record["choice"]["paired_vs_runner_up"]["n"] == 4


def test_no_trial_touches_the_test_split(searched):
    suite, _, record = searched
    for path in _trial_results(suite):
        result = json.loads(path.read_text())
        assert result["run_info"]["train_config"]["tune_valid_size"] == 4
        assert result["meta_info"]["dataset_info"]["eval"]["test_rows"] == 0
        assert all(m.get("test accuracy") is None for m in result["train_info"]["metrics"])
        predictions = path.with_name(result["run_info"]["predictions"]["file"])
        with gzip.open(predictions, "rt") as f:
            splits = {json.loads(line)["split"] for line in f}
        assert splits == {"valid"}


def test_the_tuned_experiment_loads_runs_and_is_a_tuned_row(searched):
    from peftbench.analysis import html_report, leaderboard
    from peftbench.experiment.config import load_experiment
    from peftbench.training.runner import RunOptions, run_experiment

    suite, _, record = searched
    tuned = suite / "experiments" / "lora" / "tiny-r4-tuned"
    exp = load_experiment(tuned)
    assert exp.train_config.optimizer_kwargs["lr"] == record["choice"]["overrides"]["optimizer_kwargs.lr"]
    assert exp.train_config.tune_valid_size == 0  # an ordinary run: tested on the test split
    assert "`tiny-r4-tuned`" in (suite / "experiments" / "lora" / "README.md").read_text()
    outcome = run_experiment(exp, RunOptions(progress=False, clean=True, log=lambda m: None))
    assert outcome.status.value == "success"
    runs = leaderboard.load_runs([suite], include_temporary=True)
    rows = leaderboard.records(leaderboard.filter_rows(leaderboard.leaderboard(runs), "tuned"))
    assert [(r["experiment"], r["tune_trials"], r["tune_steps"]) for r in rows] == [("lora/tiny-r4-tuned", 3, 4)]
    assert rows[0]["test_acc"] is not None and "3 trials x 4 steps" in rows[0]["tune_budget"]
    data = html_report.report_data(runs)
    assert len(data["tuning"]["lora/tiny-r4-tuned"]["trials"]) == 3


def test_a_second_tune_runs_nothing_even_with_another_test_set(searched, write_jsonl):
    suite, _, record = searched
    # another test set: trials never read it, so their run keys and the choice stay as they are
    write_jsonl(suite / "data" / "gsm8k" / "test.jsonl",
                [{"question": f"Ann has {i} cats. How many?", "answer": f"#### {i}"} for i in range(6)])
    before = _trial_results(suite)
    assert _tune(suite / "experiments" / "lora" / "tiny-r4", LRS) == 0
    assert _trial_results(suite) == before
    assert len(_records(suite)) == 1  # the same search: its record, updated
    again = _record_of(suite, record["search_space"])
    assert again["choice"]["run_key"] == record["choice"]["run_key"]
    assert [t["run_key"] for t in again["trials"]] == [t["run_key"] for t in record["trials"]]


def test_a_fourth_value_runs_one_trial_and_its_failure_is_recorded_not_chosen(searched):
    suite, _, record = searched
    before = _trial_results(suite)
    assert _tune(suite / "experiments" / "lora" / "tiny-r4", f"{LRS},{ABSURD_LR}") == 1  # a trial failed
    assert len(_trial_results(suite)) == len(before) + 1
    wider = _record_of(suite, {"optimizer_kwargs.lr": [1e-4, 1e-3, 1e-2, 1e20]})
    [failed] = [t for t in wider["trials"] if t["overrides"]["optimizer_kwargs.lr"] == 1e20]
    assert failed["status"] == "failed" and failed["valid_accuracy"] is None
    assert "loss is nan" in failed["error"]
    assert wider["budget"]["trials"] == 4
    assert wider["choice"]["run_key"] == record["choice"]["run_key"]
    # another search, another record: the first one is still there, and still names the tuned folder
    assert _record_of(suite, record["search_space"])["tuned_experiment"] == "lora/tiny-r4-tuned"
    assert wider["tuned_experiment"] is None  # same choice: the folder was left as it was


def test_a_search_of_another_field_keeps_every_record_and_changes_the_tuned_folder_only_with_force(searched,
                                                                                                  capsys):
    suite, _, record = searched
    exp = suite / "experiments" / "lora" / "tiny-r4"
    tuned = suite / "experiments" / "lora" / "tiny-r4-tuned"
    before = {p.name: p.read_bytes() for p in tuned.iterdir()}
    readme = (suite / "experiments" / "lora" / "README.md").read_text()
    r_search = ["tune", str(exp), "--param", "r=2,4", "--budget-steps", "4", "--tune-valid-size", "4", "--no-progress"]
    capsys.readouterr()

    assert main(r_search) == 0
    err = capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tuned.iterdir()} == before  # kept: no --force
    assert "experiments/lora/tiny-r4-tuned kept: it holds the choice of results/tuning/" in err
    assert "--force would change" in err and 'training_params.json optimizer_kwargs: {"lr": ' in err
    assert (suite / "experiments" / "lora" / "README.md").read_text() == readme
    r_record = _record_of(suite, {"r": [2, 4]})
    assert r_record["choice"] is not None and r_record["tuned_experiment"] is None
    assert _record_of(suite, record["search_space"])["tuned_experiment"] == "lora/tiny-r4-tuned"

    trials = sorted((suite / ".peftbench" / "tuning" / "lora--tiny-r4").glob("*_results/*.json"))
    assert main([*r_search, "--force"]) == 0  # the same search: its trials are reused, not run again
    err = capsys.readouterr().err
    assert sorted((suite / ".peftbench" / "tuning" / "lora--tiny-r4").glob("*_results/*.json")) == trials
    assert "experiments/lora/tiny-r4-tuned changed (--force; it held the choice of results/tuning/" in err
    assert "training_params.json optimizer_kwargs:" in err and "-> (not set)" in err
    chosen_r = r_record["choice"]["overrides"]["r"]
    assert json.loads((tuned / "adapter_config.json").read_text())["r"] == chosen_r
    records = _records(suite)
    assert len(records) == 3  # three searches, three records: nothing replaced
    owners = [name for name, r in records.items() if r["tuned_experiment"] == "lora/tiny-r4-tuned"]
    assert owners == [name for name, r in records.items() if r["search_space"] == {"r": [2, 4]}]
    replaced = _record_of(suite, record["search_space"])
    assert replaced["tuned_experiment"] is None and replaced["tuned_experiment_replaced_by"].endswith(owners[0])
    assert f"with r={chosen_r}, chosen by `peftbench tune`" in (suite / "experiments" / "lora" / "README.md").read_text()


def test_tune_on_a_tuned_folder_says_what_it_is(searched, capsys):
    suite, _, _ = searched
    tuned = suite / "experiments" / "lora" / "tiny-r4-tuned"
    assert main(["tune", str(tuned), "--param", "optimizer_kwargs.lr=1e-3,1e-2"]) == 2
    err = capsys.readouterr().err
    assert "lora/tiny-r4-tuned holds the choice of an earlier `peftbench tune`" in err
    assert "tune the experiment it came from" in err and str(suite / "experiments" / "lora" / "tiny-r4") in err
    assert "no experiment folders found" not in err
