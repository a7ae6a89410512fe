"""One experiment, end to end: set up, train, test, record.

`run_experiment` reads as a table of contents. Status is decided where it happens:
- success: every phase finished;
- cancelled: Ctrl+C (KeyboardInterrupt) or SIGTERM (turned into RunCancelled);
- failed: any other exception, out-of-memory included, with message and traceback.
Bad input found before training starts (a UserError) writes nothing and propagates, so the CLI
exits with status 2. Every other outcome writes exactly one result file (and its predictions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import os
import shutil
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peftbench import fs, tasks
from peftbench.errors import ExitCode, RunCancelled, UserError
from peftbench.experiment import planning
from peftbench.experiment import suite as S
from peftbench.experiment.config import Experiment
from peftbench.fs import sha256_file
from peftbench.record import hardware, provenance, runkey
from peftbench.record import lock as L
from peftbench.record import results as R
from peftbench.record.results import M_TRAIN_LOSS, Status
from peftbench.signals import interrupt_behind, sigterm_raises
from peftbench.terminal import printable
from peftbench.training import data, methods, modeling, trackers
from peftbench.training import checkpoint as C
from peftbench.training import loop as T
from peftbench.training.evaluate import evaluate_rows, qa_cross_entropy, text_cross_entropy
from peftbench.training.loop import RunClock
from peftbench.training.memory import memory_summary
from peftbench.training.output import check_writable, fallback_dirs, write_with_fallback
from peftbench.training.trackers import Trackers


@dataclass
class RunOptions:
    verbose: bool = False
    output_dir: str | None = None  # where the trained adapter goes; a temporary folder if None
    clean: bool = False  # delete the adapter folder after the run
    resume: bool = True  # continue from a checkpoint of the same run key
    keep_checkpoint: bool = False
    if_stale: bool = False  # skip (after taking the lock) when an up-to-date result exists
    progress: bool = True
    debug: bool = False  # a failed run prints the last lines of its traceback too
    log: Callable[[str], None] = field(default=lambda msg: print(printable(msg), file=sys.stderr, flush=True))


@dataclass
class RunOutcome:
    status: Status | None  # None: skipped
    result_path: Path | None
    message: str = ""
    exit_code: int = 0
    run_key: str | None = None  # None when the run stopped before computing it (lock held)
    error: str | None = None  # the recorded error_msg of a failed or cancelled run


EXIT_CODES = {Status.SUCCESS: ExitCode.OK, Status.FAILED: ExitCode.FAILED, Status.CANCELLED: ExitCode.CANCELLED}


class _NoBar:
    """Stand-in for a tqdm bar when progress bars are off."""

    def update(self, n=1):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def _bar(enabled: bool, total: int, desc: str):
    # A bar redrawn with carriage returns turns a log file into noise: only on a terminal.
    if not enabled or total == 0 or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, file=sys.stderr, leave=False)


@dataclass
class _Run:
    """The state of one run shared by its phases."""

    exp: Experiment
    opts: RunOptions
    result: dict[str, Any]
    clock: Any  # loop.RunClock: seconds since the run started, earlier interrupted attempts included
    stem: str
    default_seed: int
    device: str = "cpu"
    loaded: Any = None  # modeling.LoadedModel
    task: Any = None  # tasks.Task of the run's train_config.task
    splits: Any = None  # tasks.base.EvalData
    train_samples: list = field(default_factory=list)
    forgetting_texts: list = field(default_factory=list)
    state: Any = None  # loop.TrainState
    test_rows: list = field(default_factory=list)
    run_key: str | None = None
    run_key_inputs: dict | None = None
    training_started: bool = False
    git: Any = None  # provenance.GitState
    why_not_results: str | None = None  # why a success goes to temporary_results/ (suite.why_not_results)
    forgetting_before: float | None = None
    checkpoint_path: Path | None = None
    trackers: Trackers = field(default_factory=Trackers.none)  # report_to; started with training
    unwritten: str | None = None  # why the result is in a fallback folder (training/output.py)

    @property
    def to_results(self) -> bool:
        """A success of this run belongs in results/ (else temporary_results/)."""
        return self.why_not_results is None


def run_experiment(exp: Experiment, opts: RunOptions, default_seed: int = 0) -> RunOutcome:
    """Train, evaluate and record `exp`. Returns the outcome; raises UserError for bad input
    found before training starts (nothing written then)."""
    cfg = exp.train_config
    stem = S.result_stem(exp.method, exp.name, cfg.seed, default_seed)
    run = _Run(exp, opts, R.empty_result(), RunClock(), stem, default_seed, task=tasks.get(cfg.task))
    lock = L.ExperimentLock(S.state_dir(exp.suite_dir) / "locks" / f"{stem}.lock", log=opts.log)
    try:
        lock.acquire()
    except L.LockHeld as held:
        return RunOutcome(None, None, f"skipped: {held}", exit_code=ExitCode.OK)
    try:
        return _run_locked(run)
    finally:
        lock.release()


def _run_locked(run: _Run) -> RunOutcome:
    _record_static_info(run)
    _preflight(run)  # bad input -> UserError, nothing written
    if run.opts.if_stale:
        # Checked after taking the lock: another process may have finished this run meanwhile.
        up_to_date = planning.find_up_to_date(run.exp.suite_dir, run.stem, run.run_key, run.to_results)
        if up_to_date is not None:
            return RunOutcome(None, up_to_date, f"skipped: up to date ({up_to_date})", run_key=run.run_key)
    status, error = Status.SUCCESS, None
    # SIGTERM (e.g. `kill`) is a cancel, recorded as such, like Ctrl+C
    with sigterm_raises(lambda signum: RunCancelled(f"received signal {signal.Signals(signum).name}")):
        try:
            _setup(run)
            _train(run)
            _test(run)
            _finish(run)
        except UserError:
            if run.training_started:
                status, error = Status.FAILED, sys.exc_info()[1]
            else:
                raise
        except (KeyboardInterrupt, RunCancelled) as exc:
            status, error = Status.CANCELLED, exc
        except BrokenPipeError:
            # stdout/stderr is a pipe whose reader is gone (run-all was killed): a cancel, and
            # nothing more can be said on that pipe.
            status, error = Status.CANCELLED, RunCancelled(
                "output pipe closed (BrokenPipeError): the process reading this run's output is gone")
            run.opts = dataclasses.replace(run.opts, log=_quiet)
        except Exception as exc:  # noqa: BLE001 - every other exception is a failed run, recorded
            interrupt = interrupt_behind(exc)
            status, error = (Status.CANCELLED, interrupt) if interrupt is not None else (Status.FAILED, exc)
        path = _write_result(run, status, error)
    if run.unwritten:
        # The numbers are safe in a fallback folder, but not where they belong: exit 1 (and a
        # run-all child counts as not done), with words that say what happened to the run itself.
        return RunOutcome(Status.FAILED, path, f"{status.value}, but its result is not in its folder: {run.unwritten}",
                          ExitCode.FAILED, run.run_key, run.unwritten)
    return RunOutcome(status, path, f"{status.value}: {path}", EXIT_CODES[status], run.run_key,
                      run.result[R.RUN_INFO].get(R.RI_ERROR_MSG))


# ----------------------------------------------------------------------------------------------
# phases


def _record_static_info(run: _Run) -> None:
    exp, info = run.exp, run.result[R.RUN_INFO]
    git = provenance.git_state(exp.suite_dir)
    run.git = git
    run.why_not_results = S.why_not_results(git, exp.config_overrides)
    info.update(
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        experiment_name=exp.experiment_name,
        suite=S.suite_label(exp.suite_dir, git.root),
        seed=exp.train_config.seed,
        peft_branch=git.branch,
        git=git.to_dict(),
        command=provenance.command_line(),
        hostname=provenance.hostname(),
        train_config=exp.train_config.to_dict(),
        peft_config=_peft_config_dict(exp.peft_config),
        task=run.task.info(),
        overrides=exp.config_overrides,
    )


def _peft_config_dict(peft_config) -> dict | None:
    if peft_config is None:
        return None
    data = peft_config.to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()}


def _preflight(run: _Run) -> None:
    """Checks that need no model: device, quantization, method support, data sources."""
    cfg = run.exp.train_config
    run.device = hardware.resolve_device(cfg.device)
    modeling.quantization_config(cfg, run.device)
    if run.exp.peft_config is not None:
        methods.check_supported(run.exp.peft_config)
    methods.check_optimizer(cfg.optimizer_type, run.exp.peft_config)
    # the task's own checks (the code task: a sandbox to grade in), recorded beside its name
    run.result[R.RUN_INFO][R.RI_TASK].update(run.task.preflight(grading_settings(cfg)))
    _check_result_folders(run)
    run.run_key, run.run_key_inputs = runkey.compute(run.exp, run.device.split(":")[0])
    run.result[R.RUN_INFO].update(run_key=run.run_key, run_key_inputs=run.run_key_inputs)


def grading_settings(cfg) -> dict[str, Any]:
    """The grading options a task may use (Task.grade_batch, Task.preflight)."""
    return {"grading_workers": cfg.grading_workers, "allow_weak_sandbox": cfg.allow_weak_sandbox}


def _check_result_folders(run: _Run) -> None:
    """The folders a success and a failure would be written to take files (before training)."""
    for status in (Status.SUCCESS, Status.FAILED):
        check_writable(S.result_path(run.exp.suite_dir, run.stem, status, run.to_results, "probe").parent)


def _quiet_libraries() -> None:
    """Library chatter that says nothing about the run: per-file loading bars and a deprecation
    warning transformers raises on PEFT's behalf."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _setup(run: _Run) -> None:
    import torch

    _quiet_libraries()

    exp, cfg, log = run.exp, run.exp.train_config, run.opts.log
    # Seeding the global RNGs here, once per run, is the runner's job; no helper seeds anything.
    torch.manual_seed(cfg.seed)
    import random

    import numpy as np

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    train_rows, train_identity = run.task.load_train_rows(cfg.train_dataset, cfg.char_limit)
    run.splits = run.task.load_eval_data(cfg.eval_dataset, cfg.valid_size, cfg.test_size, cfg.tune_valid_size)
    run.forgetting_texts, forgetting_identity = data.load_forgetting_texts(cfg.forgetting_dataset)
    run.forgetting_texts = run.forgetting_texts[: cfg.forgetting_size]
    log(f"data: {len(train_rows)} train rows, {len(run.splits.valid)} valid, {len(run.splits.test)} test, "
        f"{len(run.forgetting_texts)} forgetting texts")
    run.loaded = modeling.load_model(cfg, exp.peft_config, run.device)
    model, tokenizer = run.loaded.model, run.loaded.tokenizer
    run.train_samples = data.tokenize_train_rows(train_rows, tokenizer, cfg.query_template, cfg.max_seq_length)
    # The run key leaves out a local model's path (its content hash identifies it); the record keeps it.
    model_info = {"id": cfg.model_id, **run.run_key_inputs["model"]}
    model_info.setdefault("loaded_commit", getattr(modeling.unwrap_base(model).config, "_commit_hash", None))
    run.result[R.META_INFO].update(
        model_info=model_info,
        dataset_info={"train": train_identity, "eval": run.splits.identity, "forgetting": forgetting_identity},
        package_info=provenance.package_versions(), system_info=provenance.system_info(run.device),
        pytorch_info=provenance.pytorch_info(), grader_version=run.task.grader_version,
        peftbench_version=run.run_key_inputs["code"]["peftbench_version"],
        code_sha256=run.run_key_inputs["code"]["sources_sha256"])
    trainable, total = modeling.count_parameters(model)
    run.result[R.TRAIN_INFO].update(num_trainable_params=trainable, num_total_params=total)
    log(f"model: {cfg.model_id} on {run.device}, {trainable:,} trainable of {total:,} parameters")

    methods.initialize_prefix(model, tokenizer, exp.peft_config, cfg.init_kv_cache_prefix)


