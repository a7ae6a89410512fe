"""Ranges of the numeric training parameters: what cannot be meant is refused at load time.

A value outside these ranges would either crash the run hours in (a seed numpy refuses, a NaN
learning rate), or run for ever / exhaust memory (1e30 steps, a billion new tokens per answer).
Each maximum is far above any sensible setting, with the reason beside it; the one place that
clamps instead (a valid_size or test_size larger than the eval data) says so on stderr
(training/data.py). Called by `config.validate`, so every command that loads a config (run,
run-all, status, list) refuses the same values with the same message.
"""

from __future__ import annotations

import math
from typing import Any

# torch.manual_seed accepts 0..2**64-1, but numpy's np.random.seed only 0..2**32-1 and the
# runner seeds both; a negative seed fails in both.
SEED_MAX = 2**32 - 1

# field -> (largest accepted value, why nothing larger can be meant)
MAXIMA: dict[str, tuple[int, str]] = {
    # 200 x the reference study's 5000 steps; ~12 days at one step per second
    "max_steps": (1_000_000, "200 x the reference's 5000 steps"),
    "eval_steps": (1_000_000, "the largest max_steps"),
    "checkpoint_steps": (1_000_000, "the largest max_steps"),
    # Llama-3.2 has a 128k context; 1M tokens is beyond any model this benchmark trains
    "max_seq_length": (1_048_576, "no model trained here has a context of 1M tokens"),
    # the reference trains with 4 and generates with 50 per batch
    "batch_size": (65_536, "the reference trains with batches of 4"),
    "batch_size_eval": (65_536, "the reference generates in batches of 50"),
    # GSM8K has 7473 train and 1319 test rows; a larger size is clamped with a warning up to this
    "valid_size": (1_000_000, "GSM8K's train split has 7473 rows"),
    "tune_valid_size": (1_000_000, "GSM8K's train split has 7473 rows"),
    "test_size": (1_000_000, "GSM8K's test split has 1319 rows"),
    "forgetting_size": (1_000_000, "wikitext-2's test split has ~4400 texts"),
    # MetaMathQA's longest query + response is ~10k characters
    "char_limit": (100_000_000, "MetaMathQA's longest row has ~10k characters"),
}

# Generation budgets. Answers to GSM8K take ~300 tokens (the reference budget); a model that has
# not answered a grade-school problem in 32k tokens never will, and the KV cache of 1e9 new
# tokens does not fit any memory.
GENERATION_MAXIMA: dict[str, int] = {"max_new_tokens": 32_768, "max_length": 1_048_576 + 32_768}

# The weight of EOS positions in the training loss (training/loss.py). The weighted mean stays
# within the range of the per-token losses for any finite weight, but its float32 sums overflow
# near 3e38; at 1e6 one EOS position already outweighs a GSM8K answer (~300 tokens) 3000 times.
EOS_LOSS_WEIGHT_MAX = 1e6


def problems(cfg) -> list[str]:
    """Range problems of a typed TrainConfig (types are checked before this runs)."""
    p: list[str] = []
    if not 0 <= cfg.seed <= SEED_MAX:
        p.append(f"seed: must be in 0..{SEED_MAX} (2**32-1, what numpy's seeding accepts), got {cfg.seed}")
    for name, (maximum, reason) in MAXIMA.items():
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > maximum:
            p.append(f"{name}: {value} cannot be meant; at most {maximum:,} ({reason})")
    weight = cfg.eos_loss_weight
    if isinstance(weight, float) and math.isfinite(weight) and weight > EOS_LOSS_WEIGHT_MAX:
        p.append(f"eos_loss_weight: {weight:g} cannot be meant; at most {EOS_LOSS_WEIGHT_MAX:,.0f} "
                 "(one EOS position would outweigh a whole answer thousands of times)")
    for name, value in cfg.to_dict().items():
        p.extend(non_finite(name, value))
    return p


def non_finite(name: str, value: Any) -> list[str]:
    """NaN and infinity anywhere in a value (JSON's NaN/Infinity, or `--set x=NaN`): NaN passes
    every comparison-based range check, so it is refused by name."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{name}: must be a finite number, got {value}"]
    if isinstance(value, dict):
        return [q for k, v in value.items() for q in non_finite(f"{name}.{k}", v)]
    if isinstance(value, (list, tuple)):
        return [q for i, v in enumerate(value) for q in non_finite(f"{name}[{i}]", v)]
    return []
