"""`peftbench rescore`: accuracies recomputed from saved predictions, printed old -> new, and
written back only with --write."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench import fs
from peftbench.record import results
from peftbench.cli import main
from peftbench.record.results import M_TEST_ACC, M_TEST_ACC_FLEX, M_VALID_ACC, M_VALID_ACC_FLEX
from peftbench.scoring.grader import GRADER_VERSION

REF_72 = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
REF_10 = "Weng earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"


def _row(split: str, index: int, generated: str, reference: str, stale_correct: bool) -> dict:
    # extracted/correct fields deliberately wrong: what an older grader might have written
    return {
        "split": split, "index": index, "item_id": f"{split}{index:04d}", "question": "q", "prompt": "p",
        "generated": generated, "reference": reference,
        "extracted": "stale", "extracted_flexible": "stale",
        "correct_strict": stale_correct, "correct_flexible": stale_correct, "num_generated_tokens": 7,
    }


ROWS = [
    # test: strict 2/4 right, flexible 3/4
    _row("test", 0, "She sold 72 clips.\nThe answer is: 72", REF_72, False),
    _row("test", 1, "She earned $10.00.\nThe answer is: $10.00\n\nQuestion: next? The answer is: 3", REF_10, False),
    _row("test", 2, "She sold 48+24 = 72 clips", REF_72, False),  # no marker: flexible only
    _row("test", 3, "The answer is: 11", REF_10, True),
    # valid (the last validation pass): strict 1/2, flexible 1/2
    _row("valid", 0, "The answer is \\boxed{72}", REF_72, False),
    _row("valid", 1, "The answer is 9", REF_10, False),
]


def _old_new(out: str, metric: str) -> tuple[str, str]:
    """The printed "old -> new" of one metric (column widths are not part of the contract)."""
    m = re.search(rf"^  {re.escape(metric)}\s+(\S+) -> (\S+)", out, re.MULTILINE)
    assert m, f"no line for {metric!r} in:\n{out}"
    return m.group(1), m.group(2)


def _make_result(folder: Path, rows=ROWS, record_predictions: bool = True) -> Path:
    result = results.empty_result()
    result["run_info"]["experiment_name"] = "lora/demo"
    result["train_info"]["status"] = "success"
    result["train_info"]["metrics"] = [
        {"step": 1, M_VALID_ACC: 0.0, M_VALID_ACC_FLEX: 0.0},  # an earlier pass: left alone
        {"step": 2, M_VALID_ACC: 0.125, M_VALID_ACC_FLEX: 0.125, "train loss": 1.5},
        {"step": 2, M_TEST_ACC: 0.1, M_TEST_ACC_FLEX: 0.2, "forgetting": 0.3},
    ]
    result["meta_info"]["grader_version"] = "0"
    path = folder / "lora--demo.json"
    pred_path = results.predictions_path_for(path)
    sha = results.write_predictions(pred_path, rows)
    if record_predictions:
        result["run_info"]["predictions"] = {"file": pred_path.name, "sha256": sha}
    fs.atomic_write_json(path, result)
    return path


def test_dry_run_prints_old_and_new_accuracies_and_changes_no_byte(tmp_path, capsys):
    path = _make_result(tmp_path)
    pred_path = results.predictions_path_for(path)
    before = (path.read_bytes(), pred_path.read_bytes())

    assert main(["rescore", str(path)]) == 0

    out = capsys.readouterr().out
    assert _old_new(out, M_TEST_ACC) == ("0.1000", "0.5000")
    assert _old_new(out, M_TEST_ACC_FLEX) == ("0.2000", "0.7500")
    assert _old_new(out, M_VALID_ACC) == ("0.1250", "0.5000")
    assert _old_new(out, M_VALID_ACC_FLEX) == ("0.1250", "0.5000")
    assert "(+0.5500)" in out
    assert "4 test, 2 valid rows, 6 regraded" in out
    assert f"grader 0 -> {GRADER_VERSION}" in out
    assert "dry run" in out
    assert (path.read_bytes(), pred_path.read_bytes()) == before


def test_write_updates_accuracies_rows_sha_and_grader_version_and_nothing_else(tmp_path, capsys):
    path = _make_result(tmp_path)
    original = json.loads(path.read_text())

    assert main(["rescore", str(path), "--write"]) == 0
    assert "written" in capsys.readouterr().out

    updated = json.loads(path.read_text())
    metrics = updated["train_info"]["metrics"]
    assert metrics[0] == original["train_info"]["metrics"][0]  # earlier validation pass untouched
    assert metrics[1] == {"step": 2, M_VALID_ACC: 0.5, M_VALID_ACC_FLEX: 0.5, "train loss": 1.5}
    assert metrics[2] == {"step": 2, M_TEST_ACC: 0.5, M_TEST_ACC_FLEX: 0.75, "forgetting": 0.3}
    assert updated["meta_info"]["grader_version"] == GRADER_VERSION

    pred_path = results.predictions_path_for(path)
    assert updated["run_info"]["predictions"] == {"file": pred_path.name, "sha256": fs.sha256_file(pred_path)}
    rows = results.read_predictions(pred_path)
    assert [(r["extracted"], r["extracted_flexible"], r["correct_strict"], r["correct_flexible"]) for r in rows] == [
        ("72", "72", True, True),
        ("10.00", "10.00", True, True),
        (None, "72", False, True),
        ("11", "11", False, False),
        ("72", "72", True, True),
        ("9", "9", False, False),
    ]
    assert [r["generated"] for r in rows] == [r["generated"] for r in ROWS]  # the rest of each row kept

    # everything outside the rescored fields is exactly as before
    for section in ("run_info", "train_info", "meta_info"):
        for key in original[section]:
            if (section, key) not in {("run_info", "predictions"), ("train_info", "metrics"),
                                      ("meta_info", "grader_version")}:
                assert updated[section][key] == original[section][key], (section, key)
    assert list(updated) == list(original)


def test_second_write_finds_nothing_to_change(tmp_path, capsys):
    path = _make_result(tmp_path)
    main(["rescore", str(path), "--write"])
    before = path.read_bytes()
    capsys.readouterr()

    assert main(["rescore", str(path), "--write"]) == 0

    out = capsys.readouterr().out
    assert "0 regraded" in out and "unchanged, nothing written" in out
    assert _old_new(out, M_TEST_ACC) == ("0.5000", "0.5000")
    assert path.read_bytes() == before


def test_write_keeps_seed_schema_files_in_their_own_layout_and_adds_the_flexible_accuracy(tmp_path):
    # a seed-schema result (no schema_version, cuda_memory_* names) stays in that layout
    seed = {
        "run_info": {"experiment_name": "lora/x", "predictions": None},
        "train_info": {"cuda_memory_max": 123, "status": "success",
                       "metrics": [{"step": 5, M_TEST_ACC: 0.0}]},
        "meta_info": {"model_info": {"id": "m"}},
    }
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    results.write_predictions(results.predictions_path_for(path), [ROWS[0]])

    assert main(["rescore", str(path), "--write"]) == 0

    updated = json.loads(path.read_text())
    assert "schema_version" not in updated
    assert updated["train_info"]["cuda_memory_max"] == 123
    # the seed had no flexible accuracy; rescore computes it from the predictions
    assert updated["train_info"]["metrics"] == [{"step": 5, M_TEST_ACC: 1.0, M_TEST_ACC_FLEX: 1.0}]
    assert set(updated["train_info"]) == {"cuda_memory_max", "status", "metrics"}
    assert updated["run_info"]["predictions"]["file"] == "seed.predictions.jsonl.gz"


def test_missing_predictions_file_is_a_user_error(tmp_path, capsys):
    path = _make_result(tmp_path)
    results.predictions_path_for(path).unlink()
    before = path.read_bytes()

    assert main(["rescore", str(path), "--write"]) == 2

    err = capsys.readouterr().err
    assert "predictions file" in err and "is missing" in err
    assert path.read_bytes() == before


def test_result_that_saved_no_predictions_is_a_user_error(tmp_path, capsys):
    path = _make_result(tmp_path, record_predictions=False)
    results.predictions_path_for(path).unlink()

    assert main(["rescore", str(path)]) == 2
    assert "saved no predictions" in capsys.readouterr().err


def test_one_bad_file_stops_all_before_anything_is_written(tmp_path, capsys):
    good = _make_result(tmp_path)
    before = good.read_bytes()
    missing = tmp_path / "nope.json"

    assert main(["rescore", str(good), str(missing), "--write"]) == 2

    assert "nope.json: no such result file" in capsys.readouterr().err
    assert good.read_bytes() == before


def test_not_a_result_is_a_user_error(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    assert main(["rescore", str(path)]) == 2
    assert "x.json: unreadable result (not a peftbench result" in capsys.readouterr().err


def test_sha256_mismatch_warns_and_still_rescores(tmp_path, capsys):
    path = _make_result(tmp_path)
    results.write_predictions(results.predictions_path_for(path), ROWS[:1])  # changed after the run

    assert main(["rescore", str(path)]) == 0

    captured = capsys.readouterr()
    assert "warning:" in captured.err and "sha256 differs" in captured.err
    assert _old_new(captured.out, M_TEST_ACC) == ("0.1000", "1.0000")


def test_result_named_without_predictions_record_uses_the_conventional_file(tmp_path, capsys):
    path = _make_result(tmp_path, record_predictions=False)
    assert main(["rescore", str(path), "--write"]) == 0
    assert "names no predictions file" in capsys.readouterr().err
    assert json.loads(path.read_text())["run_info"]["predictions"]["file"] == "lora--demo.predictions.jsonl.gz"


def test_split_without_rows_keeps_its_old_value(tmp_path, capsys):
    path = _make_result(tmp_path, rows=[r for r in ROWS if r["split"] == "test"])

    assert main(["rescore", str(path), "--write"]) == 0

    assert "no rows of this split" in capsys.readouterr().out
    metrics = json.loads(path.read_text())["train_info"]["metrics"]
    assert metrics[1][M_VALID_ACC] == 0.125 and metrics[2][M_TEST_ACC] == 0.5


def test_rescore_runs_without_torch(tmp_path):
    path = _make_result(tmp_path)
    code = (
        "import sys, argparse\n"
        "from peftbench.commands import rescore\n"
        f"rescore.run(argparse.Namespace(results=[__import__('pathlib').Path({str(path)!r})], write=False, allow_weak_sandbox=False, grading_workers=None))\n"
        "assert 'torch' not in sys.modules, 'rescore imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


@pytest.mark.parametrize("argv", [["rescore"], ["rescore", "--write"]])
def test_rescore_needs_at_least_one_result(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_published_seed_results_without_predictions_get_a_clear_message(shared_data, capsys):
    path = shared_data("peft-results", "lora--llama-3.2-3B-rank32.json")
    before = path.read_bytes()

    assert main(["rescore", str(path)]) == 2

    assert "saved no predictions" in capsys.readouterr().err
    assert path.read_bytes() == before
