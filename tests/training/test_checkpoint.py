"""Checkpoint files are data: a planted pickle runs nothing, a damaged file is moved aside and the
run starts over, and a checkpoint that cannot be written (disk full) is a warning, not the end
of the training. Ctrl+C during a checkpoint write stays a cancel."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import numpy as np

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from peftbench.cli import main  # noqa: E402
from peftbench.experiment.config import load_experiment  # noqa: E402
from peftbench.record.results import load as read_result  # noqa: E402
from peftbench.training import checkpoint as C  # noqa: E402
from peftbench.training.loop import Optimization, TrainState  # noqa: E402

LORA = "experiments/lora/tiny-r4"


def newest_result(suite: Path, folder: str = "temporary_results") -> dict:
    return read_result(max((suite / folder).glob("*.json"), key=os.path.getmtime))


def kept_checkpoint(suite: Path) -> Path:
    """Run lora/tiny-r4 once, keeping its checkpoint; the path of that checkpoint."""
    assert main(["run", str(suite / LORA), "--no-progress", "--clean", "--keep-checkpoint"]) == 0
    [path] = (suite / ".peftbench" / "checkpoints").glob("*.pt")
    return path


class WritesAMarker:
    """Unpickled, it creates `marker`: what a planted pickle could do with os.system."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_runs_nothing_and_is_moved_aside_at_the_next_resume(tiny_suite, tmp_path, capsys):
    checkpoint = kept_checkpoint(tiny_suite)
    run_key = checkpoint.stem
    marker = tmp_path / "the-pickle-ran"
    # Shaped like a checkpoint of this run, so that nothing but the unpickler stands in the way.
    torch.save({"run_key": run_key, "state": {}, "model": {}, "optimizer": WritesAMarker(marker), "scheduler": {},
                "scaler": {}, "rng": {}}, checkpoint)
    capsys.readouterr()

    code = main(["run", str(tiny_suite / LORA), "--no-progress", "--clean"])
    assert not marker.exists(), "the planted pickle ran"
    assert code == 0
    err = capsys.readouterr().err
    [aside] = checkpoint.parent.glob(f"{checkpoint.name}.unreadable-*")
    assert (f"warning: checkpoint {checkpoint} cannot be read (it holds more than tensors and plain values "
            "(Unsupported global: GLOBAL io.open), which could run code if loaded); "
            f"moved aside to {aside.name}; starting from step 0") in err
    assert "weights_only" not in err  # torch's advice on how to load it anyway is not passed on
    assert newest_result(tiny_suite)["run_info"]["resumed_from_step"] is None


def test_a_checkpoint_of_random_bytes_is_moved_aside_and_the_run_starts_from_step_0(tiny_suite, capsys):
    checkpoint = kept_checkpoint(tiny_suite)
    damaged = os.urandom(4096)
    checkpoint.write_bytes(damaged)
    capsys.readouterr()

    assert main(["run", str(tiny_suite / LORA), "--no-progress", "--clean"]) == 0
    err = capsys.readouterr().err
    assert f"warning: checkpoint {checkpoint} cannot be read" in err and "starting from step 0" in err
    result = newest_result(tiny_suite)
    assert result["train_info"]["status"] == "success" and result["run_info"]["resumed_from_step"] is None
    [aside] = checkpoint.parent.glob(f"{checkpoint.name}.unreadable-*")
    assert aside.read_bytes() == damaged  # kept for a look, never deleted
    assert not checkpoint.exists()  # this run's own checkpoint, removed after its success
    assert main(["run", str(tiny_suite / LORA), "--no-progress", "--clean"]) == 0  # and the next run is fine too
    assert "cannot be read" not in capsys.readouterr().err


def _disk_full_while_writing(obj, f, *args, **kwargs):
    """torch.save on a full disk: the write fails with ENOSPC and torch's zip writer, cleaning
    up, replaces it with the error users see."""
    f.write(b"PK\x03\x04" + bytes(60))
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    finally:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")


def test_a_full_disk_while_checkpointing_is_a_warning_naming_the_file_and_the_run_succeeds(tiny_suite, monkeypatch, capsys):
    monkeypatch.setattr(torch, "save", _disk_full_while_writing)
    assert main(["run", str(tiny_suite / LORA), "--no-progress", "--clean"]) == 0
    err = capsys.readouterr().err
    result = newest_result(tiny_suite)
    checkpoint = C.path_for(tiny_suite, result["run_info"]["run_key"])
    assert f"warning: checkpoint {checkpoint} not written: no space left on device" in err
    assert "training goes on" in err
    assert result["train_info"]["status"] == "success"
    assert [m["step"] for m in result["train_info"]["metrics"]] == [2, 4, 4]  # trained to the end
    assert list(checkpoint.parent.iterdir()) == []  # no partial file left behind


