"""Results made on different hardware: `compare` warns, `diff` names both machines."""

from __future__ import annotations

from peftbench.cli import main

XEON = {"cpu_model": "Intel Xeon", "torch_cpu_capability": "AVX512", "accelerator": None}
EPYC = {"cpu_model": "AMD EPYC", "torch_cpu_capability": "AVX2", "accelerator": None}
L40S = {"accelerator": "NVIDIA L40S"}


def _write(write_run, make_result, prediction_rows, path, name, acc, system_info):
    result = make_result(name, acc)
    result["meta_info"]["system_info"] = system_info
    return write_run(path, result, prediction_rows([True] * int(acc * 10) + [False] * (10 - int(acc * 10))))


def test_compare_warns_when_the_leaderboard_mixes_hardware(make_result, write_run, prediction_rows, tmp_path, capsys):
    results = tmp_path / "results"
    _write(write_run, make_result, prediction_rows, results / "lora--a.json", "lora/a", 0.5, XEON)
    _write(write_run, make_result, prediction_rows, results / "lora--b.json", "lora/b", 0.4, EPYC)
    assert main(["compare", str(tmp_path), "--columns", "experiment,hardware"]) == 0
    captured = capsys.readouterr()
    assert "mixes hardware (AMD EPYC [AVX2]: 1, Intel Xeon [AVX512]: 1)" in captured.err
    assert "Intel Xeon [AVX512]" in captured.out and "AMD EPYC [AVX2]" in captured.out


def test_compare_is_quiet_on_one_machine_and_on_results_that_predate_the_fields(make_result, write_run,
                                                                               prediction_rows, tmp_path, capsys):
    results = tmp_path / "results"
    _write(write_run, make_result, prediction_rows, results / "lora--a.json", "lora/a", 0.5, L40S)
    _write(write_run, make_result, prediction_rows, results / "lora--b.json", "lora/b", 0.4, L40S)
    _write(write_run, make_result, prediction_rows, results / "lora--c.json", "lora/c", 0.3, {})  # "unknown"
    assert main(["compare", str(tmp_path)]) == 0
    assert "mixes hardware" not in capsys.readouterr().err


def test_diff_names_the_hardware_of_each_side(make_result, write_run, prediction_rows, tmp_path, capsys):
    a = _write(write_run, make_result, prediction_rows, tmp_path / "a.json", "lora/a", 0.5, XEON)
    b = _write(write_run, make_result, prediction_rows, tmp_path / "b.json", "lora/b", 0.4, EPYC)
    assert main(["diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "hardware      A Intel Xeon [AVX512]   B AMD EPYC [AVX2]" in out
    assert "cpu_model: Intel Xeon vs AMD EPYC" in out
