"""The code task: HumanEval through the task's interface, its stop rule, a tiny-model run end to end
(sandboxed grading, per-problem reasons, rescore), and the refusal without a sandbox."""

from __future__ import annotations

import json

import pytest

from peftbench import tasks
from peftbench.cli import main
from peftbench.record import results as R
from peftbench.scoring import humaneval, sandbox

TASK = tasks.get("code")


@pytest.fixture(scope="module")
def rows(shared_data):
    return humaneval.load_rows(shared_data("humaneval", "HumanEval.jsonl.gz"))


def test_grade_takes_the_output_as_generated_and_returns_pass_at_1_first(rows):
    row = TASK._row(rows[0])
    body = rows[0]["canonical_solution"]
    whole = f"Here it is:\n```python\n{rows[0]['prompt']}{body}```\nDone."
    assert TASK.grade(body, row) == {"passed": True}  # a continuation of the prompt
    assert TASK.grade(whole, row) == {"passed": True}  # a whole fenced program
    assert TASK.grade("    return None\n", row) == {"passed": False}
    fields = TASK.grade_fields("I cannot help with that.", row)
    assert fields["correct_passed"] is False and fields["reason"] == "syntax_error"
    assert fields["isolation"] in sandbox.ISOLATIONS


def test_the_prompt_asks_for_the_function_in_the_training_template(rows):
    prompt = TASK.prompt(TASK.defaults["query_template"], TASK._row(rows[0]))
    assert prompt.startswith("### Instruction:\nComplete the following Python function:\n```python\n")
    assert rows[0]["prompt"] in prompt and prompt.endswith("### Response:\n")


def test_stopping_where_the_code_is_complete_never_changes_the_program(rows, stops_keep_grades):
    """For random outputs F and every prefix T at which the rule fires, the grader takes the same
    program from T as from F (so the grade is the same, without running anything)."""
    row = TASK._row(rows[2])
    pieces = ["```python\n", "```\n", "```js\n", f"def {row['entry_point']}(x):\n", "    return x\n", "prose ",
              "\n", "    y = 1\n", "def other():\n", "```", "# comment\n"]

    def same(prefix, full):
        assert humaneval.extract_program(prefix, row) == humaneval.extract_program(full, row), full

    assert stops_keep_grades(TASK, row, pieces, 3000, 9, same) > 300


@pytest.fixture(scope="module")
def code_run(make_suite, run_tiny_lora, tiny_model_dir, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("code")
    train = [{"instruction": f"Write a function that returns {i}.", "response": f"```python\ndef f():\n    return {i}\n```"}
             for i in range(40)]
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in train))
    suite = make_suite(root / "suite", tiny_model_dir, task="code", train_dataset=str(root / "train.jsonl"),
                       eval_dataset=str(shared_data("humaneval")), test_size=3, valid_size=0, max_steps=2,
                       eval_steps=2, generation_kwargs={"max_new_tokens": 8}, max_seq_length=96)
    return suite, run_tiny_lora(suite)


def test_a_code_run_records_pass_at_1_the_sandbox_and_why_each_problem_failed(code_run):
    _, path = code_run
    result = R.load(path)
    info, final = result[R.RUN_INFO], R.final_metrics(result)
    assert info[R.RI_TASK]["name"] == "code" and info[R.RI_TASK]["sandbox"] in ("bwrap", "unshare")
    assert final[R.M_TEST_SETS] == {"humaneval": {R.SET_N: 3, R.M_TEST_ACC: final[R.M_TEST_ACC]}}
    preds = [p for p in R.read_predictions(R.predictions_path_for(path)) if p["split"] == "test"]
    assert [p["task_id"] for p in preds] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert all(p["reason"] in humaneval.REASONS and p["isolation"] == info[R.RI_TASK]["sandbox"] for p in preds)
    assert final[R.M_TEST_ACC] == sum(p["correct_passed"] for p in preds) / 3
    assert result[R.META_INFO]["grader_version"] == humaneval.GRADER_VERSION


def test_rescore_runs_the_saved_programs_again_and_reproduces_the_result(code_run, capsys):
    _, path = code_run
    assert main(["rescore", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 regraded" in out and "task code" in out and "(+" not in out and "(-" not in out


def test_without_network_isolation_a_code_run_is_refused_before_anything_runs(tiny_suite, shared_data, monkeypatch,
                                                                             capsys):
    params = json.loads((tiny_suite / "default_training_params.json").read_text())
    (tiny_suite / "default_training_params.json").write_text(json.dumps({**params, "task": "code", "valid_size": 0,
                                                                         "eval_dataset": str(shared_data("humaneval"))}))
    monkeypatch.setattr(sandbox, "available_isolation", lambda python=None: "none")
    monkeypatch.setattr(sandbox, "isolation_problem", lambda isolation, python=None: "not here")
    code = main(["run", "--no-progress", str(tiny_suite / "experiments/lora/tiny-r4")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot grade code safely here" in err and "allow_weak_sandbox" in err
    assert not list(tiny_suite.glob("*_results/*.json"))


def test_tune_is_refused_for_the_code_task():
    from peftbench.errors import ConfigError
    from peftbench.experiment.config import build_train_config

    with pytest.raises(ConfigError, match="no validation pool"):
        build_train_config([("p", {"task": "code", "tune_valid_size": 10})])
