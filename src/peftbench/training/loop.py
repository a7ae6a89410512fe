"""The training loop: optimizer and schedule, then steps with periodic validation and
checkpoints. `train` reads as its phases: resume, step, evaluate, checkpoint."""

from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from peftbench.record import results as R
from peftbench.experiment.config import TrainConfig
from peftbench.training.data import batch_stream, collate_train
from peftbench.errors import UserError


@dataclass
class TrainState:
    """Everything a resumed run needs besides weights and optimizer: saved in checkpoints."""

    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    train_time: float = 0.0  # seconds spent in training steps
    eval_time: float = 0.0  # seconds spent in validation
    train_samples: int = 0
    total_tokens: int = 0  # non-padding tokens seen in training
    window_loss: float = 0.0  # sums since the last evaluation
    window_steps: int = 0
    window_tokens: int = 0
    window_time: float = 0.0
    mem_reserved: list[int] = field(default_factory=list)  # per step, bytes (accelerators only)
    mem_allocated: list[int] = field(default_factory=list)
    last_valid_rows: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before: float = 0.0  # run time up to the checkpoint this state was saved in


# ----------------------------------------------------------------------------------------------
# optimizer and schedule


def build_optimizer(model, cfg: TrainConfig, peft_config):
    import torch

    kwargs = dict(cfg.optimizer_kwargs)
    name = cfg.optimizer_type
    if name in ("lora+", "lora-fa", "riemannian") and (peft_config is None or peft_config.peft_type.value != "LORA"):
        raise UserError(f"optimizer_type {name!r} works with LoRA adapters only")
    if name == "lora+":
        from peft.optimizers import create_loraplus_optimizer

        ratio = kwargs.pop("loraplus_lr_ratio", 16)
        return create_loraplus_optimizer(model, torch.optim.AdamW, loraplus_lr_ratio=ratio, **kwargs)
    if name == "lora-fa":
        from peft.optimizers import create_lorafa_optimizer

        kwargs.setdefault("r", peft_config.r)
        kwargs.setdefault("lora_alpha", peft_config.lora_alpha)
        return create_lorafa_optimizer(model, **kwargs)
    if name == "riemannian":
        from peft.optimizers import create_riemannian_optimizer

        return create_riemannian_optimizer(model, torch.optim.AdamW, **kwargs)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return getattr(torch.optim, name)(params, **kwargs)
    except TypeError as exc:
        raise UserError(f"optimizer_kwargs {cfg.optimizer_kwargs} do not fit {name}: {exc}") from None


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


# ----------------------------------------------------------------------------------------------
# memory


