"""The commonsense task: LLM-Adapters' data, grading and stop rule, the pinned download."""

from __future__ import annotations

import json

import pytest

from peftbench import tasks
from peftbench.errors import UserError
from peftbench.tasks import commonsense

TASK = tasks.get("commonsense")
# test rows per set in ../shared/data/commonsense (its SOURCE.txt); hellaswag is not there
SHARED_SETS = {"boolq": 3270, "piqa": 1838, "social_i_qa": 1954, "winogrande": 1267, "ARC-Easy": 2376,
               "ARC-Challenge": 1172, "openbookqa": 500}


def _row(set_name, answer):
    return {"question": "q", "answer": answer, "set": set_name, "set_index": 0}


@pytest.mark.parametrize("set_name, text, answer, extracted, correct", [
    ("boolq", "the correct answer is true", "true", "true", True),
    ("boolq", "true or false? false", "false", "true", False),  # the first match decides, as LLM-Adapters'
    ("boolq", "The correct answer is True", "true", None, False),  # case-sensitive, as LLM-Adapters'
    ("piqa", "solution2 is better than solution1", "solution2", "solution2", True),
    ("social_i_qa", "the correct answer is answer3", "answer3", "answer3", True),
    ("ARC-Challenge", "answer12", "answer1", "answer1", True),  # findall's first match, a prefix of the word
    ("winogrande", "option2", "option1", "option2", False),
    ("hellaswag", "ending4", "ending4", "ending4", True),
    ("openbookqa", "I do not know", "answer1", None, False),
    ("boolq", "  \n true", "true", "true", True),
])
def test_grading_is_the_first_answer_word_of_the_set_as_llm_adapters_grades(set_name, text, answer, extracted, correct):
    fields = TASK.grade_fields(text, _row(set_name, answer))
    assert fields == {"extracted": extracted, "correct_answer": correct}


def test_stopping_at_the_first_answer_word_never_changes_a_grade(stops_keep_grades):
    """For random continuations F and every prefix T at which the rule fires, T grades as F."""
    pieces = ["the ", "correct ", "answer ", "is ", "tr", "ue", "fal", "se", "answer", "1", "2", "5", "option",
              "solution", " ", "\n", "True", "ending", "3"]
    checked = 0
    for set_name, words in commonsense.SETS.items():
        row = _row(set_name, words[0])

        def same(prefix, full, row=row):
            assert TASK.grade_fields(prefix, row) == TASK.grade_fields(full, row), (full, len(prefix))
            assert TASK.continuation_start(prefix, row) <= len(prefix)

        checked += stops_keep_grades(TASK, row, pieces + list(words), 300, 12, same)
    assert checked > 500  # the rule fired often enough for the check to mean something


def test_the_shared_sets_load_with_every_row_validation_from_their_train_files(shared_data):
    folder = shared_data("commonsense")
    data = TASK.load_eval_data(str(folder), valid_size=40, test_size=None)
    assert {k: len(v) for k, v in data.test_sets.items()} == SHARED_SETS
    assert list(data.test_sets) == [s for s in commonsense.SETS if s in SHARED_SETS]  # the papers' order
    assert len(data.valid) == 40 and {r["set"] for r in data.valid} <= {"boolq", "ARC-Easy", "ARC-Challenge", "openbookqa"}
    test_questions = {(r["set"], r["question"]) for r in data.test}
    assert not any((r["set"], r["question"]) in test_questions for r in data.valid)  # never validated on test items
    # Social IQa repeats questions: item ids tell every test item apart all the same
    from peftbench.record.results import item_id

    ids = [item_id(TASK.item_key(r)) for r in data.test]
    assert len(ids) == len(set(ids)) == sum(SHARED_SETS.values())
    cut = TASK.load_eval_data(str(folder), valid_size=40, test_size=5)
    assert all(len(rows) == 5 for rows in cut.test_sets.values()) and cut.valid == data.valid


def test_the_pinned_files_are_the_shared_copies(shared_data):
    folder = shared_data("commonsense")
    for rel, blob in commonsense.BLOBS.items():
        if (folder / rel).is_file():
            assert commonsense.git_blob_sha1((folder / rel).read_bytes()) == blob, rel


def test_fetch_checks_every_download_against_its_git_blob_and_refuses_a_mismatch(shared_data, tmp_path):
    folder = shared_data("commonsense")
    available = {rel: (folder / rel).read_bytes() for rel in commonsense.BLOBS if (folder / rel).is_file()}
    urls = []

    def opener(url):
        urls.append(url)
        rel = url.split("/dataset/", 1)[1]
        return available.get(rel, b"not the pinned file")

    cache = tmp_path / "cache"
    with pytest.raises(UserError, match=r"git blob sha1 expected [0-9a-f]{40}, found [0-9a-f]{40}"):
        commonsense.fetch(lambda line: None, opener, cache)
    assert all(commonsense.COMMIT in u and u.startswith("https://raw.githubusercontent.com/") for u in urls)
    written = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*.json"))
    # what matched before the mismatch is kept; the mismatching file is not written
    assert written and all(rel in available for rel in written)
    logged = []
    available.update({rel: b"x" for rel in ()})
    with pytest.raises(UserError):
        commonsense.fetch(logged.append, opener, cache)  # the same refusal, the good files not fetched again
    assert any("already in the cache" in line for line in logged)


def test_offline_a_missing_test_set_names_the_file_and_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    with pytest.raises(UserError, match=r"peftbench data fetch commonsense.*missing: boolq/test.json"):
        TASK.load_eval_data("llm-adapters", 10, None)


def test_a_local_folder_without_test_sets_is_refused_when_the_config_loads(tmp_path):
    from peftbench.errors import ConfigError
    from peftbench.experiment.config import build_train_config

    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "train.json").write_text(json.dumps([{"instruction": "i", "input": "", "output": "o", "answer": "true"}]))
    with pytest.raises(ConfigError, match=r"holds no <set>/test.json"):
        build_train_config([("p", {"task": "commonsense", "eval_dataset": str(tmp_path)})])


def test_train_rows_are_instruction_and_output(tmp_path):
    rows = [{"instruction": "Is it?", "input": "", "output": "the correct answer is true", "answer": "true"},
            {"instruction": "Which?", "input": "ctx", "output": "the correct answer is answer2", "answer": "answer2"}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows))
    kept, ident = TASK.load_train_rows(str(path), 1300)
    assert kept == [{"query": "Is it?", "response": "the correct answer is true"},
                    {"query": "Which?\n\n### Input:\nctx", "response": "the correct answer is answer2"}]
    assert ident["source"] == "local" and ident["rows"] == 2
    path.write_text(json.dumps([{"query": "q", "response": "r"}]))
    with pytest.raises(UserError, match="instruction/input/output/answer"):
        TASK.load_train_rows(str(path), 1300)
