"""The file-system helpers every layer shares: atomic writes, a file's sha256, read-JSON-or-None.

One home, so that results, predictions, checkpoints, reports and caches are all written the same
way: to a temporary file in the target's folder, flushed and fsynced, then renamed over the
target. Readers see the old content or the new, never a truncated file, whatever kills the
writer. The written file gets the permissions an ordinary `open(path, "w")` would give (0666
less the umask): `mkstemp` makes it private (0600), and results are meant to be shared.

No torch here: a torch payload is written through a callback (`atomic_write_with`), so that the
analysis layer can import this module without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, Callable

_CHUNK = 1 << 20  # bytes read at a time when hashing: 1 MiB keeps a 6 GB model file out of memory


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace `path` atomically with what `write(f)` writes into a binary file,
    e.g. `atomic_write_with(p, lambda f: torch.save(payload, f))`. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Create or replace `path` atomically with `data`."""
    atomic_write_with(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = False) -> None:
    """Write `obj` as indented UTF-8 JSON (enums, sets, paths and numpy/torch scalars allowed)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=sort_keys, default=json_default) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def json_default(value: Any) -> Any:
    """`json.dumps(default=...)` for the values our records hold besides plain JSON."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    update_with_file(h, path)
    return h.hexdigest()


def update_with_file(h: "hashlib._Hash", path: str | os.PathLike) -> None:
    """Feed a file's bytes into a running hash, 1 MiB at a time."""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def read_json_or_none(path: str | os.PathLike) -> Any:
    """The JSON value in `path`, or None when the file is missing, unreadable or not JSON: for
    caches and notes that are rebuilt when lost, never for results (see `record.results.load`)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError):
        return None


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: `cache_dir` if given, else $PEFTBENCH_CACHE, else
    $XDG_CACHE_HOME/peftbench, else ~/.cache/peftbench."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("PEFTBENCH_CACHE"):
        return Path(os.environ["PEFTBENCH_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "peftbench"
    return Path.home() / ".cache" / "peftbench"
