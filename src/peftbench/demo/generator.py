"""What the demo's two data generators share: putting a problem in exactly one split by the hash
of its canonical form, drawing distinct problems of a split with a local RNG, and the dataset
identity (generator version and the sha256 of every row the loader can ask for)."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Callable, Iterable, Sequence, TypeVar

from peftbench.errors import UserError

P = TypeVar("P")

TRAIN_SIZE = 20_000
EVAL_SIZES = {"train": 1_000, "test": 500}  # "train" is the pool the validation set is drawn from
# Share of canonical problems in each split, in hundredths of the sha256 bucket space. Training
# gets 80%; the two evaluation pools 10% each, several times the rows they need (see the tests
# that count the problem space), so drawing them without repeats ends quickly.
BUCKETS = {"train": range(0, 80), "eval-train": range(80, 90), "eval-test": range(90, 100)}

# Draws per requested row before giving up: a split that cannot be filled is a bug in the
# families, not something to loop on forever.
MAX_DRAWS_PER_ROW = 200


class CanonicalProblem:
    """Mixin of a generated problem (a dataclass with `family` and `params`): its canonical form
    ("family:1,2,3", what defines the problem; names and wording do not) and its split."""

    family: str
    params: tuple[int, ...]

    @property
    def canonical(self) -> str:
        return f"{self.family}:{','.join(map(str, self.params))}"

    def split(self) -> str:
        return split_of(self.canonical, BUCKETS)


def split_of(canonical: str, buckets: dict[str, range]) -> str:
    """The split a canonical form belongs to: the sha256 bucket (0-99) it falls in."""
    bucket = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big") % 100
    return next(name for name, share in buckets.items() if bucket in share)


def draw(dataset_id: str, split: str, n: int, seed: int | None, families: Sequence[Callable[[random.Random], P]],
         split_of_problem: Callable[[P], str], key: Callable[[P], str]) -> list[P]:
    """`n` problems of `split`, distinct by `key`, drawn from `families` with a local RNG seeded
    `seed` (the global RNG is never touched), in generation order."""
    if split not in BUCKETS:
        raise UserError(f"{dataset_id}: unknown split {split!r}; available: {sorted(BUCKETS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserError(f"{dataset_id}: number of rows must be a non-negative integer, got {n!r}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[P] = []
    for _ in range(n * MAX_DRAWS_PER_ROW):
        if len(out) == n:
            return out
        problem = rng.choice(families)(rng)
        if key(problem) in seen or split_of_problem(problem) != split:
            continue
        seen.add(key(problem))
        out.append(problem)
    if len(out) == n:
        return out
    raise RuntimeError(f"{dataset_id}: split {split!r} ran out of distinct problems after {len(out)} of {n}")


def rows_identity(generator: str, version: str, sizes: dict[str, int], row_lists: Iterable[list[dict]]) -> dict[str, object]:
    """The dataset identity recorded in results: the generator, its version and the sha256 of
    every row (each row as sorted JSON, one per line)."""
    h = hashlib.sha256()
    for rows in row_lists:
        for row in rows:
            h.update(json.dumps(row, sort_keys=True).encode())
            h.update(b"\n")
    return {"generator": generator, "generator_version": version, "split_sizes": sizes, "sha256": h.hexdigest()}
