"""What individual PEFT methods need from the training loop, in one place.

Most PEFT methods are a config handed to `peft.get_peft_model` and nothing else. A few need the
loop to do something for them; the runner calls these hooks for every method and they do nothing
where nothing is needed:

    check_supported(peft_config)                  before anything is loaded: unsupported -> UserError
    prepare_peft_config(peft_config, max_steps, tokenizer=)
                                                  a filled-in copy (AdaLoRA's total_step, CPT's context)
    forward_kwargs(peft_config, batch)            extra kwargs for model(**batch) (task ids, CPT masks)
    extra_loss(model, peft_config)                added to the loss before backward (KaSA, MonteCLoRA)
    after_optimizer_step(model, peft_config, step)
                                                  AdaLoRA / AdaMSS rank allocation; call it after
                                                  optimizer.step() and BEFORE optimizer.zero_grad(),
                                                  because it reads the gradients
    generate_kwargs(peft_config, batch)           extra kwargs for model.generate (task ids); `batch`
                                                  is the generation batch or its size

A training step therefore reads:

    out = model(**batch, **forward_kwargs(cfg, batch))
    loss = out.loss + extra_loss(model, cfg)
    loss.backward(); optimizer.step()
    after_optimizer_step(model, cfg, step)        # step counts from 0, as in peftbench.training.loop
    optimizer.zero_grad()

This is the only module that branches on a PEFT method's type (the methods this benchmark
refuses are a table in experiment/catalog.py, which the catalog lists too). Code elsewhere asks it:

    traits(peft_config)                           a MethodTraits record: how evaluation must generate
                                                  (virtual tokens, KV prefix), whether the config is
                                                  built from the tokenizer, whether the loss must
                                                  come from the model's forward with labels
    check_optimizer(optimizer_type, peft_config)  the optimizers that belong to a method (LoRA+,
    build_peft_optimizer(...)                     LoRA-FA, Riemannian: experiment.config.PEFT_OPTIMIZERS)
    initialize_prefix(model, tokenizer, peft_config, text)
                                                  init_kv_cache_prefix for KV-prefix methods
    loss_computed_by_model(peft_config)           why the training loss must be the model's own
                                                  (training/loss.py), or None
    loss_weighting_problems(peft_config, w)       eos_loss_weight on such a method: refused, never ignored
    fit_to_small_model(peft_config, steps, vocab_size, min_dim)
                                                  a method's own fields fitted to a tiny model
                                                  (capabilities/tiny.py, the tests)

`peft_config` is a `peft.PeftConfig`, or None for full fine-tuning. Nothing here imports torch or
peft at module import time.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

from peftbench.errors import UserError
from peftbench.experiment.catalog import UNSUPPORTED_METHODS
from peftbench.experiment.config import PEFT_OPTIMIZERS

# LoRA initialisations that need an extra pass over data or a quantised model that this runner
# does not perform; the message says what is missing.
_UNSUPPORTED_LORA_INITS: dict[str, str] = {
    "eva": "EVA initialises from activations of the training data (peft.initialize_lora_eva_weights), a step this runner does not run",
    "corda": "CorDA initialises from covariance of the training data (peft.tuners.lora.corda.preprocess_corda), a step this runner does not run",
    "lora_ga": "LoRA-GA initialises from gradients estimated on the training data, a step this runner does not run",
    "loftq": "LoftQ quantises the base model while initialising; this runner loads an unquantised base model",
}

# Multitask prompt tuning inits that start from a source-task checkpoint.
_SOURCE_TASK_INITS = {"AVERAGE_SOURCE_TASKS", "EXACT_SOURCE_TASK", "ONLY_SOURCE_SHARED"}

# CPT (context-aware prompt tuning) turns a labelled in-context demonstration into its prompt: the
# demonstration's embeddings are the starting point and each token's type says how far it may move
# (types 1 input template, 2 input, 3 output template, 4 output; see peft.tuners.cpt). An experiment
# that leaves cpt_token_ids unset gets this GSM8K-style demonstration, written in the suite's query
# template and tokenised with the run's tokenizer by prepare_peft_config.
CPT_DEMONSTRATION: tuple[tuple[int, str], ...] = (
    (1, "Question: "),
    (2, "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?"),
    (3, " Think step by step.\nAnswer:"),
    (4, " There are 3 * 4 = 12 apples. After eating 2, 12 - 2 = 10 apples are left. The answer is: 10"),
)
# Types that forward_kwargs gives the training sequence, after the demonstration: the prompt is
# input (2), the answer is output (4); padding is 0 and ignored.
_CPT_INPUT, _CPT_OUTPUT = 2, 4


# Methods whose PeftModel forward adds a term to the loss it computes from `labels`, so that the
# training loss must be that one (training/loss.py); the reason is what a refusal says.
_LOSS_FROM_LABELS: dict[str, str] = {
    "ADALORA": "AdaLoRA's forward adds its orthogonal regulariser to the loss it computes from labels",
    "SHADOW": "Shadow's forward adds its auxiliary loss to the loss it computes from labels",
}


def peft_type_of(peft_config: Any) -> str | None:
    """The PEFT method's name as in peft.PeftType ("LORA", ...), or None for full fine-tuning."""
    if peft_config is None:
        return None
    peft_type = peft_config.peft_type
    return getattr(peft_type, "value", peft_type)


