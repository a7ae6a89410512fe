"""peftbench's training step against Hugging Face `Trainer` + peft, on the same batches.

Upstream's open task "a sanity check against the transformers Trainer": the two loops are given
the same model (two copies made the same way), the same batches in the same order (the ones
`loop.run_training` would draw: `data.batch_stream` + `data.collate_train`), the same optimizer
and schedule (built by `loop.Optimization`, handed to Trainer through `optimizers=`) and the same
gradient clipping, and each records its loss at every step. If both loops do the same thing the
per-step losses agree to float rounding; a difference in loss normalisation, clipping, schedule
stepping or data order shows at once.

Trainer runs what Trainer runs: none of peftbench's per-method hooks (training.methods:
forward_kwargs, extra_loss, after_optimizer_step) and the plain mean of the token losses.
`check_comparable` refuses methods that need a hook and an eos_loss_weight other than 1.0, so a
difference always means a difference of the loops.

Used by the tests (tests/training/test_trainer_check.py) and by `peftbench bench`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

from peftbench.errors import UserError
from peftbench.training import loop, methods
from peftbench.training.data import batch_stream, collate_train


@dataclass
class StepsRun:
    """Per-step losses and throughput of one loop over the same batches."""

    losses: list[float]
    tokens: int  # non-padding tokens trained on
    seconds: float  # wall time of the loop, first step included

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.seconds if self.seconds else None


def step_batches(samples: list[dict[str, Any]], tokenizer, cfg, steps: int) -> list[dict[str, Any]]:
    """The collated CPU batches of steps 0..steps-1, in the order the training loop draws them."""
    stream = batch_stream([len(s["input_ids"]) for s in samples], cfg.batch_size, cfg.seed)
    return [collate_train([samples[i] for i in next(stream)], tokenizer.pad_token_id, cfg.train_on_prompt)
            for _ in range(steps)]


def check_comparable(peft_config, batch: dict[str, Any], cfg) -> None:
    """UserError when the method needs peftbench hooks that Trainer does not run, or when the
    config weighs the EOS token (Trainer's loss is the plain mean)."""
    if cfg.eos_loss_weight != 1.0:
        raise UserError(f"eos_loss_weight is {cfg.eos_loss_weight:g}, and HF Trainer's loss weighs every token the "
                        "same; compare the loops with eos_loss_weight 1.0")
    if methods.needs_step_hooks(peft_config, batch):
        raise UserError(f"{methods.peft_type_of(peft_config)} needs per-method training hooks that HF Trainer does not run; "
                        "compare the loops on a method without them (LoRA, IA3, full fine-tuning)")


def _token_count(batches) -> int:
    return int(sum(int(b["attention_mask"].sum()) for b in batches))


def run_peftbench(model, cfg, peft_config, device: str, batches: list[dict[str, Any]]) -> StepsRun:
    """peftbench's training step (loop.train_step) over `batches`."""
    opt = loop.Optimization.build(model, cfg, peft_config, device)
    model.train()
    losses = []
    started = time.perf_counter()
    for step, batch in enumerate(batches):
        loss, _ = loop.train_step(model, batch, opt, cfg, peft_config, device, step)
        losses.append(float(loss))
    return StepsRun(losses, _token_count(batches), time.perf_counter() - started)


def run_hf_trainer(model, cfg, peft_config, device: str, batches: list[dict[str, Any]]) -> StepsRun:
    """HF Trainer over the same batches, with peftbench's optimizer and schedule."""
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    opt = loop.Optimization.build(model, cfg, peft_config, device)
    losses: list[Any] = []

    class _RecordingTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # kept on the device and read after training: no host synchronisation per step
            losses.append((loss[0] if return_outputs else loss).detach())
            return loss

    class _Batches(torch.utils.data.Dataset):
        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return batches[i]

    with tempfile.TemporaryDirectory(prefix="peftbench-trainer-check-") as out:
        args = TrainingArguments(
            output_dir=out, max_steps=len(batches), per_device_train_batch_size=1,  # one item = one batch
            train_sampling_strategy="sequential", remove_unused_columns=False, dataloader_num_workers=0,
            dataloader_pin_memory=False, logging_strategy="no", save_strategy="no", report_to="none",
            disable_tqdm=True, max_grad_norm=cfg.grad_norm_clip or 0.0, seed=cfg.seed,
            use_cpu=device.startswith("cpu"), bf16=cfg.use_amp and cfg.dtype == "bfloat16",
            fp16=cfg.use_amp and cfg.dtype == "float16")
        trainer = _RecordingTrainer(model=model, args=args, train_dataset=_Batches(), data_collator=lambda items: items[0],
                                    optimizers=(opt.optimizer, opt.scheduler))
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return StepsRun([float(x) for x in losses], _token_count(batches), seconds)


def max_relative_difference(a: list[float], b: list[float]) -> float:
    """The largest |a - b| / |b| over steps (the runs must have the same number of steps)."""
    if len(a) != len(b):
        raise ValueError(f"different step counts: {len(a)} and {len(b)}")
    return max((abs(x - y) / abs(y) if y else abs(x - y) for x, y in zip(a, b)), default=0.0)
