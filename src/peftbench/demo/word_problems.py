"""Built-in math word problems for the CPU demo: MetaMathQA-shaped training rows and GSM8K-shaped
evaluation rows, generated deterministically without any download.

A suite selects this data with `train_dataset = eval_dataset = DATASET_ID` ("demo:word-problems");
the data loader then calls `train_rows()` and `eval_rows("train" | "test")` in place of reading
meta-math/MetaMathQA and openai/gsm8k, and records `identity()` as the dataset identity.

The problems take one or two arithmetic steps (shopping, sharing, rates, ages, savings, ...; 12 of
the 15 families take two) with small numbers: multiplications come from the times tables up to
9 x 9 (and tens times one digit), divisions are exact with one-digit divisors, sums and
differences stay within two digits, and every answer is a positive integer below 1000. The
numbers are this small because arithmetic, not wording, is what SmolLM2-135M gets wrong. Few-shot
on bare equations the base model got 35/40 one-digit products right but only 23/40 sums of numbers
up to 20 and 4/40 sums of two-digit numbers. LoRA (r=16, lr 2e-3, batch 8) after 320-360
training samples: a first version with products up to 9 x 99 got 22% of 100 test items right,
one with products up to 9 x 15 24% of 50, and these ranges 46% of 50 (subtraction stays the
weakest operation: 6 of 18 right). The base model with the instruction prompt got 0 of 50 of the
first version right: it answers without worked steps.

Splits never share a problem. A problem's canonical form is its family and its numbers
("shop_change:4,8,50"); the sha256 of that string puts it in exactly one split, so the test
set holds no problem that training saw, not even with other names or objects around the numbers.
Training rows may repeat a canonical problem with different names or objects, the way MetaMathQA
rephrases each GSM8K question several times; evaluation rows never repeat one.

Row forms:
    train:  {"type", "query", "original_question", "response"}, the response reasoning in
            sentences ("... so Tom spends 4 * 12 = $48.") and ending "The answer is: N";
    eval:   {"question", "answer"}, the answer in GSM8K's lines without calculator annotations
            ("The pens cost 4*12 = $48.") and ending "#### N".
"""

from __future__ import annotations

import copy
import functools
import random
from dataclasses import dataclass
from typing import Callable

from peftbench.demo import generator
from peftbench.errors import UserError

DATASET_ID = "demo:word-problems"
# Bump when any change here can change a generated row: the version and the rows' sha256 are the
# dataset identity recorded in results.
GENERATOR_VERSION = "1"

TRAIN_SIZE, EVAL_SIZES = generator.TRAIN_SIZE, generator.EVAL_SIZES
_SEEDS = {"train": 1, "eval-train": 2, "eval-test": 3}


@dataclass(frozen=True)
class Problem(generator.CanonicalProblem):
    family: str
    params: tuple[int, ...]  # the numbers that define the problem; names and objects do not
    question: str
    reasoning: tuple[str, ...]  # MetaMathQA-style sentences, "4 * 12 = 48"
    gsm_lines: tuple[str, ...]  # GSM8K-style lines, "4*12 = 48"
    answer: int

    def metamath_row(self) -> dict[str, str]:
        response = "\n".join(self.reasoning) + f"\nThe answer is: {self.answer}"
        return {"type": f"demo_{self.family}", "query": self.question,
                "original_question": self.question, "response": response}

    def gsm8k_row(self) -> dict[str, str]:
        return {"question": self.question, "answer": "\n".join(self.gsm_lines) + f"\n#### {self.answer}"}


# ---------------------------------------------------------------------------- public API


def train_rows(n: int = TRAIN_SIZE) -> list[dict[str, str]]:
    """`n` MetaMathQA-form training rows (type, query, original_question, response)."""
    return [p.metamath_row() for p in problems("train", n)]


def eval_rows(split: str) -> list[dict[str, str]]:
    """GSM8K-form rows (question, answer): split "train" is the pool validation rows are drawn
    from (1000 rows), "test" the test set (500 rows). Neither shares a problem with training."""
    if split not in EVAL_SIZES:
        raise UserError(f"{DATASET_ID}: unknown evaluation split {split!r}; available: {sorted(EVAL_SIZES)}")
    return [p.gsm8k_row() for p in problems(f"eval-{split}", EVAL_SIZES[split])]


def identity() -> dict[str, object]:
    """The dataset identity recorded in results: generator version and the sha256 of every row
    the loader can ask for (the default training rows and both evaluation splits)."""
    # Generating and hashing 21,500 rows takes ~0.8 s, and a run asks twice (train and eval data).
    return copy.deepcopy(_identity())


