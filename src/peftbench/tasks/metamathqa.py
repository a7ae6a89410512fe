"""MetaMathQA -> GSM8K, the reference study's task: fine-tune on MetaMathQA's query/response
rows, test on GSM8K's test split (1,319 problems), graded by the final answer
(`peftbench.scoring.grader`: strict, the headline, and flexible).

Sources: `train_dataset` a hub id or a local .json/.jsonl/.parquet (or folder) of query/response
rows; `eval_dataset` a hub id (config "main"), or a local folder with GSM8K's train.jsonl (the
validation pool) and test.jsonl of question/answer rows. `demo:word-problems` (the CPU demo's
generator, rows of the same form) is accepted in both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftbench.demo import word_problems as demo_data
from peftbench.errors import UserError
from peftbench.scoring import grader
from peftbench.tasks import sources
from peftbench.tasks.base import EvalData, Task, register

DEFAULT_QUERY_TEMPLATE = "Question: {query} Think step by step.\nAnswer:"


class GradeAnswerTask(Task):
    """A task whose rows are MetaMathQA/GSM8K-form and whose grader is the final-answer grader."""

    grade_names = ("strict", "flexible")
    grading_sources = ("scoring/grader.py", "scoring/symbolic.py")
    test_set: str  # the name of the one test set
    grader_version = grader.GRADER_VERSION

    def data_identity(self, source: str | None, role: str) -> dict[str, Any] | None:
        if source is None:
            return None
        if sources.is_demo(source):
            return sources.builtin_identity(source)
        path = sources.local_path(source)
        if path is not None and role in ("eval", "tune") and path.is_dir():
            return sources.files_identity(self.eval_folder_files(source, tuning=role == "tune"))
        return sources.generic_identity(source)

    def source_problems(self, field: str, source: str, tuning: bool) -> list[str]:
        path = sources.local_path(source)
        if field == "eval_dataset" and path is not None and path.is_dir():
            missing = eval_folder_missing(path, tuning)
            if missing:
                return [f"eval_dataset: folder {source!r} lacks {', '.join(missing)} (GSM8K question/answer rows)"]
        return []

    def eval_folder_files(self, source: str, tuning: bool = False) -> list[Path]:
        """train.jsonl and test.jsonl of a local eval_dataset folder (train.jsonl alone for a
        tuning trial); a missing one is bad input, named, never a FileNotFoundError."""
        folder = sources.local_path(source) or Path(source)
        missing = eval_folder_missing(folder, tuning)
        if missing:
            raise UserError(f"eval_dataset {source!r}: folder lacks {', '.join(missing)} (GSM8K question/answer rows)")
        return [folder / "train.jsonl"] + ([] if tuning else [folder / "test.jsonl"])

    def load_train_rows(self, source: str, char_limit: int) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """MetaMathQA rows (query, response), without those whose `query + " " + response`
        exceeds char_limit characters (1300 keeps ~94% of MetaMathQA)."""
        rows = demo_data.train_rows() if sources.is_demo(source) else sources.read_rows(source)
        ident = self.data_identity(source, "train")
        sources.check_fields(rows, ("query", "response"), f"train_dataset {source!r}", "MetaMathQA's query/response")
        return sources.within_char_limit([(r["query"], r["response"]) for r in rows], char_limit, source, ident)

    def load_eval_data(self, source: str, valid_size: int, test_size: int | None,
                       tune_valid_size: int = 0) -> EvalData:
        """GSM8K rows (question, answer): validation drawn from the train split, the test split
        cut to its first `test_size` rows."""
        tuning = tune_valid_size > 0
        if sources.is_demo(source):
            train, test = demo_data.eval_rows("train"), ([] if tuning else demo_data.eval_rows("test"))
        elif sources.local_path(source) is not None:
            paths = self.eval_folder_files(source, tuning)
            train = sources.read_local_table(paths[0])
            test = [] if tuning else sources.read_local_table(paths[1])
        else:
            train = sources.read_rows(source, "train", config="main")
            test = [] if tuning else sources.read_rows(source, "test", config="main")
        ident = self.data_identity(source, "tune" if tuning else "eval")
        for name, rows in (("train", train), ("test", test)):
            if rows and not {"question", "answer"} <= set(rows[0]):
                raise UserError(f"eval_dataset {source!r}: {name} rows lack question/answer fields")
        size, name = (tune_valid_size, "tune_valid_size") if tuning else (valid_size, "valid_size")
        valid = sources.draw_valid(train, size, tuning, name, "eval train split")
        if test_size is not None and not tuning:
            test = test[:sources.clamped("test_size", test_size, len(test), "eval test split")]
        ident.update({"valid_rows": len(valid), "test_rows": len(test),
                      "valid_split_seed": sources.TUNE_SPLIT_SEED if tuning else sources.VALID_SPLIT_SEED})
        return EvalData([_qa(r) for r in valid], {} if tuning else {self.test_set: [_qa(r) for r in test]}, ident)

    def grade_fields(self, generated: str, row: dict[str, Any]) -> dict[str, Any]:
        g = grader.grade(generated, row["answer"])
        return {"extracted": g.extracted, "extracted_flexible": g.extracted_flexible,
                "correct_strict": bool(g.correct_strict), "correct_flexible": bool(g.correct_flexible)}

    def continuation_start(self, text: str, row: dict[str, Any]) -> int:
        return grader.continuation_start(text)


def eval_folder_missing(folder: Path, tuning: bool = False) -> list[str]:
    """The files a local eval folder lacks: train.jsonl (validation rows are drawn from it) and
    test.jsonl (not read by a tuning trial)."""
    needed = ("train.jsonl",) if tuning else ("train.jsonl", "test.jsonl")
    return [name for name in needed if not (folder / name).is_file()]


def _qa(row: dict[str, Any]) -> dict[str, str]:
    return {"question": row["question"], "answer": row["answer"]}


@register
class MetaMathQA(GradeAnswerTask):
    name = "metamathqa"
    version = "1"
    description = "MetaMathQA -> GSM8K: grade-school math word problems, graded by the final answer"
    test_set = "gsm8k"
    defaults = {
        "train_dataset": "meta-math/MetaMathQA",
        "eval_dataset": "openai/gsm8k",
        "query_template": DEFAULT_QUERY_TEMPLATE,
        "generation_kwargs": {"max_length": 800, "max_new_tokens": 300},
    }
