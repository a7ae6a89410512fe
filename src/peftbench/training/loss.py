"""The training loss: mean next-token cross-entropy over the labelled (answer) tokens, with the
EOS positions weighted by `eos_loss_weight`.

`model(**batch).loss` computes the language-model head and a softmax over the whole vocabulary
at every position of the batch, then ignores the prompt and padding positions. With
`train_on_prompt: false` those are about half of a batch (46% of the demo's positions: prompts of
30-50 tokens before answers of similar length), and the head is a large share of a small model's
work (49,152 x 576 of SmolLM2-135M's weights; 128,256 x 3,072 of Llama-3.2-3B's, whose logits for
a batch of 4 x 768 tokens are 1.6 GB in float32). `causal_lm_loss` asks the model for the logits
of only the positions that some row of the batch has a label for (transformers' `logits_to_keep`
given as position indices) and computes the same cross-entropy there: the same loss and
gradients, up to float summation order, for less work and memory.

Where that could change what is trained, the model computes its loss from `labels` as before
(training.methods.loss_computed_by_model says why for a method):
- prompt learning: virtual tokens or a KV prefix shift the positions PEFT's forward returns, and
  CPT computes its own weighted loss;
- methods whose forward adds to the loss it computes from labels (AdaLoRA's orthogonal
  regulariser, Shadow's auxiliary loss): without labels they would silently drop it;
- a model whose forward takes no `logits_to_keep`.
tests/experiment/test_experiments.py checks, for every shipped experiment, that this loss equals
`model(**batch).loss`.

`eos_loss_weight` (the reference study's open task: "a weight argument to the cross-entropy
calculation to downweight the EOS token"): the loss becomes the weighted mean
sum_i w_i ce_i / sum_i w_i over the labelled positions i, w_i = eos_loss_weight where the label
is the tokenizer's EOS id and 1 elsewhere, so that its scale stays that of the plain mean. Labels
are masked by each sample's length (training.data.collate_train), never by token id, so an EOS
label at a labelled position is the EOS that ends a sample even where padding reuses the EOS id.
Any other labelled EOS id counts too: a response, or with `train_on_prompt: true` a prompt, whose
text holds the EOS token's string (the tokenizer maps it to the same id). At 1.0 the unweighted code runs, unchanged: no multiplication by ones, whose
float sums could differ in the last bit. A method whose loss is the model's own cannot be
weighted: `experiment.config.load_experiment` refuses a weight other than 1.0 for it
(training.methods.loss_weighting_problems), and `causal_lm_loss` raises should one get here. A
model without `logits_to_keep` is weighted on the logits of every position.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

from peftbench.training import methods
from peftbench.training.data import IGNORE_INDEX


@dataclass(frozen=True)
class EosWeight:
    """A run's eos_loss_weight and the token id it applies to (the tokenizer's EOS)."""

    token_id: int
    weight: float


def eos_weighting(eos_loss_weight: float, eos_token_id: int | None) -> EosWeight | None:
    """The EOS weighting of a run, or None for 1.0: the plain mean, computed by the unweighted code."""
    if eos_loss_weight == 1.0:
        return None
    if eos_token_id is None:  # modeling.load_tokenizer refuses a tokenizer without EOS: a caller's slip
        raise ValueError(f"eos_loss_weight {eos_loss_weight:g} needs the tokenizer's eos_token_id")
    return EosWeight(eos_token_id, float(eos_loss_weight))


def keeps_label_positions_only(model: Any, peft_config: Any) -> bool:
    """Whether `causal_lm_loss` computes logits only where there are labels for `model`."""
    if methods.loss_computed_by_model(peft_config) is not None:
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes_logits_to_keep(type(base))


@functools.lru_cache(maxsize=None)
def _forward_takes_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def label_positions(labels: Any) -> Any:
    """The positions t whose next token (t + 1) some row has a label for: the logits the loss
    needs. Give it the CPU batch's labels: on an accelerator, `nonzero` waits for the device."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)


def causal_lm_loss(model: Any, batch: dict[str, Any], extra: dict[str, Any], peft_config: Any,
                   positions: Any = None, eos: EosWeight | None = None) -> Any:
    """The loss of one batch (input_ids, attention_mask, labels with IGNORE_INDEX on prompt and
    padding; on the model's device) with the method's extra forward kwargs: the value and
    gradients of `model(**batch, **extra).loss`, or with `eos` (from `eos_weighting`) that mean
    weighted by it. `positions`: `label_positions` of the batch's labels, computed on the CPU and
    moved to the device (computed here when not given)."""
    refused = methods.loss_weighting_problems(peft_config, eos.weight) if eos is not None else []
    if refused:
        raise ValueError(refused[0])
    import torch.nn.functional as F

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # position t predicts token t + 1: the targets are the labels shifted left by one
    targets = batch["labels"][:, 1:]
    if keeps_label_positions_only(model, peft_config):
        if positions is None:
            positions = label_positions(batch["labels"])
        # use_cache=False: training reads no cache, and building one costs a copy per layer
        logits = model(**inputs, **extra, logits_to_keep=positions, use_cache=False).logits
        targets = targets[:, positions]
    elif eos is None:
        return model(**batch, **extra).loss
    else:  # a model whose forward takes no logits_to_keep: every position (the last predicts nothing)
        logits = model(**inputs, **extra).logits[:, :-1]
    if eos is not None:
        return eos_weighted_cross_entropy(logits, targets, eos)
    # float32 as transformers' loss does (logits may be bfloat16 under autocast); the mean over
    # the labelled tokens, as CrossEntropyLoss(ignore_index=-100) in the model's own loss
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


def eos_weighted_cross_entropy(logits: Any, targets: Any, eos: EosWeight) -> Any:
    """sum_i w_i ce_i / sum_i w_i over the labelled targets i (not IGNORE_INDEX), w_i = eos.weight
    where the target is eos.token_id and 1 elsewhere. `logits`: (batch, positions, vocab), any
    float dtype (the sums are float32, as in the unweighted loss); `targets`: (batch, positions)."""
    import torch
    import torch.nn.functional as F

    flat = targets.flatten()
    ce = F.cross_entropy(logits.float().flatten(0, 1), flat, ignore_index=IGNORE_INDEX, reduction="none")  # 0 where ignored
    weights = (flat != IGNORE_INDEX).to(ce.dtype).masked_fill(flat == eos.token_id, eos.weight)
    total = weights.sum()
    # A batch whose only labels are EOS at weight 0 has nothing to learn: its loss is 0, not 0 / 0.
    return (weights * ce).sum() / torch.where(total > 0, total, 1.0)
