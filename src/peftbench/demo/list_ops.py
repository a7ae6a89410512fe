"""Built-in list questions for the CPU demo's second task: a skill other than arithmetic word
problems (ordering, selecting and counting in a short list of numbers), generated
deterministically without any download.

A question names an operation on a list of 3 to 6 numbers from 1 to 99 and the answer is a
number or a list, written on one line:

    Sort 42, 7, 19 from smallest to largest.        -> 7, 19, 42
    Which number is the largest: 42, 7, 19?         -> 42
    Write 42, 7, 19 in reverse order.               -> 19, 7, 42
    How many times does 7 appear in 7, 3, 7, 12?    -> 2

No step needs arithmetic beyond counting, so what a method teaches the model is a procedure and an
answer format, not number facts: the skill the first demo task does not measure.

Splits never share a problem: a problem's canonical form is its family and its numbers, and the
sha256 of that string puts it in exactly one split, as in `peftbench.demo.word_problems`.

Row forms: train {"query", "response"}; eval {"question", "answer"}, the answer the one line.
"""

from __future__ import annotations

import copy
import functools
import random
from dataclasses import dataclass
from typing import Callable

from peftbench.demo import generator
from peftbench.errors import UserError

DATASET_ID = "demo:list-ops"
# Bump when any change here can change a generated row (the dataset identity records it).
GENERATOR_VERSION = "1"

TRAIN_SIZE, EVAL_SIZES = generator.TRAIN_SIZE, generator.EVAL_SIZES
_SEEDS = {"train": 11, "eval-train": 12, "eval-test": 13}


@dataclass(frozen=True)
class Problem(generator.CanonicalProblem):
    family: str
    params: tuple[int, ...]  # with the family, what defines the problem
    question: str
    answer: str


def _listed(numbers) -> str:
    return ", ".join(map(str, numbers))


def _numbers(rng: random.Random, low: int = 3, high: int = 6) -> tuple[int, ...]:
    return tuple(rng.randint(1, 99) for _ in range(rng.randint(low, high)))


def _sort_up(rng):
    xs = _numbers(rng)
    return Problem("sort_up", xs, f"Sort {_listed(xs)} from smallest to largest.", _listed(sorted(xs)))


def _sort_down(rng):
    xs = _numbers(rng)
    return Problem("sort_down", xs, f"Sort {_listed(xs)} from largest to smallest.", _listed(sorted(xs, reverse=True)))


def _largest(rng):
    xs = _numbers(rng)
    return Problem("largest", xs, f"Which number is the largest: {_listed(xs)}?", str(max(xs)))


def _smallest(rng):
    xs = _numbers(rng)
    return Problem("smallest", xs, f"Which number is the smallest: {_listed(xs)}?", str(min(xs)))


def _reverse(rng):
    xs = _numbers(rng)
    return Problem("reverse", xs, f"Write {_listed(xs)} in reverse order.", _listed(reversed(xs)))


def _count(rng):
    xs = list(_numbers(rng, 4, 6))
    target = rng.choice(xs)
    for _ in range(rng.randint(0, 2)):  # the counted number appears one to three times
        xs[rng.randrange(len(xs))] = target
    xs = tuple(xs)
    return Problem("count", (target,) + xs, f"How many times does {target} appear in {_listed(xs)}?", str(xs.count(target)))


def _without(rng):
    xs = _numbers(rng, 4, 6)
    drop = rng.choice(xs)
    return Problem("without", (drop,) + xs, f"Remove every {drop} from {_listed(xs)}.", _listed(x for x in xs if x != drop))


_FAMILIES: list[Callable[[random.Random], Problem]] = [_sort_up, _sort_down, _largest, _smallest, _reverse, _count, _without]


def problems(split: str, n: int) -> list[Problem]:
    """`n` distinct problems of a split ("train", "eval-train" or "eval-test"), in generation order."""
    return generator.draw(DATASET_ID, split, n, _SEEDS.get(split), _FAMILIES, Problem.split, lambda p: p.canonical)


def train_rows(n: int = TRAIN_SIZE) -> list[dict[str, str]]:
    return [{"query": p.question, "response": p.answer} for p in problems("train", n)]


def eval_rows(split: str) -> list[dict[str, str]]:
    """Rows (question, answer): split "train" is the validation pool (1000), "test" the test set (500)."""
    if split not in EVAL_SIZES:
        raise UserError(f"{DATASET_ID}: unknown evaluation split {split!r}; available: {sorted(EVAL_SIZES)}")
    return [{"question": p.question, "answer": p.answer} for p in problems(f"eval-{split}", EVAL_SIZES[split])]


def identity() -> dict[str, object]:
    """Generator version and the sha256 of every row the loader can ask for."""
    return copy.deepcopy(_identity())


@functools.cache
def _identity() -> dict[str, object]:
    sizes = {"train": TRAIN_SIZE, **{f"eval-{k}": v for k, v in EVAL_SIZES.items()}}
    return generator.rows_identity(__name__, GENERATOR_VERSION, sizes,
                                   (train_rows(TRAIN_SIZE), eval_rows("train"), eval_rows("test")))
