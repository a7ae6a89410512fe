"""The experiment catalog of a suite, held against the PEFT methods the installed peft offers.

`installed_methods()` asks peft itself (its PeftType -> config mapping), so upgrading peft to a
version with a new method makes `missing_methods(suite)` name it until an experiment folder, or
an entry in EXCLUDED_METHODS with its reason, covers it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from peftbench.experiment.config import ADAPTER_CONFIG_FILE, EXPERIMENTS_DIR
from peftbench.errors import UserError
from peftbench.experiment.suite import discover_experiments

# PEFT methods that exist in peft but do not apply to causal language models, with the reason.
# Every method of peft 0.21.2 applies (each one, X-LoRA aside, trains on a tiny Llama in
# tests/experiment/test_experiments.py), so this is empty; a method for other model kinds goes here.
NOT_FOR_CAUSAL_LM: dict[str, str] = {}

# PEFT methods this benchmark cannot run, by peft_type, with the reason:
# training.methods.check_supported raises with it.
UNSUPPORTED_METHODS: dict[str, str] = {
    "XLORA": (
        "X-LoRA learns a router over LoRA experts that were trained before; it trains and saves no "
        "weights of its own, so fine-tuning it from scratch on MetaMathQA produces no result to compare"
    ),
}

# Causal-LM methods that deliberately have no experiment: peft_type -> reason.
EXCLUDED_METHODS: dict[str, str] = dict(UNSUPPORTED_METHODS)


@dataclass(frozen=True)
class CatalogEntry:
    method: str  # the method folder: experiments/<method>/<name>
    name: str
    path: Path
    peft_type: str | None  # None for full fine-tuning

    @property
    def experiment_name(self) -> str:
        return f"{self.method}/{self.name}"


def installed_methods(peft_types: list[str] | None = None) -> list[str]:
    """peft_type names of the installed peft that apply to causal LMs, sorted. `peft_types`:
    every method of the installed peft when already known (`PlanCache.peft_types`, no peft import)."""
    return sorted(set(peft_types if peft_types is not None else all_peft_types()) - set(NOT_FOR_CAUSAL_LM))


def all_peft_types() -> list[str]:
    """Every peft_type of the installed peft (its PeftType -> config mapping), sorted."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return sorted({getattr(t, "value", t) for t in PEFT_TYPE_TO_CONFIG_MAPPING})


def catalog(suite_dir: str | Path) -> list[CatalogEntry]:
    """Every experiment of the suite (found recursively below its experiments/ folder), sorted."""
    experiments = Path(suite_dir) / EXPERIMENTS_DIR
    if not experiments.is_dir():
        raise UserError(f"{str(suite_dir)!r} is not a suite: it has no {EXPERIMENTS_DIR}/ folder")
    return [CatalogEntry(path.parent.name, path.name, path, _peft_type(path))
            for path in discover_experiments(experiments)]


def _peft_type(exp_dir: Path) -> str | None:
    adapter_config = exp_dir / ADAPTER_CONFIG_FILE
    if not adapter_config.is_file():
        return None
    try:
        peft_type = json.loads(adapter_config.read_text(encoding="utf-8")).get("peft_type")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as exc:
        raise UserError(f"{adapter_config}: not a JSON object with a peft_type ({exc})") from None
    return str(peft_type) if peft_type else None


def covered_methods(entries: list[CatalogEntry]) -> set[str]:
    return {e.peft_type for e in entries if e.peft_type}


def missing_methods(suite_dir: str | Path) -> list[str]:
    """Installed causal-LM methods with neither an experiment nor a documented exclusion."""
    covered = covered_methods(catalog(suite_dir))
    return [m for m in installed_methods() if m not in covered and m not in EXCLUDED_METHODS]
