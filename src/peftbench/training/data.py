"""Data a run trains on, once the task (peftbench.tasks) has loaded its rows: the forgetting
text, tokenisation with label masking, and the length-bucketed batch order.

Batches are index lists over pre-tokenised rows held in memory, drawn from a local RNG seeded by
(seed, epoch), rather than a torch DataLoader: the order of any step can be recomputed from the
step number alone, which is what makes a resumed run bit-identical to an uninterrupted one, and
rows this small need no worker processes.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

from peftbench.tasks import sources

IGNORE_INDEX = -100  # label value the loss ignores (torch CrossEntropyLoss default)
# Batches per bucket: long enough to group similar lengths, short enough to keep the order
# random at the scale of an epoch.
BATCHES_PER_BUCKET = 20


def load_forgetting_texts(source: str | None) -> tuple[list[str], dict[str, Any] | None]:
    """Plain texts for the forgetting measure, or ([], None) when there is no source.

    Local .txt: paragraphs separated by blank lines; local .jsonl: the "text" field of each row;
    hub: `id` or `id:config`, split "test", field "text"."""
    if source is None:
        return [], None
    path = sources.local_path(source)
    if path is not None:
        if path.suffix == ".jsonl":
            texts = [r["text"] for r in sources.read_local_table(path) if isinstance(r.get("text"), str)]
        else:
            texts = path.read_text(encoding="utf-8").split("\n\n")
    else:
        from datasets import load_dataset

        repo_id, _, config = source.partition(":")
        texts = [r["text"] for r in load_dataset(repo_id, config or None, split="test")]
    ident = sources.generic_identity(source)
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
