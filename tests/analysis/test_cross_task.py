"""The cross-task view: per-task leaderboards never mix, ranks per column, the report's heat map."""

from __future__ import annotations

import pytest

from peftbench.analysis import cross_task, html_report
from peftbench.analysis import leaderboard as lb


@pytest.fixture
def two_tasks(make_result, write_run, tmp_path):
    """Three experiments on metamathqa (no task recorded: read as metamathqa) and on commonsense,
    where the order is reversed; one commonsense set ties."""
    for name, math, sets in (("full-finetuning/a", 0.50, {"boolq": (0.60, 100), "piqa": (0.50, 80)}),
                             ("lora/b", 0.40, {"boolq": (0.70, 100), "piqa": (0.50, 80)}),
                             ("ia3/<img src=x>", 0.20, {"boolq": (0.90, 100), "piqa": (0.50, 80)})):
        stem = name.replace("/", "--").replace("<", "").replace(">", "").replace(" ", "_").replace("=", "")
        write_run(tmp_path / f"{stem}.json", make_result(name, math))
        mean = sum(a for a, _ in sets.values()) / len(sets)
        write_run(tmp_path / f"{stem}--cs.json", make_result(name, mean, task="commonsense", test_sets=sets))
    return lb.load_runs([tmp_path])


def test_each_task_is_ranked_on_its_own(two_tasks):
    frame = lb.leaderboard(two_tasks)
    for task, best in (("metamathqa", "full-finetuning/a"), ("commonsense", "ia3/<img src=x>")):
        part = frame[frame["task"] == task]
        assert len(part) == 3
        assert list(part[part["near_best"] == True]["experiment"])[0] == best  # noqa: E712


def test_ranks_per_column_ties_share_a_rank_and_leaders_are_named(two_tasks):
    view = cross_task.build(two_tasks)
    assert view.columns == [("commonsense", None), ("commonsense", "boolq"), ("commonsense", "piqa"), ("metamathqa", None)]
    ranks = {e: {c: cell.rank for c, cell in cells.items()} for e, cells in view.rows.items()}
    assert ranks["full-finetuning/a"][("metamathqa", None)] == 1 and ranks["full-finetuning/a"][("commonsense", None)] == 3
    assert ranks["ia3/<img src=x>"][("commonsense", "boolq")] == 1
    assert {r[("commonsense", "piqa")] for r in ranks.values()} == {1}  # a tie: everyone first
    assert view.leaders()[("metamathqa", None)] == ["full-finetuning/a"]
    # the commonsense headline's interval is that of a mean over two sets, not one pooled proportion
    cell = view.rows["lora/b"][("commonsense", None)]
    assert cell.lo < cell.accuracy < cell.hi
    text = cross_task.render_text(view)
    assert "leads:" in text and "metamathqa: full-finetuning/a" in text


def test_the_reports_heat_map_escapes_names_and_colours_by_rank(two_tasks):
    page = html_report.build_report(two_tasks)
    assert 'id="cross-task-table"' in page and "<img src=x>" not in page and "&lt;img src=x&gt;" in page
    assert page.count('class="rank-cell" data-rank="1"') >= 4  # a first in every column (piqa: three)
    assert "hsl(120, 60%, 82%)" in page and "hsl(0, 60%, 82%)" in page  # first green, last red


def test_one_task_says_what_the_view_needs(make_result, write_run, tmp_path):
    write_run(tmp_path / "lora--a.json", make_result("lora/a", 0.5))
    page = html_report.build_report(lb.load_runs([tmp_path]))
    assert "cross-task-table" not in page and "two or more tasks" in page
