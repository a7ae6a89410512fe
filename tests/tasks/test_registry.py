"""The task registry and the interface every task keeps."""

from __future__ import annotations

import pytest

from peftbench import tasks
from peftbench.errors import UserError
from peftbench.experiment.config import build_train_config
from peftbench.errors import ConfigError


def test_the_shipped_tasks_are_registered_by_name():
    assert {"metamathqa", "demo:word-problems", "commonsense"} <= set(tasks.names())
    assert tasks.get("metamathqa").name == "metamathqa"


def test_an_unknown_task_name_is_bad_input_with_did_you_mean():
    with pytest.raises(UserError, match=r"unknown task 'comonsense'; did you mean 'commonsense'\?"):
        tasks.get("comonsense")
    with pytest.raises(ConfigError, match=r"task: unknown task 'metamath'; did you mean 'metamathqa'\?"):
        build_train_config([("training_params.json", {"task": "metamath"})])


@pytest.mark.parametrize("name", ["metamathqa", "demo:word-problems", "commonsense"])
def test_grade_returns_the_tasks_grades_with_the_headline_first(name):
    task = tasks.get(name)
    answer = "true" if name == "commonsense" else "#### 7"
    row = {"question": "q", "answer": answer, "set": "boolq", "set_index": 0, "output": "the correct answer is true"}
    grades = task.grade("The answer is 7. the correct answer is true", row)
    assert list(grades) == list(task.grade_names) and all(isinstance(v, bool) for v in grades.values())
    assert grades[task.grade_names[0]] is True
    assert task.metric_key("test", task.grade_names[0]) == "test accuracy"


def test_the_gsm8k_tasks_grade_as_the_grader_does():
    from peftbench.scoring import grader

    task = tasks.get("metamathqa")
    for text, reference in (("So the answer is 72", "#### 72"), ("It is 5 then 6", "#### 6"), ("none", "#### 1")):
        g = grader.grade(text, reference)
        assert task.grade(text, {"question": "q", "answer": reference}) == {
            "strict": g.correct_strict, "flexible": g.correct_flexible}


def test_a_task_sets_the_defaults_a_suite_leaves_unset_and_the_suite_still_wins():
    cfg = build_train_config([("defaults", {"task": "commonsense"})])
    assert (cfg.train_dataset, cfg.eval_dataset) == ("zwhe99/commonsense_170k", "llm-adapters")
    assert cfg.query_template.startswith("Below is an instruction") and cfg.generation_kwargs["max_new_tokens"] == 32
    mine = build_train_config([("defaults", {"task": "commonsense", "generation_kwargs": {"max_new_tokens": 8}})])
    assert mine.generation_kwargs == {"max_new_tokens": 8}
    # the root suite's task: the defaults are the reference study's, as before tasks existed
    plain = build_train_config([])
    assert (plain.task, plain.train_dataset, plain.eval_dataset) == ("metamathqa", "meta-math/MetaMathQA", "openai/gsm8k")
    assert plain.generation_kwargs == {"max_length": 800, "max_new_tokens": 300}


def test_only_a_tasks_own_files_and_graders_are_in_its_code_identity(tmp_path, monkeypatch):
    """A grader change stales the tasks that grade with it, and no other task."""
    import shutil
    from pathlib import Path

    import peftbench
    from peftbench.record import runkey

    copy = Path(shutil.copytree(Path(peftbench.__file__).parent, tmp_path / "peftbench",
                                ignore=shutil.ignore_patterns("__pycache__")))
    monkeypatch.setattr(peftbench, "__file__", str(copy / "__init__.py"))
    before = {name: runkey.code_identity(name) for name in ("metamathqa", "demo:word-problems", "commonsense")}
    with open(copy / "scoring" / "grader.py", "a") as f:
        f.write("\n# an edit of the GSM8K grader\n")
    after = {name: runkey.code_identity(name) for name in before}
    assert after["metamathqa"] != before["metamathqa"] and after["demo:word-problems"] != before["demo:word-problems"]
    assert after["commonsense"] == before["commonsense"]
    with open(copy / "tasks" / "commonsense.py", "a") as f:
        f.write("\n# an edit of the commonsense task\n")
    again = {name: runkey.code_identity(name) for name in before}
    assert again["commonsense"] != after["commonsense"] and again["metamathqa"] == after["metamathqa"]


def test_every_published_result_of_the_reference_study_loads_as_metamathqa(published_results):
    from peftbench.analysis import leaderboard as lb
    from peftbench.record import results as R

    files = sorted(published_results.glob("*.json"))
    assert len(files) == 63
    assert {R.task_name(R.load(f)) for f in files} == {"metamathqa"}
    frame = lb.leaderboard(lb.load_runs([published_results]))
    assert set(frame["task"]) == {"metamathqa"} and len(frame) == 63
