"""The training loop waits for the device once per logging interval, not once per step."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from peftbench.training import loop


class _Bar:
    def __init__(self):
        self.postfix = None

    def set_postfix(self, **kwargs):
        self.postfix = kwargs


def test_train_step_returns_the_loss_as_a_tensor_and_the_tokens_from_the_cpu_batch(tiny_llama):
    from peftbench.experiment.config import build_train_config

    model = tiny_llama()
    model.requires_grad_(True)
    cfg = build_train_config([("test", {"device": "cpu", "dtype": "float32", "max_steps": 2, "eval_steps": 2})])
    opt = loop.Optimization.build(model, cfg, None, "cpu")
    ids = torch.randint(3, 50, (2, 6))
    batch = {"input_ids": ids, "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2]), "labels": ids.clone()}
    loss, tokens = loop.train_step(model, batch, opt, cfg, None, "cpu", 0)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and not loss.requires_grad
    assert tokens == 10 and math.isfinite(float(loss))


def test_the_window_loss_is_read_once_and_counted_as_training_time():
    state = loop.TrainState(window_loss=torch.tensor(3.0) + torch.tensor(1.0), window_steps=2)
    t = SimpleNamespace(progress=_Bar())
    loop._read_window_loss(t, state)
    assert state.window_loss == 4.0 and isinstance(state.window_loss, float)
    assert t.progress.postfix == {"loss": "2.0000"}
    assert state.train_time >= 0 and state.train_time == state.window_time


def test_a_loss_that_is_not_finite_stops_the_run_at_the_next_read():
    state = loop.TrainState(step=7, window_loss=torch.tensor(float("nan")), window_steps=1)
    with pytest.raises(FloatingPointError, match="up to step 7; lower the learning rate"):
        loop._read_window_loss(SimpleNamespace(progress=_Bar()), state)
