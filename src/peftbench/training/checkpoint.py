"""Checkpoints: what a run killed hard needs to continue exactly where it was.

One file per run key, `<suite>/.peftbench/checkpoints/<run key>.pt`, written atomically
(temporary file + rename), holding the trainable weights, optimizer, scheduler and grad scaler
states, the RNG states, the TrainState (step = position in the data order, metrics, timers) and
the run key. Keyed by run key, not by result name: a run of the same experiment with another
config, seed or code has its own file, and never resumes from or deletes this one.

The file is data, never code: it holds only tensors and plain Python values (numpy's RNG state
is stored as a list of ints), and is read with `torch.load(weights_only=True)`, whose unpickler
builds nothing else. A file planted in the folder cannot run anything when a run resumes.

Neither a checkpoint that cannot be read nor one that cannot be written ends a run: the first is
moved aside (`<name>.unreadable-<time>`, kept for a look) and the run starts from step 0; the
second raises `NotWritten`, which the loop reports as a warning before it trains on."""

from __future__ import annotations

import errno
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from peftbench.experiment import suite as S
from peftbench.fs import atomic_write_with
from peftbench.signals import interrupt_behind

# What a payload must hold to be restored; a file without them is not one of our checkpoints.
KEYS = ("run_key", "state", "model", "optimizer", "scheduler", "scaler", "rng")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
MiB = 1 << 20


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
    resumed_from_step: int | None = None  # the checkpoint's step this attempt started from


class NotWritten(Exception):
    """A checkpoint could not be written; the message names the file and why."""


def path_for(suite_dir: Path, run_key: str) -> Path:
    """Where the checkpoint of the run with `run_key` lives in its suite."""
    return S.state_dir(suite_dir) / "checkpoints" / f"{run_key}.pt"


def trainable_state_dict(model) -> dict[str, Any]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def rng_states() -> dict[str, Any]:
    import numpy as np
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    # numpy's keys as ints: an ndarray would need numpy's own unpickling, which weights_only refuses.
    states = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: Path, run_key: str, state: TrainState, model, optimizer, scheduler, scaler) -> None:
    """Write the checkpoint atomically. A write that fails (disk full, a folder made read-only)
    raises NotWritten and leaves the previous checkpoint, if any, as it was; Ctrl+C or SIGTERM
    during the write stays a cancel, even when torch's clean-up replaces it with an error."""
    import torch

    payload = {
        "run_key": run_key,
        "state": asdict(state),
        "model": trainable_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_states(),
    }
    try:
        atomic_write_with(path, lambda f: torch.save(payload, f))
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a failed write as RuntimeError
        if interrupt_behind(exc) is not None:
            raise  # a cancel, which the runner records as such
        raise NotWritten(f"checkpoint {path} not written: {_why_not_written(exc, path, payload)}") from exc


def _why_not_written(exc: BaseException, path: Path, payload: dict[str, Any]) -> str:
    """"no space left on device" when the file system is full: its errno is in the chain, or
    torch's "unexpected pos ..." hides it and the free space is below the payload's size. Else
    the OSError's reason, or the error itself."""
    chain = _chain(exc)
    if any(isinstance(e, OSError) and e.errno in _NO_SPACE for e in chain):
        return "no space left on device"
    needed = _tensor_bytes(payload)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < needed:
        return f"no space left on device ({free / MiB:.1f} MiB free, the checkpoint needs about {needed / MiB:.1f} MiB)"
    os_error = next((e for e in chain if isinstance(e, OSError)), None)
    if os_error is not None:
        return f"{type(os_error).__name__}: {os_error.strerror or os_error}"
    return f"{type(exc).__name__}: {exc}"


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or while handling, newest first."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a nested payload: about the size of the file torch.save writes."""
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return value.element_size() * value.nelement()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def load(path: Path, run_key: str, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """The checkpoint at `path` if it belongs to this run key, else None. A file that cannot be
    read, that holds anything but tensors and plain values, or that is not a checkpoint, is moved
    aside with a warning (`warn`) naming both paths, and None is returned: the run starts over."""
    import torch

    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - what torch raises depends on how the bytes are damaged
        # (UnpicklingError, RuntimeError from the zip reader, EOFError, OSError); an interrupt
        # is a BaseException and passes.
        _move_aside(path, _why_unreadable(exc), warn)
        return None
    if not isinstance(payload, dict) or any(key not in payload for key in KEYS):
        _move_aside(path, "not a peftbench checkpoint", warn)
        return None
    if payload["run_key"] != run_key:
        return None
    return payload


def _move_aside(path: Path, why: str, warn: Callable[[str], None]) -> None:
    aside = path.with_name(f"{path.name}.unreadable-{S.timestamp()}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        # Left in place: this run's first checkpoint replaces it (atomically) all the same.
        warn(f"warning: checkpoint {path} cannot be read ({why}) nor moved aside ({exc.strerror or exc}); "
             "starting from step 0")
        return
    warn(f"warning: checkpoint {path} cannot be read ({why}); moved aside to {aside.name}; starting from step 0")


def _why_unreadable(exc: BaseException) -> str:
    """One line. torch's refusals come with advice on loading the file anyway (weights_only=False),
    the one thing not to do with a file nobody here wrote: only what it found is passed on."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        found = _first_sentence(text.split(marker, 1)[1]).split(" was not an allowed global")[0]
        if found.startswith("Unsupported global"):
            return f"it holds more than tensors and plain values ({found}), which could run code if loaded"
        return f"not a checkpoint ({found})"
    found = _first_sentence(text)
    return f"{type(exc).__name__}: {found}" if found else type(exc).__name__


def _first_sentence(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line.split(". ")[0].rstrip(".")


def restore(payload: dict[str, Any], model, optimizer, scheduler, scaler) -> TrainState:
    missing_trainable = set(payload["model"]) - set(model.state_dict())
    if missing_trainable:
        raise RuntimeError(f"checkpoint holds weights the model lacks: {sorted(missing_trainable)[:3]}")
    model.load_state_dict(payload["model"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    set_rng_states(payload["rng"])
    return TrainState(**payload["state"])