def _forgetting_loss(run: _Run) -> float | None:
    import time

    cfg = run.exp.train_config
    start = time.perf_counter()
    loss = text_cross_entropy(run.loaded.model, run.loaded.tokenizer, run.forgetting_texts,
                              cfg.max_seq_length, cfg.batch_size_eval)
    if run.forgetting_texts:
        # measured twice (adapter off before training, on after): the time is the sum of both
        info = run.result[R.TRAIN_INFO]
        info[R.TI_FORGETTING_TIME] = (info.get(R.TI_FORGETTING_TIME) or 0.0) + time.perf_counter() - start
    return loss


def _evaluate_split(run: _Run, split: str, rows: list[dict[str, str]]):
    """Generate and grade `rows` with the run's model; returns an evaluate.EvalOutcome (with the
    validation loss for the valid split)."""
    cfg = run.exp.train_config
    bar = _bar(run.opts.progress, len(rows), f"{split} eval")
    try:
        outcome = evaluate_rows(
            run.loaded.model, run.loaded.tokenizer, rows, task=run.task, split=split, template=cfg.query_template,
            batch_size=cfg.batch_size_eval, generation_kwargs=cfg.generation_kwargs,
            extra_kwargs_fn=functools.partial(methods.generate_kwargs, run.exp.peft_config, device=run.device),
            progress=bar, engine=cfg.eval_engine, grading=grading_settings(cfg))
    finally:
        bar.close()
    run.result[R.TRAIN_INFO][R.TI_EVAL_ENGINE_USED] = outcome.engine
    if split == "valid":
        outcome.loss = qa_cross_entropy(run.loaded.model, run.loaded.tokenizer, rows, run.task, cfg.query_template,
                                        cfg.max_seq_length, cfg.batch_size_eval)
    return outcome


