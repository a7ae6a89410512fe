"""The grader: table-driven cases (tests/scoring/scoring_cases.py), the rules the module docstring
promises, and the time bound of the symbolic check."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import threading
import time

import pytest

from peftbench.scoring import grader as scoring
from peftbench.scoring.grader import (
    GRADER_VERSION,
    GRADES_SHA256,
    Grade,
    SymbolicChecker,
    accuracy,
    extract_answer,
    grade,
    is_correct,
    reference_answer,
)
from scoring_cases import EXTRACT_CASES, GRADE_CASES, NATALIA_REF


def test_the_tables_hold_at_least_100_graded_outputs_right_and_wrong():
    assert len(GRADE_CASES) >= 100
    assert len({c.name for c in GRADE_CASES}) == len(GRADE_CASES), "case names must be unique"
    assert any(c.strict for c in GRADE_CASES) and any(not c.strict for c in GRADE_CASES)
    assert any(c.flexible and not c.strict for c in GRADE_CASES)


@pytest.mark.parametrize("case", GRADE_CASES, ids=[c.name for c in GRADE_CASES])
def test_grade_of_model_output(case):
    g = grade(case.output, case.reference)
    assert (g.correct_strict, g.correct_flexible) == (case.strict, case.flexible), g


@pytest.mark.parametrize("case", GRADE_CASES, ids=[c.name for c in GRADE_CASES])
def test_is_correct_agrees_with_grade_in_both_modes(case):
    assert is_correct(case.output, case.reference, "strict") == case.strict
    assert is_correct(case.output, case.reference, mode="flexible") == case.flexible


@pytest.mark.parametrize("case", EXTRACT_CASES, ids=[c.name for c in EXTRACT_CASES])
def test_extract_answer(case):
    assert extract_answer(case.text, case.mode) == case.expected


@pytest.mark.parametrize("case", GRADE_CASES, ids=[c.name for c in GRADE_CASES])
def test_flexible_is_the_strict_answer_when_there_is_one(case):
    g = grade(case.output, case.reference)
    if g.extracted is not None:
        assert g.extracted_flexible == g.extracted
        assert g.correct_flexible == g.correct_strict
    assert g.correct_flexible >= g.correct_strict


def test_grade_fields_are_what_a_predictions_row_stores():
    g = grade("Natalia sold 72 clips.\nThe answer is: $72.00", NATALIA_REF)
    assert g == Grade(extracted="72.00", extracted_flexible="72.00", correct_strict=True, correct_flexible=True)
    assert [f.name for f in dataclasses.fields(Grade)] == [
        "extracted", "extracted_flexible", "correct_strict", "correct_flexible"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.correct_strict = False  # type: ignore[misc]


def test_no_marker_gives_no_strict_answer_but_a_flexible_one():
    g = grade("Natalia sold 48+24 = 72 clips.", NATALIA_REF)
    assert g == Grade(None, "72", False, True)


@pytest.mark.parametrize("reference, expected", [
    (NATALIA_REF, "72"),
    ("Natalia sold 72 clips.\nThe answer is: 72", "72"),
    ("72", "72"),
    (" 1,080 ", "1080"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{2}}{2}"),
    ("$\\frac{\\sqrt{2}}{2}$", "\\frac{\\sqrt{2}}{2}"),
    ("(1, 2)", "(1, 2)"),
    ("so the answer is $\\boxed{3}$", "3"),
])
def test_reference_answer_of_gsm8k_metamath_and_bare_references(reference, expected):
    assert reference_answer(reference) == expected


def test_numbers_compare_by_value():
    assert is_correct("The answer is 29.00", "29")
    assert is_correct("The answer is 3/4", "0.75")
    assert is_correct("The answer is 1,080", "#### 1080")
    assert is_correct("The answer is 1080", "#### 1,080")
    assert not is_correct("The answer is 1,080", "#### 108")


def test_percent_is_the_number_of_percent_not_a_ratio():
    assert is_correct("The answer is 25%", "#### 25")
    assert not is_correct("The answer is 0.25", "#### 25")
    assert not is_correct("The answer is 25%", "0.25")


def test_last_marker_wins_within_the_answer_paragraph():
    assert extract_answer("#### 15\nThe answer is: 15") == "15"
    assert extract_answer("The answer is 62. No: 48+24 = 72, so the answer is 72.") == "72"
    # ...but a new paragraph after the first answer is a continuation, not a correction
    assert extract_answer("The answer is 72.\n\nAlice has 3 cats. The answer is: 3") == "72"


def test_hallucinated_next_question_is_cut_before_anything_else():
    out = "She sold 72 clips.\n\nQuestion: Weng earns $12 an hour. How much? Answer: The answer is: 10"
    assert extract_answer(out) is None
    assert extract_answer(out, "flexible") == "72"
    assert scoring.cut_continuation(out) == "She sold 72 clips.\n"


def test_unknown_mode_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="strict, flexible"):
        extract_answer("The answer is 1", mode="lenient")
    with pytest.raises(ValueError, match="strict, flexible"):
        accuracy([], mode="loose")


def test_accuracy_is_the_fraction_correct_per_mode():
    grades = [Grade("1", "1", True, True), Grade(None, "2", False, True),
              Grade("3", "3", False, False), Grade(None, None, False, False)]
    assert accuracy(grades) == 0.25
    assert accuracy(grades, "flexible") == 0.5
    assert accuracy(iter(grades), mode="strict") == 0.25


def test_accuracy_of_nothing_is_an_error_not_zero():
    with pytest.raises(ValueError, match="empty"):
        accuracy([])


def _grades_sha256() -> str:
    """sha256 over every table case: its name, its inputs and what the grader makes of them."""
    rows = []
    for c in GRADE_CASES:
        g = grade(c.output, c.reference)
        rows.append(["grade", c.name, c.output, c.reference, g.extracted, g.extracted_flexible,
                     g.correct_strict, g.correct_flexible])
    for c in EXTRACT_CASES:
        rows.append(["extract", c.name, c.text, c.mode, extract_answer(c.text, c.mode)])
    return hashlib.sha256(json.dumps(rows, ensure_ascii=True).encode("ascii")).hexdigest()


def test_the_grades_of_the_tables_are_the_ones_recorded_for_this_grader_version():
    # Golden test: results record GRADER_VERSION, and `peftbench rescore` trusts it to say
    # whether saved grades are current, so a change that alters a grade must bump it.
    actual, recorded = _grades_sha256(), GRADES_SHA256.get(GRADER_VERSION)
    assert actual == recorded, (
        f"the grades of the cases in tests/scoring/scoring_cases.py hash to {actual}, but "
        f"GRADES_SHA256[{GRADER_VERSION!r}] in src/peftbench/scoring/grader.py holds {recorded!r}.\n"
        f"- If you changed the grader and it now grades some case differently: bump GRADER_VERSION "
        f"and add GRADES_SHA256[<new version>] = {actual!r} (keep the old entries).\n"
        f"- If the grader is unchanged and you only added or edited cases: set "
        f"GRADES_SHA256[{GRADER_VERSION!r}] = {actual!r}.")


def test_none_and_empty_inputs_are_wrong_not_errors():
    assert not is_correct("", "")
    assert not is_correct("The answer is 5", "")
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert not scoring.answers_match(None, "5")


def test_importing_the_grader_loads_neither_torch_nor_sympy_nor_math_verify():
    code = (
        "import sys, peftbench.scoring.grader as s\n"
        "s.grade('The answer is: 72', '#### 72')\n"
        "heavy = [m for m in ('torch', 'sympy', 'math_verify', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---- the symbolic check: separate process, bounded time, usable from threads


def test_symbolic_check_works_off_the_main_thread():
    # Math-Verify's own timeouts use signal.alarm, which raises off the main thread.
    results, errors = [], []

    def work():
        try:
            results.append(is_correct("The answer is \\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"))
            results.append(is_correct("The answer is \\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{2}}{2}"))
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=180)
    assert not errors and results == [True, False]


def test_pathological_input_is_graded_wrong_within_the_bound_and_the_checker_recovers():
    checker = SymbolicChecker(timeout_s=2.0)
    try:
        assert checker.equal("(1, 2)", "(1,2)")  # starts the worker outside the measured bound
        stuck_worker = checker._process
        start = time.monotonic()
        # sympy evaluates 9^(9^(9^9)) eagerly: minutes of big-integer arithmetic
        assert checker.equal("9^{9^{9^{9}}}", "1") is False
        elapsed = time.monotonic() - start
        assert elapsed < 2.0 + 30, f"took {elapsed:.1f}s for a 2s bound"
        assert stuck_worker.poll() is not None, "the stuck worker must be killed, not left running"
        # the stuck worker was replaced: the next item is graded normally
        assert checker.equal("[2,5)", "[2, 5)")
    finally:
        checker.close()


def test_overlong_answers_are_wrong_without_a_symbolic_check():
    checker = SymbolicChecker(timeout_s=1.0)
    long_answer = "x+" * scoring.MAX_SYMBOLIC_CHARS + "1"
    assert checker.equal(long_answer, long_answer) is False
    assert checker._process is None  # never started a worker for it


def test_numeric_references_never_start_the_symbolic_worker(monkeypatch):
    def fail(*args):
        raise AssertionError("symbolic check called for plain numbers or prose")

    monkeypatch.setattr(scoring, "symbolic_equal", fail)
    assert grade("The answer is: 72", NATALIA_REF).correct_strict
    assert not grade("The answer is: the number of clips", NATALIA_REF).correct_strict
    assert not grade("no answer here", NATALIA_REF).correct_flexible


def test_a_process_that_used_the_symbolic_checker_exits_cleanly():
    """The worker's reader thread must not abort the interpreter at shutdown (seen as
    "Fatal Python error: _enter_buffered_busy" and exit 134 at the end of a test run)."""
    import subprocess
    import sys

    code = ("from peftbench.scoring import grader as scoring\n"
            "assert scoring.symbolic_equal(r'\\frac{1}{2}', r'\\frac{2}{4}')\n"
            "checker = scoring.SymbolicChecker(); checker.equal('x', 'x')\n")
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert "Fatal Python error" not in proc.stderr
