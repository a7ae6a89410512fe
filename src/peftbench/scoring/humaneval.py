"""HumanEval: the 164 problems of openai/human-eval, graded by running the model's code.

Rows (`load_rows`) come from a local `HumanEval.jsonl.gz` (or .jsonl), one JSON object a line
with task_id, prompt, canonical_solution, test and entry_point.

How the program is found in a model's output (`extract_program`), given the row's prompt (a
function signature and docstring, with any imports and helper functions before it):

1. Line ends are made "\\n". A "code line" is a line that is neither blank nor a comment.
2. Code fences. When the output has a line starting with ``` (a fence):
   - if the text before the first fence is a continuation (its first code line is indented: the
     function's body, written after the prompt), that text is the code and the fence closes it;
   - otherwise the fences delimit blocks (a last fence left open runs to the end of the output).
     Of the blocks tagged python, py, python3 or not tagged, the code is the first one that
     defines the entry point (`def <entry_point>(` at the start of a line), else the first one.
   Without a fence the whole output is the code.
3. No code line in the code: "no code found" (`extract_program` returns None). Prose outside a
   fence has code lines by this rule: it is run, and fails as a syntax error.
4. If the first code line is indented, the code continues the prompt: program = prompt + code.
   Otherwise it is a whole program: program = prompt + two newlines + code, so that the prompt's
   imports and helpers are defined and the model's own definition replaces the prompt's stub.
5. Trailing prose: when the program does not compile and the error is on a line of the code that
   starts at column 0 (prose or a closing remark after the function), the code is cut before that
   line, if what remains compiles and still has a code line (a whole program: still defines the
   entry point at column 0). Otherwise the program is kept, and grades as a syntax error.

The program's module name is "candidate", not "__main__": an `if __name__ == "__main__":` block
(example calls, input()) does not run.

Grading (`grade_detailed`) runs the program and the row's tests in the sandbox (`sandbox.py`,
isolation recorded in each grade) under `humaneval_harness.py`, which proves the tests ran (its
docstring says how and what it does not claim). Reasons (`CodeGrade.reason`, one per item):

    passed            the row's check ran its asserts and all held
    no_code           nothing to run (step 3 above)
    syntax_error      the program does not compile
    missing_function  the program does not define the entry point
    exception         an exception while defining the program or during the tests (detail: its type)
    failed_assertion  an assert of the tests failed
    timeout           past the CPU-time or wall-time limit
    memory            past the address-space limit (a MemoryError)
    output_limit      wrote more than the output cap; killed
    exited_early      ended (exit, os._exit, a signal it sent itself) before its tests finished
    killed            ended by a signal (SIGSEGV, SIGKILL ...) without a verdict
    no_test_ran       check returned without running an assert
    tampered          replaced a builtin or a module the tests use

`grade_many` grades items in parallel threads, each waiting on its own sandbox; Ctrl+C or
SIGTERM (as RunCancelled) in the main thread kills every running sandbox and re-raises within a
fraction of a second.

GRADER_VERSION changes whenever a rule here or in the harness can change a grade."""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import functools
import gzip
import json
import os
import re
import secrets
import signal
import threading
from pathlib import Path
from typing import Iterable

from peftbench.errors import UserError
from peftbench.scoring import sandbox

GRADER_VERSION = "1"
PASSED = "passed"  # the item grade of pass@1, first in `grade`'s dict
ASSERT_COUNTER = "__peftbench_count_assert__"
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
REASONS = ("passed", "no_code", "syntax_error", "missing_function", "exception", "failed_assertion",
           "timeout", "memory", "output_limit", "exited_early", "killed", "no_test_ran", "tampered")
_HARNESS_REASONS = set(REASONS) - {"no_code", "timeout", "output_limit", "killed"}
_HARNESS_SOURCE = Path(__file__).with_name("humaneval_harness.py")
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.#-]*)[^\n]*$", re.M)
_PYTHON_TAGS = ("", "python", "py", "python3")


@dataclasses.dataclass(frozen=True)
class CodeGrade:
    passed: bool
    reason: str  # one of REASONS
    detail: str  # what failed, for a person: the exception, the assert's message, the limit
    isolation: str  # the sandbox that ran it: "bwrap", "unshare" or "none"


