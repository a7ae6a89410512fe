"""Checkpoints: what a run killed hard needs to continue exactly where it was.

One file per run key, `<suite>/.peftbench/checkpoints/<run key>.pt`, written atomically
(temporary file + rename), holding the trainable weights, optimizer, scheduler and grad scaler
states, the RNG states, the TrainState (step = position in the data order, metrics, timers) and
the run key. Keyed by run key, not by result name: a run of the same experiment with another
config, seed or code has its own file, and never resumes from or deletes this one."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peftbench.fs import atomic_write_with
from peftbench.training.loop import TrainState


def path_for(suite_dir: Path, run_key: str) -> Path:
    """Where the checkpoint of the run with `run_key` lives in its suite."""
    from peftbench.experiment.suite import state_dir

    return state_dir(suite_dir) / "checkpoints" / f"{run_key}.pt"


def trainable_state_dict(model) -> dict[str, Any]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def rng_states() -> dict[str, Any]:
    import numpy as np
    import torch

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: Path, run_key: str, state: TrainState, model, optimizer, scheduler, scaler) -> None:
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
    atomic_write_with(path, lambda f: torch.save(payload, f))


def load(path: Path, run_key: str) -> dict[str, Any] | None:
    """The checkpoint at `path` if it belongs to this run key, else None. A checkpoint that cannot
    be read (a disk error after the rename) is reported by the caller and ignored."""
    import torch

    if not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("run_key") != run_key:
        return None
    return payload


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
