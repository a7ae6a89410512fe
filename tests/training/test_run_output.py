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


# --- --output-dir: the adapter replaces nothing but an earlier adapter ---------------------------


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused_output_dir(suite: Path, output_dir: Path, capsys, experiment: str = LORA, *extra: str) -> str:
    """Run with --output-dir; assert it is refused before anything runs; its message."""
    before = files_under(suite)
    assert main(["run", "--no-progress", str(suite / experiment), "--output-dir", str(output_dir), *extra]) == 2
    err = capsys.readouterr().err
    assert f"--output-dir {output_dir}" in err and "Nothing was run" in err
    assert files_under(suite) == before  # nothing written: no result, checkpoint, lock or adapter file
    return err


def test_an_output_dir_inside_the_experiments_folder_is_refused_and_the_other_experiment_kept(tiny_suite, tiny_lora,
                                                                                              capsys):
    other = tiny_suite / "experiments" / "lora" / "other"
    other.mkdir()
    (other / "adapter_config.json").write_text(json.dumps(dict(tiny_lora, r=2, lora_alpha=4)))
    err = refused_output_dir(tiny_suite, other, capsys)
    assert f"inside the suite's experiments/ folder ({tiny_suite / 'experiments'})" in err
    # A folder that does not exist yet is judged by where it would be.
    err = refused_output_dir(tiny_suite, tiny_suite / "experiments" / "lora" / "tiny-r4" / "adapter", capsys)
    assert "inside the suite's experiments/ folder" in err


@pytest.mark.parametrize("files, why", [
    ({"adapter_config.json": "{}"}, "holds an adapter_config.json with no adapter weights beside it"),
    ({"adapter_config.json": "{}", "training_params.json": "{}"}, "holds training_params.json"),
    ({"default_training_params.json": "{}"}, "holds default_training_params.json"),
])
def test_an_output_dir_that_looks_like_an_experiment_or_a_suite_is_refused(tiny_suite, tmp_path, files, why, capsys):
    folder = tmp_path / "copied-experiment"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    assert why in refused_output_dir(tiny_suite, folder, capsys)
    assert {p.name: p.read_text() for p in folder.iterdir()} == files


def test_an_output_dir_that_is_the_base_model_or_the_suite_is_refused(tiny_suite, tiny_model_dir, capsys):
    assert "the model this run fine-tunes" in refused_output_dir(tiny_suite, tiny_model_dir, capsys,
                                                                 "experiments/full-finetuning/tiny")
    assert "the suite's own folder" in refused_output_dir(tiny_suite, tiny_suite, capsys)


def test_output_dir_with_clean_is_refused_instead_of_deleting_the_folder(tiny_suite, tmp_path, capsys):
    folder = tmp_path / "my-work"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    err = refused_output_dir(tiny_suite, folder, capsys, LORA, "--clean")
    assert "with --clean: --clean deletes the adapter folder" in err
    assert (folder / "notes.txt").read_text() == "mine"


def test_an_output_dir_an_earlier_run_saved_its_adapter_into_is_written_again(tiny_suite, tmp_path):
    out = tmp_path / "adapter"
    run = ["run", "--no-progress", str(tiny_suite / LORA), "--output-dir", str(out)]
    assert main(run) == 0
    first = files_under(out)
    assert "adapter_config.json" in first and "adapter_model.safetensors" in first
    assert main([*run, "--set", "optimizer_kwargs.lr=0.002"]) == 0
    assert files_under(out).keys() == first.keys()
    assert files_under(out)["adapter_model.safetensors"] != first["adapter_model.safetensors"]
