"""Generation: batched (left padded) must give what one-by-one gives, for every kind of method,
prompt-learning methods included (their virtual tokens must sit right before each prompt)."""

from __future__ import annotations

import pytest

from peftbench import tasks
from peftbench.training.evaluate import evaluate_rows, generate_batch, text_cross_entropy

TASK = tasks.get("metamathqa")

PROMPTS = ["Question: Sara has 3 pens. Think step by step.\nAnswer:",
           "Question: Tom has 12 apples and buys 4 more. How many apples? Think step by step.\nAnswer:",
           "Q: 1+1?"]

CONFIGS = {
    "none": None,
    "lora": {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False},
    "prompt_tuning": {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 5},
    "p_tuning": {"peft_type": "P_TUNING", "num_virtual_tokens": 5, "encoder_hidden_size": 16},
    "prefix_tuning": {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 5},
    "adaption_prompt": {"peft_type": "ADAPTION_PROMPT", "adapter_len": 4, "adapter_layers": 1},
}


@pytest.mark.parametrize("method", [m for m in CONFIGS if m != "prefix_tuning"])
def test_batched_generation_equals_one_by_one(tiny_peft_model, method):
    model, tok = tiny_peft_model(CONFIGS[method])
    kwargs = {"max_new_tokens": 12}
    batched, counts = generate_batch(model, tok, PROMPTS, kwargs)
    single = [generate_batch(model, tok, [p], kwargs) for p in PROMPTS]
    assert batched == [s[0][0] for s in single]
    assert counts == [s[1][0] for s in single]
    assert tok.padding_side == "right"  # restored for training


@pytest.mark.parametrize("method", list(CONFIGS))
def test_evaluation_batches_give_one_by_one_outputs_for_every_method(tiny_peft_model, method):
    """Prefix tuning cannot be batched with padding (see evaluate._needs_unpadded_batches); the
    evaluator must still give every method the outputs of one-by-one generation, in item order."""
    model, tok = tiny_peft_model(CONFIGS[method])
    rows = [{"question": q, "answer": "#### 1"} for q in ("Sara has 3 pens.", "Tom has 12 apples and buys 4 more.",
                                                          "1+1?", "Sara has 5 pens.")]
    batched = evaluate_rows(model, tok, rows, split="test", template="Q: {query}\nA:", batch_size=4,
                            generation_kwargs={"max_new_tokens": 10}, task=TASK)
    single = evaluate_rows(model, tok, rows, split="test", template="Q: {query}\nA:", batch_size=1,
                           generation_kwargs={"max_new_tokens": 10}, task=TASK)
    assert [r["index"] for r in batched.rows] == [0, 1, 2, 3]
    assert [r["generated"] for r in batched.rows] == [r["generated"] for r in single.rows]


def test_max_length_and_max_new_tokens_become_one_budget(tiny_peft_model):
    model, tok = tiny_peft_model(None)
    n_prompt = len(tok(PROMPTS[1])["input_ids"])
    _, counts = generate_batch(model, tok, [PROMPTS[1]], {"max_length": n_prompt + 3, "max_new_tokens": 50})
    assert counts[0] <= 3
    _, counts = generate_batch(model, tok, [PROMPTS[1]], {"max_length": 500, "max_new_tokens": 2})
    assert counts[0] <= 2


def test_evaluate_rows_grades_each_item_with_the_tasks_grader(tiny_peft_model):
    model, tok = tiny_peft_model(None)
    rows = [{"question": "Sara has 3 pens.", "answer": "#### 3"}, {"question": "Tom has 2.", "answer": "#### 2"}]
    out = evaluate_rows(model, tok, rows, split="test", template="Q: {query}\nA:", batch_size=2,
                        generation_kwargs={"max_new_tokens": 4}, task=TASK)
    assert [r["index"] for r in out.rows] == [0, 1] and out.accuracy in (0.0, 0.5, 1.0)
    assert all(r["prompt"].startswith("Q: ") for r in out.rows)


def test_cross_entropy_ignores_padding(tiny_peft_model):
    model, tok = tiny_peft_model(None)
    texts = ["the quick brown fox", "the quick brown fox jumps over the lazy dog again and again"]
    together = text_cross_entropy(model, tok, texts, 64, batch_size=2)
    tokens = [len(tok(t)["input_ids"]) - 1 for t in texts]
    apart = [text_cross_entropy(model, tok, [t], 64, batch_size=1) for t in texts]
    assert together == pytest.approx(sum(a * n for a, n in zip(apart, tokens)) / sum(tokens), rel=1e-4)
