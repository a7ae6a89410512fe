"""The capability matrix as a static HTML table for the report.

Rows are those `peftbench list --capabilities` measured and cached
(peftbench.capabilities.matrix.cached_rows): plain dicts, so this module needs no torch. The
table is rendered here, every string escaped, with each cell's reason in its `title` (a hover
tooltip without script)."""

from __future__ import annotations

import html
from typing import Any, Sequence

# (row key, column label); the capability keys are peftbench.capabilities.matrix.CAPABILITIES
CAPABILITY_COLUMNS = (("mergeable", "merge"), ("unmerge", "unmerge"), ("multi_adapter", "several adapters"),
                      ("int8", "int8 base"), ("int4", "int4 base"))
MISSING = ("<p class=\"note\">Not measured for this suite yet: run <code>peftbench list --capabilities SUITE</code> "
           "(about two minutes on a CPU, cached afterwards), then write the report again.</p>")


def _count(n: Any, unit: str = "") -> str:
    if not isinstance(n, (int, float)):
        return "n/a"
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {suffix}{unit}".rstrip()
    return f"{n} {unit}".rstrip()


def capability_section(rows: Sequence[dict[str, Any]] | None, tolerance: str = "") -> str:
    """The body of the report's Capabilities section: a note and the table, or how to measure."""
    if not rows:
        return MISSING
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in CAPABILITY_COLUMNS)
    lines = [f"<p class=\"note\">Measured by <code>peftbench list --capabilities</code> on a 2-layer, 64-wide Llama "
             f"after the adapter's weights were perturbed (a fresh adapter is often the identity and would prove "
             f"nothing){html.escape(tolerance)}. Hover a cell for the reason. Trainable parameters and adapter "
             f"size: on the suite's own model, built empty on the meta device.</p>",
             "<div class=\"table-wrap\"><table id=\"capabilities-table\"><thead><tr><th>experiment</th>"
             f"{head}<th>trainable</th><th>adapter</th></tr></thead><tbody>"]
    for row in rows:
        cells = [f"<td>{html.escape(str(row.get('experiment', '')))}</td>"]
        if row.get("error"):
            span = len(CAPABILITY_COLUMNS) + 2
            cells.append(f"<td colspan=\"{span}\">error: {html.escape(str(row['error']))}</td>")
        else:
            for key, _ in CAPABILITY_COLUMNS:
                cell = row.get(key) or {}
                value, detail = str(cell.get("value", "")), str(cell.get("detail", ""))
                css = "cap-" + value.replace(" ", "-").replace("/", "")
                cells.append(f"<td class=\"{html.escape(css)}\" title=\"{html.escape(detail)}\">{html.escape(value)}</td>")
            cells.append(f"<td class=\"num\">{html.escape(_count(row.get('trainable')))}</td>")
            cells.append(f"<td class=\"num\">{html.escape(_count(row.get('adapter_bytes'), 'B'))}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)
