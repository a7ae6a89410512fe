"""The built-in word problems of the CPU demo: forms, arithmetic, determinism, disjoint splits."""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction

import pytest

from peftbench.demo import word_problems as demo_data
from peftbench.errors import UserError

# Small enough to keep each test in tens of milliseconds; the full default sizes are used where
# the property depends on them (disjointness of the whole splits, the identity).
N_TRAIN = 3000

# The answer of each family recomputed from its canonical parameters, written independently of
# the generator's wording.
EXPECTED = {
    "shop_total": lambda n, price, extra: n * price + extra,
    "shop_change": lambda n, price, bill: bill - n * price,
    "share_equal": lambda had, got, friends: (had + got) // friends,
    "trays_share": lambda trays, per_tray, people: trays * per_tray // people,
    "rate_total": lambda before, per_day, days: before + per_day * days,
    "rate_left": lambda book, per_day, days: book - per_day * days,
    "age_future": lambda age, gap, years: age + gap + years,
    "times_more": lambda count, times, extra: count * times + extra,
    "savings": lambda saved, weekly, weeks: saved + weekly * weeks,
    "give_and_buy": lambda start, given, bought: start - given + bought,
    "speed_distance": lambda speed, hours: speed * hours,
    "garden_rows": lambda rows, per_row, failed: rows * per_row - failed,
    "compare": lambda more, fewer: more - fewer,
    "combine": lambda first, second: first + second,
    "fraction_more": lambda first, divisor: first + first // divisor,
}

# "a op b = c" as the reasoning writes it ("4 * 12 = $48", "48/2 = 24")
CALC = re.compile(r"(\d+) ?([-+*/]) ?(\d+) = \$?(\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
       "/": lambda a, b: Fraction(a, b)}


@pytest.fixture(scope="module")
def splits():
    return {
        "train": demo_data.problems("train", demo_data.TRAIN_SIZE),
        "eval-train": demo_data.problems("eval-train", demo_data.EVAL_SIZES["train"]),
        "eval-test": demo_data.problems("eval-test", demo_data.EVAL_SIZES["test"]),
    }


def test_generation_is_deterministic_and_leaves_the_global_rng_alone():
    random.seed(1234)
    state = random.getstate()
    first = (demo_data.train_rows(N_TRAIN), demo_data.eval_rows("train"), demo_data.eval_rows("test"))
    assert random.getstate() == state
    second = (demo_data.train_rows(N_TRAIN), demo_data.eval_rows("train"), demo_data.eval_rows("test"))
    assert first == second
    once = demo_data.identity()
    demo_data._identity.cache_clear()  # recompute instead of reading the cached identity
    assert demo_data.identity() == once
    assert random.getstate() == state


def test_identity_names_the_generator_version_and_hashes_the_rows():
    ident = demo_data.identity()
    assert ident["generator_version"] == demo_data.GENERATOR_VERSION
    assert re.fullmatch(r"[0-9a-f]{64}", ident["sha256"])
    assert ident["split_sizes"] == {"train": 20_000, "eval-train": 1_000, "eval-test": 500}
    # keys the data loader adds to the identity must not be shadowed
    assert not {"rows", "rows_kept", "valid_rows", "test_rows", "source", "id"} & set(ident)


def test_a_shorter_training_set_is_a_prefix_of_a_longer_one():
    assert demo_data.train_rows(100) == demo_data.train_rows(N_TRAIN)[:100]


def test_default_sizes_are_what_the_suite_documents():
    assert len(demo_data.train_rows()) == 20_000
    assert len(demo_data.eval_rows("train")) == 1_000
    assert len(demo_data.eval_rows("test")) == 500


def test_training_rows_have_metamathqa_fields_and_end_with_the_answer(splits):
    for problem, row in zip(splits["train"][:N_TRAIN], demo_data.train_rows(N_TRAIN)):
        assert set(row) == {"type", "query", "original_question", "response"}
        assert row["query"] == row["original_question"] == problem.question
        assert row["type"] == f"demo_{problem.family}"
        assert row["response"].endswith(f"\nThe answer is: {problem.answer}")
        assert "####" not in row["response"]


def test_evaluation_rows_have_gsm8k_fields_and_end_with_hashes_and_the_answer(splits):
    for split in ("train", "test"):
        for problem, row in zip(splits[f"eval-{split}"], demo_data.eval_rows(split)):
            assert set(row) == {"question", "answer"}
            assert row["question"] == problem.question
            last_line = row["answer"].splitlines()[-1]
            assert last_line == f"#### {problem.answer}"
            assert "<<" not in row["answer"]  # calculator-free, like GSM8K with annotations removed
            assert "The answer is" not in row["answer"]


def test_every_answer_matches_its_parameters_and_every_calculation_is_right(splits):
    for problems in splits.values():
        for p in problems[:N_TRAIN]:
            assert p.answer == EXPECTED[p.family](*p.params), p.canonical
            assert isinstance(p.answer, int) and 0 < p.answer < 1000, p.canonical
            for text in (p.metamath_row()["response"], p.gsm8k_row()["answer"]):
                calcs = CALC.findall(text)
                assert calcs, text
                for a, op, b, c in calcs:
                    assert OPS[op](int(a), int(b)) == int(c), f"{a}{op}{b}={c} in {text!r}"
                assert int(calcs[-1][3]) == p.answer, text


def test_problems_take_one_or_two_steps_with_small_operands(splits):
    steps = Counter(len(CALC.findall(p.gsm8k_row()["answer"])) for p in splits["eval-test"])
    assert set(steps) == {1, 2} and min(steps.values()) > 25  # 3 of 15 families take one step
    for p in splits["eval-test"]:
        for a, op, b, _ in CALC.findall(p.gsm8k_row()["answer"]):
            if op == "*":  # one factor a single digit: arithmetic a 135M model can learn
                assert min(int(a), int(b)) < 10, p.question


def test_splits_share_no_problem_and_no_question(splits):
    canon = {name: {p.canonical for p in ps} for name, ps in splits.items()}
    questions = {name: {p.question for p in ps} for name, ps in splits.items()}
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not canon[a] & canon[b], (a, b)
            assert not questions[a] & questions[b], (a, b)
    for p in splits["train"]:
        assert p.split() == "train"


def test_evaluation_splits_never_repeat_a_problem_and_cover_every_family(splits):
    for name in ("eval-train", "eval-test"):
        problems = splits[name]
        assert len({p.canonical for p in problems}) == len(problems)
        per_family = Counter(p.family for p in problems)
        assert set(per_family) == set(EXPECTED)
        # Families with few canonical problems run out first: fraction_more has 44 (4 divisors
        # times 11 parts), ~4 in each 10% pool. The big ones fill the rest.
        assert min(per_family.values()) >= 3, per_family


def test_training_questions_are_distinct(splits):
    assert len({p.question for p in splits["train"]}) == len(splits["train"])


def test_unknown_split_is_a_user_error_listing_the_splits():
    with pytest.raises(UserError, match="available: \\['test', 'train'\\]"):
        demo_data.eval_rows("validation")


def test_negative_row_count_is_a_user_error():
    with pytest.raises(UserError, match="non-negative integer"):
        demo_data.train_rows(-1)
