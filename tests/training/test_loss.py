"""The training loss with `eos_loss_weight`: the weighted mean over the labelled positions, the
gradient of EOS positions scaled by the weight and no other, the default left on the unweighted
code, and the methods whose loss is the model's own refused instead of ignored."""

from __future__ import annotations

import json
import math

import pytest

from peftbench.cli import main
from peftbench.experiment.config import build_train_config, load_experiment
from peftbench.record import results as R
from peftbench.record import runkey
from peftbench.training import loss as L
from peftbench.training import methods
from peftbench.training.data import IGNORE_INDEX, collate_train

EOS = 2  # the tiny models' EOS id, also their padding id here (as with many real tokenizers)
VOCAB = 64


def _batch():
    """Two right-padded samples that end in EOS, with the pad id equal to the EOS id: the padding
    after the first sample's EOS is not labelled (masked by length), its EOS is."""
    samples = [{"input_ids": [5, 9, 11, 7, 13, 8, EOS], "prompt_len": 3},
               {"input_ids": [6, 10, 12, 7, 14, 15, 16, 17, 18, EOS], "prompt_len": 4}]
    return collate_train(samples, pad_token_id=EOS, train_on_prompt=False)


def _logits_gradients(model, batch, eos):
    """(targets, d loss / d logits) at the positions the loss reads, from a hook on the LM head."""
    import torch

    seen = {}

    def keep(module, args, output):
        output.retain_grad()
        seen["logits"] = output

    model.zero_grad(set_to_none=True)
    handle = model.lm_head.register_forward_hook(keep)
    try:
        positions = L.label_positions(batch["labels"])
        loss = L.causal_lm_loss(model, batch, {}, None, positions, eos)
        loss.backward()
    finally:
        handle.remove()
    targets = batch["labels"][:, 1:][:, positions]
    assert seen["logits"].shape[:2] == targets.shape
    return targets, seen["logits"].grad.detach().clone(), torch.isfinite(loss).item()


def test_the_default_weight_runs_the_unweighted_code():
    # 1.0 from the defaults and 1 from a JSON file: no weighting object, so causal_lm_loss takes
    # the unchanged unweighted path (a multiplication by ones could change the last bit).
    assert build_train_config([]).eos_loss_weight == 1.0
    from_json = build_train_config([("x", {"eos_loss_weight": 1})]).eos_loss_weight
    assert isinstance(from_json, float) and L.eos_weighting(from_json, EOS) is None
    assert L.eos_weighting(0.5, EOS) == L.EosWeight(EOS, 0.5)
    with pytest.raises(ValueError, match="eos_loss_weight 0.5 needs the tokenizer's eos_token_id"):
        L.eos_weighting(0.5, None)  # never trained unweighted for want of the token id


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0, 3.0])
def test_the_weighted_loss_is_the_hand_computed_weighted_mean(weight):
    import torch

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    targets = torch.tensor([[1, EOS, IGNORE_INDEX, IGNORE_INDEX], [3, 4, 0, EOS]])
    got = L.eos_weighted_cross_entropy(logits, targets, L.EosWeight(EOS, weight))
    # by hand: -log p(target) per labelled position, weighted mean
    log_p = torch.log_softmax(logits, dim=-1)
    terms = [(-log_p[b, t, targets[b, t]].item(), weight if targets[b, t] == EOS else 1.0)
             for b in range(2) for t in range(4) if targets[b, t] != IGNORE_INDEX]
    expected = sum(ce * w for ce, w in terms) / sum(w for _, w in terms)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_a_batch_whose_only_labels_are_eos_at_weight_0_has_loss_0_not_nan():
    import torch

    logits = torch.randn(1, 2, 5, requires_grad=True)
    loss = L.eos_weighted_cross_entropy(logits, torch.tensor([[EOS, IGNORE_INDEX]]), L.EosWeight(EOS, 0.0))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0])
def test_the_gradient_of_eos_positions_scales_with_the_weight_and_the_others_do_not(tiny_llama, weight):
    """d loss / d logit at position i is w_i / sum_j w_j times the plain per-token gradient: against
    the default (w = 1 everywhere, sum = N labelled positions), a non-EOS position's gradient is
    multiplied by N / W and an EOS position's by weight * N / W. Unlabelled positions, padding with
    the EOS id included, get none."""
    import torch

    model = tiny_llama(vocab_size=VOCAB, eos_token_id=EOS, pad_token_id=EOS)
    batch = _batch()
    targets, plain, _ = _logits_gradients(model, batch, None)
    targets_w, weighted, finite = _logits_gradients(model, batch, L.eos_weighting(weight, EOS))
    assert finite and torch.equal(targets, targets_w)

    labelled = targets != IGNORE_INDEX
    is_eos = targets == EOS
    assert is_eos.sum() == 2 and labelled.sum() == 4 + 6  # one EOS per sample; padding not labelled
    n, total = labelled.sum().item(), (labelled & ~is_eos).sum().item() + weight * is_eos.sum().item()
    scale = torch.where(is_eos, weight * n / total, n / total) * labelled
    torch.testing.assert_close(weighted, plain * scale[..., None], rtol=1e-5, atol=1e-9)
    # and directly: every EOS position's gradient is `weight` times what a non-EOS one's scale gives
    per_position = weighted.norm(dim=-1) / plain.norm(dim=-1).clamp_min(1e-30)
    assert torch.allclose(per_position[is_eos], torch.full_like(per_position[is_eos], weight * n / total), rtol=1e-5)
    assert torch.allclose(per_position[labelled & ~is_eos],
                          torch.full_like(per_position[labelled & ~is_eos], n / total), rtol=1e-5)
    assert torch.count_nonzero(weighted[~labelled]) == 0


