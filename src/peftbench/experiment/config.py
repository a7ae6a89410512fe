"""TrainConfig: the one typed configuration of a run, and how an experiment folder becomes one.

Merge order (later wins): the dataclass defaults (the reference study's values), the suite's
`default_training_params.json`, the experiment's `training_params.json` (or its older name
`training_parameters.json`), then `--set key=value` overrides from the command line.
Validation collects every problem and raises one `ConfigError` listing them all.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints
import types as _types

from peftbench import tasks
from peftbench.errors import ConfigError, UserError, suggest
from peftbench.experiment import limits
from peftbench.experiment.suite import name_problems
from peftbench.record.layout import ADAPTER_CONFIG_FILE, DEFAULTS_FILE, EXPERIMENTS_DIR, TRAINING_PARAMS_FILES
from peftbench.record.runkey import NUMBER_NEUTRAL_FIELDS

DTYPES = ("float32", "float16", "bfloat16", "int8", "int4")
LR_SCHEDULERS = (None, "cosine", "constant")
# Experiment trackers, named as transformers' TrainingArguments.report_to (training/trackers.py).
REPORT_TO_CHOICES = ("none", "tensorboard", "mlflow", "trackio", "wandb")
# Optimizers from peft.optimizers, selected by these names (value: the label a reader knows them
# by); any other name is a torch.optim class. The one list: training.methods builds them,
# analysis.families labels them.
PEFT_OPTIMIZERS = {"lora+": "LoRA+", "lora-fa": "LoRA-FA", "riemannian": "Riemannian"}
# "dynamic": a batch that refills as rows finish, stopped at the grader's cut points
# (training.generation); "static": the reference study's fixed batches in item order.
EVAL_ENGINES = ("dynamic", "static")


@dataclass
class TrainConfig:
    """Everything about a run except the PEFT method. Defaults are the reference study's."""

    model_id: str = "meta-llama/Llama-3.2-3B"
    model_revision: str | None = None
    dtype: str = "bfloat16"
    max_seq_length: int = 768
    batch_size: int = 4
    batch_size_eval: int = 50
    max_steps: int = 5000  # 0: evaluate the untrained model only
    eval_steps: int = 250
    checkpoint_steps: int | None = None  # None: checkpoint at every evaluation
    compile: bool = False
    use_gc: bool = False
    seed: int = 0
    grad_norm_clip: float | None = 1.0
    optimizer_type: str = "AdamW"
    optimizer_kwargs: dict = field(default_factory=lambda: {"lr": 1e-4, "weight_decay": 0.1})
    lr_scheduler: str | None = "cosine"
    warmup_ratio: float = 0.1
    use_amp: bool = False
    autocast_adapter_dtype: bool = True
    attn_implementation: str | None = None
    # transformers refuses max_length together with max_new_tokens; the evaluator turns the
    # pair into one max_new_tokens per batch: min(max_new_tokens, max_length - prompt length).
    generation_kwargs: dict = field(default_factory=lambda: {"max_length": 800, "max_new_tokens": 300})
    # The evaluation engine; the one each evaluation used is recorded as train_info eval_engine_used
    # (methods that "dynamic" cannot generate run "static").
    eval_engine: str = "dynamic"
    query_template: str = "Question: {query} Think step by step.\nAnswer:"
    init_kv_cache_prefix: str | None = None
    train_on_prompt: bool = True  # prompt tokens count in the loss, as in the reference results
    # The weight of the positions whose label is the EOS token in the training loss: a weighted
    # mean over the labelled positions, sum(w * ce) / sum(w), with w = eos_loss_weight at EOS labels
    # and 1 elsewhere (training/loss.py). 1.0 is the plain mean; 0 leaves the stop out of the loss.
    eos_loss_weight: float = 1.0
    train_dataset: str = "meta-math/MetaMathQA"
    eval_dataset: str = "openai/gsm8k"
    valid_size: int = 50
    test_size: int | None = None  # None: the whole test split
    # > 0: a tuning trial of `peftbench tune`: validate on this many rows of the eval dataset's
    # train split (drawn with their own seed, training.data.TUNE_SPLIT_SEED) and never generate
    # on the test split. 0: an ordinary run.
    tune_valid_size: int = 0
    # 1300 characters of query + " " + response keep ~94% of MetaMathQA and fit 768 tokens.
    char_limit: int = 1300
    # hub text dataset as "id:config" (split "test"), a local .txt/.jsonl file, or None to skip.
    forgetting_dataset: str | None = "Salesforce/wikitext:wikitext-2-raw-v1"
    forgetting_size: int = 50  # text chunks of up to max_seq_length tokens
    device: str = "auto"
    trust_remote_code: bool = False
    deterministic: bool = False  # deterministic algorithms on accelerators; AVX2-pinned kernels on a CPU (training/cpu_kernels.py)
    # "none", a tracker name, a list of them, or names separated by commas ("tensorboard,mlflow");
    # trackers do not change the numbers, so the run key leaves this out (record/runkey.py)
    report_to: str | list = "none"
    # What the run learns and is tested on (peftbench.tasks): its data sources, prompt template
    # and generation budget are the defaults of train_dataset, eval_dataset, query_template and
    # generation_kwargs, which a suite or experiment may still set.
    task: str = tasks.DEFAULT_TASK
    # Tasks graded by running the model's code (code): how many sandboxes grade at once (null:
    # the CPUs peftbench may use), and whether a machine without network isolation may still
    # grade (the result records the isolation used). Neither changes a grade.
    grading_workers: int | None = None
    allow_weak_sandbox: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def effective_checkpoint_steps(self) -> int:
        return self.checkpoint_steps or self.eval_steps


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}


