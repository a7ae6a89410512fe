"""Build an experiment's model and PEFT adapter on the meta device, before anything is written.

`peftbench run` (and so every `run-all` child) calls `check_builds` while it validates its
experiments: PEFT's own checks (target modules that match nothing, a rank it refuses, options
that contradict each other), a size PEFT leaves to torch (a negative number of virtual tokens),
a `model_id` folder that holds no model, and weights that need more memory than the run's device
has (parameters counted on the meta device x bytes of the dtype) then end in exit status 2 with
a message, instead of a "failed" result hours later. On the meta device no weight is read or
allocated (seconds even for a 3B model). `status` and `run-all --dry-run` skip this: they must
stay fast and import no torch.

What cannot be checked without weights is skipped, never refused: a hub model whose config is
not in the local cache (the run downloads it), and initialisations that compute on the weights
(PiSSA's SVD, clustering), which raise NotImplementedError on meta tensors.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from peftbench.errors import ConfigError, UserError
from peftbench.experiment.config import ADAPTER_CONFIG_FILE
from peftbench.record import hardware
from peftbench.training import memory, methods
from peftbench.training.modeling import model_source, torch_dtype

# Files one of which a transformers model folder holds besides config.json.
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.pth")


def check_builds(exp) -> None:
    """Raise ConfigError when the experiment's model or adapter cannot be built, when their
    weights alone need more memory than the run's device has (`training/memory.weights_bytes`),
    or when eos_loss_weight is not 1.0 for a method whose training loss is the model's own."""
    cfg = exp.train_config
    # an eos_loss_weight the method's own loss would ignore (training.methods knows which)
    weighting = methods.loss_weighting_problems(exp.peft_config, cfg.eos_loss_weight) if exp.peft_config else []
    if weighting:
        raise ConfigError(weighting, f"experiment {exp.experiment_name}")
    config = _model_config(cfg.model_id, cfg.model_revision, cfg.trust_remote_code)
    if config is None:
        return
    tokenizer = None
    if exp.peft_config is not None:
        methods.check_supported(exp.peft_config)
        if methods.traits(exp.peft_config).config_needs_tokenizer:
            tokenizer = _local_tokenizer(cfg.model_id, cfg.model_revision)
            if tokenizer is None:
                return
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    where = f"experiment {exp.experiment_name}"
    adapter_file = exp.path / ADAPTER_CONFIG_FILE
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code,
                                                     dtype=torch_dtype(cfg.dtype))
        except (ValueError, OSError, KeyError) as exc:
            raise ConfigError([f"model_id: {cfg.model_id!r} cannot be built ({_one_line(exc)})"], where) from None
        if exp.peft_config is not None:
            peft_config = methods.prepare_peft_config(exp.peft_config, max(cfg.max_steps, 1), tokenizer=tokenizer)
            try:
                model = get_peft_model(model, peft_config, low_cpu_mem_usage=True,
                                       autocast_adapter_dtype=cfg.autocast_adapter_dtype)
            except NotImplementedError:
                return  # an initialisation that computes on the weights: only a real run can tell
            except RuntimeError as exc:
                # A size PEFT does not check ("negative dimension -3" for num_virtual_tokens -3) is
                # bad input; any other RuntimeError here is an operation meta tensors cannot do.
                if "negative dimension" not in str(exc):
                    return
                raise ConfigError([f"{adapter_file}: PEFT cannot build this adapter on {cfg.model_id!r}: "
                                   f"{_one_line(exc)}"], where) from None
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise ConfigError([f"{adapter_file}: PEFT cannot build this adapter on "
                                   f"{cfg.model_id!r}: {_one_line(exc)}"], where) from None
    _check_memory(exp, model, adapter_file if exp.peft_config is not None else None)


def _check_memory(exp, model, adapter_file: Path | None) -> None:
    """ConfigError, with the estimate, when the weights alone exceed the device's memory: a LoRA
    r of 1e9 would otherwise start the run and fail when it allocates hundreds of GB."""
    cfg = exp.train_config
    device = hardware.resolve_device(cfg.device)
    needed = memory.weights_bytes(model, cfg.dtype)
    available, what = memory.machine_memory(device)
    if needed <= available:
        return
    total = sum(p.numel() for p in model.parameters())
    if adapter_file is None:
        source, detail, hint = f"model_id {cfg.model_id!r}: the model", "", ""
    else:
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        source, detail = f"{adapter_file}: the model with this adapter", f", {trained:,} of them the adapter's"
        hint = "; make the adapter smaller (its rank r, its number of virtual tokens, ...)"
    raise ConfigError([f"{source} needs at least {memory.gib(needed)} for its weights alone ({total:,} parameters "
                       f"in dtype {cfg.dtype}{detail}), more than {what} has ({memory.gib(available)}){hint}"],
                      f"experiment {exp.experiment_name}")


def _model_config(model_id: str, revision: str | None, trust_remote_code: bool):
    """The model's transformers config, from a local or converted folder or the hub cache; None
    when only a download could tell (a hub id not cached yet)."""
    from transformers import AutoConfig

    source = model_source(model_id)  # a missing local folder or packaged model: UserError
    local = os.path.isdir(source)
    if local:
        folder = Path(source)
        has_weights = any(next(folder.glob(pattern), None) for pattern in _WEIGHT_PATTERNS)
        if not (folder / "config.json").is_file() or not has_weights:
            raise UserError(f"model_id {model_id!r}: folder {source} holds no model (a transformers model "
                            "folder has config.json and *.safetensors or *.bin weights)")
    try:
        return AutoConfig.from_pretrained(source, revision=revision, local_files_only=True,
                                          trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if local:
            raise UserError(f"model_id {model_id!r}: config.json of {source} cannot be read ({_one_line(exc)})") from None
        return None


def _local_tokenizer(model_id: str, revision: str | None):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_source(model_id), revision=revision, local_files_only=True)
    except (OSError, ValueError):
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."
