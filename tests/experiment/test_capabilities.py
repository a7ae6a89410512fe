"""The capability matrix (`peftbench list --capabilities`) on a small suite of the tiny model:
what it measures for a LoRA, a prompt method, a method that cannot merge and full fine-tuning;
the cache; the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("peft")

from peftbench.capabilities import matrix  # noqa: E402
from peftbench.cli import main  # noqa: E402

PROMPT_TUNING = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4}
# Lily's adapters share their projections across layers; PEFT cannot merge them.
LILY = {"peft_type": "LILY", "task_type": "CAUSAL_LM", "r": 4, "target_modules": ["q_proj", "v_proj"]}


def _add(suite: Path, method: str, name: str, adapter_config: dict) -> None:
    folder = suite / "experiments" / method / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config))


@pytest.fixture(scope="module")
def suite(tmp_path_factory, tiny_model_dir, make_suite):
    suite = make_suite(tmp_path_factory.mktemp("caps") / "suite", tiny_model_dir)
    _add(suite, "prompt_tuning", "tiny", PROMPT_TUNING)
    _add(suite, "lily", "tiny", LILY)
    return suite


@pytest.fixture(scope="module")
def measured(suite):
    rows, count = matrix.capability_rows(suite)
    return {row["experiment"]: row for row in rows}, count


def _values(row) -> dict[str, str]:
    return {name: row[name]["value"] for name in matrix.CAPABILITIES}


def test_a_perturbed_lora_merges_unmerges_and_loads_beside_a_second(measured):
    rows, _ = measured
    lora = rows["lora/tiny-r4"]
    assert lora["error"] is None and lora["peft_type"] == "LORA"
    # the perturbation is what makes the merge check mean something: a fresh LoRA is the identity
    assert lora["perturbed_change"] > matrix.PERTURBED_MIN_EFFECT
    assert _values(lora) == {"mergeable": "yes", "unmerge": "yes", "multi_adapter": "yes",
                             "int8": "not measured", "int4": "not measured"}
    assert "rtol=0.0001, atol=0.0001" in lora["mergeable"]["detail"]
    assert "CUDA" in lora["int8"]["detail"]
    assert lora["tiny_file_size"] > 0


def test_trainable_parameters_and_adapter_bytes_are_counted_on_the_suites_own_model(measured):
    rows, _ = measured
    lora = rows["lora/tiny-r4"]
    # the same count the runner records for this experiment (tests/training/test_runner.py)
    trainable = 2 * 2 * (32 * 4 + 4 * 32) - 2 * (4 * 32 - 4 * 16)
    assert lora["trainable"] == trainable
    assert lora["adapter_bytes"] == 4 * trainable  # float32 adapter weights
    full = rows["full-finetuning/tiny"]
    assert full["trainable"] > trainable and full["adapter_bytes"] == 4 * full["trainable"]  # dtype float32


def test_methods_that_cannot_merge_say_why(measured):
    rows, _ = measured
    prompt = rows["prompt_tuning/tiny"]
    assert prompt["mergeable"]["value"] == "n/a" and "prompt method" in prompt["mergeable"]["detail"]
    assert prompt["multi_adapter"]["value"] == "yes"
    lily = rows["lily/tiny"]
    assert lily["mergeable"]["value"] == "no" and "raises" in lily["mergeable"]["detail"]
    full = rows["full-finetuning/tiny"]
    assert set(_values(full).values()) == {"n/a"}


def test_a_second_call_reads_the_cache_and_measures_nothing(suite, measured):
    rows, count = measured
    assert count == len(rows) == 4
    again, count_again = matrix.capability_rows(suite)
    assert count_again == 0
    assert {r["experiment"]: r for r in again} == rows
    assert matrix.cached_rows(suite) == again


def test_a_changed_adapter_config_is_measured_again(tmp_path, tiny_model_dir, make_suite):
    import shutil

    suite = make_suite(tmp_path / "suite", tiny_model_dir)
    shutil.rmtree(suite / "experiments" / "full-finetuning")
    assert matrix.capability_rows(suite)[1] == 1
    assert matrix.capability_rows(suite)[1] == 0
    config = suite / "experiments" / "lora" / "tiny-r4" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "r": 2}))
    assert matrix.cached_rows(suite) is None
    assert matrix.capability_rows(suite)[1] == 1


def test_list_capabilities_prints_the_matrix_with_its_tolerance(suite, measured, capsys):
    assert main(["list", str(suite), "--capabilities"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:6] == ["experiment", "merge", "unmerge", "multi", "int8", "int4"]
    lora_line = next(line for line in out.splitlines() if line.startswith("lora/tiny-r4"))
    assert lora_line.split()[1:4] == ["yes", "yes", "yes"]
    assert "rtol=0.0001" in out and "0 measured now" in out
    assert "lily/tiny: mergeable: no" in out


def test_refresh_without_capabilities_is_bad_input(suite, capsys):
    assert main(["list", str(suite), "--refresh"]) == 2
    assert "use it with --capabilities" in capsys.readouterr().err


def test_the_report_of_a_suite_shows_its_cached_matrix(suite, measured, make_result, write_run, tmp_path):
    write_run(suite / "results" / "lora--tiny-r4.json", make_result("lora/tiny-r4", 0.5))
    out = tmp_path / "report.html"
    assert main(["report", str(suite), "-o", str(out)]) == 0
    page = out.read_text()
    section = page[page.index('<section id="capabilities">'):]
    section = section[:section.index("</section>")]
    assert 'id="capabilities-table"' in section
    lora_row = next(r for r in section.split("<tr>") if r.startswith("<td>lora/tiny-r4</td>"))
    assert lora_row.count('class="cap-yes"') == 3 and "rtol=0.0001" in lora_row  # the reason, in the title
    assert "lily/tiny" in section and 'class="cap-no"' in section


def test_the_report_says_how_to_measure_when_nothing_is_cached(tmp_path, tiny_model_dir, make_suite, make_result,
                                                               write_run):
    suite = make_suite(tmp_path / "suite", tiny_model_dir)
    write_run(suite / "results" / "lora--tiny-r4.json", make_result("lora/tiny-r4", 0.5))
    out = tmp_path / "report.html"
    assert main(["report", str(suite), "-o", str(out)]) == 0
    assert "run <code>peftbench list --capabilities SUITE</code>" in out.read_text()


def test_capability_cells_are_escaped(tmp_path):
    from peftbench.analysis.capability_html import capability_section

    row = {"experiment": "<script>x</script>", "error": None, "trainable": 5, "adapter_bytes": 2048,
           **{name: {"value": "no", "detail": '"><img src=x onerror=alert(1)>'} for name in matrix.CAPABILITIES}}
    page = capability_section([row])
    assert "<script>" not in page and "<img" not in page and "&lt;script&gt;" in page