def is_prompt_learning(peft_config: Any) -> bool:
    """True for methods that prepend virtual tokens or a KV prefix (prompt, prefix, P-tuning, CPT, ...)."""
    return bool(peft_config is not None and getattr(peft_config, "is_prompt_learning", False))


@dataclass(frozen=True)
class MethodTraits:
    """What a PEFT method asks of the code around the training step, so that evaluation, the
    runner and `list` query a capability instead of naming methods."""

    # Learned embeddings prepended to the prompt (prompt tuning, P-tuning, CPT): evaluation
    # generates from embeddings with the virtual tokens placed after the left padding.
    virtual_tokens: bool = False
    # A prefix written into the KV cache (prefix tuning, cartridges): generation batches hold
    # prompts of equal token length, and init_kv_cache_prefix applies.
    kv_prefix: bool = False
    # The config is completed from the tokenizer (CPT's demonstration is counted in tokens).
    config_needs_tokenizer: bool = False


_PLAIN = MethodTraits()
_TRAITS: dict[str, MethodTraits] = {
    "PROMPT_TUNING": MethodTraits(virtual_tokens=True),
    "P_TUNING": MethodTraits(virtual_tokens=True),
    "MULTITASK_PROMPT_TUNING": MethodTraits(virtual_tokens=True),
    "CPT": MethodTraits(virtual_tokens=True, config_needs_tokenizer=True),
    "PREFIX_TUNING": MethodTraits(kv_prefix=True),
    "CARTRIDGE": MethodTraits(kv_prefix=True),
}


def traits(peft_config: Any) -> MethodTraits:
    """The MethodTraits of `peft_config` (all False for full fine-tuning and most methods)."""
    return _TRAITS.get(peft_type_of(peft_config) or "", _PLAIN)


def check_optimizer(optimizer_type: str, peft_config: Any) -> None:
    """The PEFT optimizers (LoRA+, LoRA-FA, Riemannian) reshape LoRA's A/B updates: refuse them
    for any other method, before anything is loaded."""
    if optimizer_type in PEFT_OPTIMIZERS and peft_type_of(peft_config) != "LORA":
        raise UserError(f"optimizer_type {optimizer_type!r} works with LoRA adapters only")