def load_rows(path: str | os.PathLike) -> list[dict]:
    """HumanEval's rows from a .jsonl.gz or .jsonl file; a UserError names the file and line of a
    bad one."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read HumanEval rows ({error})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}, line {number}: not JSON ({error})") from None
        missing = [f for f in FIELDS if not isinstance(row.get(f) if isinstance(row, dict) else None, str)]
        if missing:
            raise UserError(f"{path}, line {number}: a HumanEval row needs the text fields "
                            f"{', '.join(FIELDS)}; missing or not text: {', '.join(missing)}")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no HumanEval rows")
    return rows


def _code_lines(code: str) -> list[str]:
    return [line for line in code.split("\n") if line.strip() and not line.lstrip().startswith("#")]


def _is_continuation(code: str) -> bool:
    lines = _code_lines(code)
    return bool(lines) and lines[0][:1] in (" ", "\t")


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", code, re.M) is not None


def _fenced_code(text: str, entry_point: str) -> str:
    fences = list(_FENCE.finditer(text))
    if _is_continuation(text[:fences[0].start()]):
        return text[:fences[0].start()]
    blocks = []
    for opening, closing in zip(fences[::2], fences[1::2] + [None]):
        body = text[opening.end() + 1:closing.start() if closing else len(text)]
        if opening.group(1).lower() in _PYTHON_TAGS:
            blocks.append(body)
    defining = [b for b in blocks if _defines(b, entry_point)]
    return (defining or blocks or [""])[0]


def _compiles(program: str) -> SyntaxError | None:
    try:
        compile(program, "candidate.py", "exec", dont_inherit=True)
    except SyntaxError as error:
        return error
    except (ValueError, MemoryError, RecursionError) as error:  # NUL bytes, absurd nesting
        return SyntaxError(str(error))
    return None


def _assemble(prompt: str, code: str) -> str:
    return prompt + code if _is_continuation(code) else prompt + "\n\n" + code


def extract_program(generated: str, row: dict) -> str | None:
    """The program to run for a model's output (the rules are in the module docstring), or None
    when the output holds no code."""
    text = generated.replace("\r\n", "\n").replace("\r", "\n")
    prompt, entry_point = row["prompt"], row["entry_point"]
    code = _fenced_code(text, entry_point) if _FENCE.search(text) else text
    if not _code_lines(code):
        return None
    program = _assemble(prompt, code)
    error = _compiles(program)
    start = len(prompt.split("\n")) + (0 if _is_continuation(code) else 2)  # the code's first line
    if error is not None and error.lineno and error.lineno >= start:
        lines = program.split("\n")
        bad = lines[error.lineno - 1] if error.lineno <= len(lines) else ""
        if bad[:1] not in (" ", "\t", ""):
            code_lines = code.split("\n")
            cut = "\n".join(code_lines[:error.lineno - start]) + "\n"
            keeps = _defines(cut, entry_point) if not _is_continuation(code) else _is_continuation(cut)
            if keeps and _compiles(_assemble(prompt, cut)) is None:
                return _assemble(prompt, cut)
    return program


class _CountAsserts(ast.NodeTransformer):
    def visit_Assert(self, node: ast.Assert):
        call = ast.Expr(ast.Call(ast.Name(ASSERT_COUNTER, ast.Load()), [], []))
        return [ast.copy_location(call, node), node]


def count_asserts(test: str) -> str:
    """The test code with a call of ASSERT_COUNTER() before each assert, for the harness to count
    the asserts that ran."""
    return ast.unparse(ast.fix_missing_locations(_CountAsserts().visit(ast.parse(test))))


@functools.lru_cache(maxsize=None)
def _harness_source() -> str:
    return _HARNESS_SOURCE.read_text(encoding="utf-8")


def _verdict(report: bytes, nonce: str) -> tuple[str, int, str] | None:
    """The harness's (reason, asserts, detail) from the report pipe: the first line that starts
    with the nonce; None when there is none (the program ended before the harness wrote it)."""
    for line in report.decode("utf-8", errors="replace").split("\n"):
        if line.startswith(nonce + " "):
            reason, asserts, detail = line[len(nonce) + 1:].split(" ", 2)
            return reason, int(asserts), _literal_text(detail)
    return None


def _literal_text(written: str) -> str:
    try:
        value = ast.literal_eval(written)
    except (ValueError, SyntaxError):
        return written
    return value if isinstance(value, str) else written


def _grade_of(outcome: sandbox.Outcome, nonce: str) -> CodeGrade:
    fail = lambda reason, detail: CodeGrade(False, reason, detail, outcome.isolation)  # noqa: E731
    if outcome.output_exceeded:
        return fail("output_limit", "wrote more than the output cap; killed")
    verdict = _verdict(outcome.report, nonce)
    if verdict is not None:
        reason, asserts, detail = verdict
        if reason == "harness_error":
            raise sandbox.SandboxError(f"HumanEval harness: {detail}")
        if reason not in _HARNESS_REASONS:
            raise sandbox.SandboxError(f"HumanEval harness: unknown verdict {reason!r}")
        if reason == PASSED:
            return CodeGrade(True, PASSED, f"{asserts} asserts held", outcome.isolation)
        return fail(reason, detail)
    if outcome.timed_out:
        return fail("timeout", "past the wall-time limit; killed")
    if outcome.signal == signal.SIGXCPU:  # the soft CPU-time limit
        return fail("timeout", "past the CPU-time limit")
    if outcome.signal is not None:
        return fail("killed", f"ended by {signal.Signals(outcome.signal).name}")
    return fail("exited_early", f"exited with status {outcome.exit_code} before its tests finished")


def grade_detailed(generated: str, row: dict, options: sandbox.SandboxOptions | None = None,
                   cancel: threading.Event | None = None) -> CodeGrade:
    """Grade one model output against its HumanEval row in the sandbox. Raises SandboxUnavailable
    before running anything when no acceptable isolation exists, SandboxError when the sandbox
    or the row itself is broken, sandbox.Cancelled once `cancel` is set."""
    options = options or sandbox.SandboxOptions()
    program = extract_program(generated, row)
    if program is None:
        return CodeGrade(False, "no_code", "no code found in the output", sandbox.resolve_isolation(options))
    nonce = secrets.token_hex(16)
    try:
        test = count_asserts(row["test"])
    except SyntaxError as error:
        raise sandbox.SandboxError(f"HumanEval row {row.get('task_id')}: its test does not compile ({error})") from None
    secret = json.dumps({"nonce": nonce, "program": program, "context": row["prompt"], "test": test,
                         "counter": ASSERT_COUNTER, "entry_point": row["entry_point"]})
    outcome = sandbox.run(_harness_source(), secret=secret, options=options, cancel=cancel)
    return _grade_of(outcome, nonce)


def grade(generated: str, row: dict, options: sandbox.SandboxOptions | None = None) -> dict[str, bool]:
    """The item grades of one output, pass@1's first: {"passed": bool}."""
    return {PASSED: grade_detailed(generated, row, options).passed}


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def grade_many(items: Iterable[tuple[str, dict]], *, workers: int | None = None,
               options: sandbox.SandboxOptions | None = None) -> list[CodeGrade]:
    """Grade (generated, row) pairs with up to `workers` sandboxes at a time (default: the CPUs
    this process may use); the grades come back in the items' order.

    Cancellation: the calling thread waits in short slices, so a KeyboardInterrupt or the
    RunCancelled that peftbench's SIGTERM handler raises arrives within a fraction of a second;
    every running sandbox is then killed, no new one starts, and the exception propagates. A
    SandboxError of one item does the same."""
    items = list(items)
    options = options or sandbox.SandboxOptions()
    # Decided once, before anything runs: a missing sandbox is reported now, not per item.
    options = dataclasses.replace(options, isolation=sandbox.resolve_isolation(options))
    workers = workers or default_workers()
    if workers < 1:
        raise ValueError(f"workers={workers} must be at least 1")
    grades: list[CodeGrade | None] = [None] * len(items)
    cancel = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="humaneval-grade")
    try:
        futures = {pool.submit(grade_detailed, generated, row, options, cancel): index
                   for index, (generated, row) in enumerate(items)}
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.2,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                grades[futures[future]] = future.result()
    except BaseException:
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return grades
