"""The dynamic engine's stop rule never changes a grade.

The engine (peftbench.training.generation) stops a row as soon as the metamathqa task's
`stops_generation(text, row)` holds for
the text generated so far. Stopping can only be invisible to the grade if, for every text F and
every prefix T of F at which the rule fires, the answers extracted from T and from F are the same
in both modes (equal answers give equal grades against any reference, without the symbolic
check). Tokens add several characters at once, so every such prefix is checked, not only the
first."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from peftbench.scoring.grader import extract_answer
from peftbench import tasks
from scoring_cases import EXTRACT_CASES, GRADE_CASES, NEXT_QUESTION

_TASK = tasks.get("metamathqa")


def stops_grading(text: str) -> bool:
    return _TASK.stops_generation(text, {"question": "q", "answer": "#### 1"})


# What models write after an answer: a new question, a chat turn, more answers, blank lines.
_PIECES = ["\n", "\n\n", " ", "Question", "question", "Q", ":", " :", "Problem", "### ", "**", "User", "<|eot_id|>",
           "</s>", "The answer is: ", "The answer is ", "#### ", "\\boxed{", "}", "72", "7", "10", "1,080", "$",
           "So ", "Answer:", "x = ", "<<48/2=24>>", ".", ",", "Think step by step.", "1", "2", "\t"]


def _answers(text: str) -> tuple[str | None, str | None]:
    return extract_answer(text, "strict"), extract_answer(text, "flexible")


def _check_every_stopping_prefix(full: str, stride: int = 1) -> int:
    """Assert the property for the first prefix of `full` where the rule fires and every
    `stride`-th one after it (all of them by default); returns how many were checked."""
    expected, checked, first = _answers(full), 0, None
    for end in range(1, len(full) + 1):
        prefix = full[:end]
        if (first is None or (end - first) % stride == 0 or end == len(full)) and stops_grading(prefix):
            first = end if first is None else first
            checked += 1
            assert _answers(prefix) == expected, (prefix, full)
    return checked


def test_cutting_each_graded_output_at_a_stop_point_keeps_its_answers():
    texts = [c.output for c in GRADE_CASES] + [c.text for c in EXTRACT_CASES]
    fired = sum(_check_every_stopping_prefix(t) for t in texts)
    # with a hallucinated next question appended, the rule must fire (and still change nothing);
    # every 5th prefix keeps this under a few seconds over ~150 outputs of ~300 characters
    fired_appended = sum(_check_every_stopping_prefix(c.output + NEXT_QUESTION, stride=5) > 0
                         for c in GRADE_CASES if c.output.strip())
    assert fired > 0
    assert fired_appended >= 0.9 * sum(1 for c in GRADE_CASES if c.output.strip())


@settings(max_examples=100, deadline=None)
@given(case=st.sampled_from(GRADE_CASES), tail=st.lists(st.sampled_from(_PIECES), max_size=25))
def test_any_continuation_of_a_graded_output_stops_without_changing_its_answers(case, tail):
    _check_every_stopping_prefix(case.output + "".join(tail))


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=40))
def test_text_made_of_answer_and_continuation_pieces_stops_without_changing_its_answers(pieces):
    _check_every_stopping_prefix("".join(pieces))


def test_the_rule_fires_at_a_hallucinated_next_question_and_not_before():
    text = "Natalia sold 72 clips.\nThe answer is: 72\nQuestion: Weng earns"
    first = next(end for end in range(1, len(text) + 1) if stops_grading(text[:end]))
    assert text[:first].endswith("\nQuestion:")
    assert not stops_grading("Question: restated first\nNatalia sold 72 clips.")  # a header before any text stays
