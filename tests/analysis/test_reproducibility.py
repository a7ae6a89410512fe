"""The verdict of `peftbench reproduce`: identical, within run-to-run noise, or different."""

from __future__ import annotations

from pathlib import Path

from peftbench.analysis import reproducibility as RP
from peftbench.analysis.leaderboard import Run
from peftbench.record import results as R


def _run(name: str, correct: list[bool], accuracy: float | None = None, system_info: dict | None = None) -> Run:
    result = R.empty_result()
    acc = sum(correct) / len(correct) if accuracy is None else accuracy
    result["train_info"]["metrics"] = [{R.M_STEP: 10, R.M_TEST_ACC: acc, R.M_TEST_ACC_FLEX: acc}]
    result["meta_info"]["system_info"] = system_info or {}
    rows = [{"split": "test", "item_id": f"item{i}", "correct_strict": c, "correct_flexible": c}
            for i, c in enumerate(correct)]
    return Run(path=Path(f"/nowhere/{name}.json"), origin="file", result=result, predictions=rows)


def test_identical_numbers_are_identical():
    correct = [i % 3 == 0 for i in range(100)]
    v = RP.judge(_run("a", correct), _run("b", correct), numbers_ok=True, tolerance=0.0)
    assert v.verdict == RP.IDENTICAL and v.reproduced and v.reasons == []


def test_a_few_answers_flipped_both_ways_is_run_to_run_noise():
    a = [i % 2 == 0 for i in range(100)]
    b = list(a)
    b[0], b[1], b[2], b[3] = not b[0], not b[1], not b[2], not b[3]  # two lost, two gained
    v = RP.judge(_run("a", a), _run("b", b), numbers_ok=False, tolerance=0.0)
    assert v.verdict == RP.WITHIN_NOISE and v.reproduced
    assert v.paired.p_mcnemar >= RP.ALPHA and v.paired.only_a == 2 and v.paired.only_b == 2
    assert "McNemar exact p = 1" in RP.render(v)


def test_many_answers_lost_is_different():
    a = [True] * 60 + [False] * 40
    b = [False] * 20 + [True] * 40 + [False] * 40  # 20 items lost, none gained
    v = RP.judge(_run("a", a), _run("b", b), numbers_ok=False, tolerance=0.0)
    assert v.verdict == RP.DIFFERENT and not v.reproduced
    assert v.paired.p_mcnemar < RP.ALPHA and "beyond chance" in v.reasons[0]
    assert "verdict: DIFFERENT" in RP.render(v)


def test_an_accuracy_that_does_not_match_its_own_predictions_is_different_even_with_equal_answers():
    correct = [i % 2 == 0 for i in range(50)]
    edited = _run("a", correct, accuracy=0.9)  # the predictions say 0.5
    v = RP.judge(edited, _run("b", correct), numbers_ok=False, tolerance=0.0)
    assert v.verdict == RP.DIFFERENT
    assert "does not match its own predictions" in v.reasons[0]


def test_without_predictions_differing_numbers_are_different_and_say_why():
    a, b = _run("a", [True, False]), _run("b", [True, False])
    b.predictions = None
    v = RP.judge(a, b, numbers_ok=False, tolerance=0.0)
    assert v.verdict == RP.DIFFERENT and "no paired comparison" in v.reasons[0]


def test_the_verdict_names_the_hardware_differences():
    xeon = {"cpu_model": "Xeon", "torch_cpu_capability": "AVX512", "mkl_version": "2024.2"}
    epyc = {"cpu_model": "EPYC", "torch_cpu_capability": "AVX2", "mkl_version": "2024.2"}
    correct = [True, False, True]
    v = RP.judge(_run("a", correct, system_info=xeon), _run("b", correct, system_info=epyc), numbers_ok=True,
                 tolerance=1e-6)
    assert v.verdict == RP.WITHIN_TOLERANCE
    assert v.hardware == ["cpu_model: Xeon vs EPYC", "torch_cpu_capability: AVX512 vs AVX2"]
    assert "hardware: cpu_model: Xeon vs EPYC" in RP.render(v)


def test_a_difference_of_zero_is_never_printed_as_minus_zero():
    a = [i % 2 == 0 for i in range(100)]
    b = list(a)
    b[0], b[1], b[2], b[3] = not b[0], not b[1], not b[2], not b[3]  # two lost, two gained: 0 points
    text = RP.render(RP.judge(_run("a", a), _run("b", b), numbers_ok=False, tolerance=0.0))
    assert "reproduced - recorded 0.0 points" in text and "-0.0" not in text


def test_signed_points_rounds_before_it_signs():
    from peftbench.terminal import signed_points

    assert [signed_points(x) for x in (-0.0, 0.0, -0.0004, 0.02, -0.02)] == ["0.0", "0.0", "0.0", "+2.0", "-2.0"]