def build_peft_optimizer(optimizer_type: str, model: Any, peft_config: Any, kwargs: dict[str, Any]) -> Any:
    """The optimizer that belongs to a method, from peft.optimizers; None when `optimizer_type`
    names a torch.optim class. `kwargs` are the experiment's optimizer_kwargs (not modified)."""
    if optimizer_type not in PEFT_OPTIMIZERS:
        return None
    check_optimizer(optimizer_type, peft_config)
    import torch
    from peft import optimizers

    kwargs = dict(kwargs)
    if optimizer_type == "lora+":
        ratio = kwargs.pop("loraplus_lr_ratio", 16)
        return optimizers.create_loraplus_optimizer(model, torch.optim.AdamW, loraplus_lr_ratio=ratio, **kwargs)
    if optimizer_type == "lora-fa":
        kwargs.setdefault("r", peft_config.r)
        kwargs.setdefault("lora_alpha", peft_config.lora_alpha)
        return optimizers.create_lorafa_optimizer(model, **kwargs)
    return optimizers.create_riemannian_optimizer(model, torch.optim.AdamW, **kwargs)


def needs_step_hooks(peft_config: Any, batch: dict[str, Any]) -> bool:
    """Whether a training step of this method needs more than `model(**batch).loss` and
    `optimizer.step()`: forward kwargs, an extra loss or rank allocation (the hooks below), which
    a generic trainer such as HF Trainer does not run."""
    peft_type = peft_type_of(peft_config)
    return bool(forward_kwargs(peft_config, batch)) or peft_type == "ADALORA" or (
        peft_type == "ADAMSS" and bool(getattr(peft_config, "use_asa", False))) or (
        peft_type == "LORA" and (getattr(peft_config, "kasa_config", None) is not None
                                 or getattr(peft_config, "monteclora_config", None) is not None))


def initialize_prefix(model: Any, tokenizer: Any, peft_config: Any, text: str | None) -> None:
    """init_kv_cache_prefix: start a KV-prefix method's prefix from the model's own keys and
    values for `text`. Other methods (and an unset text) are left alone."""
    if not text or not traits(peft_config).kv_prefix:
        return
    from peft.tuners.cartridge.utils import initialize_kv_prefix_from_text

    initialize_kv_prefix_from_text(model, tokenizer, text=text, use_chat_template=False)


def loss_computed_by_model(peft_config: Any) -> str | None:
    """Why this method's training loss must be `model(**batch).loss`, as PEFT's forward computes
    it from `labels`, or None when training/loss.py may compute the loss from the logits itself."""
    if is_prompt_learning(peft_config):
        why = "virtual tokens or a KV prefix shift the positions of the logits PEFT's forward returns"
        return why + (", and CPT weighs the tokens of its loss itself" if peft_type_of(peft_config) == "CPT" else "")
    return _LOSS_FROM_LABELS.get(peft_type_of(peft_config) or "")


def loss_weighting_problems(peft_config: Any, eos_loss_weight: float) -> list[str]:
    """An eos_loss_weight other than 1.0 for a method whose loss the model computes: that loss
    weighs every labelled token the same, so the weight would be ignored; it is refused instead."""
    why = loss_computed_by_model(peft_config)
    if eos_loss_weight == 1.0 or why is None:
        return []
    return [f"eos_loss_weight: {eos_loss_weight:g} cannot be applied to {peft_type_of(peft_config)}: its training "
            f"loss is the model's own ({why}), which weighs every labelled token the same; "
            "leave eos_loss_weight at 1.0 for this method"]