def memory_snapshot(device: str) -> tuple[int | None, int | None]:
    """(reserved, allocated) bytes on an accelerator; (None, None) on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device)
    if device.startswith("xpu"):
        return torch.xpu.memory_reserved(device), torch.xpu.memory_allocated(device)
    return None, None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        return None


def percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# ----------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainContext:
    """What the loop needs, built by the runner."""

    model: Any
    tokenizer: Any
    cfg: TrainConfig
    peft_config: Any
    device: str
    samples: list[dict[str, Any]]  # tokenized training samples
    validate: Callable[[], Any]  # runs validation, returns an evaluate.EvalOutcome
    hooks: Any  # peftbench.training.methods (forward_kwargs, after_optimizer_step)
    checkpoint: Callable[[TrainState, Any, Any, Any], None]  # (state, optimizer, scheduler, scaler)
    log: Callable[[str], None]
    progress: Any  # a tqdm-like bar, or a stand-in
    clock: Callable[[], float]  # seconds since the run started, earlier interrupted attempts included


def train(ctx: TrainContext, state: TrainState, optimizer, scheduler, scaler) -> TrainState:
    """Run training steps from state.step to cfg.max_steps. Validation every eval_steps (and at
    the last step), a checkpoint every checkpoint_steps. Raises on cancel or failure; the state
    holds the progress so far either way."""
    cfg, model = ctx.cfg, ctx.model
    lengths = [len(s["input_ids"]) for s in ctx.samples]
    stream = batch_stream(lengths, cfg.batch_size, cfg.seed, start_step=state.step)
    model.train()
    ctx.progress.update(state.step)
    while state.step < cfg.max_steps:
        indices = next(stream)
        t0 = time.perf_counter()
        loss, tokens = _train_step(ctx, [ctx.samples[i] for i in indices], optimizer, scheduler, scaler, state.step)
        dt = time.perf_counter() - t0
        state.step += 1
        state.train_time += dt
        state.window_time += dt
        state.train_samples += len(indices)
        state.total_tokens += tokens
        state.window_tokens += tokens
        state.window_loss += loss
        state.window_steps += 1
        reserved, allocated = memory_snapshot(ctx.device)
        if reserved is not None:
            state.mem_reserved.append(reserved)
            state.mem_allocated.append(allocated)
        ctx.progress.update(1)
        ctx.progress.set_postfix(loss=f"{loss:.4f}")
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at step {state.step}; lower the learning rate")
        if state.step % cfg.eval_steps == 0 or state.step == cfg.max_steps:
            _evaluate(ctx, state)
        if state.step % cfg.effective_checkpoint_steps == 0 and state.step < cfg.max_steps:
            ctx.checkpoint(state, optimizer, scheduler, scaler)
    return state


def _train_step(ctx: TrainContext, samples, optimizer, scheduler, scaler, step: int) -> tuple[float, int]:
    """One optimizer step on one batch; `step` counts from 0. Returns (loss, non-padding tokens)."""
    import torch

    cfg = ctx.cfg
    batch = collate_train(samples, ctx.tokenizer.pad_token_id, cfg.train_on_prompt)
    extra = ctx.hooks.forward_kwargs(ctx.peft_config, batch)
    batch = {k: v.to(ctx.device) for k, v in batch.items()}
    with autocast(cfg, ctx.device):
        loss = ctx.model(**batch, **extra).loss
        loss = loss + ctx.hooks.extra_loss(ctx.model, ctx.peft_config)
    scaler.scale(loss).backward()
    if cfg.grad_norm_clip is not None:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_norm_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    ctx.hooks.after_optimizer_step(ctx.model, ctx.peft_config, step)
    optimizer.zero_grad(set_to_none=True)
    return loss.item(), int(batch["attention_mask"].sum().item())


def _evaluate(ctx: TrainContext, state: TrainState) -> None:
    outcome = ctx.validate()
    state.eval_time += outcome.seconds
    state.last_valid_rows = outcome.rows
    reserved_avg = _mean(state.mem_reserved[-state.window_steps:]) if state.mem_reserved else None
    allocated_avg = _mean(state.mem_allocated[-state.window_steps:]) if state.mem_allocated else None
    entry = {
        R.M_STEP: state.step,
        R.M_VALID_ACC: outcome.accuracy,
        R.M_VALID_ACC_FLEX: outcome.accuracy_flexible,
        R.M_VALID_LOSS: outcome.loss,
        R.M_TRAIN_LOSS: state.window_loss / state.window_steps if state.window_steps else None,
        R.M_TRAIN_SAMPLES: state.train_samples,
        R.M_TRAIN_TIME: state.window_time,
        R.M_EVAL_TIME: outcome.seconds,
        R.M_TOKENS_PER_SEC: state.window_tokens / state.window_time if state.window_time else None,
        R.M_MEM_ALLOC_AVG: allocated_avg,
        R.M_MEM_RESERVED_AVG: reserved_avg,
        R.M_CPU_RSS: current_rss_bytes() if reserved_avg is None else None,
        R.M_ELAPSED: ctx.clock(),
    }
    state.metrics.append(entry)
    ctx.log(
        f"step {state.step:>6}/{ctx.cfg.max_steps}  valid acc {_fmt(outcome.accuracy)} "
        f"(flexible {_fmt(outcome.accuracy_flexible)})  train loss {_fmt(entry[R.M_TRAIN_LOSS])}  "
        f"{_fmt(entry[R.M_TOKENS_PER_SEC], '.0f')} tok/s  eval {outcome.seconds:.1f}s"
    )
    state.window_loss, state.window_steps, state.window_tokens, state.window_time = 0.0, 0, 0, 0.0


def _mean(values):
    return sum(values) / len(values) if values else None


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def memory_summary(state: TrainState, device: str) -> dict[str, Any]:
    """train_info memory fields: accelerator reserved memory over steps, or CPU peak RSS."""
    import torch

    if state.mem_reserved:
        peak = torch.cuda.max_memory_reserved(device) if device.startswith("cuda") else max(state.mem_reserved)
        return {R.ACCEL_MEM_MAX: int(max(peak, max(state.mem_reserved))),
                R.ACCEL_MEM_AVG: int(_mean(state.mem_reserved)),
                R.ACCEL_MEM_99: int(percentile(state.mem_reserved, 99))}
    return {R.CPU_PEAK_RSS: peak_rss_bytes()}
