"""`peftbench bench` on the tiny suite: both comparisons printed, as tables and as JSON."""

from __future__ import annotations

import json

from peftbench.cli import main


def test_bench_prints_the_evaluation_and_the_training_comparison(tiny_suite, capsys):
    assert main(["bench", str(tiny_suite), "--items", "5", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "evaluation:" in out and "dynamic vs static:" in out and "identical up to the grader's cut point" in out
    assert "training: lora/tiny-r4, 3 steps" in out and "HF Trainer + peft" in out and "peftbench vs Trainer:" in out


def test_bench_json_holds_both_measurements(tiny_suite, capsys):
    assert main(["bench", str(tiny_suite), "--items", "5", "--steps", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ev, tr = report["eval"], report["train"]
    assert ev["items"] == 5 and ev["static"]["engine_used"] == "static" and ev["dynamic"]["engine_used"] == "dynamic"
    # the tiny model never writes EOS nor a cut point: both engines write the same texts
    assert ev["identical_share"] == 1.0 and ev["accuracy_difference_items"] == 0
    assert len(tr["peftbench"]["losses"]) == len(tr["hf_trainer"]["losses"]) == 3
    assert tr["max_loss_rel_diff"] < 1e-5 and tr["throughput_ratio"] > 0
    assert report["machine"]["device"] == "cpu"


def test_bench_refuses_bad_input_with_exit_2(tiny_suite, tmp_path, capsys):
    assert main(["bench", str(tiny_suite), "--items", "0"]) == 2
    assert "--items must be >= 1" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench", str(empty)]) == 2
    assert "no experiments/lora" in capsys.readouterr().err
