import json

import pytest

from peftbench.analysis.families import FULL_FINETUNING, family_name, variant_label, variant_labels


def lora(**options):
    return {"peft_type": "LORA", "r": 8, "use_dora": False, "use_rslora": False, "init_lora_weights": True,
            "loftq_config": {}, "use_bdlora": None, **options}


def test_no_peft_config_is_full_finetuning():
    assert family_name(None) == FULL_FINETUNING
    assert variant_label(None, {"optimizer_type": "AdamW"}) == FULL_FINETUNING


def test_plain_lora_variant_is_the_family_name():
    assert family_name(lora()) == "LoRA"
    assert variant_labels(lora()) == []
    assert variant_label(lora()) == "LoRA"


@pytest.mark.parametrize("options, expected", [
    ({"use_dora": True}, "DoRA"),
    ({"use_rslora": True}, "rsLoRA"),
    ({"init_lora_weights": "pissa"}, "PiSSA"),
    ({"init_lora_weights": "pissa_niter_4"}, "PiSSA"),
    ({"init_lora_weights": "olora"}, "OLoRA"),
    ({"init_lora_weights": "mica"}, "MiCA"),
    ({"init_lora_weights": "gaussian"}, "LoRA"),
    ({"init_lora_weights": "loftq", "loftq_config": {"loftq_bits": 4}}, "LoftQ"),
    ({"use_bdlora": {"nblocks": 2}}, "BD-LoRA"),
    ({"use_dora": True, "use_rslora": True}, "DoRA + rsLoRA"),
])
def test_lora_options_name_the_variant(options, expected):
    assert variant_label(lora(**options)) == expected
    assert family_name(lora(**options)) == "LoRA"


@pytest.mark.parametrize("optimizer, expected", [("lora+", "LoRA+"), ("lora-fa", "LoRA-FA"), ("LoRA+", "LoRA+")])
def test_lora_optimizers_from_train_config_are_variants(optimizer, expected):
    assert variant_label(lora(), {"optimizer_type": optimizer}) == expected
    assert variant_label(lora(use_dora=True), {"optimizer_type": optimizer}) == f"DoRA + {expected}"


def test_other_methods_keep_their_own_family_and_name_string_inits():
    assert family_name({"peft_type": "IA3"}) == "IA3"
    assert family_name({"peft_type": "PROMPT_TUNING"}) == "Prompt tuning"
    assert variant_label({"peft_type": "MISS", "init_weights": "bat"}) == "bat init"
    assert variant_label({"peft_type": "MISS", "init_weights": True}) == "MiSS"
    assert variant_label({"peft_type": "PROMPT_TUNING", "prompt_tuning_init": "RANDOM"}) == "Prompt tuning"
    assert variant_label({"peft_type": "PROMPT_TUNING", "prompt_tuning_init": "SAMPLE_VOCAB"}) == "sample_vocab init"


def test_unknown_or_malformed_configs_still_get_a_family():
    assert family_name({"peft_type": "SOMETHING_NEW"}) == "SOMETHING_NEW"
    assert family_name({"r": 8}) == "unknown"
    assert variant_label({"peft_type": None}) == "unknown"


@pytest.mark.parametrize("file, family, variant", [
    ("lora--llama-3.2-3B-rank32.json", "LoRA", "LoRA"),
    ("lora--llama-3.2-3B-rank32-dora.json", "LoRA", "DoRA"),
    ("lora--llama-3.2-3B-rank64-rslora.json", "LoRA", "rsLoRA"),
    ("lora--llama-3.2-3B-rank32-lorafa.json", "LoRA", "LoRA-FA"),
    ("lora--llama-3.2-3B-rank32-mica.json", "LoRA", "MiCA"),
    ("lora--llama-3.2-3B-rank14-target-mlp-bdlora.json", "LoRA", "BD-LoRA"),
    ("adalora--llama-3.2-3B-rank32.json", "AdaLoRA", "AdaLoRA"),
    ("full-finetuning--llama-3.2-3B-lr_0.00001.json", FULL_FINETUNING, FULL_FINETUNING),
    ("ia3--llama-3.2-3B-default.json", "IA3", "IA3"),
])
def test_published_results_get_the_family_their_name_says(published_results, file, family, variant):
    run_info = json.loads((published_results / file).read_text())["run_info"]
    assert family_name(run_info["peft_config"]) == family
    assert variant_label(run_info["peft_config"], run_info["train_config"]) == variant


def test_newer_methods_and_variants_have_readable_names():
    from peftbench.analysis.families import family_name, variant_label

    assert family_name({"peft_type": "CARTRIDGE"}) == "Cartridge"
    assert family_name({"peft_type": "SHADOW"}) == "Shadow"
    assert family_name({"peft_type": "SUPERTUNING"}) == "Supertuning"
    assert variant_label({"peft_type": "LORA", "kasa_config": {"beta": 1e-4}}) == "KaSA"
    assert variant_label({"peft_type": "LORA"}, {"optimizer_type": "riemannian"}) == "Riemannian"
    # a method's own default init is not a variant
    assert variant_label({"peft_type": "C3A", "init_weights": "xavier_uniform"}) == "C3A"
    assert variant_label({"peft_type": "ADAMSS", "init_weights": "orthogonal"}) == "AdaMSS"


def test_a_run_without_training_is_the_base_model_row():
    from peftbench.analysis.families import BASE_MODEL, family_name, variant_label

    assert family_name(None, {"max_steps": 0}) == BASE_MODEL
    assert family_name({"peft_type": "LORA"}, {"max_steps": 0}) == BASE_MODEL
    assert variant_label(None, {"max_steps": 0}) == BASE_MODEL
    assert family_name(None, {"max_steps": 10}) == "Full fine-tuning"
