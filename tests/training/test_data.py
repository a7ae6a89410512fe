"""Data: label masking, bucketing, the validation split, the loaders on local and real files."""

from __future__ import annotations

import json
import random

import pytest

from peftbench.training import data
from peftbench.errors import UserError
from peftbench import tasks

# the loaders of GSM8K-form data are the metamathqa task's
MMQ = tasks.get("metamathqa")



class _PadIsEos:
    """A tokenizer stand-in whose pad and EOS are the same id, as for Llama-3 and SmolLM2."""

    eos_token = "<eos>"
    eos_token_id = 2
    pad_token_id = 2

    def __call__(self, text, add_special_tokens=True):
        ids = [1] + [10 + (ord(c) % 50) for c in text.replace("<eos>", "")]
        if text.endswith("<eos>"):
            ids.append(2)
        return {"input_ids": ids}


def test_eos_that_ends_a_sample_is_learned_even_when_pad_is_eos():
    tok = _PadIsEos()
    samples = data.tokenize_train_rows([{"query": "q", "response": "abc"}, {"query": "q", "response": "a"}],
                                       tok, "Q: {query}", max_seq_length=64)
    batch = data.collate_train(samples, tok.pad_token_id, train_on_prompt=True)
    short = batch["labels"][1]
    n = len(samples[1]["input_ids"])
    assert samples[1]["input_ids"][-1] == tok.eos_token_id
    assert short[n - 1].item() == tok.eos_token_id  # the final EOS is a target
    assert (short[n:] == data.IGNORE_INDEX).all()  # the padding after it (also id 2) is not
    assert (batch["input_ids"][1, n:] == tok.pad_token_id).all()
    assert batch["attention_mask"][1, :n].all() and not batch["attention_mask"][1, n:].any()


def test_prompt_tokens_leave_the_loss_only_when_asked():
    tok = _PadIsEos()
    samples = data.tokenize_train_rows([{"query": "qq", "response": "abc"}], tok, "Q: {query}", max_seq_length=64)
    with_prompt = data.collate_train(samples, tok.pad_token_id, train_on_prompt=True)["labels"][0]
    without = data.collate_train(samples, tok.pad_token_id, train_on_prompt=False)["labels"][0]
    p = samples[0]["prompt_len"]
    assert (with_prompt[:p] != data.IGNORE_INDEX).all()
    assert (without[:p] == data.IGNORE_INDEX).all()
    assert (without[p:] == with_prompt[p:]).all()


def test_long_samples_are_truncated_to_max_seq_length():
    samples = data.tokenize_train_rows([{"query": "x" * 50, "response": "y" * 50}], _PadIsEos(), "{query}", 16)
    assert len(samples[0]["input_ids"]) == 16


@pytest.mark.parametrize("n_rows,batch_size", [(1, 4), (37, 4), (200, 3), (1000, 8)])
def test_every_row_is_used_exactly_once_per_epoch(n_rows, batch_size):
    lengths = [random.Random(i).randint(5, 500) for i in range(n_rows)]
    for epoch in range(3):
        batches = data.epoch_batches(lengths, batch_size, seed=0, epoch=epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(n_rows))
        assert all(len(b) <= batch_size for b in batches)


def test_buckets_are_sorted_longest_first_and_epochs_differ():
    lengths = list(range(400))
    batches = data.epoch_batches(lengths, 4, seed=0, epoch=0)
    per_bucket = 4 * data.BATCHES_PER_BUCKET
    bucket = [i for b in batches[: data.BATCHES_PER_BUCKET] for i in b]
    assert len(bucket) == per_bucket
    assert [lengths[i] for i in bucket] == sorted((lengths[i] for i in bucket), reverse=True)
    assert batches != data.epoch_batches(lengths, 4, seed=0, epoch=1)
    assert batches == data.epoch_batches(lengths, 4, seed=0, epoch=0)
    assert batches != data.epoch_batches(lengths, 4, seed=1, epoch=0)


def test_batch_stream_crosses_epochs_and_resumes_at_any_step():
    lengths = [5, 9, 3, 7, 1, 8, 2]
    stream = data.batch_stream(lengths, 2, seed=3)
    first = [next(stream) for _ in range(12)]  # 4 batches per epoch: 3 epochs
    assert sorted(i for b in first[:4] for i in b) == list(range(7))
    resumed = data.batch_stream(lengths, 2, seed=3, start_step=5)
    assert [next(resumed) for _ in range(7)] == first[5:]


@pytest.fixture
def gsm8k_folder(tmp_path, write_jsonl):
    """A function: gsm8k_folder(n_train=30, n_test=10) -> a local GSM8K-shaped folder."""
    def build(n_train=30, n_test=10):
        rows = lambda n, o: [{"question": f"q{i}", "answer": f"a\n#### {i}"} for i in range(o, o + n)]  # noqa: E731
        write_jsonl(tmp_path / "g" / "train.jsonl", rows(n_train, 0))
        write_jsonl(tmp_path / "g" / "test.jsonl", rows(n_test, 1000))
        return tmp_path / "g"

    return build