@functools.cache
def _identity() -> dict[str, object]:
    sizes = {"train": TRAIN_SIZE, **{f"eval-{k}": v for k, v in EVAL_SIZES.items()}}
    return generator.rows_identity(__name__, GENERATOR_VERSION, sizes,
                                   (train_rows(TRAIN_SIZE), eval_rows("train"), eval_rows("test")))


def problems(split: str, n: int) -> list[Problem]:
    """`n` problems of a split ("train", "eval-train" or "eval-test"), in generation order.

    Training problems are distinct by question text; evaluation problems by canonical form.
    """
    key = (lambda p: p.question) if split == "train" else (lambda p: p.canonical)
    return generator.draw(DATASET_ID, split, n, _SEEDS.get(split), _FAMILIES, Problem.split, key)


# ---------------------------------------------------------------------------- vocabulary

_PEOPLE = [("Tom", "he"), ("Anna", "she"), ("Liam", "he"), ("Maya", "she"), ("Omar", "he"),
           ("Sofia", "she"), ("Ben", "he"), ("Chloe", "she"), ("Ravi", "he"), ("Emma", "she"),
           ("Jack", "he"), ("Lena", "she"), ("Noah", "he"), ("Ivy", "she"), ("Sam", "he"),
           ("Nora", "she"), ("Carlos", "he"), ("Mei", "she"), ("Felix", "he"), ("Zara", "she")]
_GOODS = ["pencil", "notebook", "apple", "ticket", "candle", "sticker", "marble", "cupcake",
          "book", "toy car", "flower", "orange", "poster", "mug", "puzzle", "kite"]
_SWEETS = ["cookie", "muffin", "brownie", "cracker", "pretzel", "lemon bar"]
_RELATIVES = ["brother", "sister", "cousin", "uncle", "aunt"]
_VEHICLES = ["train", "bus", "truck", "boat", "car"]
_PLANTS = ["tomato plants", "sunflowers", "rose bushes", "pepper plants", "tulips"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]


def _plural(noun: str) -> str:
    return noun + "s"  # every noun above takes a plain -s


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_PEOPLE)


def _two_people(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(_PEOPLE, 2)
    return first[0], second[0]


# ---------------------------------------------------------------------------- families
# Each family draws its numbers (the canonical parameters) and its wording from `rng` and
# returns the worked problem. Reasoning sentences write "a * b = c"; GSM8K lines "a*b = c",
# as GSM8K does once its "<<a*b=c>>" calculator annotations are removed.


def _shop_total(rng):
    n, price, extra = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 20)
    name, _ = _person(rng)
    item, other = rng.sample(_GOODS, 2)
    cost = n * price
    total = cost + extra
    q = (f"{name} buys {n} {_plural(item)} that cost ${price} each and one {other} for ${extra}. "
         f"How many dollars does {name} spend?")
    return Problem("shop_total", (n, price, extra), q,
                   (f"The {_plural(item)} cost {n} * {price} = ${cost}.",
                    f"With the {other}, {name} spends {cost} + {extra} = ${total}."),
                   (f"The {_plural(item)} cost {n}*{price} = ${cost}.",
                    f"{name} spends {cost}+{extra} = ${total}."), total)


def _shop_change(rng):
    n, price = rng.randint(2, 9), rng.randint(2, 9)
    bill = rng.choice([b for b in (10, 20, 50, 100) if b > n * price][:2])
    name, pron = _person(rng)
    item = rng.choice(_GOODS)
    cost, change = n * price, bill - n * price
    q = (f"{name} buys {n} {_plural(item)} for ${price} each and pays with a ${bill} bill. "
         f"How many dollars of change does {name} get back?")
    return Problem("shop_change", (n, price, bill), q,
                   (f"{name} spends {n} * {price} = ${cost} on {_plural(item)}.",
                    f"{pron.capitalize()} pays with ${bill}, so the change is {bill} - {cost} = ${change}."),
                   (f"The {_plural(item)} cost {n}*{price} = ${cost}.",
                    f"The change is {bill}-{cost} = ${change}."), change)


def _share_equal(rng):
    friends, each = rng.randint(2, 9), rng.randint(2, 9)
    total = friends * each
    had = rng.randint(1, total - 1)
    got = total - had
    name, pron = _person(rng)
    item = _plural(rng.choice(_GOODS + _SWEETS))
    q = (f"{name} has {had} {item} and gets {got} more. {pron.capitalize()} shares all of them equally "
         f"among {friends} friends. How many {item} does each friend get?")
    return Problem("share_equal", (had, got, friends), q,
                   (f"{name} has {had} + {got} = {total} {item}.",
                    f"Each friend gets {total} / {friends} = {each} {item}."),
                   (f"{name} has {had}+{got} = {total} {item}.",
                    f"Each friend gets {total}/{friends} = {each} {item}."), each)


