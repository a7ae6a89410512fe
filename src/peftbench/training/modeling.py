"""Base model, tokenizer and PEFT wrapping; dtype resolution (the device: record/hardware.py).

Hardware needs are checked here, where they are used, with a message that says what to change;
nothing touches a device at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from peftbench.demo import smollm
from peftbench.errors import UserError
from peftbench.experiment.config import TrainConfig
from peftbench.training import methods

_FLOAT_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def torch_dtype(name: str):
    import torch

    return getattr(torch, _FLOAT_DTYPES.get(name, "bfloat16"))


def quantization_config(cfg: TrainConfig, device: str):
    """bitsandbytes int8/int4 on CUDA only; None for float dtypes."""
    if cfg.dtype not in ("int8", "int4"):
        return None
    if not device.startswith("cuda"):
        raise UserError(f"dtype {cfg.dtype} quantizes with bitsandbytes, which needs a CUDA device (got {device}); "
                        "use dtype bfloat16 or float32 here")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError(f"dtype {cfg.dtype} needs bitsandbytes: pip install 'peftbench[quant]'") from None
    from transformers import BitsAndBytesConfig
    import torch

    if cfg.dtype == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4")


def model_source(model_id: str) -> str:
    """Where transformers loads the model from: a local folder, a hub id, or the converted
    folder of a model shipped in a PyPI package (the CPU demo's SmolLM2)."""
    if smollm.is_packaged_model(model_id):
        return str(smollm.ensure_model_dir(model_id))
    expanded = os.path.expanduser(model_id)
    if os.path.isdir(expanded):
        return expanded
    if model_id.startswith((".", "/", "~")):
        raise UserError(f"model_id {model_id!r}: local folder does not exist")
    return model_id


def load_tokenizer(cfg: TrainConfig, source: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, revision=cfg.model_revision,
                                              trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding positions are masked out of the loss by length, so reusing EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise UserError(f"tokenizer of {cfg.model_id!r} has no EOS token; training could never learn to stop")
    tokenizer.padding_side = "right"  # training; generation switches to left
    return tokenizer


@dataclass
class LoadedModel:
    model: Any  # PeftModel, or the base model for full fine-tuning
    tokenizer: Any
    device: str
    source: str


def load_model(cfg: TrainConfig, peft_config, device: str) -> LoadedModel:
    """Load the base model on `device` and wrap it with PEFT (or unfreeze it all for full FT)."""
    from transformers import AutoModelForCausalLM

    source = model_source(cfg.model_id)
    tokenizer = load_tokenizer(cfg, source)
    quant = quantization_config(cfg, device)
    kwargs: dict[str, Any] = {"revision": cfg.model_revision, "trust_remote_code": cfg.trust_remote_code,
                              "attn_implementation": cfg.attn_implementation}
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": device})
    else:
        kwargs["dtype"] = torch_dtype(cfg.dtype)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if quant is None:
        model = model.to(device)
    if cfg.use_gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if peft_config is not None:
        from peft import get_peft_model

        if quant is not None:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.use_gc)
        peft_config = methods.prepare_peft_config(peft_config, cfg.max_steps, tokenizer=tokenizer)
        model = get_peft_model(model, peft_config, autocast_adapter_dtype=cfg.autocast_adapter_dtype)
    else:
        for param in model.parameters():
            param.requires_grad_(True)
    if cfg.compile:
        model = _compile(model)
    return LoadedModel(model, tokenizer, device, source)


def _compile(model):
    import torch

    # Compiling the forward keeps generate() and save_pretrained() on the original module.
    model.forward = torch.compile(model.forward, dynamic=True)
    return model


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters. For a PEFT model, total includes the adapter."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def unwrap_base(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
