"""The HTML report: one self-contained file (data, script and style inlined; nothing fetched).

Python computes everything that needs the result schema or statistics (the leaderboard, the
formatted cells, the Pareto fronts of every pair of axes, the learning curves, the family
colours) and embeds it as one JSON block; `report_assets/report.js` only draws it (with the axis
ticks of `report_assets/axes.js`). That keeps a single implementation of each rule, and the
script free of anything to get wrong twice.

Escaping, because experiment names and error messages come from files anyone can write:
- the JSON block escapes `<`, `>` and `&` as \\u003c \\u003e \\u0026 (and U+2028/2029), so no
  `</script>` or `<!--` can end or bend the block: the browser never sees one;
- the script inserts every such string with `textContent` / `setAttribute`, never `innerHTML`;
- the page's Content-Security-Policy allows only the one inline script, by its sha256, and no
  network access at all (`default-src 'none'`): an injected script would not run, and the page
  provably works offline.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from datetime import datetime, timezone
from importlib import resources
from itertools import permutations
from typing import Any, Sequence

from peftbench.analysis import cross_task, tuned
from peftbench.analysis import leaderboard as compare
from peftbench.analysis.capability_html import capability_section
from peftbench.experiment.tuning import budget_summary
from peftbench.terminal import counted

# Leaderboard columns of the report, in order; those empty in every row are left out.
TABLE_COLUMNS = (
    "family", "variant", "experiment", "overrides", "test_acc", "near_best", "test_acc_flex", "forgetting",
    "mem_max", "mem_avg", "mem_99", "cpu_rss", "train_time", "total_time", "tokens_per_s",
    "file_size", "trainable_params", "trainable_pct", "tune_budget", "status",
)
FAILURE_COLUMNS = ("experiment", "family", "status", "created_at", "superseded", "error", "path")
# Preferred default axes of the Pareto plot: the first one present wins.
DEFAULT_X = ("mem_max", "cpu_rss", "train_time", "trainable_params")
DEFAULT_Y = ("test_acc", "test_acc_flex", "valid_acc")
DEFAULT_CURVES = 5  # experiments whose learning curves are drawn at first (the best ones)


def family_colours(families: Sequence[str]) -> dict[str, str]:
    """A distinct colour per family: hues 137.5 degrees apart (the golden angle) never repeat
    and stay far apart for the first few dozen; two lightness levels separate neighbours more."""
    return {name: f"hsl({(i * 137.508) % 360:.0f}, 62%, {44 if i % 2 == 0 else 58}%)"
            for i, name in enumerate(sorted(set(families)))}


def report_data(runs: Sequence[compare.Run], sources: Sequence[str] = ()) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able values."""
    frame = compare.leaderboard(runs)
    rows = compare.records(frame)
    table = [c for c in TABLE_COLUMNS if any(r[c] is not None for r in rows if r["ranked"])]
    if len({r["task"] for r in rows}) > 1:  # results of several tasks: say which task each row is
        table.insert(table.index("experiment") + 1 if "experiment" in table else 0, "task")
    axes = [c.name for c in compare.COLUMNS
            if c.direction and sum(1 for r in rows if r["ranked"] and r[c.name] is not None) >= 1]
    ranked_idx = [i for i, r in enumerate(rows) if r["ranked"]]
    columns = {c.name: {"label": c.label, "fmt": c.fmt, "direction": c.direction, "help": c.help}
               for c in compare.COLUMNS}
    view = cross_task.build(runs, frame)
    out_rows = []
    for i, row in enumerate(rows):
        display = {c.name: compare.format_value(c, row.get(c.name), row) for c in compare.COLUMNS}
        out_rows.append({"id": i, "values": row, "display": display})
    return {
        "title": "peftbench report",
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": [str(s) for s in sources],
        "columns": columns,
        "table_columns": table,
        "failure_columns": list(FAILURE_COLUMNS),
        "axes": axes,
        "default_x": next((a for a in DEFAULT_X if a in axes), axes[0] if axes else None),
        "default_y": next((a for a in DEFAULT_Y if a in axes), axes[-1] if axes else None),
        "rows": out_rows,
        "fronts": _fronts(rows, ranked_idx, axes),
        "families": family_colours([r["family"] for r in rows]),
        "curves": _curves(runs),
        "tuning": _tuning(runs),
        "default_curves": [r["experiment"] for r in rows if r["ranked"] and r["test_acc"] is not None][:DEFAULT_CURVES],
        "cross_task": cross_task.to_records(view),
        "cross_task_columns": [cross_task.column_label(c) for c in view.columns],
        "cross_task_tasks": view.tasks,
        "cross_task_leads": {cross_task.column_label(c): names for c, names in view.leaders().items()},
    }


