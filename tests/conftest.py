"""Shared fixtures: a tiny Llama and tokenizer built locally, and a tiny suite around them.

Nothing here touches the network: the tokenizer is a byte-level BPE trained on a few sentences,
the model a 2-layer Llama with hidden size 32 and random weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

_CORPUS = [
    "Question: Tom has 3 apples and buys 4 more. How many apples does he have? Think step by step.",
    "Answer: Tom has 3 + 4 = 7 apples. The answer is: 7",
    "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether. #### 72",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 11 12 = + - * /",
]


def train_rows(n: int = 40) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        a, b = i % 9 + 1, (3 * i) % 7 + 1
        rows.append({"query": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
                     "response": f"Tom has {a} + {b} = {a + b} apples. The answer is: {a + b}",
                     "type": "GSM_Rephrased", "original_question": "x"})
    return rows


def gsm8k_rows(n: int, offset: int = 0) -> list[dict[str, str]]:
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 8 + 2, i % 5 + 1
        rows.append({"question": f"Sara has {a} pens and gets {b} more. How many pens does she have?",
                     "answer": f"Sara has {a}+{b} = {a + b} pens.\n#### {a + b}"})
    return rows


def build_tiny_model(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


TINY_LORA = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
             "target_modules": ["q_proj", "v_proj"], "bias": "none"}


def make_suite(root: Path, model_dir: Path, **defaults) -> Path:
    """A suite folder with tiny local data, a LoRA and a full fine-tuning experiment."""
    data = root / "data"
    write_jsonl(data / "metamath.jsonl", train_rows())
    write_jsonl(data / "gsm8k" / "train.jsonl", gsm8k_rows(20))
    write_jsonl(data / "gsm8k" / "test.jsonl", gsm8k_rows(6, offset=100))
    (data / "forget.txt").write_text("\n\n".join(
        "The quick brown fox jumps over the lazy dog near the river bank while the sun sets slowly. " * 3
        for _ in range(4)), encoding="utf-8")
    params = {
        "model_id": str(model_dir), "dtype": "float32", "max_seq_length": 64, "batch_size": 2,
        "batch_size_eval": 4, "max_steps": 4, "eval_steps": 2, "optimizer_type": "AdamW",
        "optimizer_kwargs": {"lr": 1e-3}, "generation_kwargs": {"max_length": 96, "max_new_tokens": 8},
        "train_dataset": str(data / "metamath.jsonl"), "eval_dataset": str(data / "gsm8k"),
        "valid_size": 4, "test_size": 6, "forgetting_dataset": str(data / "forget.txt"), "forgetting_size": 2,
        "device": "cpu", "seed": 0,
    }
    params.update(defaults)
    (root / "default_training_params.json").write_text(json.dumps(params, indent=2))
    lora = root / "experiments" / "lora" / "tiny-r4"
    lora.mkdir(parents=True)
    (lora / "adapter_config.json").write_text(json.dumps(TINY_LORA))
    full = root / "experiments" / "full-finetuning" / "tiny"
    full.mkdir(parents=True)
    (full / "training_params.json").write_text(json.dumps({"optimizer_kwargs": {"lr": 1e-4}}))
    return root


@pytest.fixture
def tiny_suite(tmp_path, tiny_model_dir) -> Path:
    return make_suite(tmp_path / "suite", tiny_model_dir)