def _train(run: _Run) -> None:
    """The training loop (peftbench.training.loop), after the forgetting measure of the base
    model. An evaluation-only run (max_steps 0) trains nothing."""
    cfg = run.exp.train_config
    run.forgetting_before = _forgetting_with_adapter_disabled(run)
    run.state = T.TrainState()
    run.checkpoint_path = C.path_for(run.exp.suite_dir, run.run_key)
    run.training_started = True
    run.trackers = _start_trackers(run)
    if cfg.max_steps == 0:
        return
    bar = _bar(run.opts.progress, cfg.max_steps, "train")
    training = T.Training(
        model=run.loaded.model, tokenizer=run.loaded.tokenizer, cfg=cfg, peft_config=run.exp.peft_config,
        device=run.device, samples=run.train_samples,
        validate=functools.partial(_evaluate_split, run, "valid", run.splits.valid),
        checkpoint_path=run.checkpoint_path, run_key=run.run_key, resume=run.opts.resume, clock=run.clock,
        log=run.opts.log, log_steps=run.opts.log if run.opts.verbose else _quiet, progress=bar,
        trackers=run.trackers)
    try:
        T.run_training(training, run.state)
    finally:
        bar.close()
        run.result[R.RUN_INFO][R.RI_RESUMED_FROM_STEP] = run.state.resumed_from_step


