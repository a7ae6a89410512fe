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

from peftbench.training import methods  # noqa: E402
from peftbench.experiment.config import load_experiment  # noqa: E402
from peftbench.experiment.suite import discover_experiments  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SUITE = Path(__file__).resolve().parents[2]
# The MetaMathQA suite and the CPU demo suite: a config that ships must train.
EXPERIMENT_DIRS = discover_experiments(SUITE / "experiments") + discover_experiments(SUITE / "demo" / "experiments")

# Llama-3.2-3B's shape in miniature: grouped-query attention (k/v narrower than q), an MLP
# twice as wide, tied embeddings.
TINY_LLAMA = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, tie_word_embeddings=True,
)
STEPS = 2
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


class WordTokenizer:
    """A stand-in tokenizer for methods that tokenise text (CPT's context): one id per word."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [2 + sum(word.encode()) % (TINY_LLAMA["vocab_size"] - 2) for word in text.split()]


def train_batch() -> dict:
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, TINY_LLAMA["vocab_size"], (2, 12), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0  # left padding, as in generation batches
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :6] = -100  # the prompt half
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def prompt_batch() -> dict:
    g = torch.Generator().manual_seed(2)
    input_ids = torch.randint(2, TINY_LLAMA["vocab_size"], (2, 6), generator=g)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


# ------------------------------------------------------------------------------------------
# shrinking a config of Llama-3.2-3B to the tiny Llama


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


def shrink_for_tiny_llama(peft_config):
    """A copy of a Llama-3.2-3B config that fits TINY_LLAMA, with the method and options kept."""
    if peft_config is None:
        return None
    cfg = copy.deepcopy(peft_config)
    for name, shrink in _FIELD_SHRINKS.items():
        if hasattr(cfg, name) and getattr(cfg, name) is not None:
            setattr(cfg, name, shrink(getattr(cfg, name)))
    peft_type = methods.peft_type_of(cfg)
    vocab = TINY_LLAMA["vocab_size"]
    if peft_type == "ADALORA":  # the pruning schedule must fit two steps
        cfg.tinit, cfg.tfinal = 0, 0
    elif peft_type == "ADAMSS":
        cfg.asa_target_subspaces = min(cfg.asa_target_subspaces, 8)
        cfg.init_warmup, cfg.final_warmup, cfg.mask_interval = 0, STEPS, 1
    elif peft_type == "MISS":
        cfg.mini_r = min(cfg.mini_r, cfg.r)
    elif peft_type == "OSF" and cfg.rank_pattern:  # keep all but the last 4 directions frozen
        cfg.rank_pattern = {name: _min_dim(name) - 4 for name in cfg.rank_pattern}
    elif peft_type == "TRAINABLE_TOKENS":
        cfg.token_indices = sorted({i % vocab for i in cfg.token_indices})
    elif peft_type == "CPT" and list(cfg.cpt_token_ids) != [0]:
        cfg.cpt_token_ids = [i % vocab for i in cfg.cpt_token_ids]
    if getattr(cfg, "trainable_token_indices", None):
        raise NotImplementedError("shrink trainable_token_indices for the tiny vocabulary")
    return cfg


def shrink_train_config(train_config, peft_config):
    cfg = copy.deepcopy(train_config)
    cfg.max_steps = STEPS  # the learning-rate schedule spans the steps taken
    kwargs = cfg.optimizer_kwargs
    if "r" in kwargs and peft_config is not None:  # LoRA-FA's scaling follows the adapter's rank
        kwargs["r"] = peft_config.r
    return cfg


# ------------------------------------------------------------------------------------------


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
    from peft import PeftModel, get_peft_model

    from peftbench.training.loop import Optimization, train_step

    exp = load_experiment(exp_dir)
    methods.check_supported(exp.peft_config)
    peft_config = shrink_for_tiny_llama(exp.peft_config)
    train_config = shrink_train_config(exp.train_config, peft_config)
    peft_config = methods.prepare_peft_config(peft_config, STEPS, tokenizer=WordTokenizer())

    torch.manual_seed(0)
    model = tiny_llama()
    if peft_config is None:
        model.requires_grad_(True)
    else:
        model = get_peft_model(model, peft_config)
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