@functools.cache
def _allowed_types(name: str) -> tuple[type, ...]:
    """The Python types a field accepts, from its annotation (e.g. `int | None` -> (int, NoneType))."""
    annotation = get_type_hints(TrainConfig)[name]  # resolves the string annotations of __future__
    if get_origin(annotation) in (Union, _types.UnionType):
        return tuple(get_args(annotation))
    return (annotation,)


def _type_problem(name: str, value: Any) -> str | None:
    allowed = _allowed_types(name)
    if value is None:
        return None if type(None) in allowed else f"{name}: must not be null"
    # bool is an int in Python; keep them apart so "max_steps": true is an error
    if isinstance(value, bool):
        return None if bool in allowed else f"{name}: expected {_type_names(allowed)}, got {value!r}"
    if isinstance(value, int) and float in allowed and int not in allowed:
        return None
    if any(isinstance(value, t) for t in allowed if t is not type(None)):
        return None
    return f"{name}: expected {_type_names(allowed)}, got {value!r}"


def _type_names(allowed) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in allowed)


def build_train_config(layers: list[tuple[str, dict[str, Any]]]) -> TrainConfig:
    """Merge layers of (source name, mapping) over the defaults and validate the result.

    Every problem of every layer is collected before raising, each naming its source."""
    problems: list[str] = []
    merged: dict[str, Any] = {}
    for source, mapping in layers:
        if not isinstance(mapping, dict):
            problems.append(f"{source}: expected a JSON object, got {type(mapping).__name__}")
            continue
        for key, value in mapping.items():
            if key not in FIELDS:
                problems.append(f"{source}: unknown key {key!r};{suggest(key, FIELDS)}")
                continue
            problem = _type_problem(key, value)
            if problem:
                problems.append(f"{source}: {problem}")
                continue
            if isinstance(value, int) and not isinstance(value, bool) and float in _allowed_types(key):
                value = float(value) if int not in _allowed_types(key) else value
            merged[key] = value
    if problems:
        raise ConfigError(problems, "training parameters")
    task = merged.get("task", tasks.DEFAULT_TASK)
    try:
        task_defaults = tasks.get(task).defaults
    except UserError as exc:
        raise ConfigError([str(exc)], "training parameters") from None
    cfg = TrainConfig(**{**task_defaults, **merged})
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems, "training parameters")
    return cfg


