"""`peftbench diff`: a paired comparison of two results from their saved predictions."""

import json
import shutil

import pytest

from peftbench.analysis import leaderboard as compare
from peftbench.cli import main


@pytest.fixture
def two_runs(make_result, prediction_rows, questions, write_run, tmp_path):
    a_correct = [True] * 12 + [False] * 8  # 60%
    b_correct = [True] * 6 + [False] * 6 + [True] * 2 + [False] * 6  # 40%: 6 only-A, 2 only-B
    a = write_run(tmp_path / "lora--a.json", make_result("lora/a", 0.6), prediction_rows(a_correct))
    b = write_run(tmp_path / "lora--b.json", make_result("lora/b", 0.4), prediction_rows(list(reversed(b_correct)), list(reversed(questions(20)))))
    return a, b


def test_diff_pairs_items_by_id_and_reports_the_counts(two_runs, capsys):
    a, b = two_runs
    assert main(["diff", str(a), str(b), "--format", "json", "--bootstrap", "2000"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n"], out["only_a"], out["only_b"], out["both"], out["neither"]) == (20, 6, 2, 6, 6)
    assert out["acc_a"] == pytest.approx(0.6) and out["acc_b"] == pytest.approx(0.4)
    assert out["diff"] == pytest.approx(0.2)
    assert out["diff_lo"] < 0.2 < out["diff_hi"]
    assert out["p_mcnemar"] == pytest.approx(2 * (1 + 8 + 28) / 256)  # 2 * P(X <= 2), X ~ Bin(8, 1/2)
    assert out["a"]["experiment"] == "lora/a"


def test_diff_is_deterministic(two_runs, capsys):
    a, b = two_runs
    main(["diff", str(a), str(b)])
    first = capsys.readouterr().out
    main(["diff", str(a), str(b)])
    assert capsys.readouterr().out == first
    assert "McNemar exact p" in first and "only A right  6" in first


def test_diff_refuses_runs_tested_on_different_items(make_result, prediction_rows, write_run, tmp_path, capsys):
    a = write_run(tmp_path / "a.json", make_result("m/a"), prediction_rows([True] * 10))
    b = write_run(tmp_path / "b.json", make_result("m/b"), prediction_rows([True] * 10, [f"other {i}" for i in range(10)]))
    assert main(["diff", str(a), str(b)]) == 2
    assert "different items" in capsys.readouterr().err


def test_diff_refuses_a_result_without_predictions(make_result, prediction_rows, write_run, tmp_path, capsys):
    a = write_run(tmp_path / "a.json", make_result("m/a"), prediction_rows([True] * 10))
    b = write_run(tmp_path / "b.json", make_result("m/b"))
    assert main(["diff", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "b.json" in err and "no predictions" in err


def test_diff_can_grade_flexibly(make_result, prediction_rows, write_run, tmp_path, capsys):
    rows_a = prediction_rows([False] * 4)
    for row in rows_a[:4]:
        row["correct_flexible"] = True
    a = write_run(tmp_path / "a.json", make_result("m/a"), rows_a)
    b = write_run(tmp_path / "b.json", make_result("m/b"), prediction_rows([False] * 4))
    main(["diff", str(a), str(b), "--flexible", "--format", "json"])
    assert json.loads(capsys.readouterr().out)["only_a"] == 4


def test_paired_correctness_copes_with_a_copied_file(two_runs, tmp_path):
    a, _ = two_runs
    copy = tmp_path / "copy.json"
    shutil.copy(a, copy)
    shutil.copy(compare.predictions_path_for(a), compare.predictions_path_for(copy))
    ids, x, y = compare.paired_correctness(compare.read_run(a), compare.read_run(copy))
    assert len(ids) == 20 and x == y


def test_diff_warns_when_a_predictions_file_is_not_the_one_its_run_wrote(two_runs, prediction_rows, capsys):
    from peftbench.record.results import predictions_path_for, write_predictions

    a, b = two_runs
    result = json.loads(a.read_text())
    digest = write_predictions(predictions_path_for(a), prediction_rows([True] * 12 + [False] * 8))
    result["run_info"]["predictions"] = {"file": predictions_path_for(a).name, "sha256": digest}
    a.write_text(json.dumps(result))
    assert main(["diff", str(a), str(b)]) == 0
    assert "warning" not in capsys.readouterr().err  # the file its run wrote: nothing to say

    write_predictions(predictions_path_for(a), prediction_rows([True] * 20))  # edited after the run
    assert main(["diff", str(a), str(b)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {predictions_path_for(a)}: sha256 differs from the one recorded in {a.name}" in err
