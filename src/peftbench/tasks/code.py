"""Code: instruction-tune on a code instruction set, test on HumanEval's 164 problems, graded by
running the model's program against the problem's unit tests in a sandbox (greedy pass@1).

Data:
- train_dataset: the Hub's `ise-uiuc/Magicoder-Evol-Instruct-110K` ("LoRA Learns Less and Forgets
  Less" trains on it), or any local .json/.jsonl with instruction/response fields.
- eval_dataset: the Hub's `openai/openai_humaneval` (split "test"), or a local
  `HumanEval.jsonl.gz` / `.jsonl` (or a folder holding one) with task_id, prompt,
  canonical_solution, test and entry_point.
- No validation pool: HumanEval has only its 164 test problems, and an instruction set has no unit
  tests to grade a generation against. Runs report no validation accuracy, and `peftbench tune`,
  which chooses on validation data only, refuses this task.

Prompt: the training template wraps an instruction; a HumanEval problem becomes the instruction
"Complete the following Python function:" and its prompt in a python fence. The model may answer
with the function's body (a continuation of the prompt) or a whole program, fenced or not;
`peftbench.scoring.humaneval.extract_program` documents how the program is found.

Grading (`peftbench.scoring.humaneval`, `peftbench.scoring.sandbox`): every program runs in its own
sandbox (no network, a fresh temporary folder, a read-only file system elsewhere, a clean
environment, limits on CPU time, wall time, memory, processes and file size), under a harness that
proves the tests ran. The grade is {"passed": bool}; the prediction row keeps why not (`reason`:
syntax error, exception, failed assertion, timeout, memory, no code found, ...), its `detail`, and
the `isolation` that ran it. A machine without network isolation refuses to grade unless
`allow_weak_sandbox` is set; the result records the isolation used (run_info.task.sandbox).
Programs are graded in parallel, `grading_workers` at a time (default: the CPUs peftbench may use).

Stop point: once the code the grader would take is complete (the fence after a continuation, or
the closing fence of the first block that defines the function), nothing written later is read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from peftbench.errors import UserError
from peftbench.scoring import humaneval, sandbox
from peftbench.tasks import sources
from peftbench.tasks.base import EvalData, Task, register

HUB_TRAIN = "ise-uiuc/Magicoder-Evol-Instruct-110K"
HUB_EVAL = "openai/openai_humaneval"
INSTRUCTION = "Complete the following Python function:\n```python\n{prompt}```"
TEMPLATE = "### Instruction:\n{query}\n\n### Response:\n"
_FENCE_LINE = re.compile(r"^[ \t]*```[ \t]*([\w+.#-]*)[^\n]*(?:\n|$)", re.M)
_PYTHON_TAGS = ("", "python", "py", "python3")


def sandbox_options(settings: dict[str, Any] | None) -> sandbox.SandboxOptions:
    settings = settings or {}
    return sandbox.SandboxOptions(allow_weak_sandbox=bool(settings.get("allow_weak_sandbox")))


def _eval_file(source: str) -> Path | None:
    """The local HumanEval file `source` names (a folder: the HumanEval*.jsonl[.gz] in it)."""
    path = sources.local_path(source)
    if path is None:
        return None
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name.startswith("HumanEval") and p.name.endswith((".jsonl", ".jsonl.gz")))
        if not found:
            raise UserError(f"eval_dataset {source!r}: folder holds no HumanEval.jsonl.gz or HumanEval.jsonl")
        return found[0]
    return path


@register
class Code(Task):
    name = "code"
    version = "1"
    description = "Magicoder-Evol-Instruct -> HumanEval: greedy pass@1, each program run in a sandbox"
    grade_names = (humaneval.PASSED,)
    grades_in_batch = True  # programs run in parallel sandboxes once every text is generated
    grader_version = humaneval.GRADER_VERSION
    grading_sources = ("scoring/humaneval.py", "scoring/humaneval_harness.py", "scoring/sandbox.py",
                       "scoring/sandbox_supervisor.py")
    test_set = "humaneval"
    defaults = {
        "train_dataset": HUB_TRAIN,
        "eval_dataset": HUB_EVAL,
        "query_template": TEMPLATE,
        "generation_kwargs": {"max_length": 2048, "max_new_tokens": 512},
        "valid_size": 0,
    }

    # ---- data

    def data_identity(self, source: str | None, role: str) -> dict[str, Any] | None:
        if source is None:
            return None
        if role == "train":
            return sources.generic_identity(source)
        local = _eval_file(source)
        return sources.files_identity([local]) if local is not None else sources.hub_identity(source)

    def source_problems(self, field: str, source: str, tuning: bool) -> list[str]:
        if field == "eval_dataset" and tuning:
            return ["tune_valid_size: the code task has no validation pool (HumanEval is a test set only), so "
                    "`peftbench tune` cannot choose on it"]
        if field == "eval_dataset" and sources.local_path(source) is not None:
            try:
                _eval_file(source)
            except UserError as exc:
                return [str(exc)]
        return []

    def load_train_rows(self, source: str, char_limit: int) -> tuple[list[dict[str, str]], dict[str, Any]]:
        rows = sources.read_rows(source)
        sources.check_fields(rows, ("instruction", "response"), f"train_dataset {source!r}",
                             "instruction/response rows (Magicoder-Evol-Instruct's)")
        return sources.within_char_limit([(r["instruction"], r["response"]) for r in rows], char_limit, source,
                                         self.data_identity(source, "train"))

    def load_eval_data(self, source: str, valid_size: int, test_size: int | None,
                       tune_valid_size: int = 0) -> EvalData:
        if tune_valid_size > 0:
            raise UserError("the code task has no validation pool (HumanEval is a test set only): "
                            "`peftbench tune` cannot choose on it")
        local = _eval_file(source)
        rows = humaneval.load_rows(local) if local is not None else sources.read_rows(source, "test")
        sources.check_fields(rows, humaneval.FIELDS, f"eval_dataset {source!r}", "HumanEval's fields")
        if test_size is not None:
            rows = rows[:sources.clamped("test_size", test_size, len(rows), "HumanEval")]
        if valid_size:
            print(f"peftbench: warning: valid_size {valid_size} ignored: the code task has no validation pool",
                  flush=True)
        test = [self._row(r) for r in rows]
        ident = self.data_identity(source, "eval")
        ident.update({"valid_rows": 0, "test_rows": len(test)})
        return EvalData([], {self.test_set: test}, ident)

    @staticmethod
    def _row(row: dict[str, Any]) -> dict[str, Any]:
        return {**{f: row[f] for f in humaneval.FIELDS}, "question": row["prompt"], "answer": row["canonical_solution"]}

    # ---- prompt

    def prompt(self, template: str, row: dict[str, Any]) -> str:
        return template.format(query=INSTRUCTION.format(prompt=row["prompt"]))

    def item_key(self, row: dict[str, Any]) -> str:
        return row["task_id"]

    def prediction_extras(self, row: dict[str, Any]) -> dict[str, Any]:
        # what grading the saved text again needs (rescore): the tests and the entry point
        return {"task_id": row["task_id"], "test": row["test"], "entry_point": row["entry_point"]}

    def row_from_prediction(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return {**super().row_from_prediction(prediction), "task_id": prediction["task_id"],
                "prompt": prediction["question"], "canonical_solution": prediction["reference"],
                "test": prediction["test"], "entry_point": prediction["entry_point"]}

    # ---- grading

    def preflight(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The isolation programs will run in, decided before anything runs: SandboxUnavailable
        (exit 2) on a machine without network isolation unless allow_weak_sandbox is set."""
        return {"sandbox": sandbox.resolve_isolation(sandbox_options(settings))}

    def grade_fields(self, generated: str, row: dict[str, Any]) -> dict[str, Any]:
        return self.grade_batch([generated], [row], {})[0]

    def grade_batch(self, generated: list[str], rows: list[dict[str, Any]],
                    settings: dict[str, Any]) -> list[dict[str, Any]]:
        grades = humaneval.grade_many(zip(generated, rows), workers=settings.get("grading_workers"),
                                      options=sandbox_options(settings))
        return [{"correct_passed": g.passed, "reason": g.reason, "detail": g.detail, "isolation": g.isolation}
                for g in grades]

    def continuation_start(self, text: str, row: dict[str, Any]) -> int:
        """Where the code the grader takes is complete: the first fence after a continuation, or
        the end of the closing fence of the first python block that defines the entry point;
        len(text) before that."""
        fences = list(_FENCE_LINE.finditer(text))
        if not fences:
            return len(text)
        before = text[:fences[0].start()]
        code_lines = [line for line in before.split("\n") if line.strip() and not line.strip().startswith("#")]
        if code_lines and code_lines[0][:1] in (" ", "\t"):
            return fences[0].start()  # a continuation, closed by the fence
        define = re.compile(rf"^def {re.escape(row['entry_point'])}\(", re.M)
        for opening, closing in zip(fences[::2], fences[1::2]):
            if opening.group(1).lower() in _PYTHON_TAGS and define.search(text, opening.end(), closing.start()):
                return closing.end()
        return len(text)
