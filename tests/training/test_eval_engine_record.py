"""The evaluation engine and the forgetting time in results, the run key and `compare`."""

from __future__ import annotations

import json
from pathlib import Path

from peftbench.cli import main
from peftbench.record import results as R


def _results(suite: Path) -> dict[str, dict]:
    out = {}
    for path in (suite / "temporary_results").glob("*.json"):
        out[json.loads(path.read_text())["run_info"]["experiment_name"]] = json.loads(path.read_text())
    return out


def test_runs_record_the_engine_and_the_forgetting_time_and_compare_warns_when_engines_mix(tiny_suite, capsys):
    assert main(["run", "--no-progress", "--clean", str(tiny_suite / "experiments/lora/tiny-r4")]) == 0
    assert main(["run", "--no-progress", "--clean", "--set", "eval_engine=static",
                 str(tiny_suite / "experiments/full-finetuning/tiny")]) == 0
    results = _results(tiny_suite)
    lora, full = results["lora/tiny-r4"], results["full-finetuning/tiny"]
    assert lora["run_info"]["train_config"]["eval_engine"] == "dynamic"
    assert lora["train_info"][R.TI_EVAL_ENGINE_USED] == "dynamic"
    assert full["run_info"]["train_config"]["eval_engine"] == "static"
    assert full["train_info"][R.TI_EVAL_ENGINE_USED] == "static"
    assert lora["run_info"]["run_key_inputs"]["train_config"]["eval_engine"] == "dynamic"
    for result in (lora, full):
        assert result["train_info"][R.TI_FORGETTING_TIME] > 0

    capsys.readouterr()
    assert main(["compare", str(tiny_suite), "--include-temporary",
                 "--columns", "experiment,eval_time,test_time,forgetting_time,eval_engine"]) == 0
    out, err = capsys.readouterr()
    assert "mixes evaluation engines (dynamic: 1, static: 1)" in err
    assert "forget time" in out and "engine" in out and "dynamic" in out


def test_a_result_without_the_new_fields_loads_and_shows_them_empty(tiny_suite, capsys):
    assert main(["run", "--no-progress", "--clean", str(tiny_suite / "experiments/lora/tiny-r4")]) == 0
    path = next((tiny_suite / "temporary_results").glob("*.json"))
    old = json.loads(path.read_text())
    for key in (R.TI_EVAL_ENGINE_USED, R.TI_FORGETTING_TIME):
        del old["train_info"][key]
    del old["run_info"]["train_config"]["eval_engine"]
    old["run_info"]["experiment_name"] = "lora/older"
    (tiny_suite / "temporary_results" / "lora--older.json").write_text(json.dumps(old))
    capsys.readouterr()
    assert main(["compare", str(tiny_suite), "--include-temporary", "--format", "json",
                 "--columns", "experiment,forgetting_time,eval_engine"]) == 0
    out, err = capsys.readouterr()
    rows = {r["experiment"]: r for r in json.loads(out)}
    assert rows["lora/older"]["eval_engine"] is None and rows["lora/older"]["forgetting_time"] is None
    assert rows["lora/tiny-r4"]["eval_engine"] == "dynamic"
    assert "static (not recorded): 1" in err


def test_an_unknown_engine_is_bad_input(tiny_suite, capsys):
    code = main(["run", "--no-progress", "--set", "eval_engine=fast", str(tiny_suite / "experiments/lora/tiny-r4")])
    assert code == 2
    assert "eval_engine: 'fast' is not one of dynamic, static" in capsys.readouterr().err
