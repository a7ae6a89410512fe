"""The training loop in one place.

`run_training` builds the optimizer, schedule and grad scaler, resumes from a checkpoint of the
same run key, then repeats `train_step -> evaluate -> checkpoint` up to max_steps. A checkpoint
that cannot be read or written is a warning (peftbench.training.checkpoint), never the end of a
run. The runner (peftbench.training.runner) hands it a `Training` and a `TrainState` to fill; it
does the phases before (data, model) and after (test, save, record).

`train_step` is one optimizer step, public so that tests drive the step that ships. What a PEFT
method needs from a step (extra forward kwargs, an extra loss, AdaLoRA's rank allocation) comes
from peftbench.training.methods, the one module that knows the methods.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peftbench.errors import UserError
from peftbench.experiment.config import TrainConfig
from peftbench.record import results as R
from peftbench.signals import raise_if_signalled
from peftbench.training import memory, methods
from peftbench.training import checkpoint as C
from peftbench.training.checkpoint import TrainState
from peftbench.training.data import batch_stream, collate_train
from peftbench.training.loss import causal_lm_loss, eos_weighting, label_positions
from peftbench.training.trackers import Trackers


class RunClock:
    """Seconds a run has taken, earlier interrupted attempts included (restored on resume)."""

    def __init__(self) -> None:
        self.before, self.started = 0.0, time.perf_counter()

    def __call__(self) -> float:
        return self.before + time.perf_counter() - self.started

    def continue_from(self, seconds: float) -> None:
        self.before, self.started = seconds, time.perf_counter()


@dataclass
class Training:
    """What the loop needs from the runner."""

    model: Any
    tokenizer: Any
    cfg: TrainConfig
    peft_config: Any  # peft.PeftConfig, or None for full fine-tuning
    device: str
    samples: list[dict[str, Any]]  # tokenized training samples
    validate: Callable[[], Any]  # one validation pass, returns an evaluate.EvalOutcome
    checkpoint_path: Path
    run_key: str  # a checkpoint of another run key is not resumed
    resume: bool  # False: delete this run key's checkpoint and start over
    clock: RunClock
    log: Callable[[str], None]  # always shown (resuming, checkpoint warnings)
    log_steps: Callable[[str], None]  # one line per validation (shown with -v)
    progress: Any  # a tqdm-like bar, or a stand-in
    trackers: Trackers = field(default_factory=Trackers.none)  # report_to; the stand-in sends nothing


# ----------------------------------------------------------------------------------------------
# the loop


def run_training(t: Training, state: TrainState) -> None:
    """Train from state.step (or a checkpoint's step) to cfg.max_steps, validating every
    eval_steps and at the end, checkpointing every checkpoint_steps and at the last step.
    `state` is filled in place, so that the caller holds the progress when a cancel or a failure
    escapes from here."""
    cfg = t.cfg
    opt = Optimization.build(t.model, cfg, t.peft_config, t.device)
    _resume(t, state, opt)
    lengths = [len(s["input_ids"]) for s in t.samples]
    stream = batch_stream(lengths, cfg.batch_size, cfg.seed, start_step=state.step)
    t.model.train()
    t.progress.update(state.step)
    while state.step < cfg.max_steps:
        raise_if_signalled()
        indices = next(stream)
        batch = collate_train([t.samples[i] for i in indices], t.tokenizer.pad_token_id, cfg.train_on_prompt)
        started = time.perf_counter()
        loss, tokens = train_step(t.model, batch, opt, cfg, t.peft_config, t.device, state.step,
                                  eos_token_id=t.tokenizer.eos_token_id)
        seconds = time.perf_counter() - started
        _count_step(state, loss, tokens, len(indices), seconds, t.device)
        t.trackers.log_step(state.step, loss, opt.scheduler.get_last_lr()[0], tokens / seconds if seconds else None,
                            state.mem_reserved[-1] if state.mem_reserved else memory.current_rss_bytes())
        t.progress.update(1)
        if state.step == cfg.max_steps:
            # Before the final validation: an interrupt during it or the test loses no training.
            _checkpoint(t, state, opt)
            break
        if state.step % cfg.eval_steps == 0:
            _validate(t, state)
        if state.step % cfg.effective_checkpoint_steps == 0:
            _checkpoint(t, state, opt)
    if not state.metrics or state.metrics[-1][R.M_STEP] != state.step:
        _validate(t, state)  # the final validation, also after resuming from the last step's checkpoint


def train_step(model, batch: dict[str, Any], opt: Optimization, cfg: TrainConfig, peft_config, device: str,
               step: int, eos_token_id: int | None = None) -> tuple[Any, int]:
    """One optimizer step on one collated batch (CPU tensors: input_ids, attention_mask, labels).
    `step` counts from 0; `eos_token_id`: the tokenizer's, needed when cfg.eos_loss_weight is not
    1.0 (a ValueError without it). Returns (loss as a 0-d float32 tensor on the device, non-padding
    tokens).

    Nothing here waits for the device: reading the loss (`.item()`) would make the host wait for
    the step to finish before queueing the next one. The loop sums the losses on the device and
    reads the sum at logging time (`_read_window_loss`); the token count comes from the CPU batch."""
    import torch

    eos = eos_weighting(cfg.eos_loss_weight, eos_token_id)  # None at 1.0: the unweighted mean
    extra = methods.forward_kwargs(peft_config, batch)  # built from the CPU batch, moved by the model
    tokens = int(batch["attention_mask"].sum())
    positions = label_positions(batch["labels"]).to(device)  # from the CPU batch: no wait
    batch = {k: v.to(device) for k, v in batch.items()}
    with autocast(cfg, device):
        loss = causal_lm_loss(model, batch, extra, peft_config, positions, eos)
        loss = loss + methods.extra_loss(model, peft_config)
    opt.scaler.scale(loss).backward()
    if cfg.grad_norm_clip is not None:
        opt.scaler.unscale_(opt.optimizer)
        params = [p for group in opt.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_norm_clip)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    # AdaLoRA reads the gradients: after the optimizer step, before they are cleared.
    methods.after_optimizer_step(model, peft_config, step)
    opt.optimizer.zero_grad(set_to_none=True)
    return loss.detach().float(), tokens


def _resume(t: Training, state: TrainState, opt: Optimization) -> None:
    if not t.resume:
        t.checkpoint_path.unlink(missing_ok=True)
        return
    payload = C.load(t.checkpoint_path, t.run_key, warn=t.log)  # an unreadable one: moved aside, step 0
    if payload is None:
        return
    restored = C.restore(payload, t.model, opt.optimizer, opt.scheduler, opt.scaler)
    vars(state).update(vars(restored), resumed_from_step=restored.step)
    t.clock.continue_from(state.elapsed_before)
    t.log(f"resuming from the checkpoint at step {state.step} ({t.checkpoint_path})")


def _count_step(state: TrainState, loss: float, tokens: int, samples: int, seconds: float, device: str) -> None:
    state.step += 1
    state.train_time += seconds
    state.window_time += seconds
    state.train_samples += samples
    state.total_tokens += tokens
    state.window_tokens += tokens
    # A device tensor until _read_window_loss. Summed in float64 (MPS has none): the same sums as
    # adding each step's float32 loss on the host, so logged losses stay equal to those of runs
    # made when the loop still read every step's loss.
    state.window_loss += loss if device.startswith("mps") else loss.double()
    state.window_steps += 1
    reserved, allocated = memory.memory_snapshot(device)
    if reserved is not None:
        state.mem_reserved.append(reserved)
        state.mem_allocated.append(allocated)


def _validate(t: Training, state: TrainState) -> None:
    """One validation pass, recorded as a metrics entry over the steps since the last one."""
    _read_window_loss(t, state)
    outcome = t.validate()
    state.eval_time += outcome.seconds
    state.last_valid_rows = outcome.rows
    window = state.window_steps
    reserved_avg = memory.mean(state.mem_reserved[-window:]) if state.mem_reserved and window else None
    allocated_avg = memory.mean(state.mem_allocated[-window:]) if state.mem_allocated and window else None
    entry = {
        R.M_STEP: state.step,
        **outcome.accuracies,  # "valid accuracy" (the headline grade), then the task's other grades
        R.M_VALID_LOSS: outcome.loss,
        R.M_TRAIN_LOSS: state.window_loss / window if window else None,
        R.M_TRAIN_SAMPLES: state.train_samples,
        R.M_TRAIN_TIME: state.window_time,
        R.M_EVAL_TIME: outcome.seconds,
        R.M_TOKENS_PER_SEC: state.window_tokens / state.window_time if state.window_time else None,
        R.M_MEM_ALLOC_AVG: allocated_avg,
        R.M_MEM_RESERVED_AVG: reserved_avg,
        R.M_CPU_RSS: memory.current_rss_bytes() if reserved_avg is None else None,
        R.M_ELAPSED: t.clock(),
    }
    state.metrics.append(entry)
    t.trackers.log_validation(entry)
    others = ", ".join(f"{key[len(R.M_VALID_ACC) + 1:]} {_fmt(value)}" for key, value in list(outcome.accuracies.items())[1:])
    t.log_steps(
        f"step {state.step:>6}/{t.cfg.max_steps}  valid acc {_fmt(outcome.accuracy)}"
        f"{f' ({others})' if others else ''}  train loss {_fmt(entry[R.M_TRAIN_LOSS])}  "
        f"{_fmt(entry[R.M_TOKENS_PER_SEC], '.0f')} tok/s  eval {outcome.seconds:.1f}s"
    )
    state.window_loss, state.window_steps, state.window_tokens, state.window_time = 0.0, 0, 0, 0.0


def _read_window_loss(t: Training, state: TrainState) -> None:
    """Bring the window's loss sum to the host: the one wait for the device per logging interval
    (validation or checkpoint). What the device still had queued is training work, so the wait
    counts as training time. A loss that is not finite stops the run here."""
    if not isinstance(state.window_loss, float):
        started = time.perf_counter()
        state.window_loss = float(state.window_loss)
        waited = time.perf_counter() - started
        state.train_time += waited
        state.window_time += waited
    if not math.isfinite(state.window_loss):
        raise FloatingPointError(f"training loss is {state.window_loss} in the steps up to step {state.step}; "
                                 "lower the learning rate")
    if state.window_steps:
        t.progress.set_postfix(loss=f"{state.window_loss / state.window_steps:.4f}")


def _checkpoint(t: Training, state: TrainState, opt: Optimization) -> None:
    _read_window_loss(t, state)
    state.elapsed_before = t.clock()
    try:
        C.save(t.checkpoint_path, t.run_key, state, t.model, opt.optimizer, opt.scheduler, opt.scaler)
    except C.NotWritten as exc:
        # A checkpoint only shortens a restart; the training itself is fine, and its result
        # has a write path of its own (training/output.py).
        t.log(f"warning: {exc}; training goes on (a run stopped now starts again from an earlier checkpoint "
              "or step 0)")


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


# ----------------------------------------------------------------------------------------------
# optimizer, schedule, grad scaler


@dataclass
class Optimization:
    """What an optimizer step updates besides the weights; all three are checkpointed."""

    optimizer: Any
    scheduler: Any
    scaler: Any  # torch.amp.GradScaler, or NoScaler

    @classmethod
    def build(cls, model, cfg: TrainConfig, peft_config, device: str) -> Optimization:
        optimizer = build_optimizer(model, cfg, peft_config)
        return cls(optimizer, build_scheduler(optimizer, cfg), build_scaler(cfg, device))


def build_optimizer(model, cfg: TrainConfig, peft_config):
    """The experiment's optimizer_type: a method's own optimizer (LoRA+, ...) or a torch.optim class."""
    import torch

    optimizer = methods.build_peft_optimizer(cfg.optimizer_type, model, peft_config, cfg.optimizer_kwargs)
    if optimizer is not None:
        return optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return getattr(torch.optim, cfg.optimizer_type)(params, **cfg.optimizer_kwargs)
    except TypeError as exc:
        raise UserError(f"optimizer_kwargs {cfg.optimizer_kwargs} do not fit {cfg.optimizer_type}: {exc}") from None


def build_scheduler(optimizer, cfg: TrainConfig):
    import torch

    if cfg.lr_scheduler == "cosine":
        from transformers import get_cosine_schedule_with_warmup

        warmup = int(cfg.warmup_ratio * cfg.max_steps)
        return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=max(cfg.max_steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


class NoScaler:
    """Stand-in for torch.amp.GradScaler when no loss scaling is needed (all but float16 AMP)."""

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer):
        optimizer.step()

    def update(self):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def build_scaler(cfg: TrainConfig, device: str):
    import torch

    if cfg.use_amp and cfg.dtype == "float16":
        return torch.amp.GradScaler(device.split(":")[0])
    return NoScaler()


def autocast(cfg: TrainConfig, device: str):
    import torch

    if not cfg.use_amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if cfg.dtype == "float16" else torch.bfloat16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)
