"""The interface every task implements, and the registry behind `peftbench.tasks.get`.

Rows. A training row is {"query", "response"}: the text the prompt template wraps, and the target
the model learns to write after it. An evaluation row is a dict with at least "question" (what
the template wraps) and "answer" (the reference the grader reads); a task may keep more fields
(HumanEval's tests, a set's answer words) for its own grader.

Grades. `grade(generated, row)` returns {grade name: bool}, the headline first (GSM8K: strict,
then flexible). A prediction row stores each as `correct_<name>` beside the task's own fields
(extracted answers); a metrics entry stores the accuracy of the headline grade as "test accuracy"
/ "valid accuracy" and of every other grade as "test accuracy <name>", so a version-1 GSM8K
result and a version-2 one read the same way.

Several test sets. A task may test on several named sets (commonsense: BoolQ, PIQA, ...). Each set
gets its own accuracies; the task's headline over sets is `aggregate` (default: the unweighted mean
over the sets, as the commonsense papers report it; with one set, that set's accuracy).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from peftbench.errors import UserError

DEFAULT_TASK = "metamathqa"

_REGISTRY: dict[str, "Task"] = {}


def register(cls):
    """Class decorator: make the task available to `peftbench.tasks.get` under `cls.name`."""
    if cls.name in _REGISTRY:
        raise RuntimeError(f"two tasks registered as {cls.name!r}")
    _REGISTRY[cls.name] = cls()
    return cls


def registered() -> dict[str, "Task"]:
    return dict(_REGISTRY)


@dataclass
class EvalData:
    """The evaluation rows of a run: the validation pool's draw and the named test sets."""

    valid: list[dict[str, Any]]
    test_sets: dict[str, list[dict[str, Any]]]  # set name -> rows, in the task's order
    identity: dict[str, Any]

    @property
    def test(self) -> list[dict[str, Any]]:
        """Every test row, set after set, each tagged with its set ("test_set")."""
        return [{**row, "test_set": name} for name, rows in self.test_sets.items() for row in rows]


