import csv
import io
import json

import numpy as np
import pytest

from peftbench.analysis import leaderboard as compare
from peftbench.cli import main
from peftbench.errors import ResultError, UserError
from peftbench.record.results import M_TOKENS_PER_SEC, write_predictions


@pytest.fixture
def suite(make_result, write_run, tmp_path):
    """A suite folder: two experiments (one with two seeds and an older re-run), a failure and a
    cancellation in cancelled_results/, and a temporary result."""
    for sub in ("results", "cancelled_results", "temporary_results"):
        (tmp_path / sub).mkdir()
    r = tmp_path / "results"
    write_run(r / "lora--a.json", make_result("lora/a", 0.50, seed=0, created_at="2026-01-02T00:00:00+00:00"))
    write_run(r / "lora--a--seed1.json", make_result("lora/a", 0.40, seed=1, created_at="2026-01-03T00:00:00+00:00"))
    write_run(r / "ia3--b.json", make_result("ia3/b", 0.30, peft_type="IA3", created_at="2026-01-02T00:00:00+00:00"))
    c = tmp_path / "cancelled_results"
    write_run(c / "lora--a--2026-01-01T00-00.json",
              make_result("lora/a", None, status="failed", error="CUDA out of memory", created_at="2026-01-01T00:00:00+00:00"))
    write_run(c / "vera--c--2026-01-05T00-00.json",
              make_result("vera/c", None, status="cancelled", peft_type="VERA", error="cancelled by user",
                          created_at="2026-01-05T00:00:00+00:00"))
    write_run(tmp_path / "temporary_results" / "ia3--b--2026-02-01.json",
              make_result("ia3/b", 0.90, peft_type="IA3", created_at="2026-02-01T00:00:00+00:00"))
    return tmp_path


def by_experiment(frame, ranked=True):
    rows = compare.records(frame[frame["ranked"] == ranked])
    return {r["experiment"]: r for r in rows}


# --- loading and rows ---------------------------------------------------------------------------


def test_suite_gives_one_row_per_experiment_and_a_row_per_failure(suite):
    frame = compare.leaderboard(compare.load_runs([suite]))
    ranked = by_experiment(frame)
    assert sorted(ranked) == ["ia3/b", "lora/a"]
    failures = compare.records(frame[~frame["ranked"]])
    assert sorted((f["experiment"], f["status"], f["error"]) for f in failures) == [
        ("lora/a", "failed", "CUDA out of memory"), ("vera/c", "cancelled", "cancelled by user")]


def test_failures_are_marked_superseded_only_by_a_newer_success(suite):
    failures = by_experiment(compare.leaderboard(compare.load_runs([suite])), ranked=False)
    assert failures["lora/a"]["superseded"] is True  # successes on 01-02 and 01-03 are newer
    assert failures["vera/c"]["superseded"] is False  # nothing else for vera/c


def test_seeds_are_averaged_with_spread_and_count(suite):
    row = by_experiment(compare.leaderboard(compare.load_runs([suite])))["lora/a"]
    assert row["test_acc"] == pytest.approx(0.45)
    assert row["test_acc_std"] == pytest.approx(np.std([0.5, 0.4], ddof=1))
    assert row["n_seeds"] == 2
    assert row["seeds"] == "0,1"
    assert row["n_test"] == compare.GSM8K_TEST_SIZE  # both seeds answered the same items: each counts once
    assert row["test_acc_lo"] < 0.45 < row["test_acc_hi"]
    assert row["created_at"].startswith("2026-01-03")  # texts come from the newest seed


def test_temporary_results_are_read_only_when_asked(suite):
    assert by_experiment(compare.leaderboard(compare.load_runs([suite])))["ia3/b"]["test_acc"] == 0.30
    with_temp = by_experiment(compare.leaderboard(compare.load_runs([suite], include_temporary=True)))
    assert with_temp["ia3/b"]["test_acc"] == 0.90  # newer than the main result


