"""Locks and atomic writes: one run of an experiment at a time (a live holder is respected and
named, a dead one on this host is taken over), two run-all processes share a suite's work, and a
crash while writing leaves the previous file whole."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


from peftbench.training import checkpoint as C  # noqa: E402
from peftbench.record import lock as L  # noqa: E402
from peftbench.record import results as R  # noqa: E402
from peftbench.fs import atomic_write_json  # noqa: E402
from peftbench.cli import main  # noqa: E402
from peftbench.training.loop import NoScaler, TrainState  # noqa: E402

LORA = "experiments/lora/tiny-r4"
HOLD_LOCK = ("import sys, time; from pathlib import Path; from peftbench.record.lock import ExperimentLock; "
             "ExperimentLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(600)")


def child_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def test_live_lock_of_another_process_makes_run_and_run_all_skip_and_name_the_holder(tiny_suite, capsys):
    lock_file = tiny_suite / ".peftbench" / "locks" / "lora--tiny-r4.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        who = f"pid {holder.pid} on {socket.gethostname()}"

        assert main(["run", str(tiny_suite / LORA), "--no-progress"]) == 0
        assert f"lora/tiny-r4 (seed 0): skipped: lora--tiny-r4 is being run by {who}" in capsys.readouterr().err

        assert main(["run-all", str(tiny_suite / LORA), "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert re.search(rf"lora/tiny-r4\s+0\s+skip\s+running now \({who}\)", out)  # the plan
        assert re.search(rf"lora/tiny-r4\s+0\s+skipped\s+-\s+running now \({who}\)", out)  # the summary
        assert not any((tiny_suite / d).exists() for d in ("temporary_results", "cancelled_results"))
        assert L.read_holder(lock_file)["pid"] == holder.pid  # untouched
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True).stdout)
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "started_at": "earlier"}))
    messages = []
    lock = L.ExperimentLock(path, log=messages.append).acquire()
    assert L.read_holder(path)["pid"] == os.getpid()
    assert messages == [f"taking over stale lock {path} (pid {dead_pid} is gone)"]
    lock.release()
    assert not path.exists()


@pytest.mark.parametrize("note", ['{"host": "HOST", "started_at": "earlier"}', '{"pid": "abc", "host": "HOST"}',
                                  "[]", "", "not json", '{"pid": -5, "host": "HOST"}', '{"pid": true, "host": "HOST"}'],
                         ids=["no-pid", "pid-text", "list", "empty", "not-json", "negative-pid", "pid-bool"])
def test_an_unusable_lock_note_neither_blocks_nor_raises(tmp_path, note):
    path = tmp_path / "x.lock"
    path.write_text(note.replace("HOST", socket.gethostname()))
    assert L.running_holder(path) is None  # status / run-all: not "running now"
    messages = []
    lock = L.ExperimentLock(path, log=messages.append).acquire()
    assert L.read_holder(path)["pid"] == os.getpid()
    assert len(messages) == 1 and messages[0].startswith(f"taking over stale lock {path}")
    lock.release()


def test_a_pid_reused_after_a_restart_does_not_block(tmp_path):
    # This process is alive, but it started after the note says its writer did: after a
    # container restart, pids are handed out again from 1 and a note's pid may be anyone's.
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started_at": "2001-01-01T00:00:00+0000"}))
    assert L.running_holder(path) is None
    L.ExperimentLock(path, log=lambda _: None).acquire().release()
    assert not path.exists()


def test_a_note_of_a_live_process_started_before_it_is_respected(tmp_path):
    path = tmp_path / "x.lock"
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started_at": "2999-01-01T00:00:00+0000"}
    path.write_text(json.dumps(holder))
    assert L.running_holder(path) == holder
    with pytest.raises(L.LockHeld, match=f"being run by pid {os.getppid()}"):
        L.ExperimentLock(path).acquire()


def test_a_lock_dies_with_its_process_even_when_its_note_stays(tmp_path):
    path = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert L.running_holder(path)["pid"] == holder.pid
        with pytest.raises(L.LockHeld):
            L.ExperimentLock(path).acquire()
    finally:
        holder.kill()  # SIGKILL: no release, the note stays behind
        holder.wait()
    assert L.read_holder(path)["pid"] == holder.pid
    assert L.running_holder(path) is None
    L.ExperimentLock(path, log=lambda _: None).acquire().release()


def test_lock_held_on_another_host_is_respected(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": 1, "host": "another-machine", "started_at": "earlier"}))
    with pytest.raises(L.LockHeld, match="being run by pid 1 on another-machine"):
        L.ExperimentLock(path).acquire()
    assert L.read_holder(path)["host"] == "another-machine"


def test_two_run_all_processes_started_together_run_each_experiment_once(make_suite, tmp_path, tiny_model_dir):
    suite = make_suite(tmp_path / "suite", tiny_model_dir)
    command = [sys.executable, "-m", "peftbench.cli", "run-all", str(suite), "--no-progress"]
    logs = [open(tmp_path / f"run-all-{n}.log", "w") for n in (1, 2)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=child_env()) for log in logs]
    outs = [proc.communicate(timeout=600)[0] for proc in procs]
    for log in logs:
        log.close()
    assert [p.returncode for p in procs] == [0, 0], [(tmp_path / f"run-all-{n}.log").read_text()[-3000:] for n in (1, 2)]

    stems = sorted(p.name.split("--2")[0] for p in (suite / "temporary_results").glob("*.json"))
    assert stems == ["full-finetuning--tiny", "lora--tiny-r4"]  # one result each
    assert not (suite / "cancelled_results").exists()
    ran = [int(re.search(r"^ran (\d+) ", out, re.M).group(1)) for out in outs]
    assert sum(ran) == 2, outs
    for experiment in ("full-finetuning/tiny", "lora/tiny-r4"):
        successes = [out for out in outs if re.search(rf"^{experiment}\s+0\s+success", out, re.M)]
        assert len(successes) == 1, (experiment, outs)


# ----------------------------------------------------------------------------------------------
# atomic writes


def _fail_fsync(fd):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("write", [
    lambda path: atomic_write_json(path, {"new": True}),
    lambda path: R.write_predictions(path, [{"split": "test", "index": 0}]),
], ids=["result", "predictions"])
def test_crash_while_writing_a_result_leaves_the_old_file_intact(tmp_path, monkeypatch, write):
    path = tmp_path / "lora--x.json"
    path.write_bytes(b'{"old": true}\n')
    monkeypatch.setattr(os, "fsync", _fail_fsync)  # the new bytes are written, then the disk fails
    with pytest.raises(OSError, match="No space left"):
        write(path)
    assert path.read_bytes() == b'{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_crash_while_writing_a_checkpoint_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    path = tmp_path / "x.pt"
    C.save(path, "key", TrainState(step=10), model, optimizer, scheduler, NoScaler())
    previous = path.read_bytes()

    real_save = torch.save

    def save_half_then_die(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt  # e.g. Ctrl+C in the middle of the write

    monkeypatch.setattr(torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        C.save(path, "key", TrainState(step=20), model, optimizer, scheduler, NoScaler())
    monkeypatch.undo()
    assert path.read_bytes() == previous
    assert C.load(path, "key", warn=pytest.fail)["state"]["step"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
