"""The method hooks the runner calls: what each PEFT method needs from the training loop."""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from peftbench.training import methods  # noqa: E402
from peftbench.errors import UserError  # noqa: E402

QV = ["q_proj", "v_proj"]


class WordTokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(word) for word in text.split()]


def _batch() -> dict:
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 7, 8, 9]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    labels = torch.tensor([[-100, -100, -100, 8, 9], [-100, -100, -100, 8, 9]])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# ------------------------------------------------------------------------------------------
# check_supported


def test_xlora_is_refused_because_it_saves_no_weights_of_its_own():
    with pytest.raises(UserError, match="saves no weights of its own"):
        methods.check_supported(peft.XLoraConfig(hidden_size=32, adapters={}))


def test_full_finetuning_and_plain_methods_are_supported():
    methods.check_supported(None)
    methods.check_supported(peft.LoraConfig(target_modules=QV))
    methods.check_supported(peft.IA3Config(target_modules=QV, feedforward_modules=[]))


def test_adamss_without_scikit_learn_says_what_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real_find_spec(name, *a))
    config = peft.tuners.adamss.AdamssConfig.__new__(peft.tuners.adamss.AdamssConfig)
    config.peft_type = peft.PeftType.ADAMSS  # built without __post_init__, which needs sklearn itself
    with pytest.raises(UserError, match=r"pip install scikit-learn.*peftbench\[adamss\]"):
        methods.check_supported(config)


@pytest.mark.parametrize("init", ["eva", "corda", "loftq", "lora_ga"])
def test_lora_inits_that_need_a_data_pass_are_refused_with_the_reason(init):
    config = peft.LoraConfig(target_modules=QV)
    config.init_lora_weights = init  # set after construction: some need sub-configs to construct
    with pytest.raises(UserError, match=f"init_lora_weights='{init}'"):
        methods.check_supported(config)


def test_multitask_prompt_tuning_from_a_source_task_needs_its_checkpoint():
    config = peft.MultitaskPromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                              prompt_tuning_init="EXACT_SOURCE_TASK")
    with pytest.raises(UserError, match="prompt_tuning_init_state_dict_path"):
        methods.check_supported(config)


# ------------------------------------------------------------------------------------------
# prepare_peft_config


def _adalora(**kw):
    return peft.AdaLoraConfig(target_modules=QV, init_r=8, target_r=4, tinit=10, tfinal=20, total_step=5000, **kw)


def test_adalora_total_step_follows_max_steps_without_touching_the_callers_config():
    original = _adalora()
    prepared = methods.prepare_peft_config(original, 300)
    assert prepared.total_step == 300
    assert original.total_step == 5000


def test_adalora_schedule_longer_than_the_run_is_a_user_error_naming_the_fields():
    with pytest.raises(UserError, match=r"tinit \(10\) \+ tfinal \(20\) must be below max_steps \(25\)"):
        methods.prepare_peft_config(_adalora(), 25)


def test_cpt_without_token_ids_gets_the_demonstration_with_its_token_types():
    config = peft.CPTConfig(task_type="CAUSAL_LM")
    prepared = methods.prepare_peft_config(config, 10, tokenizer=WordTokenizer())
    expected_ids, expected_types = [], []
    for token_type, text in methods.CPT_DEMONSTRATION:
        words = text.split()
        expected_ids += [len(w) for w in words]
        expected_types += [token_type] * len(words)
    assert prepared.cpt_token_ids == expected_ids
    assert prepared.cpt_tokens_type_mask == expected_types
    assert sorted(set(expected_types)) == [1, 2, 3, 4]
    assert prepared.num_virtual_tokens == len(expected_ids) == len(prepared.cpt_mask)
    assert config.cpt_token_ids == [0]


def test_cpt_needs_a_tokenizer_unless_its_ids_are_given():
    with pytest.raises(UserError, match="tokenizer"):
        methods.prepare_peft_config(peft.CPTConfig(task_type="CAUSAL_LM"), 10)
    given = peft.CPTConfig(task_type="CAUSAL_LM", cpt_token_ids=[3, 4], cpt_tokens_type_mask=[1, 2], cpt_mask=[1, 1])
    assert methods.prepare_peft_config(given, 10).cpt_token_ids == [3, 4]


# ------------------------------------------------------------------------------------------
# forward_kwargs / generate_kwargs


@pytest.mark.parametrize("config", [
    peft.PolyConfig(target_modules=QV),
    peft.MultitaskPromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
])
def test_task_id_methods_get_task_zero_for_every_example(config):
    batch = _batch()
    assert torch.equal(methods.forward_kwargs(config, batch)["task_ids"], torch.zeros(2, dtype=torch.long))
    assert torch.equal(methods.generate_kwargs(config, batch)["task_ids"], torch.zeros(2, dtype=torch.long))
    assert torch.equal(methods.generate_kwargs(config, 3)["task_ids"], torch.zeros(3, dtype=torch.long))


