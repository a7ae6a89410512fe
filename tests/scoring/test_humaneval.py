"""HumanEval grading: the rows, the extraction rules of the module docstring (a table), the
canonical solutions as model outputs (164/164, and each with one line removed fails), and the
harness's proof that the tests ran."""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass

import pytest

from peftbench.errors import UserError
from peftbench.scoring import humaneval, sandbox
from peftbench.scoring.humaneval import CodeGrade, extract_program, grade, grade_detailed, grade_many


# --- rows ---------------------------------------------------------------------------------------

def test_the_164_rows_load_with_their_fields(humaneval_rows):
    assert len(humaneval_rows) == 164
    assert [r["task_id"] for r in humaneval_rows[:2]] == ["HumanEval/0", "HumanEval/1"]
    assert all(set(humaneval.FIELDS) <= set(r) for r in humaneval_rows)


def test_a_bad_row_is_a_user_error_naming_the_file_line_and_field(tmp_path):
    good = {"task_id": "T/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
            "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(good) + "\n" + json.dumps({**good, "test": None}) + "\n")
    with pytest.raises(UserError, match=r"rows.jsonl.gz, line 2: .*not text: test"):
        humaneval.load_rows(path)
    plain = tmp_path / "rows.jsonl"
    plain.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(UserError, match=r"rows.jsonl, line 2: not JSON"):
        humaneval.load_rows(plain)
    with pytest.raises(UserError, match="cannot read"):
        humaneval.load_rows(tmp_path / "absent.jsonl.gz")
    plain.write_text(json.dumps(good) + "\n")
    assert humaneval.load_rows(plain) == [good]


# --- extraction ---------------------------------------------------------------------------------

PROMPT = 'from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    """The sum."""\n'
BODY = "    return a + b\n"
WHOLE = "def add(a: int, b: int) -> int:\n    return a + b\n"


@dataclass(frozen=True)
class Case:
    name: str
    generated: str
    program: str | None  # None: no code found


CASES = [
    Case("continuation", BODY, PROMPT + BODY),
    Case("continuation_with_comment_first", "# add them\n    return a + b\n", PROMPT + "# add them\n    return a + b\n"),
    Case("continuation_with_a_helper_after", BODY + "\n\ndef helper():\n    return 1\n",
         PROMPT + BODY + "\n\ndef helper():\n    return 1\n"),
    Case("whole_program_unfenced", WHOLE, PROMPT + "\n\n" + WHOLE),
    Case("whole_program_fenced_with_prose", "Here it is:\n```python\n" + WHOLE + "```\nIt adds.",
         PROMPT + "\n\n" + WHOLE),
    Case("fenced_body", "```python\n" + BODY + "```", PROMPT + BODY),
    Case("untagged_fence", "```\n" + WHOLE + "```", PROMPT + "\n\n" + WHOLE),
    Case("py_tag", "```py\n" + WHOLE + "```", PROMPT + "\n\n" + WHOLE),
    Case("the_block_that_defines_the_function_wins",
         "Usage:\n```python\nprint(add(1, 2))\n```\nCode:\n```python\n" + WHOLE + "```",
         PROMPT + "\n\n" + WHOLE),
    Case("a_non_python_block_is_skipped", "```bash\npip install x\n```\n```python\n" + WHOLE + "```",
         PROMPT + "\n\n" + WHOLE),
    Case("first_python_block_when_none_defines_it", "```python\nx = 1\n```\n```python\ny = 2\n```",
         PROMPT + "\n\nx = 1\n"),
    Case("unclosed_fence_runs_to_the_end", "```python\n" + WHOLE, PROMPT + "\n\n" + WHOLE),
    Case("continuation_closed_by_a_fence", BODY + "```\n\nThis adds a and b.", PROMPT + BODY),
    Case("trailing_prose_is_cut", BODY + "\nThis function returns the sum of a and b.\n", PROMPT + BODY + "\n"),
    Case("trailing_prose_after_a_whole_program_is_cut", WHOLE + "\nThe function above adds.",
         PROMPT + "\n\n" + WHOLE + "\n"),
    Case("a_broken_definition_is_kept_as_a_syntax_error", "def add(a, b)\n    return a + b\n",
         PROMPT + "\n\ndef add(a, b)\n    return a + b\n"),
    Case("crlf_line_ends", BODY.replace("\n", "\r\n"), PROMPT + BODY),
    Case("prose_only_counts_as_code_and_will_not_compile", "I cannot write that function.",
         PROMPT + "\n\nI cannot write that function."),
    Case("empty", "", None),
    Case("whitespace", "  \n\n\t\n", None),
    Case("only_comments", "# I cannot do that\n", None),
    Case("empty_fence", "```python\n```", None),
    Case("only_a_bash_block", "```bash\nls\n```", None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_extract_program(case):
    row = {"prompt": PROMPT, "entry_point": "add"}
    assert extract_program(case.generated, row) == case.program


def test_no_code_is_graded_without_running_anything(add_row, monkeypatch):
    monkeypatch.setattr(sandbox, "run", lambda *a, **k: pytest.fail("nothing should run"))
    g = grade_detailed("   \n", add_row)
    assert (g.passed, g.reason) == (False, "no_code")


# --- the canonical solutions --------------------------------------------------------------------

def test_canonical_solutions_as_continuations_pass_164_of_164(humaneval_rows):
    grades = grade_many([(row["canonical_solution"], row) for row in humaneval_rows])
    failed = {row["task_id"]: g for row, g in zip(humaneval_rows, grades) if not g.passed}
    assert not failed
    assert len(grades) == 164


def test_canonical_solutions_as_whole_fenced_programs_pass_164_of_164(humaneval_rows):
    outputs = [f"Here is the solution.\n\n```python\n{row['prompt']}{row['canonical_solution']}```\n\nIt works."
               for row in humaneval_rows]
    grades = grade_many(list(zip(outputs, humaneval_rows)))
    failed = {row["task_id"]: g for row, g in zip(humaneval_rows, grades) if not g.passed}
    assert not failed
    assert len(grades) == 164


def without_last_return_line(solution: str) -> str:
    """The canonical body without its last line that starts with `return`. Every canonical solution
    has one, and each function must return a value its tests compare: without that line the
    function returns None where it returned the value (or, where the line was a branch's only
    statement, no longer compiles, or, for a one-line body, is empty). One line, chosen by a rule,
    not by looking at which removal breaks the tests."""
    lines = solution.split("\n")
    returns = [i for i, line in enumerate(lines) if re.match(r"\s*return\b", line)]
    assert returns, solution
    del lines[returns[-1]]
    return "\n".join(lines)


def test_canonical_solutions_without_their_last_return_line_all_fail(humaneval_rows):
    grades = grade_many([(without_last_return_line(row["canonical_solution"]), row) for row in humaneval_rows])
    passed = [row["task_id"] for row, g in zip(humaneval_rows, grades) if g.passed]
    assert passed == []
    reasons = {g.reason for g in grades}
    assert reasons <= {"failed_assertion", "syntax_error", "no_code", "exception"}, reasons
    assert "failed_assertion" in reasons


# --- the harness proves the tests ran -----------------------------------------------------------

def whole(source: str) -> str:
    return "```python\n" + source + "\n```"


HARNESS_CASES = {
    "correct": ("def add(a, b):\n    return a + b", "passed"),
    "wrong": ("def add(a, b):\n    return a - b", "failed_assertion"),
    "syntax": ("def add(a, b):\n    return a +", "syntax_error"),
    "raises": ("def add(a, b):\n    raise ValueError('no')", "exception"),
    "missing": ("def plus(a, b):\n    return a + b\nadd = None", "missing_function"),
    "sys_exit_0_before_the_tests": ("import sys\ndef add(a, b):\n    return 0\nsys.exit(0)", "exited_early"),
    "os_exit_0_before_the_tests": ("import os\ndef add(a, b):\n    return 0\nos._exit(0)", "exited_early"),
    "os_exit_0_inside_the_function": ("import os\ndef add(a, b):\n    os._exit(0)", "exited_early"),
    "redefines_check": ("def add(a, b):\n    return 0\ndef check(candidate):\n    pass", "failed_assertion"),
    "replaces_the_check_in_builtins": ("import builtins\ndef add(a, b):\n    return 0\nbuiltins.check = lambda c: None",
                                       "failed_assertion"),
    "always_equal_object": ("class Anything:\n    def __eq__(self, other):\n        return True\n"
                            "def add(a, b):\n    return Anything()", "exception"),
    "always_equal_int_subclass": ("class Int(int):\n    def __eq__(self, other):\n        return True\n"
                                  "def add(a, b):\n    return Int(0)", "exception"),
    "patches_a_builtin": ("import builtins\nbuiltins.len = lambda x: 0\ndef add(a, b):\n    return a + b", "tampered"),
    "replaces_a_module_the_tests_import": ("import sys, types\nsys.modules['math'] = types.ModuleType('math')\n"
                                           "def add(a, b):\n    return a + b", "tampered"),
    "prints_a_fake_verdict": ("import os\nprint('passed')\nos.write(4, b'0' * 32 + b' passed 2 \\'\\'\\n')\n"
                              "def add(a, b):\n    return 0", "failed_assertion"),
    "patches_os_write_to_turn_the_verdict": (
        "import os\nreal = os.write\n"
        "os.write = lambda fd, data: real(fd, data.replace(b'failed_assertion', b'passed'))\n"
        "def add(a, b):\n    return 0", "failed_assertion"),
    "patches_the_harness_through___main__": ("import __main__\n__main__.main = None\ndef add(a, b):\n    return 0",
                                             "failed_assertion"),
    "sends_itself_sigkill": ("import os, signal\ndef add(a, b):\n    os.kill(os.getpid(), signal.SIGKILL)", "killed"),
}


@pytest.mark.parametrize("name", HARNESS_CASES)
def test_harness_grades_a_program_by_its_tests_only(name, add_row, isolation):
    source, reason = HARNESS_CASES[name]
    g = grade_detailed(whole(source), add_row, sandbox.SandboxOptions(isolation=isolation))
    assert (g.passed, g.reason) == (reason == "passed", reason), g
    assert g.isolation == isolation


def test_the_tests_use_the_prompts_helpers_not_the_candidates(humaneval_rows):
    # HumanEval/38's test encodes with the prompt's encode_cyclic and checks that decode_cyclic
    # inverts it; a candidate that makes both the identity must not pass.
    row = humaneval_rows[38]
    cheat = "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n"
    g = grade_detailed(whole(cheat), row)
    assert (g.passed, g.reason) == (False, "failed_assertion")


def test_the_tests_see_the_math_module_before_the_candidate_changed_it(humaneval_rows):
    row = humaneval_rows[32]  # find_zero: its test asserts math.fabs(poly(xs, x)) < 1e-4
    cheat = "import math\nmath.fabs = lambda x: 0.0\n\ndef find_zero(xs):\n    return 0.0\n"
    g = grade_detailed(whole(cheat), row)
    assert (g.passed, g.reason) == (False, "tampered"), g


def test_a_check_that_runs_no_assert_is_no_pass(add_row):
    row = {**add_row, "test": "def check(candidate):\n    candidate(1, 2)\n"}
    g = grade_detailed(add_row["canonical_solution"], row)
    assert (g.passed, g.reason) == (False, "no_test_ran")


def test_a_row_whose_tests_do_not_run_is_an_error_not_a_failed_item(add_row):
    with pytest.raises(sandbox.SandboxError, match="Test/0: its test does not compile"):
        grade_detailed(add_row["canonical_solution"], {**add_row, "test": "def check(candidate) oops"})
    with pytest.raises(sandbox.SandboxError, match="prompt or test does not run: KeyError: 'check'"):
        grade_detailed(add_row["canonical_solution"], {**add_row, "test": "def tests(candidate):\n    assert True\n"})


def test_limits_give_their_reasons(add_row):
    options = sandbox.SandboxOptions(limits=sandbox.Limits(cpu_s=2, wall_s=60, output_bytes=10_000))
    cases = {"def add(a, b):\n    while True:\n        pass": "timeout",
             "def add(a, b):\n    return len(bytearray(50 * 10**9))": "memory",
             "def add(a, b):\n    print('x' * 20_000)\n    return a + b": "output_limit"}
    for source, reason in cases.items():
        g = grade_detailed(whole(source), add_row, options)
        assert (g.passed, g.reason) == (False, reason), g


# --- the API the task calls ---------------------------------------------------------------------

def test_grade_returns_pass_at_1s_item_grade_first(add_row):
    assert grade(add_row["canonical_solution"], add_row) == {"passed": True}
    result = grade("    return a * b\n", add_row)
    assert list(result) == [humaneval.PASSED] and result[humaneval.PASSED] is False


def test_grade_many_keeps_the_order_of_the_items(add_row):
    outputs = ["    return a + b\n", "    return a - b\n", "", "    return b + a\n", "    return 5\n"] * 3
    grades = grade_many([(o, add_row) for o in outputs], workers=3)
    assert [g.passed for g in grades] == [True, False, False, True, False] * 3
    assert all(isinstance(g, CodeGrade) for g in grades)
    assert [g.reason for g in grades[:5]] == ["passed", "failed_assertion", "no_code", "passed", "failed_assertion"]


def test_grade_many_reports_a_missing_sandbox_before_running_anything(add_row, monkeypatch):
    monkeypatch.setattr(sandbox, "isolation_problem", lambda isolation, python=None: "" if isolation == "none" else "no")
    monkeypatch.setattr(sandbox, "_run", lambda *a, **k: pytest.fail("nothing should run"))
    with pytest.raises(UserError, match="allow_weak_sandbox"):
        grade_many([("    return a + b\n", add_row)])