def validate(cfg: TrainConfig) -> list[str]:
    """Semantic checks on a typed config. Returns the problems; empty means valid."""
    p: list[str] = []
    if cfg.dtype not in DTYPES:
        p.append(f"dtype: {cfg.dtype!r} is not one of {', '.join(DTYPES)};{suggest(cfg.dtype, DTYPES)}")
    for name in ("max_seq_length", "batch_size", "batch_size_eval", "eval_steps", "char_limit"):
        if getattr(cfg, name) < 1:
            p.append(f"{name}: must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_steps < 0:
        p.append(f"max_steps: must be >= 0 (0 evaluates the untrained model), got {cfg.max_steps}")
    if cfg.max_steps > 0 and cfg.eval_steps > cfg.max_steps:
        p.append(f"eval_steps: {cfg.eval_steps} is larger than max_steps {cfg.max_steps}; no validation would run")
    if cfg.checkpoint_steps is not None and cfg.checkpoint_steps < 1:
        p.append(f"checkpoint_steps: must be >= 1 or null, got {cfg.checkpoint_steps}")
    if cfg.valid_size < 0:
        p.append(f"valid_size: must be >= 0, got {cfg.valid_size}")
    if cfg.tune_valid_size < 0:
        p.append(f"tune_valid_size: must be >= 0 (0: an ordinary run), got {cfg.tune_valid_size}")
    if cfg.test_size is not None and cfg.test_size < 1:
        p.append(f"test_size: must be >= 1 or null (the whole test split), got {cfg.test_size}")
    if cfg.forgetting_size < 1:
        p.append(f"forgetting_size: must be >= 1, got {cfg.forgetting_size}")
    if cfg.grad_norm_clip is not None and cfg.grad_norm_clip <= 0:
        p.append(f"grad_norm_clip: must be > 0 or null, got {cfg.grad_norm_clip}")
    if not 0 <= cfg.warmup_ratio < 1:
        p.append(f"warmup_ratio: must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.eos_loss_weight < 0:  # NaN and infinity: limits.non_finite
        p.append(f"eos_loss_weight: must be >= 0 (0 leaves the EOS token out of the loss), got {cfg.eos_loss_weight}")
    p.extend(_report_to_problems(cfg.report_to))
    p.extend(limits.problems(cfg))
    if cfg.lr_scheduler not in LR_SCHEDULERS:
        p.append(f"lr_scheduler: {cfg.lr_scheduler!r} is not one of null, 'cosine', 'constant'")
    p.extend(_template_problems(cfg.query_template))
    p.extend(_optimizer_problems(cfg))
    p.extend(_generation_problems(cfg.generation_kwargs))
    if cfg.grading_workers is not None and not 1 <= cfg.grading_workers <= 1024:
        p.append(f"grading_workers: must be 1..1024 or null (the CPUs peftbench may use), got {cfg.grading_workers}")
    if cfg.task not in tasks.names():
        p.append(f"task: unknown task {cfg.task!r};{suggest(cfg.task, tasks.names())}")
    if cfg.eval_engine not in EVAL_ENGINES:
        p.append(f"eval_engine: {cfg.eval_engine!r} is not one of {', '.join(EVAL_ENGINES)};{suggest(cfg.eval_engine, EVAL_ENGINES)}")
    if cfg.device != "auto" and cfg.device.split(":")[0] not in ("cpu", "cuda", "xpu", "mps"):
        p.append(f"device: {cfg.device!r} is not auto, cpu, cuda[:N], xpu[:N] or mps")
    if cfg.dtype in ("int8", "int4") and cfg.device.split(":")[0] not in ("auto", "cuda"):
        p.append(f"dtype: {cfg.dtype} needs bitsandbytes on a CUDA device, but device is {cfg.device!r}")
    p.extend(source_problems(cfg))
    return p


def source_problems(cfg: TrainConfig) -> list[str]:
    """The checks of `validate` that look at the file system (local data paths), apart so that
    a plan whose other checks are cached (experiment/plan_cache.py) still runs them every time."""
    p: list[str] = []
    for name in ("train_dataset", "eval_dataset", "forgetting_dataset"):
        p.extend(_dataset_problems(name, getattr(cfg, name)))
    if not p and cfg.task in tasks.names():
        task = tasks.get(cfg.task)
        for name in ("train_dataset", "eval_dataset"):
            p.extend(task.source_problems(name, getattr(cfg, name), tuning=cfg.tune_valid_size > 0))
    return p


def _report_to_problems(report_to: str | list) -> list[str]:
    names = report_to.split(",") if isinstance(report_to, str) else report_to
    bad = [n for n in names if not isinstance(n, str) or n.strip() not in REPORT_TO_CHOICES]
    return [f"report_to: unknown tracker {n!r};{suggest(str(n), REPORT_TO_CHOICES)}" for n in bad]


def _template_problems(template: str) -> list[str]:
    """Only a bare `{query}` may appear in braces (`{{` and `}}` are literal braces).

    str.format evaluates attribute and index lookups (`{query.__class__.__mro__}`) and format
    specs (`{query:>1000000000}` pads every prompt to a gigabyte), so each field is checked as
    string.Formatter parses it instead of trying the template on a sample string."""
    import string

    try:
        fields = [(name, conv, spec) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:  # a lone "{" or "}"
        return [f"query_template: {template!r} cannot be formatted ({exc}); write {{{{ and }}}} for literal braces"]
    bad = [_field_text(*f) for f in fields if f != ("query", None, "")]
    if bad:
        return [f"query_template: {template!r} has {', '.join(map(repr, bad))}; only a bare {{query}} may appear "
                f"in braces (write {{{{ and }}}} for literal braces)"]
    if not fields:
        return [f"query_template: {template!r} has no {{query}} placeholder"]
    return []


def _field_text(name: str, conversion: str | None, spec: str) -> str:
    return "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"


def _optimizer_problems(cfg: TrainConfig) -> list[str]:
    name = cfg.optimizer_type
    if name in PEFT_OPTIMIZERS:
        return []
    import torch.optim  # deferred: importing torch costs seconds

    classes = {n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
               and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n != "Optimizer"}
    if name not in classes:
        return [f"optimizer_type: unknown optimizer {name!r};{suggest(name, classes | set(PEFT_OPTIMIZERS))}"]
    if name in UNSUITABLE_OPTIMIZERS:
        return [f"optimizer_type: {name!r} cannot train here: {UNSUITABLE_OPTIMIZERS[name]}"]
    lr = cfg.optimizer_kwargs.get("lr")
    if "lr" in cfg.optimizer_kwargs and (not isinstance(lr, (int, float)) or isinstance(lr, bool)):
        return [f"optimizer_kwargs.lr: expected a number, got {lr!r}"]
    if isinstance(lr, (int, float)) and lr <= 0:  # NaN and infinity: limits.non_finite
        return [f"optimizer_kwargs.lr: must be > 0, got {lr!r}"]
    # torch.optim raises TypeError for an unknown keyword only when the run builds the optimizer
    import inspect

    accepted = [n for n in inspect.signature(getattr(torch.optim, name)).parameters if n != "params"]
    unknown = [f"optimizer_kwargs: {name} has no option {k!r};{suggest(k, accepted)}"
               for k in cfg.optimizer_kwargs if k not in accepted]
    return unknown or _optimizer_value_problems(name, cfg.optimizer_kwargs)


# Options whose validity depends on the device the run uses: judged when the run builds the optimizer.
_DEVICE_OPTIMIZER_OPTIONS = ("fused", "foreach", "capturable", "differentiable")


def _optimizer_value_problems(name: str, kwargs: dict[str, Any]) -> list[str]:
    """The values torch.optim itself refuses (betas outside [0, 1), a negative weight_decay or
    eps, ...), found by building the optimizer over one scalar parameter: torch checks its
    values in the constructor, so its own rules apply, not a copy of them that could drift."""
    import torch

    probe = {k: v for k, v in kwargs.items() if k not in _DEVICE_OPTIMIZER_OPTIONS}
    try:
        getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(1))], **probe)
    except (ValueError, TypeError, IndexError, RuntimeError) as exc:
        # name the options the message is about ("Invalid beta parameter" -> betas), else all of them
        named = {k: v for k, v in probe.items() if k in str(exc) or k.rstrip("s") in str(exc)} or probe
        shown = ", ".join(f"{k}={v!r}" for k, v in named.items())
        return [f"optimizer_kwargs: {name} refuses {shown}: {exc}"]
    return []


