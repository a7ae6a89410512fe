"""Method family and variant label of an experiment, read from its PEFT and train configs.

The family is the PEFT method (one per `peft_type`: "LoRA", "IA3", "Prompt tuning", ...), or
"Full fine-tuning" when there is no PEFT config. The variant names what sets a config apart
inside its family: "DoRA", "rsLoRA", "PiSSA", "LoRA+", "BD-LoRA", ... joined with " + " when
several apply, and the family name itself for the plain method. Both are pure functions of the
config dicts as stored in a result, so they work on any result file, old or new.
"""

from __future__ import annotations

from typing import Any

from peftbench.experiment.config import PEFT_OPTIMIZERS

FULL_FINETUNING = "Full fine-tuning"
# An evaluation-only run (max_steps 0): the untrained model, the row every method is measured against.
BASE_MODEL = "Base model"

# peft_type (as PEFT writes it) -> the name a reader knows the method by. A type missing here
# still gets a family: its peft_type, see `family_name`.
_FAMILY_BY_PEFT_TYPE = {
    "LORA": "LoRA",
    "ADALORA": "AdaLoRA",
    "ADAMSS": "AdaMSS",
    "ADAPTION_PROMPT": "Adaption prompt",
    "BEFT": "BEFT",
    "BOFT": "BOFT",
    "BONE": "Bone",
    "C3A": "C3A",
    "CARTRIDGE": "Cartridge",
    "CPT": "CPT",
    "DEFT": "DeFT",
    "DELORA": "DeLoRA",
    "FOURIERFT": "FourierFT",
    "FROD": "FRoD",
    "GLORA": "GLoRA",
    "GRALORA": "GraLoRA",
    "HIRA": "HiRA",
    "HRA": "HRA",
    "IA3": "IA3",
    "LILY": "Lily",
    "LN_TUNING": "LN tuning",
    "LOHA": "LoHa",
    "LOKR": "LoKr",
    "MISS": "MiSS",
    "MULTITASK_PROMPT_TUNING": "Multitask prompt tuning",
    "OFT": "OFT",
    "OSF": "OSF",
    "PEANUT": "PEANuT",
    "POLY": "Poly",
    "PREFIX_TUNING": "Prefix tuning",
    "PROMPT_TUNING": "Prompt tuning",
    "PSOFT": "PSOFT",
    "P_TUNING": "P-tuning",
    "PVERA": "PVeRA",
    "RANDLORA": "RandLoRA",
    "ROAD": "RoAd",
    "SHADOW": "Shadow",
    "SHIRA": "SHiRA",
    "SUPERTUNING": "Supertuning",
    "TINYLORA": "TinyLoRA",
    "TRAINABLE_TOKENS": "Trainable tokens",
    "UNILORA": "UniLoRA",
    "VBLORA": "VB-LoRA",
    "VERA": "VeRA",
    "WAVEFT": "WaveFT",
    "XLORA": "X-LoRA",
}

# LoRA's `init_lora_weights` string values -> variant label. PEFT accepts suffixed forms such as
# "pissa_niter_4" and "corda", so prefixes are matched; True/False/"gaussian" are plain init.
_LORA_INIT_VARIANTS = (
    ("pissa", "PiSSA"),
    ("olora", "OLoRA"),
    ("mica", "MiCA"),
    ("eva", "EVA"),
    ("corda", "CorDA"),
    ("loftq", "LoftQ"),
    ("lora_ga", "LoRA-GA"),
    ("orthogonal", "orthogonal init"),
)

# LoRA options that switch a variant on when set to anything but their "off" value.
# (option name, label); an option is on when truthy ({} and None are off).
_LORA_FLAG_VARIANTS = (
    ("use_dora", "DoRA"),
    ("use_rslora", "rsLoRA"),
    ("use_bdlora", "BD-LoRA"),
    ("use_qalora", "QALoRA"),
    ("kasa_config", "KaSA"),
    ("velora_config", "VeLoRA"),
    ("monteclora_config", "MonteCLoRA"),
    ("alora_invocation_tokens", "aLoRA"),
    ("arrow_config", "Arrow"),
    ("lora_bias", "LoRA bias"),
)

# train_config optimizer_type -> variant label: these optimizers are LoRA methods of their own.
_OPTIMIZER_VARIANTS = PEFT_OPTIMIZERS

# Init values that are a method's own default, not a variant (PEFT writes them into every config).
_DEFAULT_INITS = {("ADAMSS", "orthogonal"), ("C3A", "xavier_uniform")}


def family_name(peft_config: dict[str, Any] | None, train_config: dict[str, Any] | None = None) -> str:
    """The method family of a PEFT config; "Full fine-tuning" when there is none, and "Base model"
    for a run that trains nothing (max_steps 0)."""
    if (train_config or {}).get("max_steps") == 0:
        return BASE_MODEL
    if not peft_config:
        return FULL_FINETUNING
    peft_type = peft_config.get("peft_type")
    if not isinstance(peft_type, str) or not peft_type:
        return "unknown"
    return _FAMILY_BY_PEFT_TYPE.get(peft_type.upper(), peft_type)


def variant_labels(peft_config: dict[str, Any] | None, train_config: dict[str, Any] | None = None) -> list[str]:
    """What distinguishes this config inside its family, in a fixed order; [] for the plain method."""
    peft_config = peft_config or {}
    labels: list[str] = []
    family = family_name(peft_config)
    if family in ("LoRA", "AdaLoRA"):  # AdaLoRA's config inherits LoRA's options
        labels += _lora_labels(peft_config)
    else:
        labels += _init_labels(peft_config)
    optimizer = str((train_config or {}).get("optimizer_type") or "").lower()
    if optimizer in _OPTIMIZER_VARIANTS:
        labels.append(_OPTIMIZER_VARIANTS[optimizer])
    return labels


def variant_label(peft_config: dict[str, Any] | None, train_config: dict[str, Any] | None = None) -> str:
    """One label for the variant: the labels joined with " + ", or the family name when plain."""
    labels = variant_labels(peft_config, train_config)
    return " + ".join(labels) if labels else family_name(peft_config, train_config)


def _lora_labels(peft_config: dict[str, Any]) -> list[str]:
    labels = [label for option, label in _LORA_FLAG_VARIANTS if peft_config.get(option)]
    init = peft_config.get("init_lora_weights")
    if isinstance(init, str):
        lowered = init.lower()
        labels += [label for prefix, label in _LORA_INIT_VARIANTS if lowered.startswith(prefix)][:1]
    # LoftQ is configured through loftq_config with init_lora_weights="loftq"; an older layout
    # sets only the config, so it counts too (once).
    if peft_config.get("loftq_config") and "LoftQ" not in labels:
        labels.append("LoftQ")
    return labels


def _init_labels(peft_config: dict[str, Any]) -> list[str]:
    """Named initialisations of the other methods ("bat" for MiSS, "SAMPLE_VOCAB" for prompt
    tuning, ...): a string value of an init option is a variant; booleans/None are the default."""
    peft_type = str(peft_config.get("peft_type") or "").upper()
    for option in ("init_weights", "prompt_tuning_init", "init_lora_weights"):
        value = peft_config.get(option)
        if not isinstance(value, str) or (peft_type, value.lower()) in _DEFAULT_INITS:
            continue
        if value.upper() != "RANDOM":  # RANDOM is prompt tuning's default
            return [f"{value.lower()} init"]
    return []