def cross_task_section(data: dict[str, Any]) -> str:
    """The cross-task view as a heat map: one row per experiment, one column per task (and per
    set of a task with several), each cell coloured by its rank in the column (green: first,
    red: last) and holding the accuracy, its interval and the rank. Rendered here, not by the
    script: it is a table, and every text in it is escaped."""
    records, columns = data.get("cross_task") or [], data.get("cross_task_columns") or []
    if len(data.get("cross_task_tasks") or []) < 2:
        return ('<p class="note">These results hold one task. With results of two or more tasks '
                '(<code>peftbench report SUITE_A SUITE_B</code>) this section shows whether each method\'s rank '
                'holds from one task to another.</p>')
    worst = {c: max((r[c]["rank"] for r in records if r.get(c)), default=1) for c in columns}

    def colour(rank: int, column: str) -> str:
        share = 0.0 if worst[column] <= 1 else (rank - 1) / (worst[column] - 1)
        return f"hsl({120 * (1 - share):.0f}, 60%, 82%)"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["experiment", "method", *columns])
    body = []
    for record in records:  # in cross_task.ordered order
        cells = [f"<td>{html.escape(record['experiment'])}</td>", f"<td>{html.escape(record.get('method') or '')}</td>"]
        for c in columns:
            cell = record.get(c)
            if not cell:
                cells.append('<td class="empty">&ndash;</td>')
                continue
            interval = "" if cell["lo"] is None else f" [{100 * cell['lo']:.1f}, {100 * cell['hi']:.1f}]"
            cells.append(f'<td class="rank-cell" data-rank="{cell["rank"]}" style="background:{colour(cell["rank"], c)}">'
                         f'{100 * cell["accuracy"]:.1f}%{html.escape(interval)} <b>#{cell["rank"]}</b></td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    leads = [f"<li><b>{html.escape(c)}</b>: {html.escape(', '.join(names) or 'none')}</li>"
             for c, names in data["cross_task_leads"].items()]
    return (f'<p class="note">Test accuracy with its 95% interval and the rank within each column (#1 = best; '
            f'green: first, red: last). Rows are experiments, matched by name across suites, sorted by their mean '
            f'rank. A method whose colour changes along its row ranks differently from task to task.</p>'
            f'<div class="table-wrap"><table id="cross-task-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div><p>Leads:</p><ul id="cross-task-leads">{"".join(leads)}</ul>')


def _fronts(rows: list[dict[str, Any]], ranked_idx: list[int], axes: list[str]) -> dict[str, list[int]]:
    """Row ids on the Pareto front of every ordered pair of axes, keyed "x|y"; each task's rows
    have a front of their own (the script draws one line per task)."""
    by_task: dict[str, list[int]] = {}
    for i in ranked_idx:
        by_task.setdefault(rows[i]["task"], []).append(i)
    fronts = {}
    for x, y in permutations(axes, 2):
        fronts[f"{x}|{y}"] = []
        for ids in by_task.values():
            xs = [rows[i][x] if rows[i][x] is not None else float("nan") for i in ids]
            ys = [rows[i][y] if rows[i][y] is not None else float("nan") for i in ids]
            mask = compare.pareto_front(xs, ys, compare.column(x).direction == compare.HIGHER,
                                        compare.column(y).direction == compare.HIGHER)
            fronts[f"{x}|{y}"] += [ids[k] for k, on in enumerate(mask) if on]
    return fronts


def _curves(runs: Sequence[compare.Run]) -> dict[str, list[dict[str, Any]]]:
    """Learning curves of the runs behind each leaderboard row, one per seed."""
    out: dict[str, list[dict[str, Any]]] = {}
    for (experiment, overrides), group in compare.newest_per_seed(runs).items():
        if overrides:  # curves are picked by experiment name: a --set row must not replace the plain one's
            continue
        curves = []
        for run in group:
            curve = compare.learning_curve(run.result)
            if curve["step"]:
                curves.append({"seed": compare.run_seed(run), **curve})
        if curves:
            out[experiment] = curves
    return out


