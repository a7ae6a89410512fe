"""The training loss: mean next-token cross-entropy over the labelled (answer) tokens.

`model(**batch).loss` computes the language-model head and a softmax over the whole vocabulary
at every position of the batch, then ignores the prompt and padding positions. With
`train_on_prompt: false` those are about half of a batch (46% of the demo's positions: prompts of
30-50 tokens before answers of similar length), and the head is a large share of a small model's
work (49,152 x 576 of SmolLM2-135M's weights; 128,256 x 3,072 of Llama-3.2-3B's, whose logits for
a batch of 4 x 768 tokens are 1.6 GB in float32). `causal_lm_loss` asks the model for the logits
of only the positions that some row of the batch has a label for (transformers' `logits_to_keep`
given as position indices) and computes the same cross-entropy there: the same loss and
gradients, up to float summation order, for less work and memory.

Where that could change what is trained, the model computes its loss from `labels` as before:
- prompt learning: virtual tokens or a KV prefix shift the positions PEFT's forward returns, and
  CPT computes its own weighted loss;
- methods whose forward adds to the loss it computes from labels (AdaLoRA's orthogonal
  regulariser, Shadow's auxiliary loss): without labels they would silently drop it;
- a model whose forward takes no `logits_to_keep`.
tests/experiment/test_experiments.py checks, for every shipped experiment, that this loss equals
`model(**batch).loss`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from peftbench.training import methods
from peftbench.training.data import IGNORE_INDEX


def keeps_label_positions_only(model: Any, peft_config: Any) -> bool:
    """Whether `causal_lm_loss` computes logits only where there are labels for `model`."""
    if methods.is_prompt_learning(peft_config) or methods.traits(peft_config).adds_to_label_loss:
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
                   positions: Any = None) -> Any:
    """The loss of one batch (input_ids, attention_mask, labels with IGNORE_INDEX on prompt and
    padding; on the model's device) with the method's extra forward kwargs: the value and
    gradients of `model(**batch, **extra).loss`. `positions`: `label_positions` of the batch's
    labels, computed on the CPU and moved to the device (computed here when not given)."""
    if not keeps_label_positions_only(model, peft_config):
        return model(**batch, **extra).loss
    import torch.nn.functional as F

    if positions is None:
        positions = label_positions(batch["labels"])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # position t predicts token t + 1: the targets are the labels shifted left by one
    targets = batch["labels"][:, 1:]
    # use_cache=False: training reads no cache, and building one costs a copy per layer
    logits = model(**inputs, **extra, logits_to_keep=positions, use_cache=False).logits
    # float32 as transformers' loss does (logits may be bfloat16 under autocast); the mean over
    # the labelled tokens, as CrossEntropyLoss(ignore_index=-100) in the model's own loss
    return F.cross_entropy(logits.float().flatten(0, 1), targets[:, positions].flatten(), ignore_index=IGNORE_INDEX)
