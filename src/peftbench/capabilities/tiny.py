"""A tiny Llama and the configs of the catalog fitted to it.

The model has Llama-3.2-3B's shape in miniature (grouped-query attention: k/v narrower than q,
an MLP twice as wide, tied embeddings), 64 wide and 2 layers deep, so that every method builds
in milliseconds on a CPU. `shrink_peft_config` changes only what cannot fit it (ranks, block and
group sizes, virtual-token counts, layer counts); the method and its options stay. The same
shrinking is what tests/experiment/test_experiments.py trains every shipped config with.
"""

from __future__ import annotations

import copy
from typing import Any

from peftbench.training import methods

TINY_LLAMA = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, tie_word_embeddings=True,
)
# optimizer steps a schedule (AdaLoRA's pruning, AdaMSS's warm-up) is fitted to
SCHEDULE_STEPS = 2


def tiny_llama(seed: int = 0):
    """A freshly initialised tiny Llama in eval mode (random weights from `seed`)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    model.generation_config.pad_token_id = 0
    return model.eval()


class WordTokenizer:
    """A stand-in tokenizer for methods that tokenise text (CPT's context): one id per word."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [2 + sum(word.encode()) % (TINY_LLAMA["vocab_size"] - 2) for word in text.split()]


def prompt_batch(seed: int = 2) -> dict:
    """Two prompts of 6 random tokens: the input every logit comparison uses."""
    import torch

    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, TINY_LLAMA["vocab_size"], (2, 6), generator=g)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def _cap(limit: int):
    return lambda value: min(value, limit) if isinstance(value, int) and not isinstance(value, bool) else value


def _none(value):
    return None  # PEFT fills it from the model it wraps


# field name -> new value; applied to whichever config has the field. Each limit divides the
# tiny dimensions (64, 32 for k/v, 128 for the MLP).
_FIELD_SHRINKS = {
    "r": _cap(8),  # ranks, OFT's block count, Lily's rank, VeRA's shared rank ...
    "init_r": _cap(8),
    "target_r": _cap(4),
    "num_virtual_tokens": _cap(4),
    "token_dim": _none,
    "num_attention_heads": _none,
    "num_layers": _none,
    "encoder_hidden_size": _cap(32),
    "adapter_len": _cap(4),
    "adapter_layers": _cap(TINY_LLAMA["num_hidden_layers"]),
    "block_size": _cap(16),  # C3A: must divide in and out features
    "group_size": _cap(8),  # RoAd
    "vector_length": _cap(16),  # VB-LoRA: must divide in and out features
    "num_vectors": _cap(32),
    "n_frequency": _cap(64),  # FourierFT / WaveFT: at most in x out
    "num_subspaces": _cap(4),  # AdaMSS
    "stride_A": _cap(TINY_LLAMA["num_hidden_layers"]),  # Lily shares A across this many layers
    "shadow_hidden_size": _cap(32),
    "shadow_num_attention_heads": _cap(2),
    "shadow_intermediate_size": _cap(64),
}


def _min_dim(module_name: str) -> int:
    """The smaller side of a projection of TINY_LLAMA: k/v map 64 -> 32 (2 KV heads of 16)."""
    return 32 if module_name in ("k_proj", "v_proj") else TINY_LLAMA["hidden_size"]


def shrink_peft_config(peft_config: Any) -> Any:
    """A copy of a Llama-3.2-3B config that fits TINY_LLAMA, with the method and options kept.
    Raises NotImplementedError for an option it cannot fit (trainable_token_indices)."""
    if peft_config is None:
        return None
    cfg = copy.deepcopy(peft_config)
    for name, shrink in _FIELD_SHRINKS.items():
        if hasattr(cfg, name) and getattr(cfg, name) is not None:
            setattr(cfg, name, shrink(getattr(cfg, name)))
    methods.fit_to_small_model(cfg, SCHEDULE_STEPS, TINY_LLAMA["vocab_size"], _min_dim)
    if getattr(cfg, "trainable_token_indices", None):
        raise NotImplementedError("shrink trainable_token_indices for the tiny vocabulary")
    return methods.prepare_peft_config(cfg, SCHEDULE_STEPS, tokenizer=WordTokenizer())
