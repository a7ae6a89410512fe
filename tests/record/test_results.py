"""The result schema and its one reader: `results.load` refuses every file that is not a usable
result with one error type naming the file and the reason; the schema's key constants and
TypedDicts agree; result file names are written and parsed back by one pair of functions."""

from __future__ import annotations

import json
import math

import pytest

from peftbench.errors import ResultError, UserError
from peftbench.experiment import suite as S
from peftbench.record import results as R


def _write(path, obj) -> str:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


def test_a_result_loads_normalised(make_result, tmp_path):
    result = R.load(_write(tmp_path / "a.json", make_result("lora/a", 0.5)))
    assert result[R.RUN_INFO][R.RI_EXPERIMENT_NAME] == "lora/a"
    assert R.final_metrics(result)[R.M_TEST_ACC] == 0.5


@pytest.mark.parametrize("content, reason", [
    ('{"run_info": {"experiment_name": "lora/a"}, "train_info": {"sta', "not valid JSON (truncated?)"),
    ("[]", "not a peftbench result"),
    ('"text"', "not a peftbench result"),
    ('{"run_info": {}}', "not a peftbench result"),
    ('{"schema_version": 3, "run_info": {}, "train_info": {}}', "unsupported schema_version 3"),
    ('{"schema_version": "1", "run_info": {}, "train_info": {}}', "unsupported schema_version '1'"),
    ('{"run_info": [], "train_info": {}}', "run_info is not an object"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    (b"\xff\xfe{}", "not UTF-8 text"),
], ids=["truncated", "list", "string", "no-train-info", "newer-schema", "schema-as-text", "section-not-object",
        "deeply-nested", "not-utf8"])
def test_load_refuses_what_is_not_a_usable_result_with_one_error_naming_file_and_reason(tmp_path, content, reason):
    path = tmp_path / "bad.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ResultError) as info:
        R.load(path)
    assert isinstance(info.value, UserError)  # exit 2 through the CLI, no traceback
    assert info.value.path == path and reason in info.value.reason
    assert str(info.value).startswith(f"{path}: unreadable result (")


def test_a_result_nested_just_below_the_json_limit_is_refused_too(make_result, tmp_path):
    # json.loads accepts this depth; copying it into the normalised result would recurse too deep
    result = make_result()
    result[R.RUN_INFO][R.RI_TRAIN_CONFIG] = json.loads("[" * 900 + "]" * 900)
    path = _write(tmp_path / "deep.json", json.dumps(result))
    with pytest.raises(ResultError, match="nested too deeply"):
        R.load(path)


def test_load_refuses_a_missing_file_and_a_folder(tmp_path):
    with pytest.raises(ResultError, match="no such file"):
        R.load(tmp_path / "nope.json")
    with pytest.raises(ResultError, match="is a folder"):
        R.load(tmp_path)


@pytest.mark.parametrize("value", [5.0, -0.1, 47.8, math.inf, math.nan, "0.5", True])
@pytest.mark.parametrize("key", R.ACCURACY_KEYS)
def test_accuracies_that_are_not_finite_fractions_are_refused(make_result, tmp_path, key, value):
    result = make_result()
    result[R.TRAIN_INFO][R.TI_METRICS][-1][key] = value
    path = tmp_path / "acc.json"
    path.write_text(json.dumps(result))  # json writes nan and inf as NaN / Infinity, which it reads back
    with pytest.raises(ResultError, match=f"{key} .* is not a fraction in \\[0, 1\\]"):
        R.load(path)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, 0.25, None])
def test_accuracies_in_0_1_and_null_are_accepted(make_result, tmp_path, value):
    result = make_result()
    result[R.TRAIN_INFO][R.TI_METRICS][-1][R.M_TEST_ACC] = value
    assert R.final_metrics(R.load(_write(tmp_path / "ok.json", result)))[R.M_TEST_ACC] == value


def test_load_raw_keeps_unknown_keys_for_commands_that_write_back(make_result, tmp_path):
    result = make_result()
    result["extra"] = {"kept": True}
    raw, normalised = R.load_raw(_write(tmp_path / "r.json", result))
    assert raw["extra"] == {"kept": True} and "extra" not in normalised


