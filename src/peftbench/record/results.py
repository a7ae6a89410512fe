"""The result file: one schema shared by the code that writes results and the code that reads them.

A result is a JSON object with the seed's three sections, plus `schema_version`:

    {
      "schema_version": 1,
      "run_info":   who/what/when: experiment, train and PEFT config, git state, run key, error
      "train_info": what happened: status, times, memory, sizes, parameter counts, metrics list
      "meta_info":  what it ran on: model and dataset identities, package versions, system
    }

Files of the seed's schema (no `schema_version`, `cuda_memory_*` instead of
`accelerator_memory_*`, no flexible accuracy) are read by `normalize_result`, which fills what
is missing with None, never with a made-up number.

Metric keys are defined here once (`M_*`) and used everywhere else through these names.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class Status(str, Enum):
    SUCCESS = "success"
    CANCELLED = "cancelled"
    FAILED = "failed"
    RUNNING = "running"  # only in checkpoints, never in a finished result file


# Keys of the entries of train_info["metrics"]. The seed's spellings are kept (with spaces) so
# that published results and ours read the same way.
M_STEP = "step"
M_VALID_ACC = "valid accuracy"
M_VALID_ACC_FLEX = "valid accuracy flexible"
M_TEST_ACC = "test accuracy"
M_TEST_ACC_FLEX = "test accuracy flexible"
M_TRAIN_LOSS = "train loss"
M_TRAIN_SAMPLES = "train samples"
M_TRAIN_TIME = "train time"
M_EVAL_TIME = "eval time"
M_TOKENS_PER_SEC = "tokens / sec"
M_MEM_ALLOC_AVG = "mem allocated avg"
M_MEM_RESERVED_AVG = "mem reserved avg"
M_CPU_RSS = "cpu rss"
M_ELAPSED = "elapsed time"
M_TRAIN_TOTAL_TOKENS = "train total tokens"
M_FORGETTING = "forgetting"

# train_info keys for memory. On an accelerator: reserved memory over training steps, bytes.
# On CPU: the process's peak resident set size, bytes. The names say which one was measured.
ACCEL_MEM_MAX = "accelerator_memory_max"
ACCEL_MEM_AVG = "accelerator_memory_reserved_avg"
ACCEL_MEM_99 = "accelerator_memory_reserved_99th"
CPU_PEAK_RSS = "cpu_peak_rss"

# the seed's older names for the accelerator memory figures
_LEGACY_TRAIN_INFO_KEYS = {
    "cuda_memory_max": ACCEL_MEM_MAX,
    "cuda_memory_reserved_avg": ACCEL_MEM_AVG,
    "cuda_memory_reserved_99th": ACCEL_MEM_99,
}


def empty_result() -> dict[str, Any]:
    """A result with every field present and unknown values as None."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_info": {
            "created_at": None,
            "total_time": None,
            "experiment_name": None,  # "<method>/<name>"
            "suite": None,  # folder of the suite, relative to the repository root when inside one
            "seed": None,
            "run_key": None,
            "run_key_inputs": None,
            "peft_branch": None,  # seed name: the git branch of this repository
            "git": None,  # {"commit", "branch", "dirty", "diff_sha256"}
            "command": None,
            "hostname": None,
            "train_config": None,
            "peft_config": None,  # None for full fine-tuning
            "error_msg": "",
            "traceback": None,
            "predictions": None,  # {"file": base name, "sha256": ...}
            "adapter_dir": None,
            "adapter_sha256": None,
            "resumed_from_step": None,
        },
        "train_info": {
            ACCEL_MEM_MAX: None,
            ACCEL_MEM_AVG: None,
            ACCEL_MEM_99: None,
            CPU_PEAK_RSS: None,
            "train_time": None,
            "eval_time": None,
            "test_time": None,
            "file_size": None,
            "num_trainable_params": None,
            "num_total_params": None,
            "status": None,
            "metrics": [],
        },
        "meta_info": {
            "model_info": None,  # {"id", "sha" or "local_sha256", "created_at"}
            "dataset_info": {},  # {"train": {...}, "eval": {...}, "forgetting": {...}}
            "package_info": {},
            "system_info": {},
            "pytorch_info": None,
            "peftbench_version": None,
            "code_sha256": None,
            "grader_version": None,
        },
    }