def test_cpt_type_mask_marks_prompt_as_input_answer_as_output_and_padding_as_nothing():
    mask = methods.forward_kwargs(peft.CPTConfig(task_type="CAUSAL_LM"), _batch())["input_type_mask"]
    assert mask.tolist() == [[2, 2, 2, 4, 4], [0, 0, 2, 4, 4]]


def test_methods_without_needs_get_no_extra_kwargs():
    for config in (None, peft.LoraConfig(target_modules=QV), peft.CPTConfig(task_type="CAUSAL_LM")):
        assert methods.generate_kwargs(config, _batch()) == {}
    assert methods.forward_kwargs(peft.LoraConfig(target_modules=QV), _batch()) == {}


# ------------------------------------------------------------------------------------------
# extra_loss / after_optimizer_step


def test_kasa_regularisers_are_added_to_the_loss_and_plain_lora_adds_nothing(tiny_llama):
    from peft.tuners.lora.config import KasaConfig

    kasa = peft.LoraConfig(target_modules=QV, r=4, kasa_config=KasaConfig(beta=1e-2, gamma=1e-2))
    model = peft.get_peft_model(tiny_llama(vocab_size=64), kasa)
    loss = methods.extra_loss(model, kasa)
    assert torch.is_tensor(loss) and loss.item() > 0 and loss.requires_grad

    plain = peft.LoraConfig(target_modules=QV, r=4)
    assert methods.extra_loss(peft.get_peft_model(tiny_llama(vocab_size=64), plain), plain) == 0.0


class _Recorder:
    def __init__(self):
        self.steps = []
        self.base_model = self

    def update_and_allocate(self, step):
        self.steps.append(step)


def test_adalora_allocates_ranks_after_every_step_and_adamss_only_with_asa():
    model = _Recorder()
    methods.after_optimizer_step(model, _adalora(), 0)
    methods.after_optimizer_step(model, _adalora(), 1)
    assert model.steps == [0, 1]

    pytest.importorskip("sklearn")
    asa = peft.tuners.adamss.AdamssConfig(target_modules=QV, use_asa=True)
    no_asa = peft.tuners.adamss.AdamssConfig(target_modules=QV, use_asa=False)
    methods.after_optimizer_step(model, no_asa, 2)
    methods.after_optimizer_step(model, asa, 3)
    methods.after_optimizer_step(model, peft.LoraConfig(target_modules=QV), 4)
    assert model.steps == [0, 1, 3]


# ------------------------------------------------------------------------------------------
# methods is the one module that knows the methods


def test_traits_say_how_evaluation_must_generate():
    prompt = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    prefix = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    assert methods.traits(prompt).virtual_tokens and not methods.traits(prompt).kv_prefix
    assert methods.traits(prefix).kv_prefix and not methods.traits(prefix).virtual_tokens
    assert methods.traits(peft.CPTConfig(task_type="CAUSAL_LM")).config_needs_tokenizer
    for plain in (None, peft.LoraConfig(target_modules=QV), peft.IA3Config(target_modules=QV, feedforward_modules=[])):
        assert methods.traits(plain) == methods.MethodTraits()


@pytest.mark.parametrize("optimizer", ["lora+", "lora-fa", "riemannian"])
def test_peft_optimizers_are_refused_for_methods_other_than_lora(optimizer):
    methods.check_optimizer(optimizer, peft.LoraConfig(target_modules=QV))
    for other in (None, peft.IA3Config(target_modules=QV, feedforward_modules=[])):
        with pytest.raises(UserError, match="LoRA adapters only"):
            methods.check_optimizer(optimizer, other)
    methods.check_optimizer("AdamW", None)


def test_step_hooks_are_named_for_the_methods_that_need_them():
    assert not methods.needs_step_hooks(peft.LoraConfig(target_modules=QV), _batch())
    assert not methods.needs_step_hooks(None, _batch())
    assert methods.needs_step_hooks(peft.AdaLoraConfig(target_modules=QV, total_step=10), _batch())
    assert methods.needs_step_hooks(peft.CPTConfig(task_type="CAUSAL_LM"), _batch())


# Code outside training/methods.py that may name PEFT methods, and why.
_MAY_NAME_METHODS = {
    "capabilities/tiny.py": "shrinks each method's sizes to a tiny test Llama, as tests/experiment does",
}


def test_no_module_but_methods_branches_on_the_peft_method_type():
    import re
    from pathlib import Path

    import peftbench

    root = Path(peftbench.__file__).parent
    # a method's type compared with a method's name: `peft_type == "LORA"`, `.value in ("CPT", ...)`
    branching = re.compile(r"peft_type(_of\([^)]*\)|\.value)?\)?\s*(==|!=|\bin\b|\bnot in\b)\s*[(\[{]?\s*[\"']|PeftType\.[A-Z]")
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in ("training/methods.py", *_MAY_NAME_METHODS):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if branching.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "branch through peftbench.training.methods instead:\n" + "\n".join(offenders)
