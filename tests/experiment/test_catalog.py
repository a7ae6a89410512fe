"""The experiment catalog against the installed peft, and `peftbench list`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from peftbench import cli
from peftbench.experiment import catalog
from peftbench.errors import UserError
from peftbench.fs import atomic_write_json
from peftbench.record.results import M_STEP, M_TEST_ACC, empty_result

SUITE = Path(__file__).resolve().parents[2]


def test_every_causal_lm_method_of_installed_peft_has_an_experiment_or_a_documented_exclusion():
    missing = catalog.missing_methods(SUITE)
    assert not missing, (
        f"PEFT methods of the installed peft without an experiment: {', '.join(missing)}. "
        "Add experiments/<method>/<name>/adapter_config.json, or an entry with its reason in "
        "peftbench.experiment.catalog.EXCLUDED_METHODS"
    )


def test_exclusions_name_installed_methods_with_a_reason_and_no_experiment():
    from peft.utils import PeftType

    known = {t.value for t in PeftType}
    covered = catalog.covered_methods(catalog.catalog(SUITE))
    for name, reason in {**catalog.EXCLUDED_METHODS, **catalog.NOT_FOR_CAUSAL_LM}.items():
        assert name in known, f"{name} is not a PEFT method of the installed peft: a stale exclusion"
        assert len(reason) > 20, f"{name}: say why it is left out"
        assert name not in covered, f"{name} is excluded but has an experiment"


def test_xlora_is_the_one_installed_method_left_out():
    assert set(catalog.EXCLUDED_METHODS) == {"XLORA"}
    assert "XLORA" in catalog.installed_methods()


def test_each_method_folder_holds_one_peft_method():
    by_folder: dict[str, set] = {}
    for entry in catalog.catalog(SUITE):
        by_folder.setdefault(entry.method, set()).add(entry.peft_type)
    mixed = {folder: types for folder, types in by_folder.items() if len(types) != 1}
    assert not mixed


def test_every_experiment_is_explained_in_its_method_readme():
    unexplained = []
    for entry in catalog.catalog(SUITE):
        readme = entry.path.parent / "README.md"
        text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        line = next((ln for ln in text.splitlines() if f"`{entry.name}`" in ln), "")
        if len(line) < len(entry.name) + 20:
            unexplained.append(entry.experiment_name)
    assert not unexplained, f"no README.md line for: {unexplained}"


def test_catalog_finds_experiments_recursively_and_full_finetuning_without_adapter(tmp_path):
    lora = tmp_path / "experiments" / "lora" / "r4"
    full = tmp_path / "experiments" / "full-finetuning" / "lr1e-5"
    lora.mkdir(parents=True)
    full.mkdir(parents=True)
    (lora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (full / "training_params.json").write_text("{}")
    (tmp_path / "experiments" / "lora" / "notes").mkdir()  # neither file: not an experiment

    entries = catalog.catalog(tmp_path)

    assert [(e.experiment_name, e.peft_type) for e in entries] == [
        ("full-finetuning/lr1e-5", None), ("lora/r4", "LORA")]


def test_catalog_of_a_folder_without_experiments_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no experiments/ folder"):
        catalog.catalog(tmp_path)


# ------------------------------------------------------------------------------------------
# peftbench list


def _write_main_result(suite: Path, stem: str, accuracy: float) -> None:
    result = empty_result()
    result["train_info"]["status"] = "success"
    result["train_info"]["metrics"] = [{M_STEP: 4, M_TEST_ACC: accuracy}]
    atomic_write_json(suite / "results" / f"{stem}.json", result)


def _row(out: str, experiment: str) -> str:
    return next(line for line in out.splitlines() if f" {experiment} " in f" {line} ")


def test_list_shows_family_trainable_parameters_and_main_result(tiny_suite, capsys):
    _write_main_result(tiny_suite, "lora--tiny-r4", 0.5)

    status = cli.main(["list", str(tiny_suite)])

    out = capsys.readouterr().out
    assert status == 0
    lora = _row(out, "lora/tiny-r4")
    # r=4 on q (32 -> 32) and v (32 -> 16, two KV heads of 8) in 2 layers: 2 * 4 * (64 + 48)
    assert re.search(r"^LoRA\s.*\s896\s+yes\s+50\.0%$", lora), lora
    full = _row(out, "full-finetuning/tiny")
    assert full.startswith("Full fine-tuning") and re.search(r"\s-\s*$", full), full
    assert "2 experiments: 1 of the" in out
    assert "left out: XLORA" in out


def test_an_evaluation_only_experiment_trains_no_parameters(tiny_suite, capsys):
    base = tiny_suite / "experiments" / "base" / "untrained"
    base.mkdir(parents=True)
    (base / "training_params.json").write_text(json.dumps({"max_steps": 0}))

    assert cli.main(["list", str(tiny_suite)]) == 0

    assert re.search(r"^Base model\s.*\sbase/untrained\s+0\s", _row(capsys.readouterr().out, "base/untrained"))


def test_list_says_when_the_model_config_is_not_available_offline(tiny_suite, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = json.loads((tiny_suite / "default_training_params.json").read_text())
    params["model_id"] = "no-such-org/no-such-model"
    (tiny_suite / "default_training_params.json").write_text(json.dumps(params))

    assert cli.main(["list", str(tiny_suite)]) == 0

    out = capsys.readouterr().out
    assert "model config not available offline for no-such-org/no-such-model" in out
    assert re.search(r"lora/tiny-r4\s+n/a", out)


def test_list_on_a_folder_without_suite_defaults_is_bad_input(tiny_suite, capsys):
    (tiny_suite / "default_training_params.json").unlink()
    assert cli.main(["list", str(tiny_suite), "--no-params"]) == 2
    err = capsys.readouterr().err
    assert "is not a suite: it has no default_training_params.json" in err and "Traceback" not in err


def test_list_counts_one_experiment_in_the_singular(tiny_suite, capsys):
    import shutil

    shutil.rmtree(tiny_suite / "experiments" / "full-finetuning")
    assert cli.main(["list", str(tiny_suite), "--no-params"]) == 0
    out = capsys.readouterr().out
    assert "1 experiment: 1 of the" in out and "1 experiments" not in out


def test_list_reports_a_broken_experiment_and_still_lists_the_others(tiny_suite, capsys):
    broken = tiny_suite / "experiments" / "lora" / "typo"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "rr": 4}))

    status = cli.main(["list", str(tiny_suite), "--no-params"])

    out = capsys.readouterr().out
    assert status == 1
    assert "lora/tiny-r4" in out and "full-finetuning/tiny" in out
    assert re.search(r"error: lora/typo: .*", out)