def test_key_constants_and_typed_dicts_declare_the_same_keys():
    sections = {R.RunInfo: "RI_", R.TrainInfo: "TI_", R.MetaInfo: "MI_"}
    for typed, prefix in sections.items():
        declared = set(typed.__annotations__)
        constants = {v for k, v in vars(R).items() if k.startswith(prefix) and isinstance(v, str)}
        if typed is R.TrainInfo:
            constants |= {R.ACCEL_MEM_MAX, R.ACCEL_MEM_AVG, R.ACCEL_MEM_99, R.CPU_PEAK_RSS}
        assert declared == constants, typed.__name__
    metric_constants = {v for k, v in vars(R).items() if k.startswith("M_") and isinstance(v, str)}
    assert set(R.MetricsEntry.__annotations__) == metric_constants
    assert set(R.Result.__annotations__) >= {R.SCHEMA, *R.SECTIONS}
    empty = R.empty_result()
    assert set(empty[R.RUN_INFO]) == set(R.RunInfo.__annotations__)
    assert set(empty[R.TRAIN_INFO]) == set(R.TrainInfo.__annotations__)
    assert set(empty[R.META_INFO]) == set(R.MetaInfo.__annotations__)


def test_every_schema_key_has_a_comment():
    import inspect

    source = inspect.getsource(R)
    schema = source[source.index("class RunInfo("):source.index("Result = TypedDict(")].splitlines()
    for typed in (R.RunInfo, R.TrainInfo, R.MetricsEntry, R.MetaInfo):
        for key in typed.__annotations__:
            names = {key} | {k for k, v in vars(R).items() if v == key and k.isupper()}
            [line] = [line for line in schema if line.strip().split(":")[0] in names
                      and line.strip().split(":")[0] != line.strip()]  # a declaration, not prose
            assert "  # " in line, (typed.__name__, key)


# --- result file names ------------------------------------------------------------------------


@pytest.mark.parametrize("seed, stamp", [(0, None), (1, None), (0, "2026-01-02T03-04-05"), (7, "2026-01-02T03-04-05-2")])
def test_result_names_are_parsed_back_to_what_wrote_them(seed, stamp):
    stem = S.result_stem("lora", "llama-3.2-3B-lr_0.0005", seed, default_seed=0)
    name = f"{stem}--{stamp}.json" if stamp else f"{stem}.json"
    parsed = S.parse_result_name(name)
    assert parsed == S.ResultName(stem, "lora", "llama-3.2-3B-lr_0.0005", seed or None, stamp)
    assert parsed.experiment_name == "lora/llama-3.2-3B-lr_0.0005"


@pytest.mark.parametrize("name", ["lora--a.predictions.jsonl.gz", "lora--a.json.unreadable-2026-01-01T00-00-00",
                                  "notes.json", "lora--a--b.json", "lora--a.txt"])
def test_names_that_are_not_result_names_parse_to_none(name):
    assert S.parse_result_name(name) is None


@pytest.mark.parametrize("method, name", [("lora", "tiny-r4--seed1"), ("lora", "a--b"), ("lora", "tiny-"),
                                          ("lora", "-tiny"), ("lo--ra", "tiny"),
                                          ("lora", "tiny--2026-01-02T03-04-05")])
def test_names_that_could_share_a_result_file_are_refused(method, name):
    [problem] = S.name_problems(method, name)
    assert "two experiments could share" in problem


def test_a_name_with_a_newline_is_refused_with_the_other_name_rules(tiny_suite, tiny_lora, capsys):
    import json

    from peftbench.cli import main

    assert S.parse_result_name("lora--tiny\nr4.json") is None  # such a result could never be found again
    [problem] = S.name_problems("lora", "tiny\nr4")
    assert "'tiny\\nr4' holds a control character" in problem
    exp_dir = tiny_suite / "experiments" / "lora" / "tiny\nr4"
    exp_dir.mkdir()
    (exp_dir / "adapter_config.json").write_text(json.dumps(tiny_lora))
    assert main(["run", "--no-progress", str(exp_dir)]) == 2
    assert "holds a control character" in capsys.readouterr().err
    assert not (tiny_suite / "temporary_results").exists()


def test_ordinary_names_are_accepted():
    assert S.name_problems("full-finetuning", "llama-3.2-3B-lr_0.00001") == []
    assert S.name_problems("lora", "llama-3.2-3B-rank32-seed1") == []