# torch.optim classes the training loop cannot drive, with the reason.
UNSUITABLE_OPTIMIZERS = {
    "LBFGS": "its step() needs a closure that re-evaluates the loss, and the training loop calls step() without one",
    "SparseAdam": "it accepts only sparse gradients, and a causal LM's gradients are dense",
}


# The keys of generation_kwargs evaluation accepts. Evaluation is greedy by design (reproducible
# results), so only the budget and stop rules may change; anything else handed to generate()
# unchecked could change the decoding (num_beams, temperature) or its memory (num_beams=1000000
# took 20 GB and was killed). training/evaluate.py reads exactly these.
GENERATION_KEYS = ("max_length", "max_new_tokens", "stop_strings")


def _generation_problems(kwargs: dict) -> list[str]:
    p = []
    for key in kwargs:
        if key == "do_sample":
            continue  # false is what evaluation does anyway; true gets its own message below
        if key not in GENERATION_KEYS:
            p.append(f"generation_kwargs.{key}: not accepted; evaluation is greedy by design and takes only "
                     f"the budget and stop keys {', '.join(GENERATION_KEYS)}")
    for key in ("max_length", "max_new_tokens"):
        value = kwargs.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            p.append(f"generation_kwargs.{key}: must be a positive integer, got {value!r}")
        elif value is not None and value > limits.GENERATION_MAXIMA[key]:
            p.append(f"generation_kwargs.{key}: {value} cannot be meant; at most {limits.GENERATION_MAXIMA[key]:,} "
                     "(GSM8K answers take ~300 tokens)")
    stops = kwargs.get("stop_strings")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(x, str) and x for x in stops)):
        p.append(f"generation_kwargs.stop_strings: expected a list of non-empty strings, got {stops!r}")
    if kwargs.get("max_length") is None and kwargs.get("max_new_tokens") is None:
        p.append("generation_kwargs: needs max_new_tokens or max_length, or generation never stops")
    if kwargs.get("do_sample"):
        p.append("generation_kwargs.do_sample: evaluation is greedy so that results are reproducible; remove do_sample")
    return p