def test_the_newest_result_of_an_experiment_and_seed_wins(make_result, write_run, tmp_path):
    old = write_run(tmp_path / "old.json", make_result("lora/x", 0.2, created_at="2026-01-01T00:00:00+00:00"))
    new = write_run(tmp_path / "new.json", make_result("lora/x", 0.6, created_at="2026-03-01T00:00:00+00:00"))
    frame = compare.leaderboard(compare.load_runs([old, new]))
    assert len(frame) == 1
    assert frame.loc[0, "test_acc"] == 0.6
    assert frame.loc[0, "path"] == str(new)


def test_row_fields_come_from_the_result(make_result, write_run, tmp_path):
    path = write_run(tmp_path / "r.json", make_result("lora/x", 0.5, train_config={"optimizer_type": "lora+"}))
    row = compare.records(compare.leaderboard(compare.load_runs([path])))[0]
    assert row["family"] == "LoRA" and row["variant"] == "LoRA+"
    assert row["tokens_per_s"] == pytest.approx(1000.0)  # mean of the logged 900 and 1100
    assert row["trainable_pct"] == pytest.approx(0.01)
    assert row["test_acc_flex"] == pytest.approx(0.55)
    assert row["valid_acc"] == pytest.approx(0.3)
    assert row["forgetting"] == pytest.approx(0.1)
    assert row["mem_max"] == 2e9 and row["cpu_rss"] is None
    assert row["n_test_source"] == "gsm8k"


def test_tokens_per_second_falls_back_to_total_tokens_over_train_time(make_result, write_run, tmp_path):
    result = make_result()
    for entry in result["train_info"]["metrics"]:
        entry.pop(M_TOKENS_PER_SEC, None)
    path = write_run(tmp_path / "r.json", result)
    assert compare.records(compare.leaderboard(compare.load_runs([path])))[0]["tokens_per_s"] == pytest.approx(400.0)


def test_number_of_test_items_comes_from_predictions_then_test_size_then_gsm8k(make_result, prediction_rows, write_run, tmp_path):
    with_preds = write_run(tmp_path / "a.json", make_result("m/a", 0.5, train_config={"test_size": 50}),
                           prediction_rows([True, False] * 10))
    with_size = write_run(tmp_path / "b.json", make_result("m/b", 0.5, train_config={"test_size": 50}))
    plain = write_run(tmp_path / "c.json", make_result("m/c", 0.5))
    rows = by_experiment(compare.leaderboard(compare.load_runs([with_preds, with_size, plain])))
    assert (rows["m/a"]["n_test"], rows["m/a"]["n_test_source"]) == (20, "predictions")
    assert (rows["m/b"]["n_test"], rows["m/b"]["n_test_source"]) == (50, "test_size")
    assert (rows["m/c"]["n_test"], rows["m/c"]["n_test_source"]) == (1319, "gsm8k")
    assert rows["m/b"]["test_acc_hi"] - rows["m/b"]["test_acc_lo"] > rows["m/c"]["test_acc_hi"] - rows["m/c"]["test_acc_lo"]


def test_best_tier_is_paired_when_predictions_exist(make_result, prediction_rows, write_run, tmp_path):
    best = [True] * 60 + [False] * 40
    close = [True] * 57 + [False] * 43  # 3 discordant items: McNemar p = 0.25
    far = [False] * 60 + [True] * 20 + [False] * 20
    paths = [write_run(tmp_path / f"{name}.json", make_result(f"m/{name}", sum(c) / 100), prediction_rows(c))
             for name, c in (("best", best), ("close", close), ("far", far))]
    rows = by_experiment(compare.leaderboard(compare.load_runs(paths)))
    assert rows["m/best"]["best_test"] == "best" and rows["m/best"]["near_best"] is True
    assert rows["m/close"]["best_test"] == "mcnemar" and rows["m/close"]["near_best"] is True
    assert rows["m/far"]["near_best"] is False and rows["m/far"]["p_vs_best"] < 0.001


