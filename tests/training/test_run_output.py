"""What a run tells the user and where its result lands when something goes wrong: a results
folder that cannot be written is refused before training, a final write that fails anyway goes
to a fallback folder, and a failed run (or reproduction) prints its error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from peftbench.cli import main  # noqa: E402
from peftbench.record import results as R  # noqa: E402

LORA = "experiments/lora/tiny-r4"


def test_an_unwritable_results_folder_is_refused_before_training(tiny_suite, capsys):
    # A file where the folder should be: unwritable even for root, which ignores permissions.
    (tiny_suite / "temporary_results").write_text("not a folder")
    assert main(["run", "--no-progress", str(tiny_suite / LORA)]) == 2
    err = capsys.readouterr().err
    assert "cannot write results to" in err and "temporary_results" in err and "Nothing was trained" in err
    assert "Traceback" not in err and "data:" not in err  # refused before any data or model was loaded
    assert not (tiny_suite / ".peftbench" / "checkpoints").exists()


def test_a_final_write_that_fails_goes_to_a_fallback_folder_and_exits_1(tiny_suite, monkeypatch, capsys):
    import peftbench.fs

    real_write = peftbench.fs.atomic_write_json

    def refuse_temporary_results(path, data, *args, **kwargs):
        if Path(path).parent.name == "temporary_results":
            raise PermissionError(13, "Permission denied")
        return real_write(path, data, *args, **kwargs)

    monkeypatch.setattr(peftbench.fs, "atomic_write_json", refuse_temporary_results)
    assert main(["run", "--no-progress", "--clean", str(tiny_suite / LORA)]) == 1
    err = capsys.readouterr().err
    [saved] = sorted((tiny_suite / ".peftbench" / "unwritten_results").glob("*.json"))
    assert f"written to {saved} instead" in err and "Traceback" not in err
    # one story: not "success: result written to ..." and then "failed"
    assert "result written to" not in err and "failed" not in err
    assert "lora/tiny-r4 (seed 0): success, but its result is not in its folder: could not write" in err
    result = json.loads(saved.read_text())
    assert result[R.TRAIN_INFO][R.TI_STATUS] == "success"  # the numbers themselves are fine
    assert (saved.parent / result[R.RUN_INFO][R.RI_PREDICTIONS]["file"]).exists()


def _failing_step(monkeypatch):
    from peftbench.training import loop

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(loop, "train_step", boom)


def test_a_failed_run_prints_its_error_with_the_failed_line(tiny_suite, monkeypatch, capsys):
    _failing_step(monkeypatch)
    assert main(["run", "--no-progress", str(tiny_suite / LORA)]) == 1
    lines = capsys.readouterr().err.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith("failed: result written to"))
    assert lines[failed + 1] == "error: RuntimeError: CUDA out of memory (simulated)"
    assert not any("Traceback" in line or "in boom" in line for line in lines)


def test_debug_adds_the_last_traceback_lines_of_a_failed_run(tiny_suite, monkeypatch, capsys):
    _failing_step(monkeypatch)
    assert main(["run", "--no-progress", "--debug", str(tiny_suite / LORA)]) == 1
    err = capsys.readouterr().err
    assert "error: RuntimeError: CUDA out of memory (simulated)" in err
    assert "in boom" in err and 'raise RuntimeError("CUDA out of memory (simulated)")' in err


def test_a_failed_reproduction_shows_its_cause_not_a_deleted_scratch_file(make_suite, tmp_path, tiny_model_dir,
                                                                          monkeypatch, capsys):
    suite = make_suite(tmp_path / "suite", tiny_model_dir)
    assert main(["run", "--no-progress", "--clean", str(suite / LORA)]) == 0
    [recorded] = sorted((suite / "temporary_results").glob("*.json"))
    capsys.readouterr()
    _failing_step(monkeypatch)
    assert main(["reproduce", str(recorded), "--no-progress"]) == 1
    err = capsys.readouterr().err
    verdict = next(line for line in err.splitlines() if line.startswith("the reproduction did not succeed"))
    assert "(failed): RuntimeError: CUDA out of memory (simulated)" in verdict
    assert "peftbench-reproduce-" not in verdict and "--keep" in verdict


class _PipeClosedAfterFirstStep:
    """stderr of a run-all child after run-all died: writes fail once validation has begun."""

    def __init__(self) -> None:
        self.closed = False

    def write(self, text: str) -> int:
        if self.closed or text.startswith("step"):
            self.closed = True
            raise BrokenPipeError(32, "Broken pipe")
        return len(text)

    def flush(self) -> None:
        if self.closed:
            raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_output_pipe_is_a_cancel_not_a_failure(tiny_suite, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "stderr", _PipeClosedAfterFirstStep())
    assert main(["run", "-v", "--no-progress", str(tiny_suite / LORA)]) == 130
    [path] = sorted((tiny_suite / "cancelled_results").glob("*.json"))
    result = json.loads(path.read_text())
    assert result[R.TRAIN_INFO][R.TI_STATUS] == "cancelled"
    assert "BrokenPipeError" in result[R.RUN_INFO][R.RI_ERROR_MSG]


def test_no_progress_bars_are_written_when_stderr_is_not_a_terminal(tiny_suite, capsys):
    # progress bars are on by default; captured stderr, like a log file, is not a terminal
    assert main(["run", "--clean", str(tiny_suite / LORA)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err and "train:" not in err
