"""Build an experiment's model and PEFT adapter on the meta device, before anything is written.

`peftbench run` (and so every `run-all` child) calls `check_builds` while it validates its
experiments: PEFT's own checks (target modules that match nothing, a rank it refuses, options
that contradict each other) and a `model_id` folder that holds no model then end in exit status
2 with a message, instead of a "failed" result hours later. On the meta device no weight is read
or allocated (seconds even for a 3B model). `status` and `run-all --dry-run` skip this: they must
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

# Files one of which a transformers model folder holds besides config.json.
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.pth")


def check_builds(exp) -> None:
    """Raise ConfigError when the experiment's model or adapter cannot be built."""
    from peftbench.training import methods

    cfg = exp.train_config
    config = _model_config(cfg.model_id, cfg.model_revision, cfg.trust_remote_code)
    if config is None or exp.peft_config is None:
        return
    methods.check_supported(exp.peft_config)
    tokenizer = None
    if methods.traits(exp.peft_config).config_needs_tokenizer:
        tokenizer = _local_tokenizer(cfg.model_id, cfg.model_revision)
        if tokenizer is None:
            return
    peft_config = methods.prepare_peft_config(exp.peft_config, max(cfg.max_steps, 1), tokenizer=tokenizer)
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)
        except (ValueError, OSError, KeyError) as exc:
            raise ConfigError([f"model_id: {cfg.model_id!r} cannot be built ({_one_line(exc)})"],
                              f"experiment {exp.experiment_name}") from None
        try:
            get_peft_model(model, peft_config, low_cpu_mem_usage=True)
        except (NotImplementedError, RuntimeError):
            return  # an initialisation that computes on the weights: only a real run can tell
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError([f"{exp.path / ADAPTER_CONFIG_FILE}: PEFT cannot build this adapter on "
                               f"{cfg.model_id!r}: {_one_line(exc)}"], f"experiment {exp.experiment_name}") from None


def _model_config(model_id: str, revision: str | None, trust_remote_code: bool):
    """The model's transformers config, from a local or converted folder or the hub cache; None
    when only a download could tell (a hub id not cached yet)."""
    from transformers import AutoConfig

    from peftbench.training.modeling import model_source

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

    from peftbench.training.modeling import model_source

    try:
        return AutoTokenizer.from_pretrained(model_source(model_id), revision=revision, local_files_only=True)
    except (OSError, ValueError):
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."