def test_seeds_of_the_same_items_keep_the_item_as_the_unit_of_the_interval(make_result, prediction_rows, write_run,
                                                                            tmp_path):
    wrong = prediction_rows([False] * 6)
    one = write_run(tmp_path / "one" / "m--a.json", make_result("m/a", 0.0), wrong)
    two = [write_run(tmp_path / "two" / f"m--a--seed{s}.json", make_result("m/a", 0.0, seed=s), wrong) for s in (0, 1)]
    single = by_experiment(compare.leaderboard(compare.load_runs([one])))["m/a"]
    double = by_experiment(compare.leaderboard(compare.load_runs(two)))["m/a"]
    assert single["n_test"] == double["n_test"] == 6  # two seeds of 6 items are still 6 items
    assert (double["test_acc_lo"], double["test_acc_hi"]) == (single["test_acc_lo"], single["test_acc_hi"])
    assert double["test_acc_hi"] == pytest.approx(0.390, abs=1e-3)  # the one-seed interval, not [0, 24.2]


def test_rows_of_several_seeds_are_paired_item_by_item_with_one_vote_per_item(make_result, prediction_rows, write_run,
                                                                              tmp_path):
    best = [True] * 12 + [False] * 8  # both seeds alike: 60%
    other = {0: [True] * 7 + [False] * 13, 1: [True] * 7 + [False] * 12 + [True]}  # 35% and 40%
    for s in (0, 1):
        write_run(tmp_path / f"m--best--seed{s}.json", make_result("m/best", 0.6, seed=s), prediction_rows(best))
        write_run(tmp_path / f"m--other--seed{s}.json", make_result("m/other", sum(other[s]) / 20, seed=s),
                  prediction_rows(other[s]))
    rows = by_experiment(compare.leaderboard(compare.load_runs([tmp_path])))
    # best is ahead on items 7-11, behind on item 19 (one seed of two): sign test over 6 items, not a
    # z-test on 40 "items" (p = 0.044, which would have dropped m/other from the best tier)
    assert rows["m/other"]["best_test"] == "sign test"
    assert rows["m/other"]["p_vs_best"] == pytest.approx(2 * 7 / 64)
    assert rows["m/other"]["near_best"] is True


def test_legacy_seed_schema_files_load(tmp_path):
    """An old file: cuda_memory_* names, 'canceled' spelling, no flexible accuracy, no forgetting,
    no tokens/s, no created_at, no schema_version, and no experiment_name."""
    legacy = {
        "run_info": {"total_time": 10.0, "train_config": {"model_id": "m"}, "peft_config": {"peft_type": "LORA"},
                     "error_msg": ""},
        "train_info": {"cuda_memory_max": 123, "cuda_memory_reserved_avg": 100, "cuda_memory_reserved_99th": 120,
                       "train_time": 5.0, "file_size": None, "status": "success",
                       "metrics": [{"step": 1, "valid accuracy": 0.1}, {"test accuracy": 0.25, "train loss": 1.0}]},
        "meta_info": {},
    }
    cancelled = json.loads(json.dumps(legacy))
    cancelled["train_info"].update(status="canceled", metrics=[])
    cancelled["run_info"]["error_msg"] = "manually cancelled"
    (tmp_path / "lora--old.json").write_text(json.dumps(legacy))
    (tmp_path / "lora--old2--2025.json").write_text(json.dumps(cancelled))
    frame = compare.leaderboard(compare.load_runs([tmp_path]))
    ranked, failed = by_experiment(frame), by_experiment(frame, ranked=False)
    row = ranked["lora/old"]  # the name comes from the file name
    assert row["mem_max"] == 123 and row["mem_avg"] == 100 and row["mem_99"] == 120
    assert row["test_acc"] == 0.25 and row["test_acc_flex"] is None and row["forgetting"] is None
    assert row["tokens_per_s"] is None and row["file_size"] is None and row["trainable_pct"] is None
    assert failed["lora/old2"]["status"] == "cancelled"


def test_values_of_the_wrong_type_are_treated_as_missing(make_result, write_run, tmp_path):
    result = make_result()
    result["train_info"].update(train_time="fast", file_size=True, num_total_params=0)
    result["train_info"]["metrics"].append("not an entry")
    result["run_info"]["peft_config"] = "LORA"
    row = compare.records(compare.leaderboard(compare.load_runs([write_run(tmp_path / "r.json", result)])))[0]
    assert row["train_time"] is None and row["file_size"] is None and row["trainable_pct"] is None
    assert row["test_acc"] == 0.5