def check_supported(peft_config: Any) -> None:
    """Raise UserError when this benchmark cannot train `peft_config`, saying why and what to do."""
    peft_type = peft_type_of(peft_config)
    if peft_type is None:
        return
    if peft_type in UNSUPPORTED_METHODS:
        raise UserError(f"{peft_type} is not supported by this benchmark: {UNSUPPORTED_METHODS[peft_type]}")
    if peft_type == "ADAMSS" and importlib.util.find_spec("sklearn") is None:
        raise UserError(
            "AdaMSS clusters with scikit-learn, which is not installed: "
            "pip install scikit-learn  (or pip install 'peftbench[adamss]')"
        )
    if peft_type == "LORA":
        init = peft_config.init_lora_weights
        if isinstance(init, str) and init in _UNSUPPORTED_LORA_INITS:
            raise UserError(f"LoRA init_lora_weights={init!r} is not supported: {_UNSUPPORTED_LORA_INITS[init]}")
        if getattr(peft_config, "alora_invocation_tokens", None):
            raise UserError(
                "aLoRA (alora_invocation_tokens) only adapts tokens after an invocation sequence that the "
                "MetaMathQA prompts do not contain"
            )
        if getattr(peft_config, "arrow_config", None) is not None:
            raise UserError("Arrow routes between several trained LoRA adapters; it trains none itself")
    if peft_type == "MULTITASK_PROMPT_TUNING":
        init = str(getattr(peft_config.prompt_tuning_init, "value", peft_config.prompt_tuning_init))
        if init in _SOURCE_TASK_INITS and not peft_config.prompt_tuning_init_state_dict_path:
            raise UserError(
                f"multitask prompt tuning with prompt_tuning_init={init!r} starts from a source-task "
                "checkpoint: set prompt_tuning_init_state_dict_path, or use RANDOM"
            )


def prepare_peft_config(peft_config: Any, max_steps: int, tokenizer: Any = None) -> Any:
    """A copy of `peft_config` with what depends on the run filled in; the caller's object is untouched.

    - AdaLoRA: total_step = max_steps (its rank budget schedule ends there); tinit + tfinal must
      leave room for the budget to shrink.
    - CPT: when the experiment leaves cpt_token_ids unset (PEFT's placeholder [0]), the context is
      CPT_DEMONSTRATION tokenised with `tokenizer` (anything with `encode(text, add_special_tokens=False)`).
    """
    if peft_config is None:
        return None
    config = copy.deepcopy(peft_config)
    peft_type = peft_type_of(config)
    if peft_type == "ADALORA":
        if config.tinit >= max_steps - config.tfinal:
            raise UserError(
                f"AdaLoRA: tinit ({config.tinit}) + tfinal ({config.tfinal}) must be below max_steps "
                f"({max_steps}) so that ranks are pruned at all; lower them in adapter_config.json"
            )
        config.total_step = max_steps
    elif peft_type == "CPT" and list(config.cpt_token_ids) == [0]:
        if tokenizer is None:
            raise UserError("CPT without cpt_token_ids needs the run's tokenizer to build its context")
        ids, types = cpt_context(tokenizer)
        config.cpt_token_ids = ids
        config.cpt_mask = [1] * len(ids)
        config.cpt_tokens_type_mask = types
        config.num_virtual_tokens = len(ids)
    return config


def fit_to_small_model(peft_config: Any, steps: int, vocab_size: int, min_dim: Callable[[str], int]) -> None:
    """Fit the method's own fields of `peft_config` (changed in place: give it a copy) to a small
    model trained for `steps` steps, with `vocab_size` tokens and `min_dim(module_name)` the smaller
    side of a target module's weight: schedules that end within the steps, token ids inside the
    vocabulary, ranks below a side. Sizes every method shares (r, num_virtual_tokens, ...) are the
    caller's (capabilities/tiny.py)."""
    cfg, peft_type = peft_config, peft_type_of(peft_config)
    if peft_type == "ADALORA":  # the pruning schedule must fit the steps
        cfg.tinit, cfg.tfinal = 0, 0
    elif peft_type == "ADAMSS":
        cfg.asa_target_subspaces = min(cfg.asa_target_subspaces, 8)
        cfg.init_warmup, cfg.final_warmup, cfg.mask_interval = 0, steps, 1
    elif peft_type == "MISS":
        cfg.mini_r = min(cfg.mini_r, cfg.r)
    elif peft_type == "OSF" and cfg.rank_pattern:  # keep all but the last 4 directions frozen
        cfg.rank_pattern = {name: min_dim(name) - 4 for name in cfg.rank_pattern}
    elif peft_type == "TRAINABLE_TOKENS":
        cfg.token_indices = sorted({i % vocab_size for i in cfg.token_indices})
    elif peft_type == "CPT" and list(cfg.cpt_token_ids) != [0]:
        cfg.cpt_token_ids = [i % vocab_size for i in cfg.cpt_token_ids]


