"""A commonsense run end to end on the tiny model, with LLM-Adapters' real test sets
(../shared/data/commonsense, 7 of the 8): the result, rescore, compare beside a GSM8K result."""

from __future__ import annotations

import json
import shutil

import pytest

from peftbench.cli import main
from peftbench.record import results as R


@pytest.fixture(scope="module")
def commonsense_run(make_suite, run_tiny_lora, tiny_model_dir, shared_data, tmp_path_factory):
    folder = shared_data("commonsense")
    root = tmp_path_factory.mktemp("cs")
    rows = json.loads((folder / "boolq" / "train.json").read_text())[:20] \
        + json.loads((folder / "ARC-Easy" / "train.json").read_text())[:20]
    (root / "train.json").write_text(json.dumps(rows))
    suite = make_suite(root / "suite", tiny_model_dir, task="commonsense", train_dataset=str(root / "train.json"),
                       eval_dataset=str(folder), test_size=2, valid_size=4, max_steps=2, eval_steps=2,
                       generation_kwargs={"max_new_tokens": 4}, max_seq_length=96)
    return suite, run_tiny_lora(suite)


def test_a_commonsense_run_records_every_set_its_mean_and_the_task(commonsense_run):
    _, path = commonsense_run
    result = R.load(path)
    info, final = result[R.RUN_INFO], R.final_metrics(result)
    assert info[R.RI_TASK] == {"name": "commonsense", "version": "1"}
    assert info["train_config"]["task"] == "commonsense"
    sets = final[R.M_TEST_SETS]
    assert list(sets) == ["boolq", "piqa", "social_i_qa", "winogrande", "ARC-Easy", "ARC-Challenge", "openbookqa"]
    assert all(figures[R.SET_N] == 2 and 0 <= figures[R.M_TEST_ACC] <= 1 for figures in sets.values())
    # the headline is the unweighted mean over the sets, as the papers report it
    assert final[R.M_TEST_ACC] == pytest.approx(sum(f[R.M_TEST_ACC] for f in sets.values()) / len(sets))
    assert R.M_TEST_ACC_FLEX not in final  # commonsense has one grade
    preds = R.read_predictions(R.predictions_path_for(path))
    test = [p for p in preds if p["split"] == "test"]
    assert [p["test_set"] for p in test] == [s for s in sets for _ in range(2)]
    assert all(p["prompt"].startswith("Below is an instruction") and "correct_answer" in p for p in test)
    assert all(p["num_generated_tokens"] <= 4 for p in test)
    assert result[R.META_INFO]["dataset_info"]["eval"]["test_rows"] == {s: 2 for s in sets}


def test_rescore_reproduces_a_commonsense_result(commonsense_run, capsys):
    _, path = commonsense_run
    assert main(["rescore", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 regraded" in out and "task commonsense" in out
    assert "test accuracy" in out and "(+" not in out and "(-" not in out


def test_compare_shows_one_leaderboard_per_task_and_the_cross_task_view(commonsense_run, make_result, write_run,
                                                                        tmp_path, capsys):
    suite, path = commonsense_run
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(path, folder / "lora--tiny-r4--cs.json")
    shutil.copy(R.predictions_path_for(path), folder / R.predictions_path_for(folder / "lora--tiny-r4--cs.json").name)
    write_run(folder / "lora--tiny-r4.json", make_result("lora/tiny-r4", 0.4))  # schema 1 style: no task, metamathqa
    write_run(folder / "ia3--tiny.json", make_result("ia3/tiny", 0.6, peft_type="IA3"))
    assert main(["compare", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "task commonsense:" in out and "task metamathqa:" in out
    assert "cross-task view" in out and "commonsense: boolq" in out
    lora_line = next(line for line in out.splitlines() if line.startswith("lora/tiny-r4") and "#" in line)
    assert lora_line.count("#") == 1 + 7 + 1  # commonsense's mean, its 7 sets, metamathqa
    assert main(["compare", str(folder), "--task", "metamathqa"]) == 0
    only = capsys.readouterr().out
    assert "cross-task" not in only and "ia3/tiny" in only and "task commonsense" not in only
    assert main(["compare", str(folder), "--task", "comonsense"]) == 2
    assert "did you mean 'commonsense'" in capsys.readouterr().err
    assert main(["compare", str(folder), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["task"] for r in rows) == ["commonsense", "metamathqa", "metamathqa"]


def test_diff_refuses_two_results_of_different_tasks(commonsense_run, make_result, write_run, prediction_rows,
                                                     tmp_path, capsys):
    _, path = commonsense_run
    other = write_run(tmp_path / "lora--x.json", make_result("lora/x", 0.5), prediction_rows([True, False]))
    assert main(["diff", str(path), str(other)]) == 2
    err = capsys.readouterr().err
    assert "task 'commonsense'" in err and "task 'metamathqa'" in err
