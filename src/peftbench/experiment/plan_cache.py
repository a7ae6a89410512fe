"""What a plan needs of each experiment, cached by file content, so that `status` and
`run-all --dry-run` import neither peft nor torch when nothing changed.

Loading one experiment the way `run` does costs little in itself, but it imports peft (to
resolve adapter_config.json, ~6 s on 2 cores) and torch (the optimizer check and the device),
which made planning the 70-experiment catalog take 8-13 s. A plan needs only the resolved
configs (for the run key) and whether they are valid. Those depend on nothing but:

  - the bytes of the experiment's adapter_config.json and training_params.json, and of the
    suite's default_training_params.json,
  - the --set overrides and seed,
  - the source of the modules that load and validate a config (LOADING_SOURCES; a test checks
    that it holds every peftbench module config.py and limits.py import, so that the list cannot
    silently fall behind),
  - the versions of torch, transformers, peft and datasets,

so an entry keyed by a sha256 over all of them is as good as loading again. What can change
without any of these changing is checked live on every plan: the local data paths a config
names (`config.source_problems`) and the data and model identities of the run key
(`runkey.compute`, which reads no heavy library). Invalid experiments are not cached: they are
rare, and their message must name the problem as it stands.

The device kind `auto` resolves to (cuda/xpu/mps/cpu, part of the run key) needs torch; it is
cached per machine: hostname, boot id, the torch version, the GPU device files and the
*_VISIBLE_DEVICES variables. A GPU that appears without any of these changing is the one case
this misses; `peftbench run` always resolves the device itself.

The cache is one JSON file in the suite's `.peftbench/` folder (ignored by git and by the dirty
check). It is written atomically; two processes writing at once lose at most the other's new
entries, which are computed again next time. An unreadable or unwritable cache only costs time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peftbench
from peftbench.errors import ConfigError, UserError
from peftbench.experiment import catalog
from peftbench.experiment import config as C
from peftbench.fs import atomic_write_json, read_json_or_none, sha256_file
from peftbench.record import hardware
from peftbench.record.provenance import installed_versions
from peftbench.record.runkey import canonical

CACHE_FILE = "plan-cache.json"
FORMAT = 2  # bump when the shape of an entry changes
MAX_ENTRIES = 4096  # ~60 suites of 70 experiments; the least recently used go first
_LIBRARIES = ("torch", "transformers", "peft", "datasets")
# What decides a cached entry, relative to the package: config.py and the modules it imports (the
# whole experiment/ folder would do too, but it also holds executors and tuning code that change
# often and never change how a config loads), and this module, which shapes the entries. A folder
# stands for every module in it: the tasks give a config its defaults and check its data paths.
LOADING_SOURCES = (
    "experiment/config.py", "experiment/limits.py", "experiment/suite.py", "errors.py", "experiment/plan_cache.py",
    "record/layout.py", "record/runkey.py", "tasks")  # a folder: every module below it (a task's defaults)
_DEVICE_ENV = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK",
               "PYTORCH_ENABLE_MPS_FALLBACK")


@dataclass
class ResolvedPeftConfig:
    """Stand-in for a peft.PeftConfig read back from the cache: what the run key and the plan
    use of it (`to_dict`, `peft_type`), without importing peft."""

    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)

    @property
    def peft_type(self) -> str | None:
        return self.data.get("peft_type")


class PlanCache:
    """The cache file of one suite. `save()` writes it back when something was added."""

    def __init__(self, suite: Path):
        self.path = Path(suite) / ".peftbench" / CACHE_FILE
        data = read_json_or_none(self.path)
        ok = isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("entries"), dict)
        self._entries: dict[str, dict] = data["entries"] if ok else {}
        self._changed = False

    def get(self, key: str) -> Any:
        entry = self._entries.get(key)
        if not isinstance(entry, dict) or "value" not in entry:
            return None
        if time.time() - entry.get("used", 0) > 3600:  # refresh the LRU stamp at most hourly
            entry["used"] = time.time()
            self._changed = True
        return entry["value"]

    def put(self, key: str, value: Any) -> None:
        self._entries[key] = {"used": time.time(), "value": value}
        self._changed = True

    def peft_types(self) -> list[str]:
        """Every peft_type of the installed peft (`catalog.all_peft_types`), once per peft version."""
        key = _sha256({"peft_types": library_versions()["peft"], "code": loading_source_sha256()})
        hit = self.get(key)
        if hit is None:
            hit = catalog.all_peft_types()
            self.put(key, hit)
        return list(hit)

    def save(self) -> None:
        if not self._changed:
            return

        entries = dict(sorted(self._entries.items(), key=lambda kv: -kv[1].get("used", 0))[:MAX_ENTRIES])
        try:
            atomic_write_json(self.path, {"format": FORMAT, "entries": entries})
            self._changed = False
        except OSError:
            pass  # a read-only suite plans as fast as before the cache existed, no faster


def load_experiment(exp_dir: Path, overrides: dict[str, Any], cache: PlanCache) -> C.Experiment:
    """`config.load_experiment`, from the cache when the files it reads are unchanged.

    Raises UserError/ConfigError exactly as `config.load_experiment` does."""
    key = _experiment_key(exp_dir, overrides)
    hit = cache.get(key)
    if hit is not None:
        exp = _from_entry(exp_dir, overrides, hit)
        problems = C.source_problems(exp.train_config)
        if problems:
            raise ConfigError(problems, f"experiment {exp.experiment_name}")
        return exp
    exp = C.load_experiment(exp_dir, overrides)
    cache.put(key, _to_entry(exp))
    return exp


def device_kind(requested: str, cache: PlanCache) -> str:
    """The device kind (cpu/cuda/xpu/mps) `requested` resolves to on this machine; UserError
    when an explicit device is not available, as `hardware.resolve_device` says."""
    if requested.split(":")[0] == "cpu":
        return "cpu"  # always there: no torch needed to know it
    key = _sha256({"device": requested, "machine": _machine()})
    hit = cache.get(key)
    if hit is None:
        try:
            hit = {"kind": hardware.resolve_device(requested).split(":")[0]}
        except UserError as exc:
            hit = {"error": str(exc)}
        cache.put(key, hit)
    if "error" in hit:
        raise UserError(hit["error"])
    return hit["kind"]


# ---------------------------------------------------------------------------- keys and entries


def _experiment_key(exp_dir: Path, overrides: dict[str, Any]) -> str:
    suite = exp_dir.parent.parent.parent
    files = {name: _file_sha256(exp_dir / name) for name in (C.ADAPTER_CONFIG_FILE, *C.TRAINING_PARAMS_FILES)}
    return _sha256({"format": FORMAT, "experiment": str(exp_dir), "files": files,
                    "defaults": _file_sha256(suite / C.DEFAULTS_FILE), "overrides": overrides,
                    "code": loading_source_sha256(), "libraries": library_versions()})


def _to_entry(exp: C.Experiment) -> dict[str, Any]:
    peft = None if exp.peft_config is None else json.loads(canonical(exp.peft_config.to_dict()))
    return {"train_config": exp.train_config.to_dict(), "peft_config": peft, "adapter_config": exp.adapter_config,
            "training_params": exp.training_params, "config_overrides": exp.config_overrides}


def _from_entry(exp_dir: Path, overrides: dict[str, Any], entry: dict[str, Any]) -> C.Experiment:
    peft = entry["peft_config"]
    return C.Experiment(path=exp_dir, suite_dir=exp_dir.parent.parent.parent, method=exp_dir.parent.name,
                        name=exp_dir.name, train_config=C.TrainConfig(**entry["train_config"]),
                        peft_config=None if peft is None else ResolvedPeftConfig(peft),
                        adapter_config=entry["adapter_config"], training_params=entry["training_params"],
                        overrides=overrides, config_overrides=entry["config_overrides"])


@functools.cache
def loading_source_sha256() -> str:
    """sha256 over the source files of LOADING_SOURCES (names and contents; a folder's modules in
    sorted order)."""
    root = Path(peftbench.__file__).parent
    h = hashlib.sha256()
    files = []
    for rel in LOADING_SOURCES:
        path = root / rel
        files = sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts) if path.is_dir() else [path]
        for file in files:
            h.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    return installed_versions(_LIBRARIES)


def _machine() -> dict[str, Any]:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = None
    try:
        gpu_files = sorted(n for n in os.listdir("/dev") if n.startswith(("nvidia", "kfd", "dri")))
    except OSError:
        gpu_files = []
    return {"host": socket.gethostname(), "boot_id": boot_id, "gpu_files": gpu_files,
            "env": {k: os.environ.get(k) for k in _DEVICE_ENV}, "torch": library_versions()["torch"]}


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:  # unreadable: a key that matches nothing, so that loading says what is wrong
        return "unreadable-" + os.urandom(8).hex()


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