def cpt_context(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids and CPT token types of CPT_DEMONSTRATION under `tokenizer`."""
    ids: list[int] = []
    types: list[int] = []
    for token_type, text in CPT_DEMONSTRATION:
        piece = list(tokenizer.encode(text, add_special_tokens=False))
        ids += piece
        types += [token_type] * len(piece)
    return ids, types


def forward_kwargs(peft_config: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """Extra keyword arguments for `model(**batch)` during training.

    `batch` holds input_ids, attention_mask and labels (-100 on prompt and padding)."""
    peft_type = peft_type_of(peft_config)
    if peft_type in ("POLY", "MULTITASK_PROMPT_TUNING"):
        return {"task_ids": _single_task_ids(batch)}
    if peft_type == "CPT":
        import torch

        labels = batch["labels"]
        types = torch.where(labels != -100, _CPT_OUTPUT, _CPT_INPUT)
        if batch.get("attention_mask") is not None:
            types = types * batch["attention_mask"].to(types.dtype)
        return {"input_type_mask": types}
    return {}


def generate_kwargs(peft_config: Any, batch: dict[str, Any] | int, device: Any = None) -> dict[str, Any]:
    """Extra keyword arguments for `model.generate(**batch)`. `batch` holds input_ids and
    attention_mask, or is just the number of prompts (then tensors go to `device`, default CPU)."""
    if peft_type_of(peft_config) in ("POLY", "MULTITASK_PROMPT_TUNING"):
        return {"task_ids": _single_task_ids(batch, device)}
    return {}


def _single_task_ids(batch: dict[str, Any] | int, device: Any = None):
    # MetaMathQA is one task: every example is task 0 (the configs set n_tasks / num_tasks = 1).
    import torch

    if isinstance(batch, int):
        return torch.zeros(batch, dtype=torch.long, device=device)
    input_ids = batch["input_ids"]
    return torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)


def extra_loss(model: Any, peft_config: Any) -> Any:
    """Regularisers that PEFT leaves to the training loop, to add to the task loss (0.0 when none).

    KaSA's singular-value and orthogonality penalties (paper Eq. 9-12) and MonteCLoRA's variational
    loss are exposed by LoraModel but not added by its forward. AdaLoRA's orthogonal regulariser and
    Shadow's auxiliary loss are added by PEFT itself and are not repeated here."""
    if peft_type_of(peft_config) != "LORA":
        return 0.0
    loss: Any = 0.0
    if getattr(peft_config, "kasa_config", None) is not None:
        loss = loss + model.base_model._get_kasa_loss()
    if getattr(peft_config, "monteclora_config", None) is not None:
        loss = loss + model.base_model._get_monteclora_loss()
    return loss


def after_optimizer_step(model: Any, peft_config: Any, step: int) -> None:
    """AdaLoRA's and AdaMSS's importance update and rank allocation. Call after optimizer.step()
    and before optimizer.zero_grad() (both read the gradients); `step` is the index of the step
    just taken, counting from 0."""
    peft_type = peft_type_of(peft_config)
    if peft_type == "ADALORA" or (peft_type == "ADAMSS" and peft_config.use_asa):
        model.base_model.update_and_allocate(step)


def dynamic_generation_supported(peft_config: Any) -> bool:
    """Whether evaluation may use the "dynamic" engine (training.generation), which calls the
    model's forward on a KV cache it refills row by row. Prompt learning is generated by its own
    path (virtual tokens placed after the padding, a KV prefix kept unpadded: evaluate.py), and
    Polytropon routes by task ids that only generate() passes; those run the static loop."""
    return not is_prompt_learning(peft_config) and peft_type_of(peft_config) != "POLY"