class Task:
    """One task. Subclasses set the class attributes and implement the data and grading methods."""

    name: ClassVar[str]
    # Bump when a change to this task can change a grade, a prompt or a row (recorded in
    # run_info.task; the run key hashes the task's source files in any case).
    version: ClassVar[str]
    description: ClassVar[str]
    # The training parameters this task sets when a suite does not: the data sources, the prompt
    # template (with a bare {query}) and the generation budget.
    defaults: ClassVar[dict[str, Any]]
    grade_names: ClassVar[tuple[str, ...]]  # the first is the headline
    # Source files (relative to the peftbench package) this task grades or loads with, beside
    # its own module and this one: the run key hashes them, so a change stales this task only.
    grading_sources: ClassVar[tuple[str, ...]] = ()

    # ---- data

    def data_identity(self, source: str | None, role: str) -> dict[str, Any] | None:
        """What identifies the data `source` names for `role` (train, eval, or tune: the eval
        data of a tuning trial, which reads only the validation pool), without loading it."""
        raise NotImplementedError

    def source_problems(self, field: str, source: str, tuning: bool) -> list[str]:
        """Problems of a local data path for `field` (train_dataset / eval_dataset), checked when
        a config loads; empty when fine."""
        return []

    def load_train_rows(self, source: str, char_limit: int) -> tuple[list[dict[str, str]], dict[str, Any]]:
        raise NotImplementedError

    def load_eval_data(self, source: str, valid_size: int, test_size: int | None,
                       tune_valid_size: int = 0) -> EvalData:
        """Validation rows (`valid_size`, drawn with a fixed seed) and the test sets (each cut to
        its first `test_size` rows; all when None). A tuning trial (`tune_valid_size` > 0) draws
        that many validation rows with the tuning seed and reads no test set at all."""
        raise NotImplementedError

    def fetch(self, log) -> list[Path]:
        """Download the task's data that is not fetched on first use into the cache, verified;
        returns the files written. `log(line)` says what happens."""
        raise UserError(f"task {self.name!r} has nothing to fetch ahead of time: {self.fetch_note}")

    fetch_note: ClassVar[str] = "its data load from the Hugging Face Hub on first use (cached by `datasets`)"

    # ---- prompt

    def prompt(self, template: str, row: dict[str, Any]) -> str:
        """The exact text given to the model for an evaluation row."""
        return template.format(query=row["question"])

    def item_key(self, row: dict[str, Any]) -> str:
        """The text an item's stable id is computed from (the same item gets the same id in
        every run, so that two runs pair up item by item)."""
        return row["question"]

    def prediction_extras(self, row: dict[str, Any]) -> dict[str, Any]:
        """Fields of an evaluation row a prediction row keeps, beyond question and reference,
        so that `row_from_prediction` can grade it again (rescore)."""
        return {}

    def row_from_prediction(self, prediction: dict[str, Any]) -> dict[str, Any]:
        """The evaluation row a saved prediction row was graded against."""
        return {"question": prediction["question"], "answer": prediction["reference"],
                **{k: prediction[k] for k in ("test_set",) if k in prediction}}

    def reference_text(self, row: dict[str, Any]) -> str:
        """The reference continuation of an evaluation row (the validation loss scores it)."""
        return row["answer"]

    # ---- grading

    def grade(self, generated: str, row: dict[str, Any]) -> dict[str, bool]:
        """{grade name: correct} for one generated text, the headline first."""
        fields = self.grade_fields(generated, row)
        return {name: bool(fields[f"correct_{name}"]) for name in self.grade_names}

    def grade_fields(self, generated: str, row: dict[str, Any]) -> dict[str, Any]:
        """The prediction row's grading fields: `correct_<name>` per grade, and what the grader
        extracted (the task's own names)."""
        raise NotImplementedError

    # True: the evaluation grades all texts at once with `grade_batch` after generating them (a
    # grader that runs programs in parallel); False: each text as it is generated.
    grades_in_batch: ClassVar[bool] = False

    def grade_batch(self, generated: list[str], rows: list[dict[str, Any]],
                    settings: dict[str, Any]) -> list[dict[str, Any]]:
        """`grade_fields` of many texts; `settings` holds the run's grading options
        (grading_workers, allow_weak_sandbox) for graders that use them."""
        return [self.grade_fields(text, row) for text, row in zip(generated, rows)]

    def preflight(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Checks before anything runs (bad input: UserError); what it returns is recorded in
        run_info.task beside the name and version (the code task: the sandbox's isolation)."""
        return {}

    def continuation_start(self, text: str, row: dict[str, Any]) -> int:
        """Where the part of `text` (generated for `row`) that no grade reads begins (len(text)
        when every character may still count)."""
        return len(text)

    def stops_generation(self, text: str, row: dict[str, Any]) -> bool:
        """Whether generating more after `text` (for evaluation row `row`) can change no grade:
        the dynamic engine then stops the row."""
        return self.continuation_start(text, row) < len(text)

    # ---- metrics

    def aggregate(self, per_set: dict[str, float]) -> float | None:
        """The task's headline over its test sets: the unweighted mean (one set: its accuracy)."""
        values = [v for v in per_set.values() if v is not None]
        return sum(values) / len(values) if values and len(values) == len(per_set) else None

    def accuracies(self, split: str, rows: list[dict[str, Any]]) -> tuple[dict[str, float | None], dict[str, dict[str, Any]]]:
        """(metrics-entry key -> accuracy, per-set figures) of graded prediction rows of one
        split. Rows that carry a "test_set" are grouped by it and aggregated as `aggregate` says
        (one set: its accuracy); rows without (validation, results of schema version 1) give the
        share of correct items."""
        by_set: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if "test_set" in row:
                by_set.setdefault(row["test_set"], []).append(row)
        per_set = {name: {"n": len(items), **{self.metric_key(split, g): _share(items, g) for g in self.grade_names}}
                   for name, items in by_set.items()}
        every_row_in_a_set = bool(rows) and sum(map(len, by_set.values())) == len(rows)
        accuracies = {}
        for grade in self.grade_names:
            key = self.metric_key(split, grade)
            accuracies[key] = (self.aggregate({name: figures[key] for name, figures in per_set.items()})
                               if every_row_in_a_set else _share(rows, grade))
        return accuracies, per_set

    def metric_key(self, split: str, grade: str) -> str:
        """The metrics-entry key of a grade's accuracy: "test accuracy", "test accuracy flexible"."""
        return f"{split} accuracy" if grade == self.grade_names[0] else f"{split} accuracy {grade}"

    @classmethod
    def source_files(cls) -> list[str]:
        """This task's module, the task interface and its grading sources, relative to the
        peftbench package (for the run key)."""
        module = Path(sys.modules[cls.__module__].__file__)
        own = f"tasks/{module.name}"
        return sorted({own, "tasks/__init__.py", "tasks/base.py", "tasks/sources.py", *cls.grading_sources})

    @property
    def grader_version(self) -> str:
        """What meta_info.grader_version records: the version of what grades this task."""
        return self.version

    def info(self) -> dict[str, str]:
        """What a result records as run_info.task."""
        return {"name": self.name, "version": self.version}


def _share(rows: list[dict[str, Any]], grade: str) -> float | None:
    return sum(bool(r[f"correct_{grade}"]) for r in rows) / len(rows) if rows else None
