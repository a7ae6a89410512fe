"""Commonsense reasoning, the table PEFT papers report (LLM-Adapters, DoRA and its successors):
fine-tune on Commonsense-170K, test on eight sets (BoolQ, PIQA, Social IQa, HellaSwag, WinoGrande,
ARC-e, ARC-c, OpenBookQA), each scored by its answer word, and report the unweighted mean of the
eight accuracies as the headline.

Data, where users get it:
- train_dataset: the Hub's `zwhe99/commonsense_170k` (LLM-Adapters' ft-training_set/
  commonsense_170k.json), or a local .json/.jsonl of instruction/input/output/answer rows.
- eval_dataset: `llm-adapters` (the default): LLM-Adapters' `dataset/<set>/test.json` files at
  the pinned commit below, downloaded once by `peftbench data fetch commonsense` into
  `<cache>/commonsense/<commit>/` and checked against their git blob sha1 (a file that does not
  match is refused, with both hashes). Or a local folder laid out as LLM-Adapters' `dataset/`:
  every `<set>/test.json` found there is a test set, in the order of SETS (others after, sorted).
- The validation pool: the `<set>/train.json` files of the same folder (LLM-Adapters has them
  for every set), so that no test item is ever used for validation.

Prompt: LLM-Adapters' instruction template (commonsense_evaluate.py, `generate_prompt`) without
the indentation its triple-quoted string puts before each line. The target is the row's "output"
("the correct answer is true").

Grading, as LLM-Adapters' `extract_answer`: the first match in the generated text of the set's
answer words (BoolQ true|false, PIQA solution1|solution2, Social IQa / ARC / OpenBookQA
answer1..answer5, HellaSwag ending1..ending4, WinoGrande option1|option2), case-sensitive; no
match is wrong. A set this table does not know uses the distinct answers of its own rows. Since
the first match decides, generation may stop as soon as one answer word is complete.
"""

from __future__ import annotations

import hashlib
import re
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from peftbench.errors import UserError
from peftbench.fs import atomic_write_bytes, cache_root
from peftbench.tasks import sources
from peftbench.tasks.base import EvalData, Task, register

REPO = "AGI-Edgerunners/LLM-Adapters"
COMMIT = "816657208af4db747803f87ba40a4c71383fed7a"
REMOTE_SOURCE = "llm-adapters"  # eval_dataset naming the pinned files
HUB_TRAIN = "zwhe99/commonsense_170k"

# set -> answer words, in the order the papers' tables list the sets
SETS: dict[str, tuple[str, ...]] = {
    "boolq": ("true", "false"),
    "piqa": ("solution1", "solution2"),
    "social_i_qa": tuple(f"answer{i}" for i in range(1, 6)),
    "hellaswag": tuple(f"ending{i}" for i in range(1, 5)),
    "winogrande": ("option1", "option2"),
    "ARC-Easy": tuple(f"answer{i}" for i in range(1, 6)),
    "ARC-Challenge": tuple(f"answer{i}" for i in range(1, 6)),
    "openbookqa": tuple(f"answer{i}" for i in range(1, 6)),
}