@pytest.mark.parametrize("content", ["not json at all", "[1, 2]", '{"run_info": {}}', '{"schema_version": 99, "run_info": {}, "train_info": {}}'])
def test_a_file_that_is_not_a_result_is_named_in_the_error(tmp_path, content):
    bad = tmp_path / "notes.json"
    bad.write_text(content)
    with pytest.raises(UserError, match="notes.json"):
        compare.load_runs([bad])


def test_missing_paths_and_empty_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        compare.load_runs([tmp_path / "nope"])
    with pytest.raises(UserError, match="no result files"):
        compare.load_runs([tmp_path])


# --- the published results ------------------------------------------------------------------------


def test_all_published_results_load_and_rank(published_results):
    frame = compare.leaderboard(compare.load_runs([published_results]))
    assert len(frame) == len(list(published_results.glob("*.json"))) == 63
    assert frame["ranked"].all()
    assert frame["test_acc"].notna().all()
    assert (frame["test_acc_lo"] <= frame["test_acc"]).all() and (frame["test_acc"] <= frame["test_acc_hi"]).all()
    assert frame["test_acc"].is_monotonic_decreasing
    assert frame.loc[0, "best_test"] == "best" and frame["near_best"].sum() >= 1
    assert frame["mem_max"].notna().all() and frame["tokens_per_s"].notna().all()
    assert set(frame["family"]) >= {"LoRA", "IA3", "Full fine-tuning", "Prompt tuning"}


def test_published_results_in_the_old_memory_names_give_the_same_table(published_results, tmp_path):
    for source in published_results.glob("*.json"):
        data = json.loads(source.read_text())
        for new, old in (("accelerator_memory_max", "cuda_memory_max"),
                         ("accelerator_memory_reserved_avg", "cuda_memory_reserved_avg"),
                         ("accelerator_memory_reserved_99th", "cuda_memory_reserved_99th")):
            data["train_info"][old] = data["train_info"].pop(new)
        for entry in data["train_info"]["metrics"]:
            entry.pop("forgetting", None)
        (tmp_path / source.name).write_text(json.dumps(data))
    old = compare.leaderboard(compare.load_runs([tmp_path]))
    new = compare.leaderboard(compare.load_runs([published_results]))
    assert list(old["experiment"]) == list(new["experiment"])
    assert np.allclose(old["mem_max"], new["mem_max"])
    assert old["forgetting"].isna().all()


# --- Pareto, filter, sort, columns ------------------------------------------------------------------


def test_pareto_front_respects_each_metric_direction():
    memory = [10, 20, 30, 25, np.nan]
    accuracy = [0.3, 0.5, 0.6, 0.4, 0.9]
    # lower memory and higher accuracy are better: point 3 (25, 0.4) is dominated by point 1
    assert compare.pareto_front(memory, accuracy, x_higher=False, y_higher=True).tolist() == [True, True, True, False, False]
    # both higher: only (30, 0.6) survives
    assert compare.pareto_front(memory, accuracy, x_higher=True, y_higher=True).tolist() == [False, False, True, False, False]


def test_pareto_front_keeps_exact_ties():
    assert compare.pareto_front([1, 1], [2, 2], False, True).tolist() == [True, True]


def test_mark_pareto_leaves_failures_off_the_front(suite):
    frame = compare.leaderboard(compare.load_runs([suite]))
    marked = compare.mark_pareto(frame, *compare.parse_pareto_axes("train_time,test_acc"))
    assert not marked.loc[~marked["ranked"], "pareto"].any()
    assert marked.loc[marked["ranked"], "pareto"].any()


@pytest.mark.parametrize("spec, message", [
    ("test_acc", "two columns"),
    ("test_acc,famly", "did you mean 'family'"),
    ("test_acc,family", "no better direction"),
])
def test_bad_pareto_axes_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        compare.parse_pareto_axes(spec)


