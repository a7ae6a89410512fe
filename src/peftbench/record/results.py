"""The result file: one schema shared by the code that writes results and the code that reads them.

A result is a JSON object with the seed's three sections, plus `schema_version`:

    {
      "schema_version": 2,
      "run_info":   who/what/when: experiment, train and PEFT config, git state, run key, error
      "train_info": what happened: status, times, memory, sizes, parameter counts, metrics list
      "meta_info":  what it ran on: model and dataset identities, package versions, system
    }

The TypedDicts below (`Result`, `RunInfo`, `TrainInfo`, `MetaInfo`, `MetricsEntry`) declare every
key once, with what it means, as lm-evaluation-harness's `result_schema.py` does. Code that reads
or writes a key uses the constant of the same name (`RI_*` run_info, `TI_*` train_info, `MI_*`
meta_info, `M_*` metrics entries), never the string; a test checks constants and TypedDicts agree.

Every reader goes through `load(path)`: it raises one error type, `ResultError` (a UserError naming
the file and the reason), for a file that cannot be read, is not JSON (truncated), is nested too
deeply, is not a result, has a newer `schema_version` than this code knows, or holds an accuracy
that is not a finite number in [0, 1]. Files of the seed's schema (no `schema_version`,
`cuda_memory_*` instead of `accelerator_memory_*`, no flexible accuracy) are brought to the
current layout by `normalize_result`, which fills what is missing with None, never with a made-up
number.

Version 2 added the task (`run_info.task`, peftbench.tasks) and the per-test-set figures of the
final metrics entry ("test sets"). Version 1 files (this project's earlier results and the
reference study's) were all MetaMathQA -> GSM8K runs and load as task `metamathqa`.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import math
import os
from enum import Enum
from pathlib import Path
from typing import Any, TypedDict

from peftbench.errors import ResultError
from peftbench.fs import atomic_write_bytes, json_default, sha256_file

SCHEMA_VERSION = 2
# the task of every result written before tasks existed (schema version 1 and the seed's files)
LEGACY_TASK = {"name": "metamathqa", "version": None}


class Status(str, Enum):
    SUCCESS = "success"
    CANCELLED = "cancelled"
    FAILED = "failed"
    RUNNING = "running"  # only in checkpoints, never in a finished result file


# ---------------------------------------------------------------------------------------------
# Keys

# top level
SCHEMA = "schema_version"
RUN_INFO = "run_info"
TRAIN_INFO = "train_info"
META_INFO = "meta_info"
SECTIONS = (RUN_INFO, TRAIN_INFO, META_INFO)

# run_info
RI_CREATED_AT = "created_at"
RI_TOTAL_TIME = "total_time"
RI_EXPERIMENT_NAME = "experiment_name"
RI_SUITE = "suite"
RI_SEED = "seed"
RI_RUN_KEY = "run_key"
RI_RUN_KEY_INPUTS = "run_key_inputs"
RI_PEFT_BRANCH = "peft_branch"
RI_GIT = "git"
RI_COMMAND = "command"
RI_HOSTNAME = "hostname"
RI_TRAIN_CONFIG = "train_config"
RI_PEFT_CONFIG = "peft_config"
RI_ERROR_MSG = "error_msg"
RI_TRACEBACK = "traceback"
RI_PREDICTIONS = "predictions"
RI_ADAPTER_DIR = "adapter_dir"
RI_ADAPTER_SHA256 = "adapter_sha256"
RI_RESUMED_FROM_STEP = "resumed_from_step"
RI_TRACKERS = "trackers"
RI_TASK = "task"
RI_OVERRIDES = "overrides"

# train_info. Memory on an accelerator: reserved memory over training steps, bytes. On CPU: the
# process's peak resident set size, bytes. The names say which one was measured.
ACCEL_MEM_MAX = "accelerator_memory_max"
ACCEL_MEM_AVG = "accelerator_memory_reserved_avg"
ACCEL_MEM_99 = "accelerator_memory_reserved_99th"
CPU_PEAK_RSS = "cpu_peak_rss"
TI_TRAIN_TIME = "train_time"
TI_EVAL_TIME = "eval_time"
TI_TEST_TIME = "test_time"
TI_FORGETTING_TIME = "forgetting_time"
TI_EVAL_ENGINE_USED = "eval_engine_used"
TI_FILE_SIZE = "file_size"
TI_NUM_TRAINABLE_PARAMS = "num_trainable_params"
TI_NUM_TOTAL_PARAMS = "num_total_params"
TI_STATUS = "status"
TI_METRICS = "metrics"

# meta_info
MI_MODEL_INFO = "model_info"
MI_DATASET_INFO = "dataset_info"
MI_PACKAGE_INFO = "package_info"
MI_SYSTEM_INFO = "system_info"
MI_PYTORCH_INFO = "pytorch_info"
MI_PEFTBENCH_VERSION = "peftbench_version"
MI_CODE_SHA256 = "code_sha256"
MI_GRADER_VERSION = "grader_version"

# Keys of the entries of train_info["metrics"]. The seed's spellings are kept (with spaces) so
# that published results and ours read the same way.
M_STEP = "step"
M_VALID_ACC = "valid accuracy"
M_VALID_ACC_FLEX = "valid accuracy flexible"
# mean per-token cross-entropy (nats) of prompt + reference answer over the validation rows
M_VALID_LOSS = "valid loss"
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
# final entry: {set name: {"n": items, "test accuracy": ..., "test accuracy <grade>": ...}}
M_TEST_SETS = "test sets"
SET_N = "n"

# Accuracies are fractions of items answered correctly: `load` refuses anything else, since one
# value of 5.0 would otherwise reach the interval arithmetic (math domain error) of compare.
# A task's other grades add keys after these prefixes ("test accuracy flexible").
ACCURACY_KEYS = (M_VALID_ACC, M_VALID_ACC_FLEX, M_TEST_ACC, M_TEST_ACC_FLEX)
ACCURACY_PREFIXES = (M_VALID_ACC, M_TEST_ACC)

# the seed's older names for the accelerator memory figures
_LEGACY_TRAIN_INFO_KEYS = {
    "cuda_memory_max": ACCEL_MEM_MAX,
    "cuda_memory_reserved_avg": ACCEL_MEM_AVG,
    "cuda_memory_reserved_99th": ACCEL_MEM_99,
}


# ---------------------------------------------------------------------------------------------
# Schema. A value that was not measured is None (JSON null).


class RunInfo(TypedDict):
    created_at: str | None  # UTC start of the run, ISO 8601
    total_time: float | None  # seconds from start to the written result, evaluation included
    experiment_name: str | None  # "<method>/<name>", the experiment folder below experiments/
    suite: str | None  # folder of the suite, relative to the repository root when inside one
    seed: int | None  # the training seed
    run_key: str | None  # sha256 of run_key_inputs: equal keys mean the same run
    run_key_inputs: dict[str, Any] | None  # everything that decides the numbers (record/runkey.py)
    peft_branch: str | None  # seed name: the git branch of this repository
    git: dict[str, Any] | None  # {"commit", "branch", "dirty", "diff_sha256"}
    command: str | None  # the command line that made the run
    hostname: str | None  # machine the run ran on
    train_config: dict[str, Any] | None  # the resolved training parameters (TrainConfig.to_dict)
    peft_config: dict[str, Any] | None  # PEFT's adapter config as PEFT writes it; None: full fine-tuning
    error_msg: str  # "<ExceptionType>: <message>" of a failed or cancelled run, else ""
    traceback: str | None  # the traceback of a failed run
    predictions: dict[str, Any] | None  # {"file": base name beside the result, "sha256": ...}
    adapter_dir: str | None  # where the trained adapter was saved (None when deleted)
    adapter_sha256: str | None  # sha256 of adapter_model.safetensors
    resumed_from_step: int | None  # the checkpoint step the run resumed from, None: from scratch
    trackers: dict[str, Any] | None  # report_to: {name: {"run_id", "location", "failed", "error"}}; None: none
    task: dict[str, Any] | None  # {"name", "version"} of the task (peftbench.tasks); version-1 files: metamathqa
    overrides: dict[str, Any] | None  # --set overrides that changed the config ({"max_steps": 2}); {}: none


# train_info keys are spelled with the seed's names, some not identifiers: functional syntax.
TrainInfo = TypedDict("TrainInfo", {
    ACCEL_MEM_MAX: "int | None",  # bytes, maximum reserved accelerator memory
    ACCEL_MEM_AVG: "float | None",  # bytes, reserved accelerator memory averaged over steps
    ACCEL_MEM_99: "float | None",  # bytes, 99th percentile of reserved accelerator memory
    CPU_PEAK_RSS: "int | None",  # bytes, peak resident set size of a CPU run
    TI_TRAIN_TIME: "float | None",  # seconds spent in training steps
    TI_EVAL_TIME: "float | None",  # seconds spent in validation passes
    TI_TEST_TIME: "float | None",  # seconds spent on the test split
    TI_FORGETTING_TIME: "float | None",  # seconds spent on the forgetting measure (before and after); None: not measured
    TI_EVAL_ENGINE_USED: "str | None",  # evaluation engine that ran: dynamic or static (TrainConfig.eval_engine)
    TI_FILE_SIZE: "int | None",  # bytes of the saved adapter (or model); 0 when nothing was trained
    TI_NUM_TRAINABLE_PARAMS: "int | None",  # parameters with requires_grad
    TI_NUM_TOTAL_PARAMS: "int | None",  # all parameters of the (PEFT) model
    TI_STATUS: "str | None",  # Status value: success, cancelled or failed
    TI_METRICS: "list[MetricsEntry]",  # one entry per evaluation, then the final entry
})

MetricsEntry = TypedDict("MetricsEntry", {
    M_STEP: "int",  # training step of this evaluation
    M_VALID_ACC: "float | None",  # fraction of validation items correct, strict answer format
    M_VALID_ACC_FLEX: "float | None",  # the same, flexible answer extraction
    M_VALID_LOSS: "float | None",  # mean per-token cross-entropy of prompt + reference answer
    M_TEST_ACC: "float | None",  # final entry: fraction of test items correct, strict
    M_TEST_ACC_FLEX: "float | None",  # final entry: the same, flexible
    M_TRAIN_LOSS: "float | None",  # mean training loss since the previous entry
    M_TRAIN_SAMPLES: "int",  # training samples seen so far
    M_TRAIN_TIME: "float",  # seconds of training since the previous entry
    M_EVAL_TIME: "float",  # seconds of this evaluation
    M_TOKENS_PER_SEC: "float | None",  # training throughput since the previous entry
    M_MEM_ALLOC_AVG: "float | None",  # bytes, allocated accelerator memory averaged over steps
    M_MEM_RESERVED_AVG: "float | None",  # bytes, reserved accelerator memory averaged over steps
    M_CPU_RSS: "int | None",  # bytes, resident set size of a CPU run
    M_ELAPSED: "float",  # seconds since the run started
    M_TRAIN_TOTAL_TOKENS: "int",  # final entry: tokens trained on
    M_FORGETTING: "float | None",  # final entry: forgetting measure (lower is better), None: skipped
    M_TEST_SETS: "dict[str, dict[str, Any]]",  # final entry: per test set, its item count and accuracies
}, total=False)


class MetaInfo(TypedDict):
    model_info: dict[str, Any] | None  # {"id", "sha" or "local_sha256", "created_at"}
    dataset_info: dict[str, Any]  # {"train": {...}, "eval": {...}, "forgetting": {...}}
    package_info: dict[str, Any]  # versions, and the commit of packages installed from git
    system_info: dict[str, Any]  # accelerator, driver, CPU
    pytorch_info: Any  # torch build information
    peftbench_version: str | None  # version of this package
    code_sha256: str | None  # hash of the training code (record/runkey.py)
    grader_version: str | None  # scoring.grader.GRADER_VERSION that graded the predictions


Result = TypedDict("Result", {
    SCHEMA: int,  # SCHEMA_VERSION of the code that wrote the file (0: the seed's files)
    RUN_INFO: RunInfo,
    TRAIN_INFO: TrainInfo,
    META_INFO: MetaInfo,
    "source_schema_version": int,  # only in memory, set by `load`: the file's own schema_version
}, total=False)


def empty_result() -> Result:
    """A result with every field present and unknown values as None."""
    return {
        SCHEMA: SCHEMA_VERSION,
        RUN_INFO: {key: ("" if key == RI_ERROR_MSG else None) for key in RunInfo.__annotations__},
        TRAIN_INFO: {**{key: None for key in TrainInfo.__annotations__}, TI_METRICS: []},
        META_INFO: {**{key: None for key in MetaInfo.__annotations__},
                    MI_DATASET_INFO: {}, MI_PACKAGE_INFO: {}, MI_SYSTEM_INFO: {}},
    }


def normalize_result(data: Any) -> Result:
    """Bring a result of any known schema version (the seed's included) to the current layout.

    Missing fields become None; legacy names are renamed; nothing is invented. Raises ValueError
    when the object is not a result at all or is of a newer schema than this code reads."""
    if not isinstance(data, dict) or not all(k in data for k in (RUN_INFO, TRAIN_INFO)):
        raise ValueError(f"not a peftbench result: missing {RUN_INFO}/{TRAIN_INFO}")
    version = data.get(SCHEMA, 0)
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        raise ValueError(f"unsupported {SCHEMA} {version!r} (this peftbench reads <= {SCHEMA_VERSION})")
    out = empty_result()
    for section in SECTIONS:
        src = data.get(section)
        src = {} if src is None else src  # null: a section the writer did not fill
        if not isinstance(src, dict):
            raise ValueError(f"{section} is not an object")
        for key, value in src.items():
            key = _LEGACY_TRAIN_INFO_KEYS.get(key, key) if section == TRAIN_INFO else key
            out[section][key] = copy.deepcopy(value)
    if version < 2 and not isinstance(out[RUN_INFO].get(RI_TASK), dict):
        out[RUN_INFO][RI_TASK] = dict(LEGACY_TASK)
    status = out[TRAIN_INFO].get(TI_STATUS)
    if status == "canceled":  # American spelling in older files
        out[TRAIN_INFO][TI_STATUS] = Status.CANCELLED.value
    out[SCHEMA] = SCHEMA_VERSION
    out["source_schema_version"] = version
    return out


def check_accuracies(result: Result) -> None:
    """ValueError unless every accuracy of every metrics entry (per test set too) is None or a
    finite number in [0, 1]."""
    metrics = result[TRAIN_INFO].get(TI_METRICS)
    for entry in metrics if isinstance(metrics, list) else []:
        if not isinstance(entry, dict):
            continue  # not a metrics entry at all; readers skip such entries
        sets = entry.get(M_TEST_SETS)
        for figures in [entry] + (list(sets.values()) if isinstance(sets, dict) else []):
            for key, value in figures.items() if isinstance(figures, dict) else ():
                if not isinstance(key, str) or not key.startswith(ACCURACY_PREFIXES) or value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or not 0 <= value <= 1:
                    raise ValueError(f"{key} {value!r} is not a fraction in [0, 1]")


def load_raw(path: str | os.PathLike) -> tuple[dict[str, Any], Result]:
    """(the file's JSON object as written, its normalised result), checked as `load` checks.
    For commands that write a result back (rescore) and must keep what they do not know."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ResultError(path, "no such file") from None
    except IsADirectoryError:
        raise ResultError(path, "is a folder") from None
    except OSError as exc:
        raise ResultError(path, f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ResultError(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        raw = json.loads(text)
        result = normalize_result(raw)
        check_accuracies(result)
    except json.JSONDecodeError as exc:
        raise ResultError(path, f"not valid JSON (truncated?): {exc}") from None
    except RecursionError:
        # json.loads and deepcopy recurse once per level: a hostile file of 100,000 brackets
        raise ResultError(path, "JSON nested too deeply") from None
    except ValueError as exc:
        raise ResultError(path, str(exc)) from None
    return raw, result


def load(path: str | os.PathLike) -> Result:
    """The result in `path`, normalised to the current schema. Raises ResultError (naming the file
    and the reason) for anything that is not a readable result of a schema this code knows."""
    return load_raw(path)[1]


def final_metrics(result: Result) -> dict[str, Any]:
    """The last metrics entry holding the test accuracy, or {} when the run has none."""
    for entry in reversed(result[TRAIN_INFO].get(TI_METRICS) or []):
        if isinstance(entry, dict) and M_TEST_ACC in entry:
            return entry
    return {}


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


def predictions_changed(result_path: str | os.PathLike, run_info: dict[str, Any]) -> str | None:
    """Why the predictions file a result names is not the one its run wrote (its sha256 differs
    from the recorded one), in words; None when it is, or when there is no file or no digest to
    compare. Every command that reads predictions to judge a run (rescore, diff) says so."""
    path = named_predictions_path(result_path, run_info)
    expected = (run_info.get(RI_PREDICTIONS) or {}).get("sha256")
    if path is None or not expected or not path.is_file() or sha256_file(path) == expected:
        return None
    return (f"{path}: sha256 differs from the one recorded in {Path(result_path).name}; "
            "the file changed after the run")


def write_predictions(path: str | os.PathLike, rows: list[dict[str, Any]]) -> str:
    """Write prediction rows atomically as gzipped JSON lines; return the file's sha256.

    mtime=0 in the gzip header keeps the bytes (and the hash) identical for identical rows."""
    import io

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False, sort_keys=True, default=json_default) + "\n").encode())
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
#   test_set             test rows: the task's test set the item belongs to (e.g. "gsm8k", "boolq")
#   correct_<grade>      bool per grade of the task (peftbench.tasks), the headline first:
#                        GSM8K correct_strict and correct_flexible, commonsense correct_answer
#   num_generated_tokens int
# and the task's own fields: GSM8K extracted (strict answer, None when no marker) and
# extracted_flexible (falls back to the last number); commonsense extracted, set and set_index.
PREDICTION_FIELDS = (
    "split", "index", "item_id", "question", "prompt", "generated", "reference", "num_generated_tokens",
)


def item_id(key: str) -> str:
    """Stable id of an evaluation item from its task's item key (the question for GSM8K): the
    same item gives the same id in every run."""
    return hashlib.sha256(key.strip().encode("utf-8")).hexdigest()[:16]


def task_name(result: Result) -> str:
    """The task a (normalised) result was run on."""
    task = result[RUN_INFO].get(RI_TASK)
    name = task.get("name") if isinstance(task, dict) else None
    return name if isinstance(name, str) and name else LEGACY_TASK["name"]