def is_local_source(source: str) -> bool:
    """A dataset/model field names a local path when it exists or looks like one.

    Hub ids are `owner/name`; a path that starts with '.', '/' or '~', or ends in a data file
    suffix, is treated as local, so that a typo in a local path is reported as a missing file
    instead of becoming a hub request that hangs."""
    if os.path.exists(os.path.expanduser(source)):
        return True
    return source.startswith((".", "/", "~")) or source.endswith((".json", ".jsonl", ".parquet", ".txt"))


def _dataset_problems(name: str, source: str | None) -> list[str]:
    if source is None:
        return [] if name == "forgetting_dataset" else [f"{name}: must name a dataset"]
    if source.startswith("demo:"):
        return []
    if is_local_source(source) and not os.path.exists(os.path.expanduser(source)):
        return [f"{name}: local path {source!r} does not exist"]
    return []


# ----------------------------------------------------------------------------------------------
# Experiments on disk


@dataclass
class Experiment:
    """An experiment folder resolved to its suite, names and configs."""

    path: Path  # experiments/<method>/<name>, absolute
    suite_dir: Path
    method: str
    name: str
    train_config: TrainConfig
    peft_config: Any  # peft.PeftConfig or None for full fine-tuning
    adapter_config: dict | None  # adapter_config.json as written on disk
    training_params: dict  # the experiment's own overrides as written on disk
    overrides: dict  # --set overrides, parsed
    # The --set overrides that make the resolved config differ from the one the committed files
    # give (the seed aside: a result's file name carries it; NUMBER_NEUTRAL_FIELDS aside). A run
    # with any is not reproducible from the tree, so its result never goes to results/.
    config_overrides: dict = field(default_factory=dict)

    @property
    def experiment_name(self) -> str:
        return f"{self.method}/{self.name}"

    @property
    def file_stem(self) -> str:
        return f"{self.method}--{self.name}"


def locate_experiment(path: str | os.PathLike) -> tuple[Path, Path, str, str]:
    """Check that `path` is `<suite>/experiments/<method>/<name>/`; return (path, suite, method, name)."""
    raw = str(path)
    p = Path(os.path.expanduser(raw))
    if not p.exists():
        raise UserError(f"experiment folder {raw!r} does not exist")
    if not p.is_dir():
        raise UserError(f"{raw!r} is a file; give the experiment folder that holds it (experiments/<method>/<name>/)")
    p = p.resolve()
    if p.parent.parent.name != EXPERIMENTS_DIR:
        raise UserError(
            f"{raw!r} is not an experiment folder: expected <suite>/experiments/<peft-method>/<name>/, "
            f"e.g. experiments/lora/llama-3.2-3B-rank32/"
        )
    suite = p.parent.parent.parent
    if not (suite / DEFAULTS_FILE).is_file():
        raise UserError(f"suite folder {str(suite)!r} has no {DEFAULTS_FILE}")
    return p, suite, p.parent.name, p.name