def _trays_share(rng):
    people = rng.randint(2, 9)
    trays = rng.randint(2, 9)
    # per-tray counts that make the total divisible by the number of people
    per_tray = rng.choice([b for b in range(2, 10) if trays * b % people == 0])
    total = trays * per_tray
    each = total // people
    name, pron = _person(rng)
    sweet = _plural(rng.choice(_SWEETS))
    q = (f"{name} bakes {trays} trays of {sweet} with {per_tray} {sweet} on each tray. "
         f"{pron.capitalize()} shares them equally among {people} neighbors. How many {sweet} does each neighbor get?")
    return Problem("trays_share", (trays, per_tray, people), q,
                   (f"{name} bakes {trays} * {per_tray} = {total} {sweet}.",
                    f"Shared among {people} neighbors, each neighbor gets {total} / {people} = {each} {sweet}."),
                   (f"{name} bakes {trays}*{per_tray} = {total} {sweet}.",
                    f"Each neighbor gets {total}/{people} = {each} {sweet}."), each)


def _rate_total(rng):
    per_day, days, before = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 30)
    read = per_day * days
    total = before + read
    name, pron = _person(rng)
    q = (f"{name} has already read {before} pages of a book. Then {pron} reads {per_day} pages every day "
         f"for {days} days. How many pages has {name} read in all?")
    return Problem("rate_total", (before, per_day, days), q,
                   (f"In {days} days {name} reads {per_day} * {days} = {read} pages.",
                    f"In all {pron} has read {before} + {read} = {total} pages."),
                   (f"{name} reads {per_day}*{days} = {read} pages.",
                    f"{name} has read {before}+{read} = {total} pages."), total)


def _rate_left(rng):
    per_day, days, left = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 20)
    read = per_day * days
    book = read + left
    name, _ = _person(rng)
    q = (f"A book has {book} pages. {name} reads {per_day} pages a day for {days} days. "
         f"How many pages does {name} still have to read?")
    return Problem("rate_left", (book, per_day, days), q,
                   (f"In {days} days {name} reads {per_day} * {days} = {read} pages.",
                    f"The pages left are {book} - {read} = {left}."),
                   (f"{name} reads {per_day}*{days} = {read} pages.",
                    f"{name} has {book}-{read} = {left} pages left."), left)


def _age_future(rng):
    age, gap, years = rng.randint(4, 20), rng.randint(2, 20), rng.randint(2, 10)
    name, _ = _person(rng)
    relative = rng.choice(_RELATIVES)
    now = age + gap
    later = now + years
    q = (f"{name} is {age} years old. {name}'s {relative} is {gap} years older than {name}. "
         f"How old will the {relative} be in {years} years?")
    return Problem("age_future", (age, gap, years), q,
                   (f"The {relative} is {age} + {gap} = {now} years old now.",
                    f"In {years} years the {relative} will be {now} + {years} = {later} years old."),
                   (f"The {relative} is {age}+{gap} = {now} years old.",
                    f"In {years} years the {relative} will be {now}+{years} = {later} years old."), later)


def _times_more(rng):
    count, times, extra = rng.randint(3, 9), rng.randint(2, 9), rng.randint(2, 20)
    first, second = _two_people(rng)
    item = _plural(rng.choice(_GOODS))
    many = count * times
    total = many + extra
    q = (f"{first} has {count} {item}. {second} has {times} times as many {item} as {first}, "
         f"and then {second} gets {extra} more. How many {item} does {second} have now?")
    return Problem("times_more", (count, times, extra), q,
                   (f"{second} has {count} * {times} = {many} {item} at first.",
                    f"After getting more, {second} has {many} + {extra} = {total} {item}."),
                   (f"{second} has {count}*{times} = {many} {item}.",
                    f"Then {second} has {many}+{extra} = {total} {item}."), total)


def _savings(rng):
    saved, weekly, weeks = rng.randint(5, 30), rng.randint(2, 9), rng.randint(2, 9)
    earned = weekly * weeks
    total = saved + earned
    name, pron = _person(rng)
    q = (f"{name} has ${saved} saved and earns ${weekly} every week. "
         f"How many dollars will {name} have after {weeks} weeks?")
    return Problem("savings", (saved, weekly, weeks), q,
                   (f"In {weeks} weeks {name} earns {weekly} * {weeks} = ${earned}.",
                    f"{pron.capitalize()} will have {saved} + {earned} = ${total}."),
                   (f"{name} earns {weekly}*{weeks} = ${earned}.",
                    f"{name} will have {saved}+{earned} = ${total}."), total)