def _start_trackers(run: _Run) -> Trackers:
    """The report_to trackers, told the run's name, config and run key. A tracker that cannot
    start warns once and is left out; the run goes on."""
    description = trackers.describe_run(run.exp, run.run_key, run.result[R.RUN_INFO][R.RI_SUITE],
                                        S.state_dir(run.exp.suite_dir))
    return Trackers.start(run.exp.train_config.report_to, description, warn=run.opts.log)


def _quiet(msg: str) -> None:
    pass


def _forgetting_with_adapter_disabled(run: _Run) -> float | None:
    model = run.loaded.model
    disable = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    with disable:
        return _forgetting_loss(run)


def _test(run: _Run) -> None:
    if run.exp.train_config.tune_valid_size > 0:
        # A tuning trial is chosen on validation data only: it never generates on the test split,
        # and its result holds no test accuracy (null: not measured) and no test predictions.
        outcome = _NotTested(run.task)
    else:
        outcome = _evaluate_split(run, "test", run.splits.test)
    run.test_rows = outcome.rows
    run.result[R.TRAIN_INFO][R.TI_TEST_TIME] = outcome.seconds
    forgetting_after = _forgetting_loss(run)
    state = run.state
    forgetting = None
    if forgetting_after is not None and run.forgetting_before is not None:
        forgetting = forgetting_after - run.forgetting_before
    run.result[R.TRAIN_INFO][R.TI_METRICS] = state.metrics + [{
        R.M_STEP: state.step,
        **outcome.accuracies,  # "test accuracy" (the task's headline), then its other grades
        R.M_TRAIN_LOSS: _mean_train_loss(state),
        R.M_TRAIN_SAMPLES: state.train_samples,
        R.M_TRAIN_TOTAL_TOKENS: state.total_tokens,
        R.M_FORGETTING: forgetting,
        R.M_TEST_SETS: outcome.per_set,
    }]
    others = ", ".join(f"{key[len(R.M_TEST_ACC) + 1:]} {_pct(value)}" for key, value in list(outcome.accuracies.items())[1:])
    sets = "; ".join(f"{name} {_pct(figures[R.M_TEST_ACC])}" for name, figures in outcome.per_set.items()) \
        if len(outcome.per_set) > 1 else ""
    run.opts.log(f"test accuracy {_pct(outcome.accuracy)}{f' ({others})' if others else ''} on "
                 f"{len(outcome.rows)} items{f' [{sets}]' if sets else ''}; "
                 f"forgetting {forgetting if forgetting is None else round(forgetting, 4)}")


