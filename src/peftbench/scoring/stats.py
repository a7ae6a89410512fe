"""Statistics for comparing accuracies on a test set: pure functions of counts and arrays.

- `wilson_interval`: the 95% interval of one accuracy when only the accuracy and the number of
  items are known. Unlike the normal approximation it stays inside [0, 1] and keeps its coverage
  near 0% and 100% accuracy (Wilson 1927; Brown, Cai & DasGupta 2001).
- `mean_of_proportions_interval`: the interval of a task's headline that is the unweighted mean
  of several test sets' accuracies (commonsense), each set an independent sample.
- `paired_bootstrap`: the interval of the difference of two accuracies measured on the same items.
- `mcnemar_exact`: the exact two-sided p-value of "A and B are equally good" on paired items; only
  the items exactly one of the two got right carry information. For rows averaged over several
  seeds the same exact binomial test is the sign test over items (`p_value_against`): the item,
  not the item x seed, is the unit, since seeds answer the very same items.
- `two_proportion_z`: the unpaired test used when no per-item predictions exist.
- `indistinguishable_from_best`: which runs a leaderboard cannot tell apart from the best one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # numpy loads in the two functions that use it
    import numpy as np

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal
ALPHA = 0.05


def wilson_interval(accuracy: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion `accuracy` observed on `n` items."""
    if n is None or n <= 0:
        raise ValueError(f"n must be a positive number of items, got {n!r}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must lie in [0, 1], got {accuracy!r}")
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (accuracy + z2 / (2 * n)) / denom
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n)) / denom
    # At 0 (or 1) the bound is exactly 0 (1): centre and half are then equal in exact arithmetic,
    # and their float difference (2.8e-17) is rounding, not a measurement.
    lo = 0.0 if accuracy == 0 else max(0.0, centre - half)
    hi = 1.0 if accuracy == 1 else min(1.0, centre + half)
    return lo, hi


def mean_of_proportions_interval(accuracies: Sequence[float], ns: Sequence[int], z: float = Z_95
                                 ) -> tuple[float, float]:
    """95% interval of the unweighted mean of k independent proportions (accuracy i on ns[i]
    items): the normal approximation of the mean, each proportion's variance taken from its
    Wilson-adjusted estimate (x + z²/2) / (n + z²) over n + z² items (Agresti & Coull 1998), so
    that a set at 0% or 100% still adds width; clipped to [0, 1]. With one set this is close to,
    but not the same as, `wilson_interval`, which is used then."""
    if not accuracies or len(accuracies) != len(ns):
        raise ValueError("need one item count per accuracy, and at least one")
    z2, k = z * z, len(accuracies)
    variance = 0.0
    for acc, n in zip(accuracies, ns):
        if n is None or n <= 0 or not 0.0 <= acc <= 1.0:
            raise ValueError(f"accuracy {acc!r} on {n!r} items is not a proportion")
        adjusted = (acc * n + z2 / 2) / (n + z2)
        variance += adjusted * (1 - adjusted) / (n + z2)
    mean, half = sum(accuracies) / k, z * math.sqrt(variance) / k
    return max(0.0, mean - half), min(1.0, mean + half)


def binomial_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact in integers until the final division."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts.

    Under "equally good", each of the only_a + only_b discordant items is a fair coin; the p-value
    doubles the smaller tail (capped at 1). No discordant items at all gives 1."""
    if only_a < 0 or only_b < 0:
        raise ValueError("discordant counts must be >= 0")
    n = only_a + only_b
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf_half(min(only_a, only_b), n))


def two_proportion_z(p1: float, n1: int, p2: float, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (independent samples)."""
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var == 0:
        return 1.0 if p1 == p2 else 0.0
    z = abs(p1 - p2) / math.sqrt(var)
    return math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class PairedComparison:
    n: int
    acc_a: float
    acc_b: float
    diff: float  # acc_a - acc_b
    diff_lo: float
    diff_hi: float
    only_a: int  # items A got right and B got wrong
    only_b: int
    both: int
    neither: int
    p_mcnemar: float
    n_bootstrap: int
    seed: int


