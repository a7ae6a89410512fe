"""Identities of inputs: sha256 of local files and folders, revision shas of hub repositories.

Shared by the data loaders, the model loader and the run key, so that a run and a later
`run-all` plan compute the same identity for the same input."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from peftbench.fs import sha256_file, update_with_file


def files_sha256(paths: list[Path]) -> dict[str, Any]:
    """sha256 over the names and contents of files (order-independent)."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.name.encode() + b"\0")
        h.update(bytes.fromhex(_file_sha256(str(Path(path).resolve()), *_stat_key(path))))
    return {"source": "local", "files": [str(p) for p in sorted(paths)], "sha256": h.hexdigest()}


def _stat_key(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=1024)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, computed once per process while its size and mtime stay the same
    (a 400 MB MetaMathQA file is shared by every experiment of a suite)."""
    return sha256_file(path)


def folder_sha256(folder: str | os.PathLike) -> str:
    """sha256 over the relative paths and contents of every file below a folder."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode() + b"\0")
            update_with_file(h, path)
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def _hub_revision_cached(repo_id: str, kind: str, revision: str | None) -> tuple:
    return tuple(_hub_revision(repo_id, kind, revision).items())


def hub_revision(repo_id: str, kind: str, revision: str | None = None) -> dict[str, Any]:
    """Revision sha of a hub repository; asked once per process (a `status` over 70 experiments
    that share a model and datasets asks the hub three times, not 210)."""
    return dict(_hub_revision_cached(repo_id, kind, revision))


def _hub_revision(repo_id: str, kind: str, revision: str | None = None) -> dict[str, Any]:
    """Revision sha of a hub repository (kind "model" or "dataset"): a full sha given as the
    revision is used as is; otherwise the hub is asked, and offline the local cache's ref is read.
    sha is None when neither knows it."""
    info: dict[str, Any] = {"source": "hub", "id": repo_id, "revision": revision, "sha": None}
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        info["sha"] = revision
        return info
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True", "YES", "yes"):
        try:
            from huggingface_hub import HfApi

            api = HfApi()
            meta = (api.dataset_info if kind == "dataset" else api.model_info)(repo_id, revision=revision, timeout=20)
            info["sha"] = meta.sha
            return info
        except Exception:  # no network or no access: fall back to the cache
            pass
    info["sha"] = cached_revision(repo_id, kind, revision or "main")
    return info


def cached_revision(repo_id: str, kind: str, revision: str = "main") -> str | None:
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    ref = Path(constants.HF_HUB_CACHE) / f"{kind}s--{repo_id.replace('/', '--')}" / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None