def test_a_model_without_logits_to_keep_is_weighted_on_every_position(tiny_llama):
    import torch
    from transformers import LlamaForCausalLM

    class NoLogitsToKeep(LlamaForCausalLM):
        def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)

    model = tiny_llama(vocab_size=VOCAB, eos_token_id=EOS, pad_token_id=EOS)
    other = NoLogitsToKeep(model.config)
    other.load_state_dict(model.state_dict())
    assert L.keeps_label_positions_only(model, None) and not L.keeps_label_positions_only(other, None)
    batch, eos = _batch(), L.EosWeight(EOS, 0.25)
    with torch.no_grad():
        torch.testing.assert_close(L.causal_lm_loss(other, batch, {}, None, eos=eos),
                                   L.causal_lm_loss(model, batch, {}, None, eos=eos), rtol=1e-5, atol=1e-6)
        unweighted = L.causal_lm_loss(model, batch, {}, None)
        assert not torch.isclose(L.causal_lm_loss(other, batch, {}, None, eos=eos), unweighted)


def _peft_config(peft_type: str, **options):
    from peft import PeftConfig

    return PeftConfig.from_peft_type(peft_type=peft_type, task_type="CAUSAL_LM", **options)


@pytest.mark.parametrize("peft_type,options", [
    ("ADALORA", {"total_step": 10}), ("SHADOW", {}), ("PROMPT_TUNING", {"num_virtual_tokens": 4}),
    ("PREFIX_TUNING", {"num_virtual_tokens": 4})])
def test_a_method_whose_loss_is_the_models_own_refuses_a_weight_and_never_ignores_it(peft_type, options):
    config = _peft_config(peft_type, **options)
    assert methods.loss_computed_by_model(config)
    assert methods.loss_weighting_problems(config, 1.0) == []
    (problem,) = methods.loss_weighting_problems(config, 0.5)
    assert problem.startswith(f"eos_loss_weight: 0.5 cannot be applied to {peft_type}: its training loss is the model's own")
    with pytest.raises(ValueError, match=f"cannot be applied to {peft_type}"):  # should one get past the config
        L.causal_lm_loss(None, _batch(), {}, config, eos=L.EosWeight(EOS, 0.5))


def test_lora_and_full_finetuning_take_a_weight():
    assert methods.loss_weighting_problems(_peft_config("LORA", r=4), 0.5) == []
    assert methods.loss_weighting_problems(None, 0.0) == []


def test_a_prompt_tuning_experiment_with_a_weight_is_exit_2_naming_method_and_field(tiny_suite, capsys):
    exp_dir = tiny_suite / "experiments" / "prompt_tuning" / "tiny"
    exp_dir.mkdir(parents=True)
    (exp_dir / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4}))
    before = sorted(tiny_suite.rglob("*"))
    code = main(["run", "--no-progress", str(exp_dir), "--set", "eos_loss_weight=0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "eos_loss_weight: 0.5 cannot be applied to PROMPT_TUNING" in err
    assert sorted(tiny_suite.rglob("*")) == before


def test_the_weight_is_in_the_run_key(tiny_suite):
    exp_dir = tiny_suite / "experiments" / "lora" / "tiny-r4"
    keys = {}
    for weight in (None, 1.0, 0.5):
        exp = load_experiment(exp_dir, {} if weight is None else {"eos_loss_weight": weight})
        keys[weight], inputs = runkey.compute(exp, "cpu")
        assert inputs["train_config"]["eos_loss_weight"] == (1.0 if weight is None else weight)
    assert keys[None] == keys[1.0] != keys[0.5]


def test_run_with_a_weight_trains_the_weighted_loss_and_records_the_weight(tiny_suite, monkeypatch):
    calls = []
    weighted = L.eos_weighted_cross_entropy

    def spy(logits, targets, eos):
        calls.append(eos)
        return weighted(logits, targets, eos)

    monkeypatch.setattr(L, "eos_weighted_cross_entropy", spy)
    exp_dir = tiny_suite / "experiments" / "lora" / "tiny-r4"
    assert main(["run", "--no-progress", "--clean", str(exp_dir), "--set", "eos_loss_weight=0.5"]) == 0
    (path,) = (tiny_suite / "temporary_results").glob("*.json")
    info = json.loads(path.read_text())["run_info"]
    assert info["train_config"]["eos_loss_weight"] == 0.5
    assert info["run_key_inputs"]["train_config"]["eos_loss_weight"] == 0.5
    from transformers import AutoTokenizer

    eos_id = AutoTokenizer.from_pretrained(info["train_config"]["model_id"]).eos_token_id
    assert calls and all(c == L.EosWeight(eos_id, 0.5) for c in calls) and len(calls) == 4  # one per step
    assert math.isfinite(json.loads(path.read_text())["train_info"]["metrics"][-1][R.M_TRAIN_LOSS])
