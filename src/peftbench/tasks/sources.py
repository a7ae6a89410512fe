"""Where task data comes from: a hub id, a local file or folder, or `demo:<name>` (the built-in
generator of the CPU demo), and what identifies each without loading it.

Shared by the task modules; the loaders return plain rows (dicts) and leave their meaning to the
task. `datasets` is imported only when a hub dataset is read.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

from peftbench import identity
from peftbench.demo import word_problems as demo_data
from peftbench.errors import UserError

# The validation rows are drawn with this fixed seed, independent of the training seed, so that
# runs with different seeds are validated on the same items.
VALID_SPLIT_SEED = 0
# The tuning split of `peftbench tune` (train_config tune_valid_size > 0) has a seed of its own:
# it is a different draw from the validation rows that ordinary runs report.
TUNE_SPLIT_SEED = 1

TABLE_SUFFIXES = (".json", ".jsonl", ".parquet")


def is_demo(source: str) -> bool:
    return source.startswith("demo:")


def local_path(source: str) -> Path | None:
    """The local file or folder `source` names, or None when it names none (a hub id)."""
    path = Path(os.path.expanduser(source))
    return path if path.exists() else None


def builtin_identity(source: str) -> dict[str, Any]:
    return {"source": "builtin", "id": source, **demo_data.identity()}


def files_identity(paths: list[Path]) -> dict[str, Any]:
    return identity.files_sha256(paths)


def hub_identity(source: str) -> dict[str, Any]:
    """The hub revision of `id` or `id:config`."""
    repo_id, _, config = source.partition(":")
    return identity.hub_revision(repo_id, "dataset") | ({"config": config} if config else {})


def generic_identity(source: str | None, suffixes=TABLE_SUFFIXES + (".txt",)) -> dict[str, Any] | None:
    """Identity of a source read as a whole: the generator's version, sha256 of local files
    (every table file of a folder), or the hub revision."""
    if source is None:
        return None
    if is_demo(source):
        return builtin_identity(source)
    path = local_path(source)
    if path is not None:
        return files_identity(local_files(path, suffixes))
    return hub_identity(source)


def read_local_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl, .json (a list, or a one-key object holding the list) or .parquet file."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, dict):  # {"train": [...]} or a column-oriented dict
            data = next(iter(data.values())) if len(data) == 1 else data
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of rows")
        return data
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    raise UserError(f"{path}: unsupported file type {path.suffix!r} (use .json, .jsonl or .parquet)")


def local_files(path: Path, suffixes=TABLE_SUFFIXES) -> list[Path]:
    """`path` itself, or the files of a folder with one of `suffixes` (sorted)."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in suffixes)
    if not files:
        raise UserError(f"{path}: folder holds no {'/'.join(suffixes)} files")
    return files


def read_rows(source: str, split: str = "train", config: str | None = None) -> list[dict[str, Any]]:
    """Every row of a local file or folder, or of a hub dataset's `split`."""
    path = local_path(source)
    if path is not None:
        return [r for f in local_files(path) for r in read_local_table(f)]
    from datasets import load_dataset

    return list(load_dataset(source, config, split=split) if config else load_dataset(source, split=split))


def check_fields(rows: list[dict[str, Any]], fields: tuple[str, ...], what: str, expected: str) -> None:
    missing = [k for k in fields if rows and k not in rows[0]]
    if missing:
        raise UserError(f"{what}: rows lack field(s) {missing}; expected {expected}")


def within_char_limit(pairs: list[tuple[str, str]], char_limit: int, source: str,
                      ident: dict[str, Any]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Training rows {"query", "response"} of the (query, response) pairs whose
    `query + " " + response` fits `char_limit` characters, and `ident` with the counts. No row
    left is bad input."""
    kept = [{"query": q, "response": r} for q, r in pairs if len(q) + 1 + len(r) <= char_limit]
    ident.update({"rows": len(pairs), "rows_kept": len(kept), "char_limit": char_limit})
    if not kept:
        raise UserError(f"train_dataset {source!r}: no row is within char_limit={char_limit}")
    return kept, ident


def draw_valid(pool: list[Any], size: int, tuning: bool, name: str, split: str) -> list[Any]:
    """`size` rows of `pool` drawn with the fixed validation seed (the tuning seed for a tuning
    trial), in pool order. A size larger than the pool is clamped to it, and said on stderr."""
    seed = TUNE_SPLIT_SEED if tuning else VALID_SPLIT_SEED
    size = clamped(name, size, len(pool), split)
    return [pool[i] for i in sorted(random.Random(seed).sample(range(len(pool)), size))]


def clamped(name: str, size: int, available: int, split: str) -> int:
    if size <= available:
        return size
    print(f"peftbench: warning: {name} {size} is larger than the {available} rows of the {split}; "
          f"using all {available}", file=sys.stderr, flush=True)
    return available
