"""Re-run what a result file records, from the file alone, and compare the numbers.

A result holds everything a run was made of: the resolved training config (`run_info.train_config`),
the PEFT config as PEFT resolved it (`run_info.peft_config`, None for full fine-tuning), the seed,
and the run key inputs (data, model, code and library identities). `rebuild` turns that back into
a one-experiment suite in a scratch folder:

    <folder>/suite/default_training_params.json             = the recorded train_config
    <folder>/suite/experiments/<method>/<name>/adapter_config.json = the recorded peft_config

so that the run's results, checkpoints and lock stay in the scratch folder and the user's results
folders are never touched. `compare` then checks every number a run produces deterministically:
every numeric key of every metrics entry (the last entry holds the test accuracies and forgetting).
Timing and memory keys are measurements of the machine, not of the model, and are not compared.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.demo.smollm import is_packaged_model
from peftbench.errors import UserError
from peftbench.experiment.config import (ADAPTER_CONFIG_FILE, DEFAULTS_FILE, EXPERIMENTS_DIR, TRAINING_PARAMS_FILES,
                                         is_local_source)
from peftbench.record import results as R

# Metrics entry keys that measure the machine (seconds, throughput, bytes): they differ between
# two runs of the same experiment and say nothing about whether the numbers reproduce.
NOT_COMPARED = frozenset({R.M_TRAIN_TIME, R.M_EVAL_TIME, R.M_TOKENS_PER_SEC, R.M_MEM_ALLOC_AVG,
                          R.M_MEM_RESERVED_AVG, R.M_CPU_RSS, R.M_ELAPSED})
# Train config fields that may name a local file or folder.
PATH_FIELDS = ("model_id", "train_dataset", "eval_dataset", "forgetting_dataset")


def read_recorded(path: str | os.PathLike) -> dict[str, Any]:
    """The result at `path`, checked to hold what a reproduction needs."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"result file {str(path)!r} does not exist")
    result = R.load(path)  # ResultError (a UserError) names the file and the reason
    info = result[R.RUN_INFO]
    problems = []
    if not isinstance(info.get(R.RI_TRAIN_CONFIG), dict):
        problems.append("run_info.train_config is missing: the result does not say how it was trained")
    name = info.get(R.RI_EXPERIMENT_NAME)
    if not isinstance(name, str) or name.count("/") != 1:
        problems.append(f"run_info.experiment_name {name!r} is not '<method>/<name>'")
    status = result[R.TRAIN_INFO].get(R.TI_STATUS)
    if status != R.Status.SUCCESS.value:
        problems.append(f"the run's status is {status!r}; only a successful run has numbers to reproduce")
    if problems:
        raise UserError(f"{path} cannot be reproduced:\n" + "\n".join(f"  - {p}" for p in problems))
    return result


def missing_local_paths(train_config: dict[str, Any]) -> list[str]:
    """Recorded local model/data paths that no longer exist, as 'field: path' lines."""
    missing = []
    for name in PATH_FIELDS:
        value = train_config.get(name)
        if not isinstance(value, str) or value.startswith("demo:"):
            continue
        if name == "model_id" and is_packaged_model(value):
            continue
        if is_local_source(value) and not os.path.exists(os.path.expanduser(value)):
            missing.append(f"{name}: {value}")
    return missing


def recorded_device(result: dict[str, Any]) -> str:
    """The device the run used: the configured one, or for "auto" the kind it resolved to."""
    configured = result[R.RUN_INFO][R.RI_TRAIN_CONFIG].get("device", "auto")
    if configured != "auto":
        return configured
    inputs = result[R.RUN_INFO].get(R.RI_RUN_KEY_INPUTS) or {}
    return (inputs.get("train_config") or {}).get("device") or "auto"