def test_sort_bare_column_is_best_first_and_missing_last(suite):
    frame = compare.leaderboard(compare.load_runs([suite]))
    assert compare.sort_rows(frame, "test_acc")["experiment"].tolist()[:2] == ["lora/a", "ia3/b"]
    times = compare.sort_rows(frame, "test_acc:asc")["test_acc"].tolist()
    assert times[:2] == [0.30, 0.45] and all(np.isnan(times[2:]))
    with pytest.raises(UserError, match="did you mean 'test_acc'"):
        compare.sort_rows(frame, "test_accc")
    with pytest.raises(UserError, match="asc or desc"):
        compare.sort_rows(frame, "test_acc:up")


def test_filter_rows_uses_the_column_registry(suite):
    frame = compare.leaderboard(compare.load_runs([suite]))
    assert compare.filter_rows(frame, 'family == "LoRA" and test_acc > 0.4')["experiment"].tolist() == ["lora/a"]
    assert sorted(compare.filter_rows(frame, "not ranked")["status"]) == ["cancelled", "failed"]
    with pytest.raises(UserError, match="did you mean"):
        compare.filter_rows(frame, "familly == 'LoRA'")


def test_default_columns_leave_out_the_ones_empty_everywhere(suite):
    frame = compare.leaderboard(compare.load_runs([suite]))
    shown = compare.select_columns(frame, None, default=["experiment", "mem_max", "cpu_rss"])
    assert list(shown.columns) == ["experiment", "mem_max"]
    assert list(compare.select_columns(frame, "cpu_rss,experiment", default=[]).columns) == ["cpu_rss", "experiment"]


@pytest.mark.parametrize("column, value, text", [
    ("trainable_pct", 0.002847, "0.285%"),
    ("trainable_pct", 1.99e-8, "0.00000199%"),
    ("trainable_pct", 1.0, "100.0%"),
    ("mem_max", 22292725760, "20.8 GiB"),
    ("train_time", 941.96, "15.7 min"),
    ("trainable_params", 9175040, "9.18M"),
    ("p_vs_best", 0.0001, "<0.001"),
    ("near_best", True, "yes"),
    ("error", None, ""),
])
def test_values_are_formatted_for_people(column, value, text):
    assert compare.format_value(compare.column(column), value) == text


# --- the command line -----------------------------------------------------------------------------


