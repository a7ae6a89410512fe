"""Determinism on CPU: the same experiment run twice gives identical losses, accuracies, predictions
and adapter bytes; the seed changes the numbers, the run key and (when not the suite's default)
the result file name."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from peftbench.record import results as R  # noqa: E402
from peftbench.cli import main  # noqa: E402

LORA = "experiments/lora/tiny-r4"
# Seconds, throughput and bytes measure the machine, not the model.
MACHINE_KEYS = {R.M_TRAIN_TIME, R.M_EVAL_TIME, R.M_TOKENS_PER_SEC, R.M_MEM_ALLOC_AVG, R.M_MEM_RESERVED_AVG,
                R.M_CPU_RSS, R.M_ELAPSED}


def results_by_name(suite: Path) -> dict[str, dict]:
    return {p.name: R.load(p) for p in sorted((suite / "temporary_results").glob("*.json"))}


def model_numbers(result: dict) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in MACHINE_KEYS} for m in result["train_info"]["metrics"]]


def test_same_experiment_twice_gives_identical_numbers_predictions_and_adapter(tiny_suite):
    assert main(["run", str(tiny_suite / LORA), "--no-progress", "--clean", "--seeds", "0,1"]) == 0
    assert main(["run", str(tiny_suite / LORA), "--no-progress", "--clean"]) == 0
    results = results_by_name(tiny_suite)
    seed0 = [r for name, r in results.items() if "--seed" not in name]
    [seed1] = [r for name, r in results.items() if name.startswith("lora--tiny-r4--seed1--")]
    assert len(seed0) == 2
    first, second = seed0

    assert model_numbers(first) == model_numbers(second)
    final = R.final_metrics(first)
    assert final[R.M_TRAIN_LOSS] is not None and final[R.M_TEST_ACC] is not None and final[R.M_FORGETTING] is not None
    assert first["run_info"]["adapter_sha256"] == second["run_info"]["adapter_sha256"] is not None
    assert first["run_info"]["predictions"]["sha256"] == second["run_info"]["predictions"]["sha256"]
    assert first["run_info"]["run_key"] == second["run_info"]["run_key"]

    # Another seed: another data order, so other losses, another run key and a result name that says so.
    assert seed1["run_info"]["seed"] == seed1["run_info"]["train_config"]["seed"] == 1
    assert seed1["run_info"]["run_key_inputs"]["train_config"]["seed"] == 1
    assert seed1["run_info"]["run_key"] != first["run_info"]["run_key"]
    assert model_numbers(seed1)[0][R.M_TRAIN_LOSS] != model_numbers(first)[0][R.M_TRAIN_LOSS]