def _give_and_buy(rng):
    start = rng.randint(10, 30)
    given, bought = rng.randint(1, start - 1), rng.randint(2, 20)
    after_gift = start - given
    total = after_gift + bought
    name, pron = _person(rng)
    item = _plural(rng.choice(_GOODS))
    q = (f"{name} has {start} {item}. {pron.capitalize()} gives {given} of them to a friend and then buys {bought} more. "
         f"How many {item} does {name} have now?")
    return Problem("give_and_buy", (start, given, bought), q,
                   (f"After giving some away, {name} has {start} - {given} = {after_gift} {item}.",
                    f"After buying more, {pron} has {after_gift} + {bought} = {total} {item}."),
                   (f"{name} has {start}-{given} = {after_gift} {item} left.",
                    f"Then {name} has {after_gift}+{bought} = {total} {item}."), total)


def _speed_distance(rng):
    speed, hours = 10 * rng.randint(2, 9), rng.randint(2, 9)
    distance = speed * hours
    vehicle = rng.choice(_VEHICLES)
    q = f"A {vehicle} travels at {speed} miles per hour. How many miles does it travel in {hours} hours?"
    return Problem("speed_distance", (speed, hours), q,
                   (f"The {vehicle} covers {speed} miles each hour, so in {hours} hours it travels {speed} * {hours} = {distance} miles.",),
                   (f"The {vehicle} travels {speed}*{hours} = {distance} miles.",), distance)


def _garden_rows(rng):
    rows, per_row = rng.randint(2, 9), rng.randint(2, 9)
    planted = rows * per_row
    failed = rng.randint(1, min(10, planted - 1))
    grew = planted - failed
    name, _ = _person(rng)
    plants = rng.choice(_PLANTS)
    q = (f"{name} plants {rows} rows of {plants} with {per_row} in each row. {failed} of them do not grow. "
         f"How many {plants} grow?")
    return Problem("garden_rows", (rows, per_row, failed), q,
                   (f"{name} plants {rows} * {per_row} = {planted} {plants}.",
                    f"Of those, {planted} - {failed} = {grew} grow."),
                   (f"{name} plants {rows}*{per_row} = {planted} {plants}.",
                    f"{planted}-{failed} = {grew} {plants} grow."), grew)


def _compare(rng):
    more = rng.randint(10, 40)
    fewer = rng.randint(2, more - 1)
    diff = more - fewer
    first, second = _two_people(rng)
    item = _plural(rng.choice(_GOODS))
    q = f"{first} has {more} {item} and {second} has {fewer} {item}. How many more {item} does {first} have than {second}?"
    return Problem("compare", (more, fewer), q,
                   (f"{first} has {more} - {fewer} = {diff} more {item} than {second}.",),
                   (f"{first} has {more}-{fewer} = {diff} more {item}.",), diff)


def _combine(rng):
    first_count, second_count = rng.randint(10, 40), rng.randint(2, 40)
    total = first_count + second_count
    first, second = _two_people(rng)
    item = _plural(rng.choice(_GOODS))
    q = f"{first} has {first_count} {item} and {second} has {second_count} {item}. How many {item} do they have together?"
    return Problem("combine", (first_count, second_count), q,
                   (f"Together they have {first_count} + {second_count} = {total} {item}.",),
                   (f"They have {first_count}+{second_count} = {total} {item}.",), total)


_FRACTIONS = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}


def _fraction_more(rng):
    divisor, part = rng.choice(sorted(_FRACTIONS)), rng.randint(2, 12)
    first_month = divisor * part
    total = first_month + part
    name, pron = _person(rng)
    item = _plural(rng.choice(_GOODS))
    month = rng.randrange(len(_MONTHS) - 1)
    m1, m2 = _MONTHS[month], _MONTHS[month + 1]
    q = (f"{name} sold {first_month} {item} in {m1}, and then {pron} sold {_FRACTIONS[divisor]} as many {item} in {m2}. "
         f"How many {item} did {name} sell in {m1} and {m2} together?")
    return Problem("fraction_more", (first_month, divisor), q,
                   (f"In {m2} {name} sold {first_month} / {divisor} = {part} {item}.",
                    f"Together {pron} sold {first_month} + {part} = {total} {item}."),
                   (f"{name} sold {first_month}/{divisor} = {part} {item} in {m2}.",
                    f"{name} sold {first_month}+{part} = {total} {item} altogether."), total)


_FAMILIES: tuple[Callable[[random.Random], Problem], ...] = (
    _shop_total, _shop_change, _share_equal, _trays_share, _rate_total, _rate_left, _age_future,
    _times_more, _savings, _give_and_buy, _speed_distance, _garden_rows, _compare, _combine, _fraction_more,
)