def adapter_config_for(peft_config: dict[str, Any]) -> dict[str, Any]:
    """The recorded PEFT config as an adapter_config.json PEFT accepts: only the fields of the
    method's config class (plus the two PEFT itself writes), so a field recorded by another PEFT
    version is dropped rather than refused."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type = peft_config.get("peft_type")
    if peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise UserError(f"recorded peft_type {peft_type!r} is not a method of the installed PEFT")
    known = {f.name for f in dataclasses.fields(PEFT_TYPE_TO_CONFIG_MAPPING[peft_type])} | {"peft_version", "auto_mapping"}
    return {k: v for k, v in peft_config.items() if k in known}


def rebuild(result: dict[str, Any], folder: Path, device: str | None = None) -> Path:
    """Write a suite with the one recorded experiment under `folder`; return the experiment folder."""
    info = result[R.RUN_INFO]
    method, name = info[R.RI_EXPERIMENT_NAME].split("/")
    train_config = dict(info[R.RI_TRAIN_CONFIG])
    train_config["device"] = device or recorded_device(result)
    suite = Path(folder) / "suite"
    exp_dir = suite / EXPERIMENTS_DIR / method / name
    exp_dir.mkdir(parents=True)
    # The recorded seed becomes the suite's default, so the result keeps the recorded file stem.
    (suite / DEFAULTS_FILE).write_text(json.dumps(train_config, indent=2) + "\n", encoding="utf-8")
    if info.get("peft_config") is not None:
        adapter = adapter_config_for(info["peft_config"])
        (exp_dir / ADAPTER_CONFIG_FILE).write_text(json.dumps(adapter, indent=2) + "\n", encoding="utf-8")
    else:
        # Full fine-tuning: an empty training_params.json is what marks the folder as an experiment.
        (exp_dir / TRAINING_PARAMS_FILES[0]).write_text("{}\n", encoding="utf-8")
    return exp_dir


def version_warnings(recorded_inputs: dict[str, Any] | None, current_inputs: dict[str, Any]) -> list[str]:
    """Why the reproduction may legitimately differ: other training code or library versions."""
    if not recorded_inputs:
        return ["the result records no run key inputs: code and library versions cannot be checked"]
    warnings = []
    old_code, new_code = recorded_inputs.get("code") or {}, current_inputs.get("code") or {}
    if old_code != new_code:
        warnings.append(f"training code differs: recorded peftbench {old_code.get('peftbench_version')} "
                        f"sources {str(old_code.get('sources_sha256'))[:12]}, here {new_code.get('peftbench_version')} "
                        f"sources {str(new_code.get('sources_sha256'))[:12]}")
    old_libs, new_libs = recorded_inputs.get("libraries") or {}, current_inputs.get("libraries") or {}
    changed = [f"{k} {old_libs.get(k)} -> {new_libs.get(k)}" for k in sorted(set(old_libs) | set(new_libs))
               if old_libs.get(k) != new_libs.get(k)]
    if changed:
        warnings.append("library versions differ: " + ", ".join(changed))
    return warnings


class _Absent:
    """A metric key one side lacks (not the same as a recorded null)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


@dataclass
class Row:
    label: str  # "step 250: valid accuracy", "final: test accuracy"
    recorded: Any
    reproduced: Any
    ok: bool

    @property
    def difference(self) -> float | None:
        if _is_number(self.recorded) and _is_number(self.reproduced):
            return abs(self.reproduced - self.recorded)
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _within(recorded: Any, reproduced: Any, tolerance: float) -> bool:
    if _is_number(recorded) and _is_number(reproduced):
        if math.isnan(recorded) or math.isnan(reproduced):
            return math.isnan(recorded) and math.isnan(reproduced)
        return abs(reproduced - recorded) <= tolerance
    return recorded is None and reproduced is None


def compare(recorded: dict[str, Any], reproduced: dict[str, Any], tolerance: float = 0.0) -> list[Row]:
    """One row per compared number: every numeric (or null) key of every metrics entry, entries
    matched by position, except the timing and memory keys. A key present on one side only, or a
    different number of entries, is a mismatch."""
    old = recorded[R.TRAIN_INFO].get(R.TI_METRICS) or []
    new = reproduced[R.TRAIN_INFO].get(R.TI_METRICS) or []
    rows = []
    for index in range(max(len(old), len(new))):
        a = old[index] if index < len(old) else {}
        b = new[index] if index < len(new) else {}
        step = a.get(R.M_STEP, b.get(R.M_STEP, "?"))
        # The entry with the test accuracy repeats the last step number; name it apart.
        where = "final" if R.M_TEST_ACC in a or R.M_TEST_ACC in b else f"step {step}"
        for key in _compared_keys(a, b):
            label = f"{where}: {key}"
            old_value, new_value = a.get(key, ABSENT), b.get(key, ABSENT)
            rows.append(Row(label, old_value, new_value, _within(old_value, new_value, tolerance)))
    if len(old) != len(new):
        rows.append(Row("number of metrics entries", len(old), len(new), False))
    return rows


def _compared_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = []
    for key in [*a, *(k for k in b if k not in a)]:
        if key in NOT_COMPARED or key in keys:
            continue
        values = [d[key] for d in (a, b) if key in d]
        if all(v is None or _is_number(v) for v in values):
            keys.append(key)
    return keys