class _NotTested:
    """Stand-in for the test split's EvalOutcome in a tuning trial: nothing measured."""

    rows: list = []
    accuracy = seconds = None
    per_set: dict = {}

    def __init__(self, task):
        self.accuracies = {task.metric_key("test", g): None for g in task.grade_names}


def _mean_train_loss(state) -> float | None:
    losses = [m[M_TRAIN_LOSS] for m in state.metrics if m.get(M_TRAIN_LOSS) is not None]
    return losses[-1] if losses else None


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _finish(run: _Run) -> None:
    """Save the adapter and record sizes."""
    model, info = run.loaded.model, run.result[R.TRAIN_INFO]
    if run.exp.train_config.max_steps == 0:
        # Evaluation only: nothing was trained, so there is nothing to save or count.
        info[R.TI_FILE_SIZE], info[R.TI_NUM_TRAINABLE_PARAMS] = 0, 0
        return
    if run.exp.peft_config is None:
        # Full fine-tuning: the "adapter" is the whole model; its size is parameters x bytes.
        info[R.TI_FILE_SIZE] = sum(p.numel() * p.element_size() for p in model.parameters())
        if run.opts.output_dir:
            model.save_pretrained(run.opts.output_dir)
            run.result[R.RUN_INFO][R.RI_ADAPTER_DIR] = str(Path(run.opts.output_dir).resolve())
        return
    out = Path(run.opts.output_dir) if run.opts.output_dir else Path(tempfile.mkdtemp(prefix=f"peftbench-{run.stem}-"))
    model.save_pretrained(str(out))
    weights = out / "adapter_model.safetensors"
    if weights.exists():
        info[R.TI_FILE_SIZE] = weights.stat().st_size
        run.result[R.RUN_INFO][R.RI_ADAPTER_SHA256] = sha256_file(weights)
    else:
        info[R.TI_FILE_SIZE] = 0
    if run.opts.clean:
        shutil.rmtree(out, ignore_errors=True)
        run.opts.log(f"adapter saved to {out} and deleted (--clean)")
    else:
        run.result[R.RUN_INFO][R.RI_ADAPTER_DIR] = str(out.resolve())
        run.opts.log(f"adapter saved to {out}")