# git blob sha1 of each file at COMMIT (`git ls-tree -r COMMIT dataset/`)
BLOBS: dict[str, str] = {
    "boolq/test.json": "6d7edb0a8e8a6566b546ccf0d98d24e48db3fdf3",
    "boolq/train.json": "87a7beee26b49f81c450641ef2ff84f55611321f",
    "piqa/test.json": "f7a1c260692ef31796d4763cb6334f316a754fed",
    "piqa/train.json": "44326ba946f8bd645bfa7a189e619d29b5bc17e5",
    "social_i_qa/test.json": "eadf221799ca394367b144c0f86ee0436db409d2",
    "social_i_qa/train.json": "bd524129d80efdfabc8476bbedc4f41b400cfda0",
    "hellaswag/test.json": "183c4920415f83ba4b793c4873a33e7e10bd1be5",
    "hellaswag/train.json": "ca68dc85fc2a2f73c9b1b8b0823cc41a8f669718",
    "winogrande/test.json": "21257263593dd4d00546e1918c88ca0f357b08ad",
    "winogrande/train.json": "0b56375ac6b4464fa97abfb72812f15c772ba305",
    "ARC-Easy/test.json": "6c0d30aaedaeca148df6bcd7aaacf7c31e6ad70f",
    "ARC-Easy/train.json": "488a8e5e5bbbd7a630ebbfe07a1fd91b7d9d8c9b",
    "ARC-Challenge/test.json": "9540685439144200b5a7e48dab9ca4655be2af09",
    "ARC-Challenge/train.json": "d7e080b04bff9fd16dd85455fb04481807a088d8",
    "openbookqa/test.json": "a6e69676104bcb77237388c3b5a3f0dcbb81d1e2",
    "openbookqa/train.json": "75bcd5eb9f5e77a3796c05e6bb38f169d19563fc",
}

TEMPLATE = ("Below is an instruction that describes a task. Write a response that appropriately completes "
            "the request.\n\n### Instruction:\n{query}\n\n### Response:\n")


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file's content: sha1 of "blob <size>\\0" + content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def remote_folder() -> Path:
    """Where `peftbench data fetch commonsense` puts the pinned files."""
    return cache_root() / "commonsense" / COMMIT


def fetch(log: Callable[[str], None], opener: Callable[[str], bytes] | None = None,
          folder: Path | None = None) -> list[Path]:
    """Download every pinned file missing from the cache (or not matching its blob sha1), check
    each against its sha1, and write it atomically. A download that does not match is refused
    (UserError with the expected and the found hash) and nothing is written for it."""
    folder = folder or remote_folder()
    opener = opener or _download
    fetched = []
    for rel, blob in BLOBS.items():
        path = folder / rel
        if path.is_file() and git_blob_sha1(path.read_bytes()) == blob:
            log(f"  {rel}: already in the cache")
            continue
        url = f"https://raw.githubusercontent.com/{REPO}/{COMMIT}/dataset/{rel}"
        data = opener(url)
        found = git_blob_sha1(data)
        if found != blob:
            raise UserError(f"{url}: downloaded file does not match the pinned commit: git blob sha1 "
                            f"expected {blob}, found {found}; nothing written for it")
        atomic_write_bytes(path, data)
        log(f"  {rel}: {len(data):,} bytes, sha1 {blob[:12]} ok")
        fetched.append(path)
    return fetched


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except OSError as exc:
        raise UserError(f"cannot download {url}: {exc}") from None


def _eval_folder(source: str) -> Path:
    """The folder an eval_dataset names: the cache for `llm-adapters`, else a local folder."""
    if source == REMOTE_SOURCE:
        return remote_folder()
    path = sources.local_path(source)
    if path is None or not path.is_dir():
        raise UserError(f"eval_dataset {source!r}: not {REMOTE_SOURCE!r} and not a local folder laid out as "
                        f"LLM-Adapters' dataset/ (<set>/test.json)")
    return path


def _set_files(folder: Path, name: str) -> list[tuple[str, Path]]:
    """(set, file) of every `<set>/<name>` in `folder`, SETS order first, then sorted."""
    found = sorted(p.parent.name for p in folder.glob(f"*/{name}") if p.is_file())
    ordered = [s for s in SETS if s in found] + [s for s in found if s not in SETS]
    return [(s, folder / s / name) for s in ordered]


def _missing_remote(source: str) -> str:
    return (f"eval_dataset {source!r}: the commonsense test sets are not in the cache "
            f"({remote_folder()}); run `peftbench data fetch commonsense` where the network is reachable")


def _read_json(path: Path) -> list[dict[str, Any]]:
    rows = sources.read_local_table(path)
    sources.check_fields(rows, ("instruction", "answer"), str(path), "LLM-Adapters' instruction/input/output/answer rows")
    return rows


