"""Evaluation: batched greedy generation on a task's rows, graded per item by the task, and the
forgetting measure (per-token cross-entropy on plain text)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from peftbench.record import results as R
from peftbench.signals import raise_if_signalled
from peftbench.tasks.base import Task
from peftbench.training import generation, methods


@dataclass
class EvalOutcome:
    rows: list[dict[str, Any]]  # prediction rows, fields as results.PREDICTION_FIELDS plus the task's
    # metrics-entry key ("test accuracy", "test accuracy flexible", ...) -> accuracy: for the test
    # split the task's aggregate over its sets, for validation the share of items; None: no items
    accuracies: dict[str, float | None]
    per_set: dict[str, dict[str, Any]]  # test split: set -> {"n": items, <metric key>: accuracy}
    generated_tokens: int
    seconds: float
    loss: float | None = None  # validation only: see qa_cross_entropy
    engine: str = "static"  # the engine that ran (TrainConfig.eval_engine, or static as its fallback)

    @property
    def accuracy(self) -> float | None:
        """The headline accuracy (the first grade's)."""
        return next(iter(self.accuracies.values()), None)


def _traits(model):
    """The PEFT method's MethodTraits (peftbench.training.methods knows the methods)."""
    return methods.traits(getattr(model, "active_peft_config", None))


def generate_batch(model, tokenizer, prompts: list[str], generation_kwargs: dict[str, Any],
                   extra_kwargs: dict[str, Any] | None = None) -> tuple[list[str], list[int]]:
    """Greedy generation for a batch of prompts, left padded. Returns texts (prompt excluded) and
    the number of generated tokens of each (up to and including EOS)."""
    import torch

    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = "right"
    device = next(model.parameters()).device
    input_ids, attention = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    kwargs = dict(generation_kwargs)
    max_length, max_new = kwargs.pop("max_length", None), kwargs.pop("max_new_tokens", None)
    # transformers refuses both at once: turn the pair into one budget of new tokens.
    budget = [b for b in (max_new, None if max_length is None else max_length - input_ids.shape[1]) if b is not None]
    kwargs["max_new_tokens"] = max(1, min(budget))
    kwargs.update(do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if "stop_strings" in kwargs:
        kwargs["tokenizer"] = tokenizer
    kwargs.update(extra_kwargs or {})
    with torch.no_grad():
        if _traits(model).virtual_tokens:
            new_tokens = _generate_with_virtual_tokens(model, input_ids, attention, kwargs)
        else:
            out = model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
            new_tokens = out[:, input_ids.shape[1]:]
    texts, counts = [], []
    for row in new_tokens.tolist():
        n = len(row)
        if tokenizer.eos_token_id in row:
            n = row.index(tokenizer.eos_token_id) + 1
        elif tokenizer.pad_token_id in row:
            n = row.index(tokenizer.pad_token_id)
        texts.append(tokenizer.decode(row[:n], skip_special_tokens=True))
        counts.append(n)
    return texts, counts


def _generate_with_virtual_tokens(model, input_ids, attention, kwargs):
    """Prompt tuning / P-tuning: place the virtual tokens right before each prompt, after the
    left padding, and generate from embeddings with the base model.

    PeftModel.generate puts the virtual tokens in front of the padding instead; with left padding
    that gave degenerate text (0% accuracy and ~6x slower on SmolLM2-135M). Here every row sees
    exactly what it saw in training: [virtual tokens][prompt], padding masked out before them."""
    import torch

    batch = input_ids.shape[0]
    base = model.get_base_model()
    embed = base.get_input_embeddings()
    virtual = model.get_prompt(batch_size=batch).to(embed.weight.dtype)  # [B, V, H]
    n_virtual = virtual.shape[1]
    token_embeds = embed(input_ids)
    pads = (attention == 0).sum(dim=1).tolist()
    rows, masks = [], []
    for i, n_pad in enumerate(pads):
        rows.append(torch.cat([token_embeds[i, :n_pad], virtual[i], token_embeds[i, n_pad:]], dim=0))
        masks.append(torch.cat([attention.new_zeros(n_pad), attention.new_ones(n_virtual + input_ids.shape[1] - n_pad)]))
    inputs_embeds, mask = torch.stack(rows), torch.stack(masks)
    # With only inputs_embeds given, generate returns the new tokens alone.
    return base.generate(inputs_embeds=inputs_embeds, attention_mask=mask, **kwargs)


def _generation_batches(model, tokenizer, prompts: list[str], batch_size: int) -> list[list[int]]:
    """Index batches in item order; for a KV prefix (prefix tuning), batches of prompts of equal
    token length. A KV prefix makes PEFT's generate give a left-padded prompt other position ids
    than the same prompt alone, so batched and one-by-one outputs differ
    (tests/training/test_evaluate.py); without padding they are those of one-by-one generation."""
    if not _traits(model).kv_prefix:
        return [list(range(b, min(b + batch_size, len(prompts)))) for b in range(0, len(prompts), batch_size)]
    by_length: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(tokenizer(prompt)["input_ids"]), []).append(i)
    groups = sorted(by_length.values(), key=lambda g: g[0])
    return [g[b:b + batch_size] for g in groups for b in range(0, len(g), batch_size)]


def evaluate_rows(model, tokenizer, rows: list[dict[str, Any]], *, task: Task, split: str, template: str,
                  batch_size: int, generation_kwargs: dict[str, Any], extra_kwargs_fn: Callable | None = None,
                  progress=None, engine: str = "static", grading: dict[str, Any] | None = None) -> EvalOutcome:
    """Generate an answer for every row (the task's prompt) and grade it (the task's grader).
    Test rows carry their set ("test_set"); accuracies are per set and the task's aggregate.
    `engine` is a TrainConfig.eval_engine; "dynamic" runs the static loop for models it cannot
    generate (generation.unsupported_reason), and EvalOutcome.engine says which one ran. A task
    that grades in batch (`Task.grades_in_batch`: the code task runs programs in parallel
    sandboxes) grades every text after generation, with the run's `grading` settings."""
    import time

    start = time.perf_counter()
    was_training = model.training
    model.eval()
    out_rows: list[dict[str, Any]] = []
    all_prompts = [task.prompt(template, r) for r in rows]
    headline = f"correct_{task.grade_names[0]}"
    if engine == "dynamic" and generation.unsupported_reason(model, generation_kwargs) is not None:
        engine = "static"

    def record(index: int, text: str, count: int) -> None:
        raise_if_signalled()
        row = rows[index]
        graded = {} if task.grades_in_batch else task.grade_fields(text, row)
        out = {
            "split": split, "index": index, "item_id": R.item_id(task.item_key(row)),
            "question": row["question"], "prompt": all_prompts[index], "generated": text,
            "reference": row["answer"], **task.prediction_extras(row), **graded,
            "num_generated_tokens": count,
        }
        if "test_set" in row:
            out["test_set"] = row["test_set"]
        out_rows.append(out)
        if progress is not None:
            progress.update(1)
            if graded:
                progress.set_postfix(acc=f"{sum(r[headline] for r in out_rows) / len(out_rows):.3f}")

    try:
        if engine == "dynamic":
            generation.generate_dynamic(model, tokenizer, all_prompts, generation_kwargs, batch_size, record,
                                        stop=lambda index, text: task.stops_generation(text, rows[index]))
        else:
            for indices in _generation_batches(model, tokenizer, all_prompts, batch_size):
                extra = extra_kwargs_fn(len(indices)) if extra_kwargs_fn else None
                texts, counts = generate_batch(model, tokenizer, [all_prompts[i] for i in indices],
                                               generation_kwargs, extra)
                for index, text, count in zip(indices, texts, counts):
                    record(index, text, count)
    finally:
        model.train(was_training)
    out_rows.sort(key=lambda r: r["index"])
    if task.grades_in_batch and out_rows:
        for out, fields in zip(out_rows, task.grade_batch([r["generated"] for r in out_rows],
                                                          [rows[r["index"]] for r in out_rows], grading or {})):
            out.update(fields)
    accuracies, per_set = task.accuracies(split, out_rows)
    total_tokens = sum(r["num_generated_tokens"] for r in out_rows)
    return EvalOutcome(out_rows, accuracies, per_set, total_tokens, time.perf_counter() - start, engine=engine)


def text_cross_entropy(model, tokenizer, texts: list[str], max_seq_length: int, batch_size: int) -> float | None:
    """Mean per-token cross-entropy (nats) of the model on texts, each truncated to
    max_seq_length tokens. None when there is no text."""
    import torch

    if not texts:
        return None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss, total_tokens = 0.0, 0
    try:
        with torch.no_grad():
            for begin in range(0, len(texts), batch_size):
                enc = tokenizer(texts[begin:begin + batch_size], return_tensors="pt", padding=True,
                                truncation=True, max_length=max_seq_length)
                ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                # Prompt-learning models prepend virtual tokens to the logits; keep the text part.
                logits = logits[:, -ids.shape[1]:]
                shift_logits, shift_labels = logits[:, :-1], ids[:, 1:]
                shift_mask = mask[:, 1:].bool()
                losses = torch.nn.functional.cross_entropy(
                    shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), reduction="none"
                ).view_as(shift_labels)
                total_loss += losses[shift_mask].sum().item()
                total_tokens += int(shift_mask.sum().item())
    finally:
        model.train(was_training)
    return total_loss / total_tokens if total_tokens else None


def qa_cross_entropy(model, tokenizer, rows: list[dict[str, Any]], task: Task, template: str, max_seq_length: int,
                     batch_size: int) -> float | None:
    """Validation loss: mean per-token cross-entropy of `prompt + " " + reference answer` (the
    training text's layout). It breaks ties between tuning trials of equal validation accuracy;
    one forward pass per batch costs little beside generating up to 300 tokens per item."""
    texts = [task.prompt(template, r) + " " + task.reference_text(r) for r in rows]
    return text_cross_entropy(model, tokenizer, texts, max_seq_length, batch_size)