def _write_result(run: _Run, status: Status, error: BaseException | None) -> Path:
    """Write predictions then the result, both atomically; decide the folder by status and git."""
    info, train_info = run.result[R.RUN_INFO], run.result[R.TRAIN_INFO]
    train_info[R.TI_STATUS] = status.value
    state = run.state
    if state is not None:
        train_info[R.TI_TRAIN_TIME] = state.train_time
        train_info[R.TI_EVAL_TIME] = state.eval_time
        if status is not Status.SUCCESS and not train_info[R.TI_METRICS]:
            train_info[R.TI_METRICS] = state.metrics
        train_info.update(memory_summary(state.mem_reserved, run.device))
    if error is not None:
        info[R.RI_ERROR_MSG] = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        info[R.RI_TRACEBACK] = "".join(traceback.format_exception(error))
    info[R.RI_TOTAL_TIME] = run.clock()
    info[R.RI_TRACKERS] = run.trackers.finish(run.result, status.value)
    path = S.checked_result_path(run.exp.suite_dir, run.stem, status, run.to_results, S.timestamp(),
                                 run.exp.experiment_name, run.opts.log)
    rows = (state.last_valid_rows if state is not None else []) + run.test_rows
    path, run.unwritten = write_with_fallback(path, functools.partial(_write_files, run, rows, status),
                                              fallback_dirs(run.exp.suite_dir), run.opts.log)
    if status is Status.SUCCESS and not run.opts.keep_checkpoint and not run.unwritten:
        if run.checkpoint_path is not None and run.checkpoint_path.exists():
            run.checkpoint_path.unlink()
    # say why a success is not in results/, where compare looks ("tree is dirty: ?? report.html")
    why = run.why_not_results if status is Status.SUCCESS and path.parent.name == S.TEMPORARY_RESULTS else None
    if not run.unwritten:  # else write_with_fallback said where the result went instead
        run.opts.log(f"{status.value}: result written to {path}" + (f" (not results/: {why})" if why else ""))
    if error is not None:
        _log_error(run, error)
    return path


def _write_files(run: _Run, rows: list[dict[str, Any]], status: Status, path: Path) -> None:
    """The predictions, then the result that names them; both atomic."""
    if rows or status is Status.SUCCESS:
        pred_path = R.predictions_path_for(path)
        digest = R.write_predictions(pred_path, rows)
        run.result[R.RUN_INFO][R.RI_PREDICTIONS] = {"file": pred_path.name, "sha256": digest}
    fs.atomic_write_json(path, run.result)  # through the module: a test makes this write fail


# Traceback lines a failed run prints with --debug; the whole traceback is in the result.
DEBUG_TRACEBACK_LINES = 12


def _log_error(run: _Run, error: BaseException) -> None:
    """What went wrong, right under the "failed"/"cancelled" line (the result records the rest)."""
    info = run.result[R.RUN_INFO]
    run.opts.log(f"error: {info[R.RI_ERROR_MSG]}")
    if run.opts.debug:
        lines = info[R.RI_TRACEBACK].rstrip("\n").splitlines()
        run.opts.log("\n".join(lines[-DEBUG_TRACEBACK_LINES:]))
    elif not isinstance(error, (KeyboardInterrupt, RunCancelled)):
        run.opts.log("(--debug prints the last traceback lines; the whole traceback is in the result's run_info)")
