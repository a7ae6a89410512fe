"""TrainConfig: merge order, typing of --set, and one clear message per bad input (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.cli import main
from peftbench.experiment.config import (TrainConfig, build_train_config, load_experiment, parse_overrides,
                              suite_default_seed)
from peftbench.errors import ConfigError, UserError



@pytest.fixture
def lora_suite(tmp_path, tiny_lora):
    """A function: lora_suite(defaults=None) -> a suite with one LoRA experiment, lora/a."""
    def build(defaults: dict | None = None) -> Path:
        suite = tmp_path / "s"
        (suite / "experiments" / "lora" / "a").mkdir(parents=True)
        (suite / "default_training_params.json").write_text(json.dumps(defaults or {"max_steps": 10, "eval_steps": 5}))
        (suite / "experiments" / "lora" / "a" / "adapter_config.json").write_text(json.dumps(tiny_lora))
        return suite

    return build


def test_defaults_are_the_reference_studys():
    cfg = TrainConfig()
    assert (cfg.model_id, cfg.dtype, cfg.max_seq_length, cfg.batch_size, cfg.batch_size_eval) == (
        "meta-llama/Llama-3.2-3B", "bfloat16", 768, 4, 50)
    assert (cfg.max_steps, cfg.eval_steps, cfg.optimizer_type, cfg.lr_scheduler, cfg.seed) == (5000, 250, "AdamW", "cosine", 0)
    assert cfg.optimizer_kwargs == {"lr": 1e-4, "weight_decay": 0.1}
    assert cfg.generation_kwargs == {"max_length": 800, "max_new_tokens": 300}
    assert cfg.query_template == "Question: {query} Think step by step.\nAnswer:"
    assert (cfg.valid_size, cfg.test_size, cfg.char_limit, cfg.device) == (50, None, 1300, "auto")


def test_repo_suite_defaults_load_and_match_the_dataclass(repo_root):
    exp = load_experiment(repo_root / "experiments" / "lora" / "llama-3.2-3B-rank32")
    assert exp.train_config == TrainConfig()
    assert exp.peft_config.r == 32 and exp.peft_config.peft_type.value == "LORA"


def test_merge_order_defaults_then_experiment_then_set(lora_suite, tmp_path):
    suite = lora_suite({"max_steps": 10, "eval_steps": 5, "batch_size": 8, "optimizer_kwargs": {"lr": 1e-4, "weight_decay": 0.1}})
    exp_dir = suite / "experiments" / "lora" / "a"
    (exp_dir / "training_params.json").write_text(json.dumps({"batch_size": 2, "optimizer_kwargs": {"lr": 5e-3}}))
    exp = load_experiment(exp_dir)
    assert exp.train_config.batch_size == 2
    # the experiment file replaces whole values, as the reference study does
    assert exp.train_config.optimizer_kwargs == {"lr": 5e-3}
    exp = load_experiment(exp_dir, parse_overrides(["batch_size=3", "optimizer_kwargs.weight_decay=0.01"]))
    assert exp.train_config.batch_size == 3
    assert exp.train_config.optimizer_kwargs == {"lr": 5e-3, "weight_decay": 0.01}


def test_set_values_are_typed_by_field():
    parsed = parse_overrides(["max_steps=7", "test_size=null", "use_gc=true", "model_id=123", "optimizer_kwargs.lr=1e-3"])
    assert parsed == {"max_steps": 7, "test_size": None, "use_gc": True, "model_id": "123", "optimizer_kwargs": {"lr": 1e-3}}


def test_all_problems_are_reported_together_each_naming_field_and_value():
    with pytest.raises(ConfigError) as info:
        build_train_config([("defaults", {"max_stepz": 3, "dtype": "float8", "batch_size": 0,
                                          "query_template": "no placeholder", "optimizer_type": "AdamX"})])
    problems = info.value.problems
    assert len(problems) == 1 and "did you mean 'max_steps'" in problems[0]
    with pytest.raises(ConfigError) as info:
        build_train_config([("defaults", {"dtype": "float8", "batch_size": 0, "query_template": "no placeholder",
                                          "optimizer_type": "AdamX", "max_steps": 10, "eval_steps": 20})])
    text = str(info.value)
    for expected in ("dtype: 'float8'", "batch_size: must be >= 1, got 0", "query_template: 'no placeholder' has no {query}",
                     "optimizer_type: unknown optimizer 'AdamX'", "eval_steps: 20 is larger than max_steps 10"):
        assert expected in text
    assert len(info.value.problems) == 5


def test_wrong_types_are_refused_with_the_value():
    with pytest.raises(ConfigError, match=r"max_steps: expected int, got 'ten'"):
        build_train_config([("x", {"max_steps": "ten"})])
    with pytest.raises(ConfigError, match=r"use_gc: expected bool, got 1"):
        build_train_config([("x", {"use_gc": 1})])
    with pytest.raises(ConfigError, match=r"max_steps: expected int, got True"):
        build_train_config([("x", {"max_steps": True})])


def test_max_steps_zero_means_evaluation_only():
    cfg = build_train_config([("x", {"max_steps": 0, "eval_steps": 5})])
    assert cfg.max_steps == 0


def test_both_training_params_file_names_are_accepted_but_not_together(lora_suite, tmp_path):
    suite = lora_suite()
    exp_dir = suite / "experiments" / "lora" / "a"
    (exp_dir / "training_parameters.json").write_text(json.dumps({"batch_size": 3}))
    assert load_experiment(exp_dir).train_config.batch_size == 3
    (exp_dir / "training_params.json").write_text(json.dumps({"batch_size": 5}))
    with pytest.raises(UserError, match="holds both"):
        load_experiment(exp_dir)


def test_report_to_takes_a_json_list_by_set_as_well_as_names_with_commas(lora_suite):
    exp_dir = lora_suite() / "experiments" / "lora" / "a"
    as_list = parse_overrides(['report_to=["tensorboard","mlflow"]'])
    assert as_list == {"report_to": ["tensorboard", "mlflow"]}
    assert load_experiment(exp_dir, as_list).train_config.report_to == ["tensorboard", "mlflow"]
    assert parse_overrides(["report_to=tensorboard,mlflow"]) == {"report_to": "tensorboard,mlflow"}
    assert parse_overrides(["query_template=1e-3"]) == {"query_template": "1e-3"}  # text stays text


def test_suite_default_seed_comes_from_the_defaults_file(lora_suite, tmp_path):
    assert suite_default_seed(lora_suite({"seed": 3})) == 3


# A dozen malformed experiments: each exits 2, names the problem, and writes nothing.
BAD_INPUTS = [
    ("missing folder", lambda s: s / "experiments" / "lora" / "nope", [], "does not exist"),
    ("wrong path shape", lambda s: s / "experiments" / "lora", [], "not an experiment folder"),
    ("a file, not a folder", lambda s: s / "experiments" / "lora" / "a" / "adapter_config.json", [], "is a file"),
    ("malformed training params", "training_params.json:{\"max_steps\": 3,,}", [], "malformed JSON at line 1"),
    ("malformed adapter config", "adapter_config.json:{\"peft_type\": ", [], "malformed JSON"),
    ("unknown peft type", "adapter_config.json:{\"peft_type\": \"LORRA\", \"task_type\": \"CAUSAL_LM\"}", [], "did you mean 'LORA'"),
    ("invalid peft option", "adapter_config.json:{\"peft_type\": \"LORA\", \"task_type\": \"CAUSAL_LM\", \"rank\": 8}", [],
     "unknown option 'rank' for LoraConfig"),
    ("unknown optimizer", "training_params.json:{\"optimizer_type\": \"Adamw\"}", [], "unknown optimizer 'Adamw'"),
    ("eval_steps > max_steps", "training_params.json:{\"eval_steps\": 50}", [], "eval_steps: 50 is larger than max_steps 10"),
    ("template without query", "training_params.json:{\"query_template\": \"Q: {question}\"}", [], "query_template"),
    ("unknown key", "training_params.json:{\"learning_rate\": 0.1}", [], "unknown key 'learning_rate'"),
    ("bad --set key", None, ["--set", "max_step=3"], "did you mean 'max_steps'"),
    ("bad --set value", None, ["--set", "batch_size=-1"], "batch_size: must be >= 1"),
    ("missing local dataset", "training_params.json:{\"train_dataset\": \"./no/such/file.jsonl\"}", [], "does not exist"),
    ("int4 on cpu", "training_params.json:{\"dtype\": \"int4\", \"device\": \"cpu\"}", [], "bitsandbytes"),
    # issue 15, item 5: only a bare {query} in braces
    ("template attribute", "training_params.json:{\"query_template\": \"{query} {query.foo}\"}", [],
     "has '{query.foo}'; only a bare {query} may appear in braces"),
    ("template dunder chain", "training_params.json:{\"query_template\": \"{query.__class__.__mro__} {query}\"}", [],
     "has '{query.__class__.__mro__}'"),
    ("template format spec", "training_params.json:{\"query_template\": \"{query:>1000000000}{query}\"}", [],
     "has '{query:>1000000000}'"),
    # item 7: ranges and finiteness at load time
    ("negative --seed", None, ["--seed", "-1"], "seed: must be in 0..4294967295 (2**32-1, what numpy's seeding accepts), got -1"),
    ("negative seed in --seeds", None, ["--seeds", "0,-1"], "seed: must be in 0..4294967295"),
    ("seed beyond numpy", "training_params.json:{\"seed\": 4294967296}", [], "got 4294967296"),
    ("NaN learning rate", "training_params.json:{\"optimizer_kwargs\": {\"lr\": NaN}}", [],
     "optimizer_kwargs.lr: must be a finite number, got nan"),
    ("NaN learning rate by --set", None, ["--set", "optimizer_kwargs.lr=NaN"], "optimizer_kwargs.lr: must be a finite number, got nan"),
    ("infinite learning rate", "training_params.json:{\"optimizer_kwargs\": {\"lr\": Infinity}}", [],
     "optimizer_kwargs.lr: must be a finite number, got inf"),
    ("infinite grad_norm_clip", "training_params.json:{\"grad_norm_clip\": Infinity}", [], "grad_norm_clip: must be a finite number, got inf"),
    ("LBFGS needs a closure", "training_params.json:{\"optimizer_type\": \"LBFGS\"}", [], "'LBFGS' cannot train here: its step() needs a closure"),
    ("unknown optimizer option", "training_params.json:{\"optimizer_kwargs\": {\"lrr\": 0.1}}", [],
     "optimizer_kwargs: AdamW has no option 'lrr'; did you mean 'lr'?"),
    ("negative rank", "adapter_config.json:{\"peft_type\": \"LORA\", \"task_type\": \"CAUSAL_LM\", \"r\": -4}", [],
     "r: the rank must be >= 1, got -4"),
    ("rank as a word", "adapter_config.json:{\"peft_type\": \"LORA\", \"task_type\": \"CAUSAL_LM\", \"r\": \"four\"}", [],
     "r: expected int or float, got 'four'"),
    # item 8: generation is greedy; only the budget and stop keys
    ("num_beams", "training_params.json:{\"generation_kwargs\": {\"max_new_tokens\": 8, \"num_beams\": 1000000}}", [],
     "generation_kwargs.num_beams: not accepted; evaluation is greedy by design"),
    # item 11: what cannot be meant
    ("max_steps 1e30 as an integer", "training_params.json:{\"max_steps\": 1000000000000000000000000000000}", [],
     "max_steps: 1000000000000000000000000000000 cannot be meant; at most 1,000,000"),
    ("max_new_tokens 1e9", "training_params.json:{\"generation_kwargs\": {\"max_new_tokens\": 1000000000}}", [],
     "generation_kwargs.max_new_tokens: 1000000000 cannot be meant; at most 32,768"),
    ("max_steps 1e30 by --set", None, ["--set", "max_steps=1e30"], "max_steps: expected int, got 1e+30"),
    # item 6: an eval folder without test.jsonl
    ("eval folder without test.jsonl", lambda s: _eval_folder_without_test(s), [], "lacks test.jsonl"),
    # values torch.optim or PEFT refuse only when the run builds them: refused before anything runs
    ("betas outside [0, 1)", "training_params.json:{\"optimizer_kwargs\": {\"lr\": 0.001, \"betas\": [1.5, 0.999]}}", [],
     "optimizer_kwargs: AdamW refuses betas=[1.5, 0.999]: Invalid beta parameter at index 0: 1.5"),
    ("negative weight_decay", None, ["--set", "optimizer_kwargs.weight_decay=-0.1"],
     "optimizer_kwargs: AdamW refuses weight_decay=-0.1: Invalid weight_decay value: -0.1"),
    ("negative num_virtual_tokens",
     "adapter_config.json:{\"peft_type\": \"PROMPT_TUNING\", \"task_type\": \"CAUSAL_LM\", \"num_virtual_tokens\": -3}", [],
     "num_virtual_tokens: the number of virtual tokens must be >= 1, got -3"),
    # eos_loss_weight: finite, >= 0, not beyond what can be meant, and not for a method whose loss is the model's own
    ("NaN eos_loss_weight", "training_params.json:{\"eos_loss_weight\": NaN}", [],
     "eos_loss_weight: must be a finite number, got nan"),
    ("NaN eos_loss_weight by --set", None, ["--set", "eos_loss_weight=NaN"], "eos_loss_weight: must be a finite number, got nan"),
    ("infinite eos_loss_weight by --set", None, ["--set", "eos_loss_weight=Infinity"],
     "eos_loss_weight: must be a finite number, got inf"),
    ("negative eos_loss_weight by --set", None, ["--set", "eos_loss_weight=-0.5"],
     "eos_loss_weight: must be >= 0 (0 leaves the EOS token out of the loss), got -0.5"),
    ("negative eos_loss_weight", "training_params.json:{\"eos_loss_weight\": -1}", [], "eos_loss_weight: must be >= 0"),
    ("eos_loss_weight 1e7", None, ["--set", "eos_loss_weight=1e7"], "eos_loss_weight: 1e+07 cannot be meant; at most 1,000,000"),
    ("eos_loss_weight as a word", None, ["--set", "eos_loss_weight=half"], "eos_loss_weight: expected float, got 'half'"),
    ("eos_loss_weight on AdaLoRA", "adapter_config.json:{\"peft_type\": \"ADALORA\", \"task_type\": \"CAUSAL_LM\", "
     "\"total_step\": 10}", ["--set", "eos_loss_weight=0.5"],
     "eos_loss_weight: 0.5 cannot be applied to ADALORA: its training loss is the model's own (AdaLoRA's forward adds"),
]


def _eval_folder_without_test(suite: Path) -> Path:
    (suite / "gsm8k").mkdir()
    (suite / "gsm8k" / "train.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    exp_dir = suite / "experiments" / "lora" / "a"
    (exp_dir / "training_params.json").write_text(json.dumps({"eval_dataset": str(suite / "gsm8k")}))
    return exp_dir


@pytest.mark.parametrize("label,change,extra,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_with_a_message_and_writes_nothing(lora_suite, tmp_path, capsys, label, change, extra, message):
    suite = lora_suite()
    exp_dir = suite / "experiments" / "lora" / "a"
    target = exp_dir
    if callable(change):
        target = change(suite)
    elif change:
        name, _, text = change.partition(":")
        (exp_dir / name).write_text(text)
    before = sorted(p for p in suite.rglob("*"))
    code = main(["run", str(target), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert sorted(p for p in suite.rglob("*")) == before
