"""reproduce: rebuild an experiment from a result file alone, re-run it away from the user's
results folders, compare every deterministic number, and fail on any edit outside the tolerance."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")


import peftbench  # noqa: E402
from peftbench.training import reproduction as P  # noqa: E402
from peftbench.record import results as R  # noqa: E402
from peftbench.record import runkey  # noqa: E402
from peftbench.cli import main  # noqa: E402
from peftbench.experiment.config import load_experiment  # noqa: E402

LORA = "experiments/lora/tiny-r4"


@pytest.fixture(scope="module")
def fresh(make_suite, tmp_path_factory, tiny_model_dir) -> Path:
    """The result file of one tiny LoRA run."""
    suite = make_suite(tmp_path_factory.mktemp("reproduce") / "suite", tiny_model_dir)
    assert main(["run", str(suite / LORA), "--no-progress", "--clean"]) == 0
    [path] = sorted((suite / "temporary_results").glob("*.json"))
    return path


def edited_copy(path: Path, folder: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    out = folder / path.name
    out.write_text(json.dumps(data))
    return out


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_reproducing_a_fresh_result_passes_and_leaves_the_results_folders_alone(fresh, capsys):
    suite = fresh.parent.parent
    before = tree(suite)
    assert main(["reproduce", str(fresh), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "run key: same as recorded" in captured.err
    rows = {line.split("  ")[0]: line for line in captured.out.splitlines()}
    for metric in ("final: test accuracy", "final: test accuracy flexible", "final: forgetting", "final: train loss",
                   "step 2: valid accuracy", "step 4: train loss"):
        assert rows[metric].rstrip().endswith("ok"), rows[metric]
    assert "adapter weights: identical" in captured.out
    assert "reproduced: all" in captured.out
    assert "verdict: IDENTICAL" in captured.out and "hardware: same as recorded" in captured.out
    assert tree(suite) == before


def test_reproducing_an_edited_result_fails_shows_the_number_and_warns_of_changed_code(fresh, tmp_path, monkeypatch,
                                                                                      capsys):
    def edit(data):
        final = data["train_info"]["metrics"][-1]
        final["test accuracy"] = final["test accuracy"] + 0.5

    edited = edited_copy(fresh, tmp_path, edit)
    # Training code that differs from the recorded one: a copy of the package with training/loop.py
    # edited (the code identity walks the training folder next to peftbench/__init__.py).
    copy = Path(shutil.copytree(Path(peftbench.__file__).parent, tmp_path / "pkg" / "peftbench",
                                ignore=shutil.ignore_patterns("__pycache__")))
    with open(copy / "training" / "loop.py", "a") as f:
        f.write("\n# edited\n")
    monkeypatch.setattr(peftbench, "__file__", str(copy / "__init__.py"))

    assert main(["reproduce", str(edited), "--no-progress"]) == 1
    captured = capsys.readouterr()
    [bad] = [line for line in captured.out.splitlines() if "DIFFERS" in line]
    assert bad.startswith("final: test accuracy ") and "0.5" in bad
    assert "NOT REPRODUCED: 1 of" in captured.out
    # the edited copy has no predictions file beside it: nothing to judge the difference by
    assert "verdict: DIFFERENT (no paired comparison of the predictions" in captured.out
    assert "warning: training code differs" in captured.err
    assert "run key differs from the recorded one: code changed (sources_sha256)" in captured.err


def test_rebuilt_experiment_has_the_recorded_configs_and_run_key(fresh, tmp_path):
    recorded = R.load(fresh)
    exp = load_experiment(P.rebuild(recorded, tmp_path))
    assert (exp.method, exp.name) == ("lora", "tiny-r4")
    assert exp.train_config.to_dict() == recorded["run_info"]["train_config"]
    key, _ = runkey.compute(exp, "cpu")
    assert key == recorded["run_info"]["run_key"]


def test_full_finetuning_result_is_rebuilt_without_an_adapter_config(fresh, tmp_path):
    recorded = R.load(fresh)
    recorded["run_info"].update(experiment_name="full-finetuning/tiny", peft_config=None)
    exp = load_experiment(P.rebuild(recorded, tmp_path))
    assert exp.peft_config is None and exp.experiment_name == "full-finetuning/tiny"
    assert exp.train_config.to_dict() == recorded["run_info"]["train_config"]


def test_recorded_peft_fields_the_installed_peft_does_not_know_are_dropped(fresh, tmp_path):
    recorded = R.load(fresh)
    recorded["run_info"]["peft_config"]["option_of_a_future_peft"] = 1
    exp = load_experiment(P.rebuild(recorded, tmp_path))  # the loader refuses unknown options
    assert exp.peft_config.r == 4 and exp.peft_config.target_modules == {"q_proj", "v_proj"}


def test_missing_local_data_is_named_before_anything_runs(fresh, tmp_path, capsys):
    def edit(data):
        data["run_info"]["train_config"]["train_dataset"] = str(tmp_path / "gone" / "metamath.jsonl")

    assert main(["reproduce", str(edited_copy(fresh, tmp_path, edit))]) == 2
    err = capsys.readouterr().err
    assert "local files that no longer exist" in err and f"train_dataset: {tmp_path / 'gone' / 'metamath.jsonl'}" in err


def test_a_failed_run_or_a_non_result_cannot_be_reproduced(fresh, tmp_path, capsys):
    failed = edited_copy(fresh, tmp_path, lambda d: d["train_info"].update(status="failed"))
    assert main(["reproduce", str(failed)]) == 2
    assert "status is 'failed'" in capsys.readouterr().err
    (tmp_path / "other.json").write_text("[1, 2]")
    assert main(["reproduce", str(tmp_path / "other.json")]) == 2
    assert "not a peftbench result" in capsys.readouterr().err
    assert main(["reproduce", str(tmp_path / "absent.json")]) == 2


def test_negative_tolerance_is_refused(fresh):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", str(fresh), "--tolerance", "-1"])
    assert exc.value.code == 2


def _result(*entries) -> dict:
    result = R.empty_result()
    result["train_info"]["metrics"] = list(entries)
    return result


@pytest.mark.parametrize("recorded, reproduced, tolerance, ok", [
    ({"train loss": 1.0}, {"train loss": 1.0}, 0.0, True),
    ({"train loss": 1.0}, {"train loss": 1.0 + 1e-12}, 0.0, False),
    ({"train loss": 1.0}, {"train loss": 1.0005}, 1e-3, True),  # absolute, not relative
    ({"train loss": 1000.0}, {"train loss": 1000.5}, 1e-3, False),
    ({"forgetting": None}, {"forgetting": None}, 0.0, True),
    ({"forgetting": None}, {"forgetting": 0.1}, 1.0, False),
    ({"train loss": math.nan}, {"train loss": math.nan}, 0.0, True),
    ({"train loss": 1.0}, {}, 1.0, False),  # a number that disappeared
    ({"train time": 1.0, "tokens / sec": 10.0, "cpu rss": 1, "elapsed time": 2.0},
     {"train time": 9.0, "tokens / sec": 99.0, "cpu rss": 7, "elapsed time": 5.0}, 0.0, True),  # machine figures
])
def test_compare_checks_every_number_within_an_absolute_tolerance(recorded, reproduced, tolerance, ok):
    rows = P.compare(_result({"step": 1, **recorded}), _result({"step": 1, **reproduced}), tolerance)
    assert all(r.ok for r in rows) is ok


def test_compare_labels_the_final_entry_and_flags_a_different_number_of_entries():
    recorded = _result({"step": 2, "valid accuracy": 0.5}, {"step": 2, "test accuracy": 0.25})
    rows = P.compare(recorded, _result({"step": 2, "valid accuracy": 0.5}), 0.0)
    labels = {r.label: r.ok for r in rows}
    assert labels["step 2: valid accuracy"] is True
    assert labels["final: test accuracy"] is False
    assert labels["number of metrics entries"] is False


def test_version_warnings_name_changed_code_and_libraries():
    recorded = {"code": {"peftbench_version": "0.1.0", "sources_sha256": "a" * 64},
                "libraries": {"torch": "2.12.0", "peft": "0.21.2"}}
    current = {"code": {"peftbench_version": "0.1.0", "sources_sha256": "b" * 64},
               "libraries": {"torch": "2.13.0", "peft": "0.21.2"}}
    code, libraries = P.version_warnings(recorded, current)
    assert "training code differs" in code and "aaaaaaaaaaaa" in code and "bbbbbbbbbbbb" in code
    assert libraries == "library versions differ: torch 2.12.0 -> 2.13.0"
    assert P.version_warnings(recorded, recorded) == []
