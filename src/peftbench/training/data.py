"""Data: MetaMathQA rows for training, GSM8K rows for validation and test, forgetting text,
tokenisation with label masking, and length-bucketed batch order.

Sources are named the same way in every field: a hub id (`meta-math/MetaMathQA`,
`openai/gsm8k`), a local file or folder, or `demo:<name>` for the built-in generator of the
CPU demo. Every loader returns the rows and an identity dict recorded in the result.
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from peftbench.record import identity
from peftbench.errors import UserError

# The validation rows are drawn with this fixed seed, independent of the training seed, so that
# runs with different seeds are validated on the same items.
VALID_SPLIT_SEED = 0
# The tuning split of `peftbench tune` (train_config tune_valid_size > 0) has a seed of its own:
# it is a different draw from the 50 validation rows that ordinary runs report.
TUNE_SPLIT_SEED = 1
IGNORE_INDEX = -100  # label value the loss ignores (torch CrossEntropyLoss default)
# Batches per bucket: long enough to group similar lengths, short enough to keep the order
# random at the scale of an epoch.
BATCHES_PER_BUCKET = 20


@dataclass
class EvalSplits:
    valid: list[dict[str, str]]  # question/answer rows from the eval dataset's train split
    test: list[dict[str, str]]
    identity: dict[str, Any]


def _is_demo(source: str) -> bool:
    return source.startswith("demo:")


def dataset_identity(source: str | None, role: str) -> dict[str, Any] | None:
    """What identifies the data a field names, without loading it: the built-in generator's
    version and hash, sha256 of local files, or the hub revision. `role` is train/eval/forgetting,
    or tune: the eval dataset of a tuning trial, which reads only the train split (a local folder
    is then identified by train.jsonl alone, so that a new test set leaves trials up to date)."""
    if source is None:
        return None
    if _is_demo(source):
        from peftbench.demo import word_problems as demo_data

        return {"source": "builtin", "id": source, **demo_data.identity()}
    path = Path(os.path.expanduser(source))
    if path.exists():
        if role in ("eval", "tune") and path.is_dir():
            return identity.files_sha256(eval_folder_files(source, tuning=role == "tune"))
        return identity.files_sha256(_local_files(path, (".json", ".jsonl", ".parquet", ".txt")))
    repo_id, _, config = source.partition(":")
    return identity.hub_revision(repo_id, "dataset") | ({"config": config} if config else {})


def eval_folder_files(source: str, tuning: bool = False) -> list[Path]:
    """train.jsonl and test.jsonl of a local eval_dataset folder (train.jsonl alone for a tuning
    trial); a missing one is bad input, named, never a FileNotFoundError."""
    from peftbench.experiment.config import eval_folder_missing

    folder = Path(os.path.expanduser(source))
    missing = eval_folder_missing(folder, tuning)
    if missing:
        raise UserError(f"eval_dataset {source!r}: folder lacks {', '.join(missing)} (GSM8K question/answer rows)")
    return [folder / "train.jsonl"] + ([] if tuning else [folder / "test.jsonl"])


def _read_local_table(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, dict):  # {"train": [...]} or a column-oriented dict
            data = next(iter(data.values())) if len(data) == 1 else data
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of rows")
        return data
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    raise UserError(f"{path}: unsupported file type {path.suffix!r} (use .json, .jsonl or .parquet)")


def _local_files(path: Path, suffixes=(".json", ".jsonl", ".parquet")) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in suffixes)
    if not files:
        raise UserError(f"{path}: folder holds no {'/'.join(suffixes)} files")
    return files


def load_train_rows(source: str, char_limit: int) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """MetaMathQA rows (query, response), without those whose `query + " " + response` exceeds
    char_limit characters (1300 keeps ~94% of MetaMathQA)."""
    if _is_demo(source):
        from peftbench.demo import word_problems as demo_data

        rows = demo_data.train_rows()
    elif os.path.exists(os.path.expanduser(source)):
        rows = [r for f in _local_files(Path(os.path.expanduser(source))) for r in _read_local_table(f)]
    else:
        from datasets import load_dataset

        rows = list(load_dataset(source, split="train"))
    ident = dataset_identity(source, "train")
    missing = [k for k in ("query", "response") if rows and k not in rows[0]]
    if missing:
        raise UserError(f"train_dataset {source!r}: rows lack field(s) {missing}; expected MetaMathQA's query/response")
    kept = [{"query": r["query"], "response": r["response"]} for r in rows
            if len(r["query"]) + 1 + len(r["response"]) <= char_limit]
    ident.update({"rows": len(rows), "rows_kept": len(kept), "char_limit": char_limit})
    if not kept:
        raise UserError(f"train_dataset {source!r}: no row is within char_limit={char_limit}")
    return kept, ident


def load_eval_splits(source: str, valid_size: int, test_size: int | None, tune_valid_size: int = 0) -> EvalSplits:
    """GSM8K rows (question, answer). Valid: `valid_size` rows of the train split drawn with a
    fixed local RNG; test: the first `test_size` rows of the test split (all when None).

    Tuning mode (`tune_valid_size` > 0): valid is `tune_valid_size` rows of the train split drawn
    with TUNE_SPLIT_SEED, and the test split is not read at all (test is empty): a trial that is
    chosen on validation data must not see the test set."""
    tuning = tune_valid_size > 0
    if _is_demo(source):
        from peftbench.demo import word_problems as demo_data

        train, test = demo_data.eval_rows("train"), ([] if tuning else demo_data.eval_rows("test"))
    elif os.path.exists(os.path.expanduser(source)):
        paths = eval_folder_files(source, tuning)
        train, test = _read_local_table(paths[0]), ([] if tuning else _read_local_table(paths[1]))
    else:
        from datasets import load_dataset

        train = list(load_dataset(source, "main", split="train"))
        test = [] if tuning else list(load_dataset(source, "main", split="test"))
    ident = dataset_identity(source, "tune" if tuning else "eval")
    for name, rows in (("train", train), ("test", test)):
        if rows and not {"question", "answer"} <= set(rows[0]):
            raise UserError(f"eval_dataset {source!r}: {name} rows lack question/answer fields")
    size, seed, name = (tune_valid_size, TUNE_SPLIT_SEED, "tune_valid_size") if tuning else (valid_size, VALID_SPLIT_SEED, "valid_size")
    # One rule for both sizes (limits.py refuses what cannot be meant): a size larger than its
    # split is clamped to the split, and said on stderr.
    size = _clamped(name, size, len(train), "eval train split")
    valid = [train[i] for i in sorted(random.Random(seed).sample(range(len(train)), size))]
    if test_size is not None and not tuning:
        test = test[:_clamped("test_size", test_size, len(test), "eval test split")]
    ident.update({"valid_rows": len(valid), "test_rows": len(test), "valid_split_seed": seed})
    return EvalSplits([_qa(r) for r in valid], [_qa(r) for r in test], ident)


def _clamped(name: str, size: int, available: int, split: str) -> int:
    if size <= available:
        return size
    print(f"peftbench: warning: {name} {size} is larger than the {available} rows of the {split}; "
          f"using all {available}", file=sys.stderr, flush=True)
    return available


def _qa(row: dict[str, Any]) -> dict[str, str]:
    return {"question": row["question"], "answer": row["answer"]}


def load_forgetting_texts(source: str | None) -> tuple[list[str], dict[str, Any] | None]:
    """Plain texts for the forgetting measure, or ([], None) when there is no source.

    Local .txt: paragraphs separated by blank lines; local .jsonl: the "text" field of each row;
    hub: `id` or `id:config`, split "test", field "text"."""
    if source is None:
        return [], None
    if os.path.exists(os.path.expanduser(source)):
        path = Path(os.path.expanduser(source))
        if path.suffix == ".jsonl":
            texts = [r["text"] for r in _read_local_table(path) if isinstance(r.get("text"), str)]
        else:
            texts = path.read_text(encoding="utf-8").split("\n\n")
    else:
        from datasets import load_dataset

        repo_id, _, config = source.partition(":")
        texts = [r["text"] for r in load_dataset(repo_id, config or None, split="test")]
    ident = dataset_identity(source, "forgetting")
    texts = [t.strip() for t in texts if len(t.strip()) >= 200]  # skip headings and blank rows
    return texts, ident


# ----------------------------------------------------------------------------------------------
# Tokenisation


def format_prompt(template: str, query: str) -> str:
    return template.format(query=query)


def tokenize_train_rows(rows, tokenizer, template: str, max_seq_length: int) -> list[dict[str, Any]]:
    """Token ids of prompt + response + EOS per row, truncated to max_seq_length, with the prompt
    length kept so that the loss can skip it when asked."""
    eos = tokenizer.eos_token or ""
    samples = []
    for row in rows:
        prompt = format_prompt(template, row["query"])
        full = tokenizer(prompt + " " + row["response"] + eos, add_special_tokens=True)["input_ids"]
        prompt_len = len(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        if tokenizer.eos_token_id is not None and (not full or full[-1] != tokenizer.eos_token_id):
            full = full + [tokenizer.eos_token_id]  # a tokenizer that did not map the EOS text
        samples.append({"input_ids": full[:max_seq_length], "prompt_len": min(prompt_len, max_seq_length)})
    return samples


def collate_train(samples: list[dict[str, Any]], pad_token_id: int, train_on_prompt: bool):
    """Right-padded batch. Labels are masked by each sample's length, never by token id: pad and
    EOS are often the same token, and the EOS that ends a sample must be learned."""
    import torch

    width = max(len(s["input_ids"]) for s in samples)
    input_ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids = torch.tensor(s["input_ids"], dtype=torch.long)
        input_ids[i, :n] = ids
        attention[i, :n] = 1
        labels[i, :n] = ids
        if not train_on_prompt:
            labels[i, : s["prompt_len"]] = IGNORE_INDEX
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batch order of one epoch: shuffle with (seed, epoch), cut into buckets of
    BATCHES_PER_BUCKET batches, sort each bucket by length, longest first (so an out-of-memory
    error shows early), and cut into batches. Every row appears exactly once. Uses a local RNG."""
    order = list(range(len(lengths)))
    random.Random(f"{seed}-{epoch}").shuffle(order)
    bucket = batch_size * BATCHES_PER_BUCKET
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start:start + bucket], key=lambda i: -lengths[i])
        batches.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
    return batches


def batch_stream(lengths: list[int], batch_size: int, seed: int, start_step: int = 0) -> Iterator[list[int]]:
    """Batches for steps start_step, start_step+1, ...: epochs follow each other as max_steps
    needs. Starting at a step reproduces exactly the order an uninterrupted run would see."""
    per_epoch = len(epoch_batches(lengths, batch_size, seed, 0))
    epoch, pos = divmod(start_step, per_epoch)
    while True:
        batches = epoch_batches(lengths, batch_size, seed, epoch)
        yield from batches[pos:]
        epoch, pos = epoch + 1, 0