def test_valid_split_is_fixed_and_leaves_global_rng_alone(gsm8k_folder, tmp_path):
    folder = gsm8k_folder()
    random.seed(123)
    state = random.getstate()
    a = MMQ.load_eval_data(str(folder), valid_size=5, test_size=None)
    assert random.getstate() == state
    b = MMQ.load_eval_data(str(folder), valid_size=5, test_size=None)
    assert a.valid == b.valid and len(a.valid) == 5
    assert len(a.test) == 10
    assert MMQ.load_eval_data(str(folder), 5, test_size=3).test == a.test[:3]
    assert a.identity["source"] == "local" and len(a.identity["sha256"]) == 64


def test_sizes_larger_than_their_split_are_clamped_with_a_warning_one_rule_for_both(gsm8k_folder, tmp_path, capsys):
    folder = gsm8k_folder()
    whole = MMQ.load_eval_data(str(folder), valid_size=0, test_size=None)
    splits = MMQ.load_eval_data(str(folder), valid_size=99, test_size=999)
    err = capsys.readouterr().err
    assert "warning: valid_size 99 is larger than the" in err and "warning: test_size 999 is larger than the" in err
    assert splits.test == whole.test and len(splits.valid) == splits.identity["valid_rows"] > 0


def test_eval_folder_without_test_jsonl_is_bad_input_not_a_traceback(gsm8k_folder, tmp_path):
    folder = gsm8k_folder()
    (folder / "test.jsonl").unlink()
    with pytest.raises(UserError, match=r"eval_dataset .* folder lacks test.jsonl"):
        MMQ.data_identity(str(folder), "eval")
    with pytest.raises(UserError, match=r"folder lacks test.jsonl"):
        MMQ.load_eval_data(str(folder), 2, None)


def test_train_rows_over_the_char_limit_are_dropped(write_jsonl, tmp_path):
    rows = [{"query": "q" * 10, "response": "r" * 10}, {"query": "q" * 100, "response": "r" * 100}]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    kept, identity = MMQ.load_train_rows(str(path), char_limit=50)
    assert kept == [{"query": "q" * 10, "response": "r" * 10}]
    assert identity["rows"] == 2 and identity["rows_kept"] == 1


def test_train_rows_without_metamath_fields_are_refused(write_jsonl, tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(UserError, match="query/response"):
        MMQ.load_train_rows(str(path), 1300)


def test_train_rows_load_from_json_and_from_a_folder(tmp_path):
    rows = [{"query": "a", "response": "b"}]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.json").write_text(json.dumps(rows))
    assert MMQ.load_train_rows(str(tmp_path / "d"), 100)[0] == rows


def test_real_gsm8k_folder_loads_with_all_rows(shared_data):
    splits = MMQ.load_eval_data(str(shared_data("gsm8k")), valid_size=50, test_size=None)
    assert len(splits.test) == 1319 and len(splits.valid) == 50
    assert all(r["answer"].rsplit("####", 1)[1].strip() for r in splits.test)
    assert splits.identity["test_rows"] == 1319


def test_forgetting_texts_from_txt_and_jsonl(write_jsonl, tmp_path):
    long = "word " * 60
    (tmp_path / "t.txt").write_text(f"{long}\n\nshort\n\n{long}")
    texts, identity = data.load_forgetting_texts(str(tmp_path / "t.txt"))
    assert len(texts) == 2 and identity["source"] == "local"
    write_jsonl(tmp_path / "t.jsonl", [{"text": long}, {"text": "tiny"}])
    assert len(data.load_forgetting_texts(str(tmp_path / "t.jsonl"))[0]) == 1
    assert data.load_forgetting_texts(None) == ([], None)


def test_a_suite_runs_its_own_experiments_not_those_of_a_suite_inside_it(tmp_path):
    import json

    from peftbench.experiment.suite import discover_experiments

    outer, inner = tmp_path / "outer", tmp_path / "outer" / "demo"
    for suite, name in ((outer, "a"), (inner, "b")):
        (suite / "experiments" / "lora" / name).mkdir(parents=True)
        (suite / "default_training_params.json").write_text("{}")
        (suite / "experiments" / "lora" / name / "training_params.json").write_text(json.dumps({}))
    assert [p.name for p in discover_experiments(outer)] == ["a"]
    assert [p.name for p in discover_experiments(inner)] == ["b"]
    assert sorted(p.name for p in discover_experiments(tmp_path)) == ["a", "b"]  # a folder of suites: all


def test_hub_ids_go_through_datasets_load_dataset_with_the_reference_splits(monkeypatch):
    """The hub code path, offline: load_dataset is replaced, the calls it gets are checked."""
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "meta-math/MetaMathQA":
            return [{"query": "q", "response": "r", "type": "x"}]
        if name == "openai/gsm8k":
            return [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(10)]
        return [{"text": "word " * 100}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows, ident = MMQ.load_train_rows("meta-math/MetaMathQA", 1300)
    assert rows == [{"query": "q", "response": "r"}]
    assert ident["source"] == "hub" and ident["id"] == "meta-math/MetaMathQA"
    splits = MMQ.load_eval_data("openai/gsm8k", valid_size=3, test_size=2)
    assert len(splits.valid) == 3 and len(splits.test) == 2
    texts, f_ident = data.load_forgetting_texts("Salesforce/wikitext:wikitext-2-raw-v1")
    assert len(texts) == 1 and f_ident["config"] == "wikitext-2-raw-v1"
    assert calls == [("meta-math/MetaMathQA", None, "train"), ("openai/gsm8k", "main", "train"),
                     ("openai/gsm8k", "main", "test"), ("Salesforce/wikitext", "wikitext-2-raw-v1", "test")]