def normalize_result(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a result of any known schema version (the seed's included) to the current layout.

    Missing fields become None; legacy names are renamed; nothing is invented. Raises ValueError
    when the object is not a result at all."""
    if not isinstance(data, dict) or not all(k in data for k in ("run_info", "train_info")):
        raise ValueError("not a peftbench result: missing run_info/train_info")
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"unsupported schema_version {version!r} (this peftbench reads <= {SCHEMA_VERSION})")
    out = empty_result()
    for section in ("run_info", "train_info", "meta_info"):
        src = data.get(section) or {}
        if not isinstance(src, dict):
            raise ValueError(f"{section} is not an object")
        for key, value in src.items():
            key = _LEGACY_TRAIN_INFO_KEYS.get(key, key) if section == "train_info" else key
            out[section][key] = copy.deepcopy(value)
    status = out["train_info"].get("status")
    if status == "canceled":  # American spelling in older files
        out["train_info"]["status"] = Status.CANCELLED.value
    out["schema_version"] = SCHEMA_VERSION
    out["source_schema_version"] = version
    return out


def final_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The last metrics entry holding the test accuracy, or {} when the run has none."""
    for entry in reversed(result["train_info"].get("metrics") or []):
        if M_TEST_ACC in entry:
            return entry
    return {}


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return normalize_result(json.load(f))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that readers see either the old content or the new, never a truncated one:
    write to a temporary file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); results are shared files, so give them the
        # permissions an ordinary write would: 0666 less the umask.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Predictions: `<result base>.predictions.jsonl.gz`, one JSON object per evaluated item.
PREDICTIONS_SUFFIX = ".predictions.jsonl.gz"


def predictions_path_for(result_path: str | os.PathLike) -> Path:
    result_path = Path(result_path)
    base = result_path.name[: -len(".json")] if result_path.name.endswith(".json") else result_path.name
    return result_path.with_name(base + PREDICTIONS_SUFFIX)


def named_predictions_path(result_path: str | os.PathLike, run_info: dict[str, Any]) -> Path | None:
    """The predictions file a result names in run_info["predictions"]["file"], beside the result
    (only the base name counts, so a record cannot point outside the result's folder); None when
    the result names none."""
    info = run_info.get("predictions")
    if isinstance(info, dict) and isinstance(info.get("file"), str) and info["file"]:
        return Path(result_path).with_name(Path(info["file"]).name)
    return None


def write_predictions(path: str | os.PathLike, rows: list[dict[str, Any]]) -> str:
    """Write prediction rows atomically as gzipped JSON lines; return the file's sha256.

    mtime=0 in the gzip header keeps the bytes (and the hash) identical for identical rows."""
    import io

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False, sort_keys=True, default=_json_default) + "\n").encode())
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# Fields of one predictions row (documented here, written by the runner, read by rescore/diff):
#   split                "valid" (the last validation pass) or "test"
#   index                position of the item in its split (int)
#   item_id              sha256 of the question text, first 16 hex digits: stable across runs
#   question             the raw question
#   prompt               the exact prompt given to the model
#   generated            the generated text (prompt excluded)
#   reference            the reference answer text (GSM8K answer with "#### N")
#   extracted            answer extracted in strict mode (None when no marker)
#   extracted_flexible   answer extracted in flexible mode (falls back to the last number)
#   correct_strict       bool
#   correct_flexible     bool
#   num_generated_tokens int
PREDICTION_FIELDS = (
    "split", "index", "item_id", "question", "prompt", "generated", "reference",
    "extracted", "extracted_flexible", "correct_strict", "correct_flexible", "num_generated_tokens",
)


def item_id(question: str) -> str:
    """Stable id of an evaluation item: the same question gives the same id in every run."""
    return hashlib.sha256(question.strip().encode("utf-8")).hexdigest()[:16]