def test_ctrl_c_while_a_checkpoint_is_written_is_still_a_cancel(tiny_suite, monkeypatch):
    def interrupted_while_writing(obj, f, *args, **kwargs):
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 0")

    monkeypatch.setattr(torch, "save", interrupted_while_writing)
    assert main(["run", str(tiny_suite / LORA), "--no-progress", "--clean"]) == 130
    assert newest_result(tiny_suite, "cancelled_results")["train_info"]["status"] == "cancelled"


# --- the file itself, without a run ------------------------------------------------------------


def _optimization(tiny_suite, tiny_peft_model, tiny_lora, optimizer_type, trained: bool):
    """(model, Optimization), after one optimizer step when `trained` (the optimizer then has state)."""
    exp = load_experiment(tiny_suite / LORA, {"optimizer_type": optimizer_type})
    model, _ = tiny_peft_model({k: v for k, v in tiny_lora.items() if k != "task_type"})
    model.train()
    opt = Optimization.build(model, exp.train_config, exp.peft_config, "cpu")
    if not trained:
        return model, opt
    model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss.backward()
    opt.optimizer.step()
    opt.scheduler.step()
    return model, opt


@pytest.mark.parametrize("optimizer_type", ["AdamW", "SGD", "lora+", "lora-fa", "riemannian"])
def test_every_optimizers_checkpoint_loads_with_weights_only_and_restores_the_same_state(
        tiny_suite, tiny_peft_model, tiny_lora, optimizer_type, tmp_path):
    model, opt = _optimization(tiny_suite, tiny_peft_model, tiny_lora, optimizer_type, trained=True)
    state = TrainState(step=3, metrics=[{"step": 2, "valid accuracy": 0.5}], window_loss=1.25)
    path = tmp_path / "key.pt"
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    C.save(path, "key", state, model, opt.optimizer, opt.scheduler, opt.scaler)
    expected = (random.random(), np.random.rand(), torch.rand(1))

    torch.load(path, weights_only=True)  # plain data: the restricted unpickler takes it as is
    warnings: list[str] = []
    payload = C.load(path, "key", warn=warnings.append)
    assert warnings == [] and payload is not None
    fresh_model, fresh_opt = _optimization(tiny_suite, tiny_peft_model, tiny_lora, optimizer_type, trained=False)
    restored = C.restore(payload, fresh_model, fresh_opt.optimizer, fresh_opt.scheduler, fresh_opt.scaler)
    assert restored == state
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    saved_state = opt.optimizer.state_dict()["state"]
    assert fresh_opt.optimizer.state_dict()["state"].keys() == saved_state.keys()
    assert fresh_opt.scheduler.state_dict() == opt.scheduler.state_dict()
    for index, entry in fresh_opt.optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(saved_state[index][key])), (index, key)


def _tiny_optimization():
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    from peftbench.training.loop import NoScaler

    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), NoScaler()


def test_a_write_error_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "key.pt"
    C.save(path, "key", TrainState(step=2), *_tiny_optimization())
    before = path.read_bytes()

    def read_only(obj, f, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(torch, "save", read_only)
    with pytest.raises(C.NotWritten, match=f"checkpoint {path} not written: OSError: {os.strerror(errno.EROFS)}"):
        C.save(path, "key", TrainState(step=4), *_tiny_optimization())
    assert path.read_bytes() == before and sorted(path.parent.iterdir()) == [path]


def test_torchs_bare_unexpected_pos_error_on_a_full_file_system_says_no_space_left(tmp_path, monkeypatch):
    """Without the ENOSPC in the chain, the free space below the checkpoint's size tells."""
    import shutil

    def unexpected_pos(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", unexpected_pos)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 0))
    with pytest.raises(C.NotWritten, match="no space left on device \\(0.0 MiB free"):
        C.save(tmp_path / "key.pt", "key", TrainState(), *_tiny_optimization())


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04" + bytes(100)])
def test_a_damaged_file_is_moved_aside_and_read_as_no_checkpoint(tmp_path, content):
    path = tmp_path / "key.pt"
    path.write_bytes(content)
    warnings: list[str] = []
    assert C.load(path, "key", warn=warnings.append) is None
    [aside] = tmp_path.glob("key.pt.unreadable-*")
    assert aside.read_bytes() == content and not path.exists()
    [warning] = warnings
    assert warning.startswith(f"warning: checkpoint {path} cannot be read (")
    assert warning.endswith(f"; moved aside to {aside.name}; starting from step 0")


def test_a_readable_file_that_is_not_a_checkpoint_is_moved_aside(tmp_path):
    path = tmp_path / "key.pt"
    torch.save([torch.zeros(2)], path)
    warnings: list[str] = []
    assert C.load(path, "key", warn=warnings.append) is None
    assert "(not a peftbench checkpoint)" in warnings[0] and not path.exists()


def test_a_checkpoint_of_another_run_key_is_left_alone(tmp_path):
    path = tmp_path / "key.pt"
    C.save(path, "other", TrainState(), *_tiny_optimization())
    warnings: list[str] = []
    assert C.load(path, "key", warn=warnings.append) is None
    assert warnings == [] and path.exists()