def paired_bootstrap(diffs: np.ndarray, n_bootstrap: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(diffs) when the items are resampled with replacement.

    `diffs` holds one of -1, 0, +1 per item (A right and B wrong = +1). Resampling n items and
    averaging only depends on how many of each value were drawn, so drawing those three counts
    from a multinomial gives exactly the same distribution as resampling indices, in
    O(n_bootstrap) memory instead of O(n_bootstrap * n). The generator is local and seeded:
    the same inputs give the same interval."""
    import numpy as np

    n = len(diffs)
    if n == 0:
        raise ValueError("no items to compare")
    values = np.array([-1.0, 0.0, 1.0])
    probs = np.array([(diffs == v).mean() for v in values])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, probs, size=n_bootstrap)
    means = counts @ values / n
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def compare_paired(correct_a: Sequence[bool], correct_b: Sequence[bool], n_bootstrap: int = 10_000,
                   seed: int = 0) -> PairedComparison:
    """Everything `peftbench diff` reports, from two aligned per-item correctness vectors."""
    import numpy as np

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"the two runs must be aligned on the same items, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no items to compare")
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    lo, hi = paired_bootstrap(a.astype(float) - b.astype(float), n_bootstrap, seed)
    return PairedComparison(
        n=int(a.size), acc_a=float(a.mean()), acc_b=float(b.mean()), diff=float(a.mean() - b.mean()),
        diff_lo=lo, diff_hi=hi, only_a=only_a, only_b=only_b, both=int((a & b).sum()),
        neither=int((~a & ~b).sum()), p_mcnemar=mcnemar_exact(only_a, only_b),
        n_bootstrap=n_bootstrap, seed=seed,
    )


@dataclass(frozen=True)
class Candidate:
    """One leaderboard entry for the best-tier test: its accuracy, its number of test items (each
    item once, however many seeds answered it), and per item id when predictions exist its
    correctness: True/False for one run, the share of seeds that got it right for several."""
    accuracy: float
    n: int
    per_item: dict[str, float] | None = None


def p_value_against(best: Candidate, other: Candidate) -> tuple[float, str]:
    """p-value of "other is as good as best", and the name of the test used.

    Paired when both have per-item results on the same items (far more powerful: most items are
    answered alike by both): each item where one is ahead is a coin toss under "equally good",
    so the exact binomial test on (items best is ahead, items other is ahead). With one seed per
    row that is McNemar's test; with several it is the sign test on each item's share of seeds
    right, one vote per item, however many seeds stand behind it. Otherwise the unpaired
    two-proportion z-test on the numbers of items."""
    if best.per_item is not None and other.per_item is not None and best.per_item.keys() == other.per_item.keys():
        ahead = sum(1 for k, v in best.per_item.items() if v > other.per_item[k])
        behind = sum(1 for k, v in best.per_item.items() if v < other.per_item[k])
        binary = all(v in (0, 1) for c in (best, other) for v in c.per_item.values())
        return mcnemar_exact(ahead, behind), "mcnemar" if binary else "sign test"
    return two_proportion_z(best.accuracy, best.n, other.accuracy, other.n), "z-test"


def indistinguishable_from_best(candidates: Sequence[Candidate | None], alpha: float = ALPHA
                                ) -> list[tuple[bool, float | None, str | None]]:
    """For each candidate: (not significantly worse than the best, p-value, test name).

    The best is the highest accuracy; it is marked with p = 1. None entries (runs without an
    accuracy) get (False, None, None). Each comparison is a separate test at level `alpha`
    without a multiple-comparison correction: the mark is a screening aid that errs toward
    keeping runs in the top tier, not a ranking proof."""
    scored = [i for i, c in enumerate(candidates) if c is not None]
    out: list[tuple[bool, float | None, str | None]] = [(False, None, None)] * len(candidates)
    if not scored:
        return out
    best_i = max(scored, key=lambda i: candidates[i].accuracy)
    best = candidates[best_i]
    for i in scored:
        if i == best_i:
            out[i] = (True, 1.0, "best")
            continue
        p, test = p_value_against(best, candidates[i])
        out[i] = (p >= alpha, p, test)
    return out