def _query(row: dict[str, Any]) -> str:
    text = row.get("input") or ""
    return row["instruction"] + (f"\n\n### Input:\n{text}" if text.strip() else "")


@lru_cache(maxsize=64)
def _pattern(words: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))


@register
class Commonsense(Task):
    name = "commonsense"
    version = "1"
    description = "Commonsense-170K -> eight commonsense sets (BoolQ ... OpenBookQA), graded by the answer word"
    grade_names = ("answer",)
    defaults = {
        "train_dataset": HUB_TRAIN,
        "eval_dataset": REMOTE_SOURCE,
        "query_template": TEMPLATE,
        # LLM-Adapters generates 32 new tokens for these sets; the answer word comes first
        "generation_kwargs": {"max_length": 1024, "max_new_tokens": 32},
    }

    def __init__(self):
        # answer words of sets outside SETS, learnt from their rows when they are loaded
        self._words: dict[str, tuple[str, ...]] = {}

    def fetch(self, log) -> list[Path]:
        """LLM-Adapters' eight test sets and their train splits (the validation pool) at the pinned
        commit; the training set (Commonsense-170K) loads from the Hub on first use."""
        log(f"commonsense: LLM-Adapters' dataset/ at {REPO}@{COMMIT[:12]} -> {remote_folder()}")
        written = fetch(log)
        log(f"commonsense: {len(written)} file(s) downloaded, {len(BLOBS) - len(written)} already in the cache; "
            f"every file matches its git blob sha1")
        return written

    def data_identity(self, source: str | None, role: str) -> dict[str, Any] | None:
        if source is None:
            return None
        if role == "train":
            return sources.generic_identity(source)
        if source == REMOTE_SOURCE:
            # pinned by the commit and the blob ids; checked when fetched
            return {"source": "github", "repo": REPO, "commit": COMMIT}
        folder = _eval_folder(source)
        files = [p for _, p in _set_files(folder, "train.json")]
        if role != "tune":
            files += [p for _, p in _set_files(folder, "test.json")]
        if not files:
            raise UserError(f"eval_dataset {source!r}: no <set>/test.json or <set>/train.json in {folder}")
        return sources.files_identity(files)

    def source_problems(self, field: str, source: str, tuning: bool) -> list[str]:
        if field != "eval_dataset" or source == REMOTE_SOURCE:
            return []
        path = sources.local_path(source)
        if path is None or not path.is_dir():
            return [f"eval_dataset: {source!r} is not {REMOTE_SOURCE!r} nor a local folder laid out as "
                    f"LLM-Adapters' dataset/ (<set>/test.json)"]
        problems = []
        if not tuning and not _set_files(path, "test.json"):
            problems.append(f"eval_dataset: folder {source!r} holds no <set>/test.json")
        if not _set_files(path, "train.json"):
            problems.append(f"eval_dataset: folder {source!r} holds no <set>/train.json (the validation pool)")
        return problems

    def load_train_rows(self, source: str, char_limit: int) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """Commonsense-170K rows as query (instruction, and input when there is one) and response
        (output), without those longer than char_limit characters."""
        rows = sources.read_rows(source)
        sources.check_fields(rows, ("instruction", "output"), f"train_dataset {source!r}",
                             "LLM-Adapters' instruction/input/output/answer rows")
        return sources.within_char_limit([(_query(r), r["output"]) for r in rows], char_limit, source,
                                         self.data_identity(source, "train"))

    def load_eval_data(self, source: str, valid_size: int, test_size: int | None,
                       tune_valid_size: int = 0) -> EvalData:
        tuning = tune_valid_size > 0
        folder = _eval_folder(source)
        if source == REMOTE_SOURCE:
            missing = [rel for rel in BLOBS if not (folder / rel).is_file()]
            if missing:
                raise UserError(_missing_remote(source) + f" (missing: {', '.join(missing[:3])}"
                                + (" ..." if len(missing) > 3 else "") + ")")
        pool = [self._row(s, i, r) for s, path in _set_files(folder, "train.json") for i, r in enumerate(_read_json(path))]
        if not pool:
            raise UserError(f"eval_dataset {source!r}: no <set>/train.json in {folder} to draw validation rows from")
        size, name = (tune_valid_size, "tune_valid_size") if tuning else (valid_size, "valid_size")
        valid = sources.draw_valid(pool, size, tuning, name, "pooled <set>/train.json rows")
        test_sets: dict[str, list[dict[str, Any]]] = {}
        if not tuning:
            for set_name, path in _set_files(folder, "test.json"):
                rows = [self._row(set_name, i, r) for i, r in enumerate(_read_json(path))]
                if test_size is not None:
                    rows = rows[:sources.clamped("test_size", test_size, len(rows), f"{set_name} test set")]
                test_sets[set_name] = rows
            if not test_sets:
                raise UserError(f"eval_dataset {source!r}: no <set>/test.json in {folder}")
        ident = self.data_identity(source, "tune" if tuning else "eval")
        ident.update({"valid_rows": len(valid), "test_rows": {k: len(v) for k, v in test_sets.items()},
                      "valid_split_seed": sources.TUNE_SPLIT_SEED if tuning else sources.VALID_SPLIT_SEED})
        self._words.update({s: self._answer_words(s, rows) for s, rows in test_sets.items()})
        return EvalData(valid, test_sets, ident)

    @staticmethod
    def _row(set_name: str, index: int, row: dict[str, Any]) -> dict[str, Any]:
        return {"question": _query(row), "answer": str(row["answer"]), "set": set_name, "set_index": index,
                "output": row.get("output") or f"the correct answer is {row['answer']}"}

    def item_key(self, row: dict[str, Any]) -> str:
        # Social IQa repeats 24 of its questions word for word: the set and position tell them apart
        return f"{row['set']}\n{row['set_index']}\n{row['question']}"

    def prediction_extras(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"set": row["set"], "set_index": row["set_index"]}

    def row_from_prediction(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return {**super().row_from_prediction(prediction), "set": prediction["set"],
                "set_index": prediction["set_index"]}

    @staticmethod
    def _answer_words(set_name: str, rows: list[dict[str, Any]]) -> tuple[str, ...]:
        return SETS.get(set_name) or tuple(sorted({r["answer"] for r in rows}))

    def words(self, row: dict[str, Any]) -> tuple[str, ...]:
        set_name = row.get("set") or row.get("test_set")
        words = SETS.get(set_name) or self._words.get(set_name)
        if not words:
            raise ValueError(f"commonsense: no answer words known for set {set_name!r}")
        return words

    def reference_text(self, row: dict[str, Any]) -> str:
        return row["output"]

    def extract(self, generated: str, row: dict[str, Any]) -> tuple[str | None, int]:
        """(the first answer word in the text, where it ends), or (None, len(text))."""
        match = _pattern(self.words(row)).search(generated.strip())
        if match is None:
            return None, len(generated)
        # positions in the stripped text: shift by the leading whitespace strip() removed
        offset = len(generated) - len(generated.lstrip())
        return match.group(0), match.end() + offset

    def grade_fields(self, generated: str, row: dict[str, Any]) -> dict[str, Any]:
        answer, _ = self.extract(generated, row)
        return {"extracted": answer, "correct_answer": answer is not None and answer == row["answer"]}

    def continuation_start(self, text: str, row: dict[str, Any]) -> int:
        """After the first answer word nothing counts."""
        return self.extract(text, row)[1]

    def stops_generation(self, text: str, row: dict[str, Any]) -> bool:
        """The first answer word is complete: no later text can change it, unless a longer word
        of the set starts with it and the text ends right there (sets outside SETS may have such
        words; the known sets have none)."""
        answer, end = self.extract(text, row)
        if answer is None:
            return False
        longer = any(w != answer and w.startswith(answer) for w in self.words(row))
        return end < len(text) or not longer
