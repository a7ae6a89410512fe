"""The dynamic evaluation engine gives the static loop's outputs, for every kind of method.

A tiny random model never writes EOS, so every row would run to its budget and no row would
leave the batch early. To exercise rows that finish at different steps (and the refill that
follows), the tests make a token the model writes often in the middle of its outputs the EOS."""

from __future__ import annotations

import pytest

from peftbench import tasks
from peftbench.training.evaluate import evaluate_rows

TASK = tasks.get("metamathqa")

CONFIGS = {
    "none": None,
    "lora": {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False},
    "prompt_tuning": {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 5},
    "prefix_tuning": {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 5},
    "adaption_prompt": {"peft_type": "ADAPTION_PROMPT", "adapter_len": 4, "adapter_layers": 1},
}
# the engine each method gets when "dynamic" is asked for: prompt learning keeps its own path
ENGINE_USED = {"none": "dynamic", "lora": "dynamic", "prompt_tuning": "static", "prefix_tuning": "static",
               "adaption_prompt": "dynamic"}
GENERATION = {"max_length": 200, "max_new_tokens": 14}
TEMPLATE = "Question: {query}\nAnswer:"


def _rows(n: int = 11) -> list[dict[str, str]]:
    words = "and then she gets some more of them from her friend at the shop".split()
    return [{"question": f"Sara has {i + 2} pens " + " ".join(words[: (5 * i) % len(words)]) + "?",
             "answer": f"#### {i + 2}"} for i in range(n)]


def _evaluate(model, tok, engine, batch_size=4):
    return evaluate_rows(model, tok, _rows(), split="test", template=TEMPLATE, batch_size=batch_size,
                         generation_kwargs=GENERATION, task=TASK, engine=engine)


