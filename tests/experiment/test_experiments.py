"""Every shipped experiment folder trains, generates, saves and reloads on a tiny Llama.

The folders are found recursively (experiments/**/adapter_config.json, and folders with only
training_params.json for full fine-tuning) and loaded with `peftbench.experiment.config.load_experiment`,
exactly as the runner loads them. `shrink_for_tiny_llama` then changes only what cannot fit a
64-wide, 2-layer Llama (ranks, block and group sizes, virtual-token counts, layer counts); the
method and its options stay. Each case takes 2 optimizer steps with the shipped
`peftbench.training.loop.train_step` (the runner's optimizer, schedule and grad scaler, and the
`peftbench.training.methods` hooks inside it), greedily generates, saves the adapter, reloads it on a
fresh copy of the base model, and requires the same logits and the same generated tokens.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from peftbench.capabilities.tiny import SCHEDULE_STEPS, TINY_LLAMA, prompt_batch, shrink_peft_config  # noqa: E402
from peftbench.training import methods  # noqa: E402
from peftbench.experiment.config import load_experiment  # noqa: E402
from peftbench.experiment.suite import discover_experiments  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SUITE = Path(__file__).resolve().parents[2]
# Every shipped suite (MetaMathQA, commonsense, code, the two CPU demo suites): a config that ships must train.
EXPERIMENT_DIRS = (discover_experiments(SUITE / "experiments") + discover_experiments(SUITE / "demo" / "experiments")
                   + discover_experiments(SUITE / "demo" / "list-ops" / "experiments")
                   + discover_experiments(SUITE / "commonsense" / "experiments")
                   + discover_experiments(SUITE / "code" / "experiments"))

STEPS = SCHEDULE_STEPS  # the schedules shrink_peft_config fits (AdaLoRA, AdaMSS) span these steps
NEW_TOKENS = 4


def _case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


# ------------------------------------------------------------------------------------------
# the tiny model


_BASE: list = []


@pytest.fixture(scope="module", autouse=True)
def _base_llama(tiny_llama):
    """Builds the module's one base model with conftest's builder (the fixture argument)."""
    model = tiny_llama(**TINY_LLAMA)
    model.generation_config.pad_token_id = 0
    _BASE[:] = [model.eval()]


def tiny_llama():
    """A fresh copy of one tiny Llama, so every case starts from the same weights."""
    return copy.deepcopy(_BASE[0])


def train_batch() -> dict:
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, TINY_LLAMA["vocab_size"], (2, 12), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0  # left padding, as in generation batches
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :6] = -100  # the prompt half
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def shrink_train_config(train_config, peft_config):
    cfg = copy.deepcopy(train_config)
    cfg.max_steps = STEPS  # the learning-rate schedule spans the steps taken
    kwargs = cfg.optimizer_kwargs
    if "r" in kwargs and peft_config is not None:  # LoRA-FA's scaling follows the adapter's rank
        kwargs["r"] = peft_config.r
    return cfg


# ------------------------------------------------------------------------------------------


def _model_to_train(peft_config):
    """The tiny Llama with the method applied (seed 0, so every case starts from the same
    adapter), or all of it trainable for full fine-tuning."""
    from peft import get_peft_model

    torch.manual_seed(0)
    model = tiny_llama()
    if peft_config is None:
        return model.requires_grad_(True)
    return get_peft_model(model, peft_config)


def _outputs(model, peft_config):
    """Logits on a fixed prompt and greedy continuations, with the method's generation kwargs."""
    batch = prompt_batch()
    extra = methods.generate_kwargs(peft_config, batch)
    with torch.no_grad():
        logits = model(**batch, **extra).logits
        generated = model.generate(**batch, **extra, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    return logits, generated


@pytest.mark.parametrize("exp_dir", EXPERIMENT_DIRS, ids=_case_id)
def test_experiment_trains_generates_saves_and_reloads(exp_dir, tmp_path):
    from peft import PeftModel

    from peftbench.training.loop import Optimization, train_step

    exp = load_experiment(exp_dir)
    methods.check_supported(exp.peft_config)
    peft_config = shrink_peft_config(exp.peft_config)  # shrunk and prepared as the capability matrix does
    train_config = shrink_train_config(exp.train_config, peft_config)

    model = _model_to_train(peft_config)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"

    opt = Optimization.build(model, train_config, peft_config, "cpu")
    model.train()
    for step in range(STEPS):
        loss, tokens = train_step(model, train_batch(), opt, train_config, peft_config, "cpu", step)
        assert math.isfinite(loss), f"loss {loss} at step {step}"
        assert tokens == 2 * 12 - 3  # the non-padding tokens of train_batch
    model.eval()
    after = dict(model.named_parameters())
    assert any(not torch.equal(before, after[n]) for n, before in trainable.items() if n in after), \
        "two optimizer steps changed no trainable parameter"

    logits, generated = _outputs(model, peft_config)
    assert generated.shape[1] == prompt_batch()["input_ids"].shape[1] + NEW_TOKENS
    base_logits, _ = _outputs(tiny_llama(), None)
    assert logits.shape != base_logits.shape or not torch.equal(logits, base_logits), \
        "the trained model computes exactly what the base model does"

    model.save_pretrained(tmp_path)
    if peft_config is None:
        reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    else:
        assert any(f.name.startswith("adapter_model") for f in tmp_path.iterdir()), "no adapter weights saved"
        reloaded = PeftModel.from_pretrained(tiny_llama(), tmp_path).eval()
    reloaded_logits, reloaded_generated = _outputs(reloaded, peft_config)
    torch.testing.assert_close(reloaded_logits, logits, rtol=1e-4, atol=1e-5)
    assert torch.equal(reloaded_generated, generated)


@pytest.mark.parametrize("exp_dir", EXPERIMENT_DIRS, ids=_case_id)
def test_the_training_loss_equals_the_models_own_loss_with_the_same_gradients(exp_dir):
    """training.loss computes logits only where there are labels; for every shipped method that
    must be the loss (and gradients) of `model(**batch).loss`, regularisers PEFT adds included."""
    from peftbench.training.loss import causal_lm_loss, label_positions

    exp = load_experiment(exp_dir)
    peft_config = shrink_peft_config(exp.peft_config)
    model = _model_to_train(peft_config)
    model.train()  # dropout on: both forwards draw the same masks from the same seed
    batch = train_batch()
    extra = methods.forward_kwargs(peft_config, batch)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(compute):
        torch.manual_seed(1)
        loss = compute()
        return loss.detach(), torch.autograd.grad(loss, trainable, allow_unused=True)

    positions = label_positions(batch["labels"])  # as train_step gives them, from the CPU batch
    ours, our_grads = loss_and_grads(lambda: causal_lm_loss(model, batch, extra, peft_config, positions))
    theirs, their_grads = loss_and_grads(lambda: model(**batch, **extra).loss)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for mine, other in zip(our_grads, their_grads):
        if mine is None or other is None:
            assert mine is None and other is None
        else:
            torch.testing.assert_close(mine, other, rtol=1e-4, atol=1e-6)
