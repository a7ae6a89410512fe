"""Plain-text tables for the terminal, shared by every command that prints one."""

from __future__ import annotations

from peftbench.terminal import printable


def format_table(header: list[str], rows: list[list[str]], right: list[bool] | None = None,
                 rule: bool = False, pad_last: bool = True) -> str:
    """Columns padded to their widest cell, two spaces apart, trailing blanks stripped.

    right: per column, align right (numbers); rule: a line of dashes under the header;
    pad_last=False leaves the last column (free text such as a reason) out of the width
    computation, so one long reason does not widen the table."""
    # Cells hold experiment names, which are folder names: no control character reaches the terminal.
    rows = [[printable(cell) for cell in row] for row in rows]
    right = right or [False] * len(header)
    measured = len(header) if pad_last else len(header) - 1
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(measured)]
    widths += [0] * (len(header) - measured)

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    lines = [line(header)]
    if rule:
        lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + [line(r) for r in rows])