def _make_a_frequent_token_the_eos(model, tok):
    """Make EOS (and pad) the token whose first appearance falls on the most different steps
    across the rows, so that rows finish at different steps."""
    import torch

    first_steps: dict[int, set[int]] = {}
    for row in _rows():
        ids = tok(TEMPLATE.format(query=row["question"]), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[0, ids.shape[1]:].tolist()
        for token in set(new):
            first_steps.setdefault(token, set()).add(new.index(token))
    token = max(first_steps, key=lambda t: (len(first_steps[t]), -t))
    tok.eos_token = tok.convert_ids_to_tokens(token)
    tok.pad_token = tok.eos_token


@pytest.mark.parametrize("method", list(CONFIGS))
def test_dynamic_engine_gives_the_static_loops_outputs(tiny_peft_model, method):
    model, tok = tiny_peft_model(CONFIGS[method])
    _make_a_frequent_token_the_eos(model, tok)
    static, dynamic = _evaluate(model, tok, "static"), _evaluate(model, tok, "dynamic")
    assert (static.engine, dynamic.engine) == ("static", ENGINE_USED[method])
    assert [r["generated"] for r in dynamic.rows] == [r["generated"] for r in static.rows]
    assert [r["num_generated_tokens"] for r in dynamic.rows] == [r["num_generated_tokens"] for r in static.rows]
    assert [r["index"] for r in dynamic.rows] == list(range(len(_rows())))
    if ENGINE_USED[method] == "dynamic":
        # rows did leave early, so the refill path ran
        assert len({r["num_generated_tokens"] for r in dynamic.rows}) >= 3


def test_a_batch_of_one_and_a_batch_larger_than_the_split_give_the_same_outputs(tiny_peft_model):
    model, tok = tiny_peft_model(None)
    _make_a_frequent_token_the_eos(model, tok)
    texts = {b: [r["generated"] for r in _evaluate(model, tok, "dynamic", batch_size=b).rows] for b in (1, 3, 50)}
    assert texts[1] == texts[3] == texts[50]


def test_dynamic_engine_stops_where_the_grader_cuts_and_keeps_the_grade(tiny_peft_model):
    from peftbench.training.generation import generate_dynamic

    model, tok = tiny_peft_model(None)
    prompts = [TEMPLATE.format(query=r["question"]) for r in _rows(5)]
    full, stopped = {}, {}
    generate_dynamic(model, tok, prompts, GENERATION, 2, lambda i, t, n: full.setdefault(i, (t, n)),
                     stop=lambda i, text: False)
    # a stand-in stop rule: the second time a text gets longer than 20 characters
    generate_dynamic(model, tok, prompts, GENERATION, 2, lambda i, t, n: stopped.setdefault(i, (t, n)),
                     stop=lambda i, text: len(text) > 20)
    for i in full:
        text, count = stopped[i]
        assert full[i][0].startswith(text) and count <= full[i][1]
        assert len(text) > 20 or count == full[i][1]


def test_engines_that_cannot_run_fall_back_to_static(tiny_peft_model):
    from peftbench.training.generation import unsupported_reason

    model, tok = tiny_peft_model(None)
    assert unsupported_reason(model, GENERATION) is None
    assert "repetition_penalty" in unsupported_reason(model, {**GENERATION, "repetition_penalty": 1.2})
    out = evaluate_rows(model, tok, _rows(3), split="test", template=TEMPLATE, batch_size=2,
                        generation_kwargs={**GENERATION, "repetition_penalty": 1.2}, task=TASK, engine="dynamic")
    assert out.engine == "static"


def test_the_in_place_cache_holds_what_concatenation_would():
    """The dynamic engine's cache layer appends in place into spare columns, moves rows over the
    rows that left, drops leading columns and writes newcomers into free rows; whatever the
    sequence, `keys`/`values` must equal what torch.cat and plain indexing give (the values
    transformers attends over)."""
    import torch

    from peftbench.training import generation as G

    torch.manual_seed(0)
    layer = G._roomy_layer_class()()
    layer.capacity = 5
    nobody = torch.tensor([], dtype=torch.long)

    def states(rows, columns):
        return torch.randn(rows, 2, columns, 4), torch.randn(rows, 2, columns, 4)

    def same(ref_k, ref_v):
        return torch.equal(layer.keys, ref_k) and torch.equal(layer.values, ref_v)

    first = G.SPARE_COLUMNS + 5  # a prefill of 3 rows, wider than the spare room
    k, v = states(3, first)
    layer.admit(k, v)
    ref_k, ref_v = k.clone(), v.clone()
    assert same(ref_k, ref_v)
    for _ in range(G.SPARE_COLUMNS + 7):  # past the spare room: the buffers must grow
        k, v = states(3, 1)
        out_k, out_v = layer.update(k, v)
        ref_k, ref_v = torch.cat([ref_k, k], dim=2), torch.cat([ref_v, v], dim=2)
        assert torch.equal(out_k, ref_k) and torch.equal(out_v, ref_v)
    assert layer.get_seq_length() == first + G.SPARE_COLUMNS + 7

    # row 0 leaves: row 2 takes its place; the first 4 columns are nobody's any more
    layer.move_rows(torch.tensor([2]), torch.tensor([0]), rows=2)
    layer.drop_columns(4)
    order = torch.tensor([2, 1])
    ref_k, ref_v = ref_k[order][:, :, 4:], ref_v[order][:, :, 4:]
    assert same(ref_k, ref_v)

    # three newcomers of 3 columns: below the others, left-padded with zeros to the batch's width
    nk, nv = states(3, 3)
    layer.admit(nk, nv)
    pad = ref_k.shape[2] - 3
    ref_k = torch.cat([ref_k, torch.nn.functional.pad(nk, (0, 0, pad, 0))])
    ref_v = torch.cat([ref_v, torch.nn.functional.pad(nv, (0, 0, pad, 0))])
    assert same(ref_k, ref_v) and layer.keys.shape[0] == 5  # the capacity, reached
    k, v = states(5, 1)
    out_k, _ = layer.update(k, v)
    ref_k, ref_v = torch.cat([ref_k, k], dim=2), torch.cat([ref_v, v], dim=2)
    assert torch.equal(out_k, ref_k)

    # a newcomer wider than the batch widens it on the left with zeros: in place, into the
    # dropped columns, and by a copy when those are not enough
    layer.move_rows(nobody, nobody, rows=4)
    ref_k, ref_v = ref_k[:4], ref_v[:4]
    for extra in (2, G.SPARE_COLUMNS):
        wk, wv = states(1, ref_k.shape[2] + extra)
        layer.admit(wk, wv)
        ref_k = torch.cat([torch.nn.functional.pad(ref_k, (0, 0, extra, 0)), wk])
        ref_v = torch.cat([torch.nn.functional.pad(ref_v, (0, 0, extra, 0)), wv])
        assert same(ref_k, ref_v)
        layer.move_rows(nobody, nobody, rows=4)
        ref_k, ref_v = ref_k[:4], ref_v[:4]

    # everybody leaves; newcomers start a batch of their own width
    layer.move_rows(nobody, nobody, rows=0)
    layer.drop_columns(layer.keys.shape[2])
    nk, nv = states(2, 6)
    layer.admit(nk, nv)
    assert same(nk, nv)
