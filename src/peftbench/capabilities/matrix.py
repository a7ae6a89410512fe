"""Measure, per experiment of a suite, what its method can do with a trained adapter.

For each experiment the adapter is built on the tiny Llama (capabilities.tiny), its trainable
weights are perturbed (a freshly initialised adapter is often the identity, LoRA's B = 0, and
would prove nothing), and then:

  mergeable       `merge_and_unload()` gives the logits of the unmerged model within TOLERANCE
  unmerge         merge_adapter() then unmerge_adapter() gives back the unmerged logits
  multi-adapter   a second adapter loads beside the first; switching to it changes the logits,
                  switching back restores them
  int8 / int4     the adapter builds and back-propagates on a bitsandbytes-quantized base
                  ("not measured" without CUDA: bitsandbytes is CUDA-only here)
  tiny file       bytes of the adapter saved with save_pretrained on the tiny model

and on the suite's own model, built empty on the meta device from its config (local folder or
Hugging Face cache only, never the network):

  trainable       trainable parameters
  adapter bytes   bytes of the adapter's state dict as save_pretrained writes it (tensor bytes,
                  safetensors header left out); the whole model in its dtype for full fine-tuning

Besides: perturbed_change, the largest change of a logit the perturbed adapter makes against the
base model (below PERTURBED_MIN_EFFECT the merge checks would prove nothing: "not measured").

A cell is "yes", "no", "n/a" (does not apply: full fine-tuning has nothing to merge, a prompt
method adds no weights to merge) or "not measured", each with a detail saying why.

Each experiment's row is cached in `<suite>/.peftbench/capabilities/<identity>.json`; the
identity hashes the adapter config as written on disk, the suite's model id, the versions of
peft/torch/transformers, the device kind and this package's code (plus training/methods.py,
which prepares configs), so a second call reads the cache without importing torch.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import peftbench
from peftbench.capabilities import tiny
from peftbench.demo import smollm
from peftbench.errors import UserError
from peftbench.experiment import catalog
from peftbench.experiment import suite as S
from peftbench.experiment.config import ADAPTER_CONFIG_FILE, DEFAULTS_FILE, TRAINING_PARAMS_FILES, load_experiment
from peftbench.fs import atomic_write_json, read_json_or_none
from peftbench.record.provenance import installed_versions
from peftbench.training import methods

# float32 logits of the tiny model are of order 1; merging reorders the sums of a matmul, which
# moves them by ~1e-6. 1e-4 leaves room for that and still catches a wrong merge, which moves
# them by the perturbation's effect (>= 1e-2 here; checked: PERTURBED_MIN_EFFECT).
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
PERTURB_STD = 0.05  # added to every trainable weight (N(0, 0.05^2)), seeded per experiment
PERTURBED_MIN_EFFECT = 1e-3  # below this the perturbed adapter counts as the identity
YES, NO, NA, NOT_MEASURED = "yes", "no", "n/a", "not measured"
CAPABILITIES = ("mergeable", "unmerge", "multi_adapter", "int8", "int4")
CACHE_VERSION = 1
_LIBRARIES = ("peft", "torch", "transformers")


def _cell(value: str, detail: str = "") -> dict[str, str]:
    return {"value": value, "detail": detail}


# ----------------------------------------------------------------------------------------------
# identity and cache (no torch)


def code_sha256() -> str:
    """sha256 of the code that decides a row: this package and training/methods.py."""
    root = Path(peftbench.__file__).parent
    files = sorted((root / "capabilities").glob("*.py")) + [root / "training" / "methods.py"]
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _versions() -> dict[str, str | None]:
    return installed_versions(_LIBRARIES)


def _device_kind() -> str:
    """cuda when torch sees one (int8/int4 are measured there), else cpu; asked without importing
    torch when the driver library is absent (the common CPU case)."""
    import ctypes.util

    if ctypes.util.find_library("cuda") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def identity(exp_dir: Path, suite_dir: Path, code: str, versions: dict, device: str) -> str:
    """The cache key of one experiment's row. Read from the files as written, so that a cached
    call needs neither torch nor peft."""
    params = {}
    for name in TRAINING_PARAMS_FILES:
        if (exp_dir / name).is_file():
            params = read_json_or_none(exp_dir / name) or {}
    defaults = read_json_or_none(suite_dir / DEFAULTS_FILE) or {}
    model = {k: params.get(k, defaults.get(k)) for k in ("model_id", "model_revision", "dtype")}
    inputs = {"adapter_config": read_json_or_none(exp_dir / ADAPTER_CONFIG_FILE), "model": model, "code": code,
              "versions": versions, "device": device, "cache_version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def cache_dir(suite_dir: Path) -> Path:
    return S.state_dir(Path(suite_dir)) / "capabilities"


def cached_rows(suite_dir: str | Path) -> list[dict[str, Any]] | None:
    """The rows a previous `list --capabilities` measured for the suite's current catalog, in
    catalog order; None unless every experiment has an up-to-date row (used by the report,
    which never measures)."""
    suite_dir = Path(suite_dir)
    code, versions, device = code_sha256(), _versions(), _device_kind()
    rows = []
    for entry in catalog.catalog(suite_dir):
        row = read_json_or_none(cache_dir(suite_dir) / f"{identity(entry.path, suite_dir, code, versions, device)}.json")
        if not isinstance(row, dict):
            return None
        rows.append({**row, "experiment": entry.experiment_name})
    return rows


def capability_rows(suite_dir: str | Path, log: Callable[[str], None] = lambda msg: None,
                    refresh: bool = False) -> tuple[list[dict[str, Any]], int]:
    """One row per catalog experiment, measured or read from the cache. Returns (rows, number
    measured now). An experiment that fails to load or build gets a row with its error."""
    suite_dir = Path(suite_dir)
    code, versions, device = code_sha256(), _versions(), _device_kind()
    measurer = None
    rows, measured = [], 0
    by_identity: dict[str, dict] = {}  # experiments that differ only in training params share a row
    for entry in catalog.catalog(suite_dir):
        key = identity(entry.path, suite_dir, code, versions, device)
        path = cache_dir(suite_dir) / f"{key}.json"
        row = by_identity.get(key) or (None if refresh else read_json_or_none(path))
        if not isinstance(row, dict):
            measurer = measurer or Measurer(device)
            log(f"measuring {entry.experiment_name}")
            with _one_thread():
                row = measurer.measure(entry.path)
            row.update(identity=key, versions=versions)
            if not row.get("error"):  # a load error is not cached: the next call tries again
                atomic_write_json(path, row, sort_keys=True)
            measured += 1
        by_identity[key] = row
        rows.append({**row, "experiment": entry.experiment_name})
    return rows, measured


# ----------------------------------------------------------------------------------------------
# measuring (torch)


class Measurer:
    """Builds and probes adapters; holds the tiny base model and the suite's meta models."""

    def __init__(self, device: str = "cpu"):
        _quiet()
        self.device = device
        self._base = tiny.tiny_llama()
        self._batch = tiny.prompt_batch()
        self._base_logits = self._logits(self._base, None)
        self._meta_models: dict[tuple, Any] = {}

    def measure(self, exp_dir: Path) -> dict[str, Any]:
        row: dict[str, Any] = {"peft_type": None, "error": None}
        try:
            exp = load_experiment(exp_dir)
            methods.check_supported(exp.peft_config)
        except UserError as exc:
            row["error"] = str(exc).splitlines()[0]
            return row
        row["peft_type"] = methods.peft_type_of(exp.peft_config)
        row.update(self._suite_model_figures(exp))
        if exp.peft_config is None:
            reason = "full fine-tuning: the trained model is the whole model"
            row.update({name: _cell(NA, reason) for name in CAPABILITIES}, tiny_file_size=None)
            return row
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row.update(self._tiny_model_cells(exp.peft_config))
        return row

    # -- on the tiny model

    def _tiny_model_cells(self, peft_config) -> dict[str, Any]:
        try:
            config = tiny.shrink_peft_config(peft_config)
            model = self._build(config, seed=1)
        except Exception as exc:  # noqa: BLE001 - a method that cannot be built is a row's finding
            detail = f"does not build on the tiny model: {_short(exc)}"
            return {**{name: _cell(NOT_MEASURED, detail) for name in CAPABILITIES}, "tiny_file_size": None}
        unmerged = self._logits(model, config)
        effect = float((unmerged - self._base_logits).abs().max())
        cells: dict[str, Any] = {"perturbed_change": effect}
        if effect < PERTURBED_MIN_EFFECT:
            detail = f"the perturbed adapter does not change the logits (max change {effect:.1e})"
            cells.update(mergeable=_cell(NOT_MEASURED, detail), unmerge=_cell(NOT_MEASURED, detail))
        else:
            cells.update(mergeable=self._mergeable(model, config, unmerged),
                         unmerge=self._unmerge(model, config, unmerged))
        cells["multi_adapter"] = self._multi_adapter(model, config, unmerged)
        cells.update(self._quantized(config))
        cells["tiny_file_size"] = self._file_size(model)
        return cells

    def _build(self, config, seed: int):
        from peft import get_peft_model

        model = get_peft_model(copy.deepcopy(self._base), copy.deepcopy(config))
        _perturb(model, seed)
        return model.eval()

    def _logits(self, model, config):
        import torch

        extra = methods.generate_kwargs(config, self._batch) if config is not None else {}
        n = self._batch["input_ids"].shape[1]
        with torch.no_grad():  # prompt methods prepend virtual tokens: keep the prompt's positions
            return model(**self._batch, **extra).logits[:, -n:].float()

    def _mergeable(self, model, config, unmerged) -> dict[str, str]:
        if methods_is_prompt_learning(config):
            return _cell(NA, "prompt method: it adds inputs, not weights, so there is nothing to merge")
        try:
            merged = copy.deepcopy(model).merge_and_unload()
        except Exception as exc:  # noqa: BLE001 - PEFT raises various types for "cannot merge"
            return _cell(NO, f"merge_and_unload raises {_short(exc)}")
        return _compare(self._logits(merged, None), unmerged, "merged")

    def _unmerge(self, model, config, unmerged) -> dict[str, str]:
        if methods_is_prompt_learning(config):
            return _cell(NA, "prompt method: nothing to merge")
        probe = copy.deepcopy(model)
        try:
            probe.base_model.merge_adapter()
        except Exception as exc:  # noqa: BLE001
            return _cell(NO, f"merge_adapter raises {_short(exc)}")
        try:
            probe.base_model.unmerge_adapter()
        except Exception as exc:  # noqa: BLE001
            return _cell(NO, f"unmerge_adapter raises {_short(exc)}")
        return _compare(self._logits(probe, config), unmerged, "merged then unmerged")

    def _multi_adapter(self, model, config, unmerged) -> dict[str, str]:
        probe = copy.deepcopy(model)
        try:
            probe.add_adapter("second", copy.deepcopy(config))
            _perturb(probe, seed=2, adapter="second")
            probe.set_adapter("second")
            second = self._logits(probe, config)
            probe.set_adapter("default")
            back = self._logits(probe, config)
        except Exception as exc:  # noqa: BLE001
            return _cell(NO, f"a second adapter: {_short(exc)}")
        if float((second - unmerged).abs().max()) < PERTURBED_MIN_EFFECT:
            return _cell(NO, "switching to the second adapter does not change the logits")
        verdict = _compare(back, unmerged, "switched back")
        if verdict["value"] == YES:
            return _cell(YES, "two adapters loaded; switching changes and restores the logits")
        return verdict

    def _quantized(self, config) -> dict[str, dict[str, str]]:
        if self.device != "cuda":
            reason = "bitsandbytes quantizes on CUDA only; this machine has none"
            return {"int8": _cell(NOT_MEASURED, reason), "int4": _cell(NOT_MEASURED, reason)}
        return {bits: self._on_quantized(config, bits) for bits in ("int8", "int4")}

    def _on_quantized(self, config, bits: str) -> dict[str, str]:
        """Build the adapter on a bitsandbytes-quantized tiny Llama and back-propagate once."""
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            return _cell(NOT_MEASURED, "bitsandbytes is not installed (pip install 'peftbench[quant]')")
        import torch
        from peft import get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        quant = (BitsAndBytesConfig(load_in_8bit=True) if bits == "int8" else
                 BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32))
        try:
            with tempfile.TemporaryDirectory() as folder:
                self._base.save_pretrained(folder)
                base = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, device_map={"": "cuda"})
            model = get_peft_model(prepare_model_for_kbit_training(base), copy.deepcopy(config))
            batch = {k: v.to("cuda") for k, v in self._batch.items()}
            loss = model(**batch, labels=batch["input_ids"]).loss
            loss.backward()
        except Exception as exc:  # noqa: BLE001
            return _cell(NO, f"{_short(exc)}")
        if not torch.isfinite(loss):
            return _cell(NO, f"loss is {loss.item()}")
        return _cell(YES, "builds and back-propagates on the quantized tiny model")

    def _file_size(self, model) -> int | None:
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            files = [p for p in Path(folder).rglob("adapter_model*")]
            return sum(p.stat().st_size for p in files) if files else None

    # -- on the suite's model (meta device)

    def _suite_model_figures(self, exp) -> dict[str, Any]:
        cfg = exp.train_config
        model = self._meta_model(cfg.model_id, cfg.model_revision)
        if model is None:
            reason = "model config not available offline"
            return {"trainable": None, "adapter_bytes": None, "suite_model_detail": reason}
        try:
            if exp.peft_config is None:
                import torch

                bytes_per = torch.finfo(getattr(torch, cfg.dtype)).bits // 8 if cfg.dtype in (
                    "float32", "float16", "bfloat16") else 4
                n = sum(p.numel() for p in model.parameters())
                return {"trainable": n, "adapter_bytes": n * bytes_per, "suite_model_detail": ""}
            return self._meta_adapter_figures(model, exp, cfg)
        except NotImplementedError:  # an initialisation that computes on the weights (SVD, clustering)
            return {"trainable": None, "adapter_bytes": None, "suite_model_detail": "init needs weights"}
        except Exception as exc:  # noqa: BLE001 - a count is informative, never fatal
            return {"trainable": None, "adapter_bytes": None, "suite_model_detail": _short(exc)}

    def _meta_adapter_figures(self, model, exp, cfg) -> dict[str, Any]:
        from peft import get_peft_model, get_peft_model_state_dict

        if methods.traits(exp.peft_config).config_needs_tokenizer:  # CPT: its context length is in tokens
            return {"trainable": None, "adapter_bytes": None, "suite_model_detail": "needs the tokenizer"}
        config = methods.prepare_peft_config(exp.peft_config, max(cfg.max_steps, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft_model = get_peft_model(copy.deepcopy(model), config, low_cpu_mem_usage=True)
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        state = get_peft_model_state_dict(peft_model)
        size = sum(t.numel() * t.element_size() for t in state.values())
        return {"trainable": trainable, "adapter_bytes": size, "suite_model_detail": ""}

    def _meta_model(self, model_id: str, revision: str | None):
        key = (model_id, revision)
        if key not in self._meta_models:
            self._meta_models[key] = build_meta_model(model_id, revision)
        return self._meta_models[key]


def methods_is_prompt_learning(config) -> bool:
    return methods.is_prompt_learning(config)


def _local_config_source(model_id: str) -> str | None:
    """Where the model's config is read without the network: the demo's packaged model once
    converted (never converted here: that takes minutes), else the id itself (a local folder or
    the Hugging Face cache); None when the packaged model is not converted or not installed."""
    if not smollm.is_packaged_model(model_id):
        return model_id
    try:
        folder = smollm.model_dir_for(smollm.gguf_sha256())
    except (OSError, ImportError, ValueError):
        return None
    return str(folder) if (folder / "config.json").is_file() else None


def build_meta_model(model_id: str, revision: str | None):
    """The model's architecture on the meta device (no weights), from a local config; None when
    no config is available offline."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    source = _local_config_source(model_id)
    if source is None:
        return None
    try:
        config = AutoConfig.from_pretrained(source, revision=revision, local_files_only=True)
    except (OSError, ValueError):
        return None
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_config(config)


@contextlib.contextmanager
def _one_thread():
    """The tiny model's matmuls are too small to gain from threads, and on a shared machine the
    thread pool's hand-offs cost more than the arithmetic (measured: 30 s of CPU for the
    catalog with the default threads, 19 s with one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _perturb(model, seed: int, adapter: str | None = None) -> None:
    """Add N(0, PERTURB_STD^2) noise to the trainable weights (of one adapter when named)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.is_floating_point():
                continue
            # a named adapter is inactive, so its weights do not require grad: select them by name
            selected = f".{adapter}." in f"{name}." if adapter is not None else param.requires_grad
            if not selected:
                continue
            param.add_(torch.randn(param.shape, generator=g, dtype=param.dtype) * PERTURB_STD)


def _compare(got, expected, what: str) -> dict[str, str]:
    import torch

    diff = float((got - expected).abs().max())
    if torch.allclose(got, expected, **TOLERANCE):
        return _cell(YES, f"{what}: logits within rtol={TOLERANCE['rtol']}, atol={TOLERANCE['atol']} "
                          f"(max difference {diff:.1e})")
    return _cell(NO, f"{what}: logits differ by up to {diff:.2e} (tolerance rtol={TOLERANCE['rtol']}, "
                     f"atol={TOLERANCE['atol']})")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
