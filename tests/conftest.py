"""Shared fixtures. Tests take what they need as fixture arguments; no test module imports from
this one or from another test module.

- `tiny_llama`: the one tiny-Llama builder (a 2-layer Llama with hidden size 32 and random
  weights; keyword arguments change its LlamaConfig), `tiny_model_dir`: the same model saved with
  a byte-level BPE tokenizer trained on a few sentences. Nothing touches the network.
- `make_suite`, `tiny_suite`, `tiny_lora`, `write_jsonl`: suite folders with tiny local data.
- `make_result`, `write_run`, `prediction_rows`, `questions`: result files without a run.
- `repo_root`; `shared_data`: the real data beside the repository (../shared/data), skipping the
  test with a reason when it or the asked-for subfolder is absent; `published_results`: its
  peft-results/ folder.
"""

from __future__ import annotations

import copy
import json
import signal
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A shell that starts a command in the background without job control (`make test &`, a CI
# runner's script) hands it SIGINT ignored, and an ignored signal stays ignored across exec: the
# tests that press Ctrl+C on a child run would then wait for a cancel that never comes. Python's
# own handler makes every child start with SIGINT at its default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


# The one tiny Llama of the tests; keyword arguments of _tiny_llama change it where a test needs
# another shape (a vocabulary without a tokenizer, tied embeddings).
TINY_LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)


def _tiny_llama(**config):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # the same weights for the same shape, in every test
    return LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **config}))


@pytest.fixture(scope="session")
def tiny_llama():
    """A function: tiny_llama(**LlamaConfig overrides) -> a fresh LlamaForCausalLM, seeded."""
    return _tiny_llama