def suite_default_seed(suite: Path) -> int:
    """The seed a suite runs with unless told otherwise; result names carry other seeds."""
    defaults = read_json_file(Path(suite) / DEFAULTS_FILE)
    seed = defaults.get("seed", TrainConfig.seed) if isinstance(defaults, dict) else TrainConfig.seed
    return seed if isinstance(seed, int) else TrainConfig.seed


def read_json_file(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Parse `--set key=value` pairs, typed by the field: JSON where it parses (numbers, true,
    null, objects), else a plain string. `a.b=v` sets key b inside the dict field a."""
    out: dict[str, Any] = {}
    problems = []
    for pair in pairs or []:
        if "=" not in pair:
            problems.append(f"--set {pair!r}: expected key=value")
            continue
        key, text = pair.split("=", 1)
        key = key.strip()
        top, _, sub = key.partition(".")
        if top not in FIELDS:
            problems.append(f"--set {key}: unknown key {top!r};{suggest(top, FIELDS)}")
            continue
        value = _parse_value(text)
        allowed = _allowed_types(top)
        if str in allowed and value is not None and not sub and not isinstance(value, allowed):
            # a string field keeps the text as typed ("1e-3" stays a string there); a value of
            # another type the field takes (report_to's JSON list) stays what JSON made of it
            value = text
        if sub:
            if dict not in _allowed_types(top):
                problems.append(f"--set {key}: {top} is not a mapping")
                continue
            out.setdefault(top, {})[sub] = value
        else:
            out[top] = value
    if problems:
        raise ConfigError(problems, "--set overrides")
    return out


def _parse_value(text: str) -> Any:
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_experiment(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Experiment:
    """Resolve and validate an experiment folder. Raises UserError/ConfigError on bad input,
    before anything is loaded or written.

    The experiment file replaces whole top-level values, as in the reference study: an
    experiment with `"optimizer_kwargs": {"lr": 0.001}` trains without the default weight decay.
    `--set optimizer_kwargs.lr=0.001` changes one key inside a mapping instead."""
    exp_dir, suite, method, name = locate_experiment(path)
    defaults = read_json_file(suite / DEFAULTS_FILE)
    present = [f for f in TRAINING_PARAMS_FILES if (exp_dir / f).is_file()]
    if len(present) > 1:
        raise UserError(f"{exp_dir} holds both {present[0]} and {present[1]}; keep one of them")
    params = read_json_file(exp_dir / present[0]) if present else {}
    overrides = overrides or {}
    layers = [(str(suite / DEFAULTS_FILE), defaults), (str(exp_dir / present[0]) if present else "-", params)]
    if overrides:
        below: dict[str, Any] = {}
        for _, layer in layers:
            below.update(layer if isinstance(layer, dict) else {})
        layers.append(("--set", {k: _update_mapping(k, below, v) for k, v in overrides.items()}))
    problems: list[str] = name_problems(method, name)
    train_config = None
    try:
        train_config = build_train_config(layers)
    except ConfigError as exc:
        problems.extend(exc.problems)
    adapter_config, peft_config = None, None
    if (exp_dir / ADAPTER_CONFIG_FILE).exists():
        adapter_config = read_json_file(exp_dir / ADAPTER_CONFIG_FILE)
        try:
            peft_config = load_peft_config(exp_dir, adapter_config)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, f"experiment {method}/{name}")
    return Experiment(exp_dir, suite, method, name, train_config, peft_config, adapter_config,
                      params if isinstance(params, dict) else {}, overrides,
                      _config_overrides(layers[:2], overrides, train_config))


def _config_overrides(committed: list[tuple[str, Any]], overrides: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    """The entries of `overrides` whose field resolves to another value than the committed
    layers (suite defaults, experiment file) give with the same seed."""
    candidates = {k: v for k, v in overrides.items() if k != "seed" and k not in NUMBER_NEUTRAL_FIELDS}
    if not candidates:
        return {}
    seed = [("--seed", {"seed": overrides["seed"]})] if "seed" in overrides else []
    try:
        base = build_train_config([*committed, *seed]).to_dict()
    except ConfigError:
        return candidates  # the committed files alone do not even load: every override counts
    resolved = cfg.to_dict()
    changed = {}
    for key, value in candidates.items():
        if isinstance(value, dict) and isinstance(base[key], dict):  # `--set a.b=v`: the keys b that changed
            value = {sub: v for sub, v in value.items() if sub not in base[key] or base[key][sub] != resolved[key][sub]}
        if base[key] != resolved[key] and value != {}:
            changed[key] = value
    return changed


def _update_mapping(key: str, below: dict[str, Any], value: Any) -> Any:
    """`--set a.b=v` arrives as {"a": {"b": v}}: update the mapping a from the layers below."""
    if not isinstance(value, dict):
        return value
    current = below.get(key, TrainConfig().to_dict()[key])
    return {**current, **value} if isinstance(current, dict) else value


def _peft_value_problems(config_cls, adapter_config: dict) -> list[str]:
    """Types of PEFT's plain scalar options and the range of a rank `r`: PEFT checks neither when
    it loads a config, so `"r": "four"` or `"r": -4` would fail only when the model is built.
    (Everything else PEFT checks when `run` builds the model on the meta device.)"""
    try:
        hints = get_type_hints(config_cls)
    except Exception:  # noqa: BLE001 - an annotation this Python cannot resolve: leave it to PEFT
        hints = {}
    p = []
    for key, value in adapter_config.items():
        allowed = _scalar_types(hints.get(key))
        if allowed is None or value is None:  # PEFT writes null for what it fills in from the model
            continue
        ok = (isinstance(value, bool) if bool in allowed else not isinstance(value, bool)) and (
            isinstance(value, tuple(t for t in allowed if t is not type(None)))
            or (float in allowed and isinstance(value, int) and not isinstance(value, bool)))
        if not ok:
            p.append(f"{key}: expected {_type_names(allowed)}, got {value!r}")
        else:
            p.extend(limits.non_finite(key, value))
    for key, what in _PEFT_SIZES.items():
        value = adapter_config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            p.append(f"{key}: {what} must be >= 1, got {value}")
    return p


# PEFT sizes that PEFT leaves unchecked (a negative one fails only when torch allocates it).
_PEFT_SIZES = {"r": "the rank", "num_virtual_tokens": "the number of virtual tokens"}


def _scalar_types(annotation) -> tuple[type, ...] | None:
    """(int, float), (float, NoneType) ... for an annotation of plain scalars; None for anything else.

    An `int` option also takes a float: PEFT annotates scaling factors such as lora_alpha as int
    but computes with whatever number it is given, and published configs hold floats there."""
    args = get_args(annotation) if get_origin(annotation) in (Union, _types.UnionType) else (annotation,)
    scalars = (int, float, bool, str, type(None))
    if not args or not all(a in scalars for a in args) or args == (type(None),):
        return None
    return tuple(args) + ((float,) if int in args and float not in args else ())


def load_peft_config(exp_dir: Path, adapter_config: Any):
    """Load adapter_config.json the way PEFT does, turning its errors into one clear message."""
    where = str(exp_dir / ADAPTER_CONFIG_FILE)
    if not isinstance(adapter_config, dict):
        raise ConfigError([f"{where}: expected a JSON object"], "PEFT config")
    from peft import PeftConfig
    from peft.utils import PeftType

    peft_type = adapter_config.get("peft_type")
    known = [t.value for t in PeftType]
    if peft_type not in known:
        raise ConfigError([f"{where}: peft_type {peft_type!r} is not a PEFT method;{suggest(str(peft_type), known)}"],
                          "PEFT config")
    # PEFT only warns about options it does not know (and then ignores them): a typo like "rank"
    # for "r" would silently train the default. Refuse them here instead.
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    known_fields = {f.name for f in dataclasses.fields(config_cls)} | {"peft_version", "auto_mapping"}
    unknown = [k for k in adapter_config if k not in known_fields]
    if unknown:
        raise ConfigError([f"{where}: unknown option {k!r} for {config_cls.__name__};{suggest(k, known_fields)}"
                           for k in unknown], "PEFT config")
    problems = _peft_value_problems(config_cls, adapter_config)
    if problems:
        raise ConfigError([f"{where}: {q}" for q in problems], "PEFT config")
    try:
        return PeftConfig.from_pretrained(str(exp_dir))
    except TypeError as exc:  # an unknown or misspelt option
        raise ConfigError([f"{where}: {exc}"], "PEFT config") from None
    except ValueError as exc:  # a value PEFT's __post_init__ rejects
        raise ConfigError([f"{where}: {exc}"], "PEFT config") from None
