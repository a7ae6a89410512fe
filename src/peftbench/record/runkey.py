"""The run key: a sha256 over everything that decides the outcome of a run.

What goes in (`run_key_inputs`), in canonical JSON (sorted keys, no whitespace):
- `train_config`: the resolved TrainConfig (the seed included), with `device` replaced by the
  resolved device kind (cpu/cuda/xpu/mps: "auto" on two machines is not the same input), local
  data and model paths replaced by "<local>" (their content hashes are under `datasets` and
  `model`, so moving a checkout changes nothing), and without `checkpoint_steps` and `report_to`;
- `peft_config`: the PEFT config as PEFT resolves it (`to_dict()`, defaults filled in), without
  the fields PEFT writes when it saves an adapter (`peft_version`, `base_model_name_or_path`,
  `revision`, `inference_mode`): they do not change training (the model and its revision are in
  `model` and `train_config`); None for full fine-tuning;
- `datasets`: identities of the train, eval and forgetting data (hub revision sha, sha256 of
  local files, or the built-in generator's version and hash);
- `model`: hub revision sha, sha256 of a local model folder, or the packaged GGUF's sha256;
- `code`: peftbench's version and a sha256 of every source file under the folders that train
  and evaluate (TRAINING_SOURCES below: folders are walked, never listed by hand), plus the
  run's task: its module, the task interface and every file it grades with (`Task.source_files`:
  for GSM8K the grader in scoring/). A change to one task's module or grader stales that task's
  experiments only; the dynamic engine stops generating where the task says a grade can no
  longer change, so a grader change can change the saved texts too;
- `libraries`: versions of torch, transformers, peft and datasets.
Left out, because they do not change the numbers: verbosity, --output-dir, --clean, the
results folder, the time, and the git commit of the repository (a commit that does not touch the
training code does not invalidate results; `code` covers the code that matters). `peftbench
rescore` still applies a newer grader to saved predictions without a GPU, for a look before
the rerun that `run-all` then schedules.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import peftbench
from peftbench import identity, tasks
from peftbench.demo import smollm
from peftbench.record.provenance import installed_versions
from peftbench.tasks import sources

# What decides a run's numbers, as paths relative to the package: whole folders are walked, so
# a module added to one of them counts without anyone listing it. The training subpackage is the
# run itself; demo/smollm.py converts the demo model; config.py holds the defaults a field falls
# back to. The task adds its own files (Task.source_files). Everything else (planning, analysis,
# the CLI) reads or schedules runs without changing their numbers.
TRAINING_SOURCES = ("training", "demo/smollm.py", "experiment/config.py")
LIBRARIES = ("torch", "transformers", "peft", "datasets")
# Train config fields that cannot change a run's numbers: how often to checkpoint (a resumed run
# equals an uninterrupted one, tests/training/test_resume.py) and which experiment trackers watch
# the run (they only read its numbers). The run key leaves them out, and a `--set` of them alone
# does not keep a result out of results/ (experiment/config.py, `_config_overrides`).
NUMBER_NEUTRAL_FIELDS = ("checkpoint_steps", "report_to")
# Fields that name data or a model: a local path there is identified by its content (the Ray
# executor ships these paths to its workers).
SOURCE_FIELDS = ("model_id", "train_dataset", "eval_dataset", "forgetting_dataset")
_PEFT_WRITTEN_FIELDS = ("peft_version", "base_model_name_or_path", "revision", "inference_mode")


def training_source_files(task: str = tasks.DEFAULT_TASK, package_dir: Path | None = None) -> list[Path]:
    """Every Python file under TRAINING_SOURCES and of `task`, in a fixed order (sorted relative
    paths)."""
    root = Path(package_dir) if package_dir is not None else Path(peftbench.__file__).parent
    files: set[Path] = set()
    for name in TRAINING_SOURCES + tuple(tasks.get(task).source_files()):
        path = root / name
        if path.is_dir():
            files.update(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.exists():
            files.add(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def code_identity(task: str = tasks.DEFAULT_TASK) -> dict[str, str]:
    root = Path(peftbench.__file__).parent
    # A plan computes this once per experiment: the files are read again only when one changed.
    files = tuple((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in training_source_files(task, root))
    return {"peftbench_version": peftbench.__version__, "sources_sha256": _sources_sha256(str(root), files)}


@functools.lru_cache(maxsize=8)
def _sources_sha256(root: str, files: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for rel, _, _ in files:
        h.update(rel.encode() + b"\0")
        h.update((Path(root) / rel).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    return installed_versions(LIBRARIES)


def peft_config_identity(peft_config) -> dict[str, Any] | None:
    if peft_config is None:
        return None
    data = peft_config.to_dict() if hasattr(peft_config, "to_dict") else dict(peft_config)
    return {k: v for k, v in data.items() if k not in _PEFT_WRITTEN_FIELDS}


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default)


def _default(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "value"):  # enums
        return value.value
    return str(value)


def run_key_inputs(train_config: dict[str, Any], peft_config, device_kind: str, datasets: dict[str, Any],
                   model: dict[str, Any]) -> dict[str, Any]:
    task = train_config.get("task") or tasks.DEFAULT_TASK
    cfg = {k: v for k, v in train_config.items() if k not in NUMBER_NEUTRAL_FIELDS}
    cfg["device"] = device_kind
    # A local data or model path is identified by the hash of its content (datasets / model
    # below); the path itself would make a moved checkout look stale.
    for name in SOURCE_FIELDS:
        if isinstance(cfg.get(name), str) and os.path.exists(os.path.expanduser(cfg[name])):
            cfg[name] = "<local>"
    return {
        "train_config": cfg,
        "peft_config": peft_config_identity(peft_config),
        "datasets": {k: _stable_identity(v) for k, v in datasets.items()},
        "model": _stable_identity(model),
        "code": code_identity(task),
        "libraries": library_versions(),
    }


def _stable_identity(identity: dict[str, Any] | None) -> dict[str, Any] | None:
    """Drop fields of an identity that describe the lookup rather than the data (an error text
    from an offline lookup, file paths that differ between checkouts)."""
    if identity is None:
        return None
    # A local model folder is identified by its content hash; its path ("id") differs between
    # checkouts and on a Ray worker, which gets a content-addressed copy.
    drop = ("error", "files", "created_at") + (("id",) if identity.get("source") == "local" else ())
    return {k: v for k, v in identity.items() if k not in drop}


def run_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(inputs).encode()).hexdigest()


def explain_difference(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """Why a recorded run is out of date, in words: the first differing part of the inputs."""
    if not old:
        return "recorded result has no run key inputs"
    labels = (("train_config", "config changed"), ("peft_config", "config changed"),
              ("datasets", "data changed"), ("model", "model changed"),
              ("code", "code changed"), ("libraries", "library changed"))
    reasons = []
    for key, label in labels:
        if canonical(old.get(key)) != canonical(new.get(key)):
            detail = _first_diff(old.get(key), new.get(key))
            reasons.append(f"{label} ({detail})" if detail else label)
    return "; ".join(dict.fromkeys(reasons)) or "run key differs"


def _first_diff(old, new) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        changed = [k for k in keys if canonical(old.get(k)) != canonical(new.get(k))]
        return ", ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
    return ""


def model_identity(cfg) -> dict[str, Any]:
    """What identifies the base model of `cfg` (a TrainConfig), without loading it: the packaged
    GGUF's sha256, sha256 of a local folder, or the hub revision sha."""
    model_id = cfg.model_id
    if smollm.is_packaged_model(model_id):
        return {"id": model_id, "source": "pypi", "gguf_sha256": smollm.gguf_sha256()}
    expanded = os.path.expanduser(model_id)
    if os.path.isdir(expanded):
        return {"id": model_id, "source": "local", "local_sha256": identity.folder_sha256(expanded)}
    return identity.hub_revision(model_id, "model", cfg.model_revision)


def compute(exp, device_kind: str) -> tuple[str, dict[str, Any]]:
    """(run key, inputs) of an experiment without loading its model or data: the same function
    serves a run and a `run-all` plan, so both agree on what is up to date."""
    cfg = exp.train_config
    task = tasks.get(cfg.task)
    datasets = {"train": task.data_identity(cfg.train_dataset, "train"),
                # a tuning trial reads only the validation pool: a new test set must not touch it
                "eval": task.data_identity(cfg.eval_dataset, "tune" if cfg.tune_valid_size > 0 else "eval"),
                "forgetting": sources.generic_identity(cfg.forgetting_dataset)}
    inputs = run_key_inputs(cfg.to_dict(), exp.peft_config, device_kind, datasets, model_identity(cfg))
    return run_key(inputs), inputs
