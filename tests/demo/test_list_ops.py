"""The demo's second task: the list-question generator and its grader."""

from __future__ import annotations

import random

import pytest

from peftbench import tasks
from peftbench.demo import list_ops

TASK = tasks.get("demo:list-ops")


def test_splits_share_no_problem_and_are_the_same_every_time():
    test = list_ops.problems("eval-test", 500)
    valid = list_ops.problems("eval-train", 1000)
    train = list_ops.problems("train", 5000)
    canon = {name: {p.canonical for p in ps} for name, ps in (("test", test), ("valid", valid), ("train", train))}
    assert not canon["test"] & canon["train"] and not canon["test"] & canon["valid"] and not canon["valid"] & canon["train"]
    assert len(canon["test"]) == 500  # no problem twice in the test set
    assert list_ops.eval_rows("test") == list_ops.eval_rows("test")
    state = random.getstate()
    list_ops.problems("train", 100)
    assert random.getstate() == state  # the global RNG is left alone


@pytest.mark.parametrize("family, check", [
    ("sort_up", lambda xs, a: a == sorted(xs)),
    ("sort_down", lambda xs, a: a == sorted(xs, reverse=True)),
    ("largest", lambda xs, a: a == [max(xs)]),
    ("smallest", lambda xs, a: a == [min(xs)]),
    ("reverse", lambda xs, a: a == xs[::-1]),
])
def test_every_answer_is_right_for_its_question(family, check):
    seen = 0
    for p in list_ops.problems("eval-test", 500):
        if p.family == family:
            assert check(list(p.params), [int(x) for x in p.answer.split(", ")]), p
            seen += 1
    assert seen > 20


def test_count_and_remove_answers():
    for p in list_ops.problems("eval-test", 500):
        target, xs = p.params[0], list(p.params[1:])
        if p.family == "count":
            assert int(p.answer) == xs.count(target) >= 1
        elif p.family == "without":
            assert p.answer == ", ".join(str(x) for x in xs if x != target)


@pytest.mark.parametrize("text, correct", [
    (" 7, 19, 42", True),
    ("7,19,42.\nQuestion: Sort 1, 2", True),  # only the answer line counts
    ("\n\n 7, 19, 42\n", True),
    ("7, 19", False),
    ("7, 19, 42, 3", False),
    ("The numbers are 42", False),
    ("", False),
])
def test_the_answer_line_must_hold_exactly_the_reference_numbers(text, correct):
    row = {"question": "Sort 42, 7, 19 from smallest to largest.", "answer": "7, 19, 42"}
    assert TASK.grade(text, row) == {"exact": correct}


def test_stopping_at_the_end_of_the_answer_line_never_changes_a_grade(stops_keep_grades):
    pieces = [" ", "7", "19", ", ", "42", "\n", "Question", ":", "."]
    row = {"question": "q", "answer": "7, 19, 42"}

    def same(prefix, full):
        assert TASK.grade(prefix, row) == TASK.grade(full, row), full

    assert stops_keep_grades(TASK, row, pieces, 2000, 10, same) > 500


def test_the_task_reads_only_its_generator():
    from peftbench.errors import ConfigError
    from peftbench.experiment.config import build_train_config

    with pytest.raises(ConfigError, match="reads only its generator 'demo:list-ops'"):
        build_train_config([("p", {"task": "demo:list-ops", "train_dataset": "demo:word-problems"})])
