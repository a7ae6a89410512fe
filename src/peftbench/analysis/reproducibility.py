"""The verdict of `peftbench reproduce`: identical, within run-to-run noise, or different.

Comparing numbers alone cannot tell a reproduction on another machine (sums in another order,
a few answers flipped) from a real difference. So, when the numbers are not identical, the two
runs' test predictions are compared item by item, as `peftbench diff` does: the McNemar exact
test on the items only one run got right, and the paired-bootstrap interval of the accuracy
difference. A reproduction is "within run-to-run noise" when that test does not reject equal
accuracy at ALPHA; "different" otherwise, or when a recorded accuracy does not even match the
run's own predictions (an edited or corrupted result), or when there are no predictions to judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peftbench.analysis import leaderboard
from peftbench.scoring import stats
from peftbench.errors import UserError
from peftbench.record import hardware
from peftbench.record import results as R
from peftbench.terminal import signed_points

ALPHA = 0.05
IDENTICAL = "identical"
WITHIN_TOLERANCE = "within tolerance"
WITHIN_NOISE = "within run-to-run noise"
DIFFERENT = "different"
# |recorded test accuracy - accuracy of its own predictions| above this means the file was edited
# or corrupted (the two are computed from the same grades, so they agree to rounding).
_SELF_CONSISTENCY = 1e-9


@dataclass
class Verdict:
    verdict: str
    reasons: list[str] = field(default_factory=list)
    paired: stats.PairedComparison | None = None
    hardware: list[str] = field(default_factory=list)  # "field: recorded vs reproduced"

    @property
    def reproduced(self) -> bool:
        return self.verdict != DIFFERENT


def _inconsistent_accuracy(run: leaderboard.Run, who: str) -> str | None:
    """A reason when the run's final test accuracy disagrees with its own predictions."""
    metrics = R.final_metrics(run.result)
    recorded = metrics.get(R.M_TEST_ACC)
    try:
        correct = leaderboard.correct_by_item(run)
    except UserError:
        return None
    if not isinstance(recorded, (int, float)) or not correct:
        return None
    own = sum(correct.values()) / len(correct)
    if abs(own - recorded) > _SELF_CONSISTENCY:
        return (f"the {who} test accuracy {recorded:.4g} does not match its own predictions ({own:.4g}): "
                "the result file was edited or is corrupt")
    return None


def judge(recorded: leaderboard.Run, reproduced: leaderboard.Run, numbers_ok: bool, tolerance: float,
          n_bootstrap: int = 10_000, seed: int = 0) -> Verdict:
    """The verdict on a reproduction, given whether every compared number was within `tolerance`."""
    system = [run.result.get(R.META_INFO, {}).get("system_info") for run in (recorded, reproduced)]
    verdict = Verdict(DIFFERENT, hardware=hardware.hardware_differences(*system))
    for run, who in ((recorded, "recorded"), (reproduced, "reproduced")):
        reason = _inconsistent_accuracy(run, who)
        if reason:
            verdict.reasons.append(reason)
    try:
        _, a, b = leaderboard.paired_correctness(recorded, reproduced)
        verdict.paired = stats.compare_paired(a, b, n_bootstrap=n_bootstrap, seed=seed)
    except UserError as exc:
        if not numbers_ok:
            verdict.reasons.append(f"no paired comparison of the predictions: {exc}")
    if verdict.reasons:
        return verdict
    if numbers_ok:
        verdict.verdict = IDENTICAL if tolerance == 0 else WITHIN_TOLERANCE
    elif verdict.paired is not None and verdict.paired.p_mcnemar >= ALPHA:
        verdict.verdict = WITHIN_NOISE
    elif verdict.paired is not None:
        verdict.reasons.append(f"the test answers differ beyond chance (McNemar p = {verdict.paired.p_mcnemar:.3g} "
                               f"< {ALPHA})")
    return verdict


def render(v: Verdict) -> str:
    lines = []
    if v.paired is not None:
        p = v.paired
        lines.append(f"test items: {p.n} paired; accuracy recorded {p.acc_a * 100:.1f}%, reproduced "
                     f"{p.acc_b * 100:.1f}%; reproduced - recorded {signed_points(-p.diff)} points, 95% CI "
                     f"[{signed_points(-p.diff_hi)}, {signed_points(-p.diff_lo)}]; only recorded right {p.only_a}, "
                     f"only reproduced right {p.only_b}; McNemar exact p = {p.p_mcnemar:.4g}")
    lines.append("hardware: " + ("; ".join(v.hardware) if v.hardware else "same as recorded (as far as recorded)"))
    lines.append(f"verdict: {v.verdict.upper()}" + (f" ({'; '.join(v.reasons)})" if v.reasons else ""))
    return "\n".join(lines)

