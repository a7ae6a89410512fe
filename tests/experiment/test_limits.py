"""What cannot be meant is refused, each message naming the field and the value (issue 15, item 11);
the same rule for `diff --bootstrap`."""

from __future__ import annotations

import pytest

from peftbench.cli import main
from peftbench.errors import ConfigError
from peftbench.experiment import limits
from peftbench.experiment.config import build_train_config


@pytest.mark.parametrize("field", sorted(limits.MAXIMA))
def test_each_maximum_is_accepted_and_one_more_is_refused(field):
    maximum, _ = limits.MAXIMA[field]
    layer = {field: maximum, "max_steps": limits.MAXIMA["max_steps"][0]}
    assert not [p for p in limits.problems(build_train_config([("x", layer)])) if p.startswith(field)]
    with pytest.raises(ConfigError, match=rf"{field}: {maximum + 1} cannot be meant; at most {maximum:,}"):
        build_train_config([("x", {**layer, field: maximum + 1})])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_refused_wherever_they_are(value):
    with pytest.raises(ConfigError) as info:
        build_train_config([("x", {"warmup_ratio": 0.1, "grad_norm_clip": value,
                                   "optimizer_kwargs": {"lr": 1e-4, "betas": [0.9, value]}})])
    text = str(info.value)
    assert f"grad_norm_clip: must be a finite number, got {value}" in text
    assert f"optimizer_kwargs.betas[1]: must be a finite number, got {value}" in text


def test_seed_range_is_what_numpy_accepts():
    assert build_train_config([("x", {"seed": 2**32 - 1})]).seed == 2**32 - 1
    for seed in (-1, 2**32):
        with pytest.raises(ConfigError, match=rf"seed: must be in 0..4294967295 .*got {seed}"):
            build_train_config([("x", {"seed": seed})])


def test_generation_keys_other_than_the_budget_and_stop_rules_are_refused():
    cfg = build_train_config([("x", {"generation_kwargs": {"max_new_tokens": 8, "do_sample": False,
                                                           "stop_strings": ["Question:"]}})])
    assert cfg.generation_kwargs["max_new_tokens"] == 8
    for key, value in (("num_beams", 4), ("temperature", 0.7), ("top_k", 5)):
        with pytest.raises(ConfigError, match=rf"generation_kwargs.{key}: not accepted; evaluation is greedy"):
            build_train_config([("x", {"generation_kwargs": {"max_new_tokens": 8, key: value}})])


def test_diff_bootstrap_beyond_a_million_is_refused_before_reading_anything(tmp_path, capsys):
    code = main(["diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--bootstrap", "10000000"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--bootstrap 10,000,000 cannot be meant: at most 1,000,000 resamples" in err
    assert "Traceback" not in err
