"""`peftbench run` builds the model and the adapter on the meta device while it validates, so that
PEFT's own checks and a model folder without a model end in exit 2 with nothing written, never
in a "failed" result (issue 15, item 7)."""

from __future__ import annotations

import json

import pytest

from peftbench.cli import main
from peftbench.errors import UserError
from peftbench.experiment.config import load_experiment
from peftbench.training import meta_check


def _tree(suite):
    return sorted(p for p in suite.rglob("*"))


def _run(capsys, *argv):
    code = main(["run", *map(str, argv), "--no-progress"])
    return code, capsys.readouterr().err


def test_target_modules_matching_nothing_exit_2_naming_the_modules_nothing_written(tiny_suite, tiny_lora, capsys):
    exp_dir = tiny_suite / "experiments" / "lora" / "tiny-r4"
    (exp_dir / "adapter_config.json").write_text(json.dumps({**tiny_lora, "target_modules": ["nope_proj"]}))
    before = _tree(tiny_suite)
    code, err = _run(capsys, exp_dir)
    assert code == 2
    assert "adapter_config.json: PEFT cannot build this adapter" in err and "nope_proj" in err
    assert "Traceback" not in err
    assert _tree(tiny_suite) == before


def test_model_folder_without_a_model_exit_2_naming_the_folder(tiny_suite, tmp_path, capsys):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "README.md").write_text("weights go here\n")
    exp_dir = tiny_suite / "experiments" / "full-finetuning" / "tiny"
    before = _tree(tiny_suite)
    code, err = _run(capsys, exp_dir, "--set", f"model_id={empty}")
    assert code == 2
    assert f"model_id {str(empty)!r}: folder {empty} holds no model" in err
    assert "Traceback" not in err
    assert _tree(tiny_suite) == before


def test_a_valid_experiment_passes_the_meta_check(tiny_suite):
    for exp_dir in (tiny_suite / "experiments" / "lora" / "tiny-r4", tiny_suite / "experiments" / "full-finetuning" / "tiny"):
        meta_check.check_builds(load_experiment(exp_dir))  # raises on a problem


def test_initialisations_that_need_weights_are_skipped_not_refused(tiny_suite, tiny_lora):
    # PiSSA runs an SVD of the base weights, which meta tensors cannot do: only a run can tell.
    exp_dir = tiny_suite / "experiments" / "lora" / "tiny-r4"
    (exp_dir / "adapter_config.json").write_text(json.dumps({**tiny_lora, "init_lora_weights": "pissa"}))
    meta_check.check_builds(load_experiment(exp_dir))


def test_an_uncached_hub_model_is_not_checked(tiny_suite):
    exp = load_experiment(tiny_suite / "experiments" / "lora" / "tiny-r4",
                          {"model_id": "nobody-here/no-such-model-1234"})
    meta_check.check_builds(exp)  # offline and not cached: the run downloads it, no refusal now


def test_a_missing_local_model_folder_is_a_user_error():
    with pytest.raises(UserError, match="does not exist"):
        meta_check._model_config("./no/such/folder", None, False)


def test_an_adapter_too_large_for_the_machine_exits_2_with_the_estimate(tiny_suite, tiny_lora, capsys):
    # r = 1e9 on q_proj and v_proj of the tiny model: 2 layers x 1e9 x (32 + 32 + 32 + 16) = 2.24e11
    # float32 adapter parameters, 834 GiB: the run used to start and fail allocating them.
    exp_dir = tiny_suite / "experiments" / "lora" / "tiny-r4"
    (exp_dir / "adapter_config.json").write_text(json.dumps({**tiny_lora, "r": 10**9}))
    before = _tree(tiny_suite)
    code, err = _run(capsys, exp_dir)
    assert code == 2
    assert "adapter_config.json: the model with this adapter needs at least 834.5 GiB for its weights alone" in err
    assert "224,000,000,000 of them the adapter's" in err and "more than this machine's RAM has" in err
    assert "Traceback" not in err
    assert _tree(tiny_suite) == before


def test_a_size_peft_leaves_to_torch_is_refused_not_skipped(tiny_suite):
    # num_virtual_tokens -3 is refused when the config loads; should a negative size reach the meta
    # build anyway, torch's "negative dimension" is bad input, not an initialisation to skip.
    exp_dir = tiny_suite / "experiments" / "prompt_tuning" / "t"
    exp_dir.mkdir(parents=True)
    (exp_dir / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 3}))
    exp = load_experiment(exp_dir)
    exp.peft_config.num_virtual_tokens = -3
    with pytest.raises(UserError, match="negative dimension -3"):
        meta_check.check_builds(exp)