def build_tiny_model(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    model = _tiny_llama(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def _write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


TINY_LORA = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
             "target_modules": ["q_proj", "v_proj"], "bias": "none"}


def _make_suite(root: Path, model_dir: Path, **defaults) -> Path:
    """A suite folder with tiny local data, a LoRA and a full fine-tuning experiment."""
    data = root / "data"
    _write_jsonl(data / "metamath.jsonl", train_rows())
    _write_jsonl(data / "gsm8k" / "train.jsonl", gsm8k_rows(20))
    _write_jsonl(data / "gsm8k" / "test.jsonl", gsm8k_rows(6, offset=100))
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
    return _make_suite(tmp_path / "suite", tiny_model_dir)


def _tiny_peft_model(tiny_model_dir, spec):
    """(model, tokenizer) from the tiny model folder; with `spec` (a PEFT config dict) an adapter
    whose weights are moved away from the identity, so that it changes the output."""
    import torch
    from peft import get_peft_model
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if spec is not None:
        torch.manual_seed(1)
        spec = dict(spec)
        config = PEFT_TYPE_TO_CONFIG_MAPPING[spec.pop("peft_type")](task_type="CAUSAL_LM", **spec)
        model = get_peft_model(model, config)
        with torch.no_grad():  # make the adapter change the output, so that placement matters
            for name, p in model.named_parameters():
                if p.requires_grad and "lora_A" not in name:
                    p.add_(torch.randn_like(p) * 0.5)
    model.eval()
    return model, tok


@pytest.fixture(scope="session")
def tiny_peft_model(tiny_model_dir):
    """Builds (model, tokenizer) of the tiny model with an adapter of a given spec (None: none)."""
    return lambda spec: _tiny_peft_model(tiny_model_dir, spec)


@pytest.fixture(scope="session")
def make_suite():
    """A function: make_suite(root, model_dir, **default_training_params) -> a suite folder with
    tiny local data, experiments lora/tiny-r4 and full-finetuning/tiny."""
    return _make_suite


def _run_tiny_lora(suite: Path) -> Path:
    from peftbench.cli import main

    assert main(["run", "--no-progress", "--clean", str(suite / "experiments" / "lora" / "tiny-r4")]) == 0
    [path] = sorted((suite / "temporary_results").glob("*.json"))  # outside git: always temporary
    return path


@pytest.fixture(scope="session")
def run_tiny_lora():
    """A function: run_tiny_lora(suite) -> the result file of `peftbench run` of the suite's
    lora/tiny-r4 (a make_suite suite), which must succeed."""
    return _run_tiny_lora


def _stops_keep_grades(task, row, pieces, trials: int, max_pieces: int, same) -> int:
    import random

    rng = random.Random(0)
    fired = 0
    for _ in range(trials):
        full = "".join(rng.choice(pieces) for _ in range(rng.randint(1, max_pieces)))
        for end in range(1, len(full) + 1):
            if task.stops_generation(full[:end], row):
                same(full[:end], full)
                fired += 1
                break
    return fired


@pytest.fixture(scope="session")
def stops_keep_grades():
    """A function: stops_keep_grades(task, row, pieces, trials, max_pieces, same) -> how often the
    task's stop rule fired. It builds `trials` random texts of up to `max_pieces` of `pieces`
    (seeded) and, at the first prefix where `task.stops_generation` holds, calls
    same(prefix, full text), which asserts that stopping there changes nothing."""
    return _stops_keep_grades


@pytest.fixture(scope="session")
def write_jsonl():
    """A function: write_jsonl(path, rows) -> path, one JSON object a line (folders created)."""
    return _write_jsonl


@pytest.fixture
def tiny_lora() -> dict:
    """The adapter_config.json of the tiny suite's LoRA experiment (a fresh copy per test)."""
    return copy.deepcopy(TINY_LORA)


# --- result files without a run --------------------------------------------------------------


def _make_result(experiment="lora/tiny", acc=0.5, *, seed=0, status="success", created_at="2026-01-01T00:00:00+00:00",
                 peft_type="LORA", error="", train_config=None, task=None, test_sets=None, **train_info):
    """A result in the current schema with a test accuracy and two validation points; `task` a
    task name (recorded in run_info.task; default: none recorded, read as metamathqa),
    `test_sets` {set: (accuracy, items)} for the final entry's per-set figures."""
    from peftbench.record.results import (ACCEL_MEM_MAX, M_FORGETTING, M_STEP, M_TEST_ACC, M_TEST_ACC_FLEX,
                                          M_TOKENS_PER_SEC, M_TRAIN_LOSS, M_TRAIN_TOTAL_TOKENS, M_VALID_ACC,
                                          empty_result)

    result = empty_result()
    info = result["run_info"]
    info.update(experiment_name=experiment, seed=seed, created_at=created_at, total_time=120.0, error_msg=error,
                train_config={"seed": seed, "optimizer_type": "AdamW", **(train_config or {})},
                peft_config={"peft_type": peft_type, "r": 8} if peft_type else None,
                task={"name": task, "version": "1"} if task else None)
    metrics = [
        {M_STEP: 10, M_VALID_ACC: 0.2, M_TRAIN_LOSS: 1.5, M_TOKENS_PER_SEC: 900.0},
        {M_STEP: 20, M_VALID_ACC: 0.3, M_TRAIN_LOSS: 1.1, M_TOKENS_PER_SEC: 1100.0},
    ]
    if acc is not None:
        metrics.append({M_STEP: 20, M_TEST_ACC: acc, M_TEST_ACC_FLEX: min(1.0, acc + 0.05), M_FORGETTING: 0.1,
                        M_TRAIN_TOTAL_TOKENS: 40_000})
        if test_sets:
            metrics[-1]["test sets"] = {name: {"n": n, M_TEST_ACC: a} for name, (a, n) in test_sets.items()}
    result["train_info"].update(status=status, train_time=100.0, file_size=1000, num_trainable_params=10,
                                num_total_params=1000, metrics=metrics, **{ACCEL_MEM_MAX: 2e9})
    result["train_info"].update(train_info)
    return result


def _questions(n: int) -> list[str]:
    return [f"question number {i}" for i in range(n)]


def _prediction_rows(correct, items=None) -> list[dict]:
    """Test rows graded `correct` (one flag per item), plus one validation row."""
    from peftbench.record.results import item_id

    items = items or _questions(len(correct))
    return [{"split": "test", "index": i, "item_id": item_id(q), "question": q, "correct_strict": bool(c),
             "correct_flexible": bool(c)} for i, (q, c) in enumerate(zip(items, correct))] + [
        {"split": "valid", "index": 0, "item_id": item_id("a valid question"), "correct_strict": True,
         "correct_flexible": True}]


def _write_run(path: Path, result: dict, predictions=None) -> Path:
    """A result file, and its predictions file beside it when rows are given."""
    from peftbench.record.results import predictions_path_for, write_predictions

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if predictions is not None:
        write_predictions(predictions_path_for(path), predictions)
    return path


@pytest.fixture(scope="session")
def make_result():
    """A function: make_result(experiment, acc, *, seed, status, created_at, peft_type, error,
    train_config, **train_info) -> a result dict in the current schema."""
    return _make_result


@pytest.fixture(scope="session")
def write_run():
    """A function: write_run(path, result, predictions=None) -> path."""
    return _write_run


@pytest.fixture(scope="session")
def prediction_rows():
    """A function: prediction_rows(correct_flags, items=None) -> predictions rows."""
    return _prediction_rows


@pytest.fixture(scope="session")
def questions():
    """A function: questions(n) -> n distinct question texts (the default items of prediction_rows)."""
    return _questions


# --- the repository and the real data beside it -------------------------------------------


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data():
    """A function: shared_data("gsm8k", ...) -> that path under ../shared/data; the calling test
    is skipped, with the path in the reason, when it is absent."""
    def locate(*parts: str) -> Path:
        path = SHARED_DATA.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"real data not available: {path} is absent (expected beside the repository in ../shared/data)")
        return path

    return locate


@pytest.fixture(scope="session")
def published_results(shared_data) -> Path:
    """The published results of PEFT's method comparison (../shared/data/peft-results)."""
    return shared_data("peft-results")