def _tuning(runs: Sequence[compare.Run]) -> dict[str, dict[str, Any]]:
    """For each tuned row: its budget and the validation accuracy of every trial of its search."""
    out = {}
    for (experiment, overrides), group in compare.newest_per_seed(runs).items():
        if overrides:  # a --set run of a tuned experiment is not what the search chose
            continue
        record = tuned.record_for(group[-1].path, experiment)
        if record is not None:
            out[experiment] = {"budget": budget_summary(record), "base": record.get("experiment"),
                               "trials": tuned.trial_points(record)}
    return out


def embed_json(obj: Any) -> str:
    """JSON that is safe inside <script type="application/json">: no `<`, `>` or `&` appears
    literally (JSON allows them only inside strings, where \\uXXXX means the same), so neither
    `</script>` nor `<!--` can occur. U+2028/2029 are escaped for old parsers."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def _asset(name: str) -> str:
    return resources.files("peftbench.analysis").joinpath("report_assets", name).read_text(encoding="utf-8")


def render_html(data: dict[str, Any], title: str | None = None,
                capabilities: Sequence[dict[str, Any]] | None = None) -> str:
    """The page: static skeleton, inlined style, the data block and the drawing script.
    capabilities: the suite's cached capability rows (capabilities.matrix.cached_rows), or None."""
    title = title or data["title"]
    data = {**data, "title": title}
    # one inline script: the axes' pure functions, then the drawing that uses them
    script, style = _asset("axes.js") + "\n" + _asset("report.js"), _asset("report.css")
    if "</script" in script.lower() or "<!--" in script:
        raise ValueError("axes.js and report.js must not contain '</script' or '<!--': they are inlined")  # a packaging bug
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:"
    n_ranked = sum(1 for r in data["rows"] if r["values"]["ranked"])
    n_failed = len(data["rows"]) - n_ranked
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
{style}
</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<p class="meta">{counted(n_ranked, "experiment")}, {counted(n_failed, "failed or cancelled run")}. Generated {html.escape(data["generated_at"])}
from {html.escape(", ".join(data["sources"]) or "result files")}.</p>
<nav><a href="#leaderboard">Leaderboard</a> <a href="#cross-task">Across tasks</a> <a href="#pareto">Pareto front</a> <a href="#curves">Learning curves</a> <a href="#tuning">Tuning</a> <a href="#failures">Failed runs</a> <a href="#capabilities">Capabilities</a></nav>
</header>
<main>
<section id="leaderboard">
<h2>Leaderboard</h2>
<p class="note">Click a column header to sort. Test accuracy: the task's headline (GSM8K: strict answer format;
commonsense: the mean over its sets) with its 95% interval (bar: the interval, dot: the accuracy). Rows of different
tasks are never ranked against each other. &#8776;best: not significantly worse than the best run at the 5%
level (exact McNemar on paired predictions, else two-proportion z-test; no multiple-comparison correction).</p>
<div class="table-wrap"><table id="leaderboard-table"></table></div>
</section>
<section id="cross-task">
<h2>Across tasks</h2>
{cross_task_section(data)}
</section>
<section id="pareto">
<h2>Pareto front</h2>
<div class="controls" id="pareto-controls"></div>
<div class="plot" id="pareto-plot"></div>
<div class="legend" id="pareto-legend"></div>
</section>
<section id="curves">
<h2>Learning curves</h2>
<div class="curves-layout">
<div class="picker"><input type="search" id="curve-search" placeholder="filter experiments" aria-label="filter experiments"><div id="curve-list"></div></div>
<div class="curve-plots"><div class="plot" id="curve-valid"></div><div class="plot" id="curve-loss"></div></div>
</div>
</section>
<section id="tuning">
<h2>Tuning</h2>
<p class="note">Rows chosen by <code>peftbench tune</code>: validation accuracy of every trial of the search (validation rows
from the eval dataset's train split; the test set is never used to choose). Filled dot: the choice; a cross: a failed or
cancelled trial, which has no score and is never chosen.</p>
<div id="tuning-body"></div>
</section>
<section id="failures">
<h2>Failed and cancelled runs</h2>
<div id="failures-body"></div>
</section>
<section id="capabilities">
<h2>Capabilities</h2>
{capability_section(capabilities)}
</section>
</main>
<div id="tooltip" role="tooltip" hidden></div>
<script type="application/json" id="peftbench-data">{embed_json(data)}</script>
<script>{script}</script>
</body>
</html>
"""


def build_report(runs: Sequence[compare.Run], sources: Sequence[str] = (), title: str | None = None,
                 capabilities: Sequence[dict[str, Any]] | None = None) -> str:
    return render_html(report_data(runs, sources), title, capabilities)