def test_compare_cli_table_shows_intervals_and_failures(suite, capsys):
    assert main(["compare", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "test acc % [95% CI]" in out
    assert "45.0 ±7.1 (n=2) [" in out
    assert "CUDA out of memory" in out and "cancelled by user" in out
    assert "2 run(s) without a successful result" in out


def test_compare_cli_csv_and_json_hold_raw_numbers(suite, capsys):
    assert main(["compare", str(suite), "--format", "csv", "--columns", "experiment,test_acc,status"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["experiment"] for r in rows][:2] == ["lora/a", "ia3/b"]
    assert float(rows[0]["test_acc"]) == pytest.approx(0.45)
    assert main(["compare", str(suite), "--format", "json", "--pareto", "train_time,test_acc"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"pareto", "test_acc_lo", "near_best", "error"} <= set(data[0])
    assert len(data) == 4


def test_compare_cli_json_and_csv_write_counts_as_integers_and_exact_bounds(make_result, prediction_rows, write_run,
                                                                            tmp_path, capsys):
    write_run(tmp_path / "m--a.json", make_result("m/a", 0.0), prediction_rows([False] * 6))
    write_run(tmp_path / "m--b.json", make_result("m/b", 1.0), prediction_rows([True] * 6))
    assert main(["compare", str(tmp_path), "--format", "json"]) == 0
    rows = {r["experiment"]: r for r in json.loads(capsys.readouterr().out)}
    for name in ("n_seeds", "n_test", "trainable_params", "total_params"):
        assert type(rows["m/a"][name]) is int, (name, rows["m/a"][name])
    assert rows["m/a"]["test_acc_lo"] == 0 and rows["m/b"]["test_acc_hi"] == 1  # not 2.78e-17 or 0.9999999999999999
    assert main(["compare", str(tmp_path), "--format", "csv", "--columns", "experiment,n_seeds,n_test,test_acc_lo"]) == 0
    text = capsys.readouterr().out
    assert "m/a,1,6,0.0" in text.splitlines(), text


def test_compare_cli_markdown_escapes_pipes(make_result, write_run, tmp_path, capsys):
    write_run(tmp_path / "r.json", make_result("lora/a|b", 0.5))
    assert main(["compare", str(tmp_path), "--format", "markdown", "--columns", "experiment,test_acc"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "| experiment | test acc % [95% CI] |"
    assert "lora/a\\|b" in out


@pytest.mark.parametrize("args, message", [
    (["--filter", "__import__('os').system('echo pwned')"], "bad filter expression"),
    (["--columns", "experiment,tets_acc"], "did you mean 'test_acc'"),
    (["--sort", "nope"], "unknown column 'nope'"),
])
def test_compare_cli_bad_input_exits_2_with_the_message(suite, capsys, args, message):
    assert main(["compare", str(suite), *args]) == 2
    assert message in capsys.readouterr().err


def test_compare_cli_names_a_file_that_is_not_a_result(tmp_path, capsys):
    (tmp_path / "default_training_params.json").write_text('{"lr": 1}')
    assert main(["compare", str(tmp_path)]) == 2
    assert "default_training_params.json" in capsys.readouterr().err


def test_compare_cli_lists_columns(capsys):
    assert main(["compare", "--list-columns"]) == 0
    out = capsys.readouterr().out
    assert "test_acc" in out and "higher" in out and "mem_max" in out


def test_compare_cli_on_the_published_results(published_results, capsys):
    assert main(["compare", str(published_results), "--filter", 'family in ("LoRA", "IA3") and test_acc > 0.4',
                 "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["family"] in ("LoRA", "IA3") and r["test_acc"] > 0.4 for r in rows)


def test_accuracies_outside_0_1_are_skipped_with_a_warning_and_statusless_files_do_not_crash(
        make_result, write_run, tmp_path):
    write_run(tmp_path / "pct.json", make_result("x/pct", 47.8))  # a percentage where a fraction belongs
    write_run(tmp_path / "nan.json", make_result("x/nan", float("nan")))
    (tmp_path / "bare.json").write_text(json.dumps({"run_info": None, "train_info": {"status": None, "metrics": None}}))
    warnings = []
    frame = compare.leaderboard(compare.load_runs([tmp_path], warn=warnings.append))
    ranked, other = by_experiment(frame), by_experiment(frame, ranked=False)
    assert "x/pct" not in ranked and "x/nan" not in ranked
    assert sorted(warnings) == [f"warning: skipped {tmp_path / 'nan.json'}: unreadable result (test accuracy nan is not a fraction in [0, 1])",
                                f"warning: skipped {tmp_path / 'pct.json'}: unreadable result (test accuracy 47.8 is not a fraction in [0, 1])"]
    assert other["bare"]["status"] == "unknown"  # no status and no accuracy: listed, not ranked
    with pytest.raises(ResultError, match="nan.json"):
        compare.load_runs([tmp_path], strict=True)


def test_predictions_named_in_the_result_are_found(make_result, prediction_rows, write_run, tmp_path):
    result = make_result("m/a", 0.5)
    result["run_info"]["predictions"] = {"file": "renamed.predictions.jsonl.gz", "sha256": None}
    path = write_run(tmp_path / "a.json", result)
    write_predictions(tmp_path / "renamed.predictions.jsonl.gz", prediction_rows([True, False, True]))
    row = compare.records(compare.leaderboard(compare.load_runs([path])))[0]
    assert (row["n_test"], row["n_test_source"]) == (3, "predictions")


def test_an_unreadable_predictions_file_is_named(make_result, write_run, tmp_path):
    path = write_run(tmp_path / "a.json", make_result("m/a", 0.5))
    compare.predictions_path_for(path).write_bytes(b"not gzip")
    with pytest.raises(UserError, match="a.predictions.jsonl.gz"):
        compare.load_runs([path])
