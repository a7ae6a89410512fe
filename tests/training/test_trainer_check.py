"""The sanity check against HF Trainer + peft: on the same tiny model, batches, optimizer, schedule
and clipping, peftbench's training step and Trainer give the same loss at every step."""

from __future__ import annotations

import pytest

from peftbench.experiment.config import build_train_config
from peftbench.training import trainer_check as TC


def _rows(n: int = 30) -> list[dict[str, str]]:
    return [{"query": f"Tom has {i % 9 + 1} apples and buys {i % 7 + 1} more. How many apples does he have?",
             "response": f"Tom has {i % 9 + 1} + {i % 7 + 1} = {i % 9 + i % 7 + 2} apples. The answer is: "
                         f"{i % 9 + i % 7 + 2}"} for i in range(n)]


def _setup(tiny_model_dir, peft_spec, steps=6, **params):
    import torch
    from peft import PeftConfig

    from peftbench.training import data, modeling

    cfg = build_train_config([("test", {
        "model_id": str(tiny_model_dir), "dtype": "float32", "device": "cpu", "batch_size": 3, "max_steps": steps,
        "eval_steps": steps, "optimizer_kwargs": {"lr": 3e-3, "weight_decay": 0.1}, "warmup_ratio": 0.34,
        "max_seq_length": 48, **params})])
    peft_config = None
    if peft_spec is not None:
        peft_config = PeftConfig.from_peft_type(**peft_spec)

    def fresh_model():
        torch.manual_seed(cfg.seed)  # the same adapter initialisation for both loops
        return modeling.load_model(cfg, peft_config, "cpu")

    loaded = fresh_model()
    samples = data.tokenize_train_rows(_rows(), loaded.tokenizer, cfg.query_template, cfg.max_seq_length)
    batches = TC.step_batches(samples, loaded.tokenizer, cfg, steps)
    return cfg, peft_config, fresh_model, loaded, batches


@pytest.mark.parametrize("method", ["lora", "full"])
def test_peftbench_loop_and_hf_trainer_give_the_same_loss_at_every_step(tiny_model_dir, tiny_lora, method):
    cfg, peft_config, fresh_model, loaded, batches = _setup(tiny_model_dir, tiny_lora if method == "lora" else None)
    ours = TC.run_peftbench(loaded.model, cfg, peft_config, "cpu", batches)
    theirs = TC.run_hf_trainer(fresh_model().model, cfg, peft_config, "cpu", batches)
    assert len(ours.losses) == len(theirs.losses) == 6
    assert ours.losses[0] != ours.losses[-1]  # the model did learn, so later steps test the updates
    assert TC.max_relative_difference(ours.losses, theirs.losses) < 1e-5, (ours.losses, theirs.losses)
    assert ours.tokens == theirs.tokens > 0


def test_a_different_schedule_shows_as_a_loss_difference(tiny_model_dir, tiny_lora):
    """The check can fail: Trainer given a constant learning rate drifts from the cosine loop."""
    cfg, peft_config, fresh_model, loaded, batches = _setup(tiny_model_dir, tiny_lora)
    ours = TC.run_peftbench(loaded.model, cfg, peft_config, "cpu", batches)
    constant = build_train_config([("test", {**cfg.to_dict(), "lr_scheduler": "constant"})])
    theirs = TC.run_hf_trainer(fresh_model().model, constant, peft_config, "cpu", batches)
    assert TC.max_relative_difference(ours.losses, theirs.losses) > 1e-4


def test_methods_with_training_hooks_are_refused():
    from peft import PeftConfig

    from peftbench.errors import UserError

    adalora = PeftConfig.from_peft_type(peft_type="ADALORA", task_type="CAUSAL_LM", total_step=10)
    with pytest.raises(UserError, match="HF Trainer does not run"):
        TC.check_comparable(adalora, {}, build_train_config([]))


def test_an_eos_loss_weight_is_refused_because_trainer_weighs_every_token_the_same():
    from peftbench.errors import UserError

    TC.check_comparable(None, {}, build_train_config([]))  # the default weight compares
    with pytest.raises(UserError, match="eos_loss_weight is 0.5, and HF Trainer's loss weighs every token the same"):
        TC.check_comparable(None, {}, build_train_config([("test", {"eos_loss_weight": 0.5})]))
