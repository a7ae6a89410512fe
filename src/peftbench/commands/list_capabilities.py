"""`peftbench list --capabilities`: the capability matrix of a suite's catalog as a table.

The measuring and its cache live in peftbench.capabilities.matrix; this module only prints."""

from __future__ import annotations

import sys
from pathlib import Path

from peftbench.analysis.texttable import format_table
from peftbench.capabilities import matrix
from peftbench.errors import ExitCode
from peftbench.terminal import counted

HEADER = ["experiment", "merge", "unmerge", "multi", "int8", "int4", "trainable", "adapter", "tiny file"]
# the generic reason every int8/int4 cell gives on CPU is said once, below the table
_SAID_ONCE = ("bitsandbytes quantizes on CUDA only",)


def run(suite: Path, refresh: bool = False) -> int:
    import time

    started = time.perf_counter()
    rows, measured = matrix.capability_rows(
        suite, log=lambda msg: print(msg, file=sys.stderr, flush=True), refresh=refresh)
    seconds = time.perf_counter() - started
    print(format_table(HEADER, [table_row(r) for r in rows], right=[False] * 6 + [True] * 3, rule=True))
    print()
    for line in notes(rows):
        print(line)
    cached = len(rows) - measured
    print(f"{counted(len(rows), 'experiment')}: {measured} measured now, {cached} from the cache ({matrix.cache_dir(suite)}) "
          f"or sharing another experiment's adapter config; {seconds:.1f} s")
    return ExitCode.FAILED if any(r.get("error") for r in rows) else ExitCode.OK


def table_row(row: dict) -> list[str]:
    if row.get("error"):
        return [row["experiment"], "error"] + [""] * (len(HEADER) - 2)
    cells = [row[name]["value"] for name in matrix.CAPABILITIES]
    return [row["experiment"], *cells, human(row.get("trainable")), human_bytes(row.get("adapter_bytes")),
            human_bytes(row.get("tiny_file_size"))]


def notes(rows: list[dict]) -> list[str]:
    """What the columns mean, then why each "no" / "not measured" cell says so (each reason once)."""
    tol = matrix.TOLERANCE
    lines = [f"merge: merge_and_unload() gives the unmerged logits (rtol={tol['rtol']}, atol={tol['atol']}) after "
             f"the adapter's weights were perturbed (N(0, {matrix.PERTURB_STD}^2)); unmerge: merge_adapter() + "
             "unmerge_adapter() restores them; multi: a second adapter loads and switching changes and restores "
             "the logits. Measured on a 2-layer, 64-wide Llama.",
             "trainable, adapter: on the suite's own model, built empty on the meta device; "
             "tiny file: the adapter file on the tiny model."]
    seen: set[str] = set()
    for row in rows:
        if row.get("error"):
            lines.append(f"{row['experiment']}: error: {row['error']}")
            continue
        for name in matrix.CAPABILITIES:
            cell = row[name]
            if cell["value"] in (matrix.YES, matrix.NA):
                continue
            if cell["detail"].startswith(_SAID_ONCE):
                key = cell["detail"]
                if key not in seen:
                    seen.add(key)
                    lines.append(f"int8, int4: {cell['value']}: {cell['detail']}")
                continue
            lines.append(f"{row['experiment']}: {name}: {cell['value']}: {cell['detail']}")
    unmeasured: dict[str, list[str]] = {}
    for row in rows:
        if row.get("suite_model_detail"):
            unmeasured.setdefault(row["suite_model_detail"], []).append(row["experiment"])
    for detail, names in unmeasured.items():
        which = "every experiment" if len(names) == len(rows) else ", ".join(names)
        lines.append(f"trainable, adapter: n/a for {which}: {detail}")
    return lines


def _scaled(n, units, scaled_format: str, plain_format: str) -> str:
    """`n` in the largest of `units` ((name, size), largest first) it reaches; "n/a" for None."""
    if n is None:
        return "n/a"
    for unit, size in units:
        if n >= size:
            return scaled_format.format(n / size, unit)
    return plain_format.format(n)


def human(n) -> str:
    return _scaled(n, (("B", 1e9), ("M", 1e6), ("K", 1e3)), "{:.2f}{}", "{}")


def human_bytes(n) -> str:
    return _scaled(n, (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)), "{:.1f} {}", "{} B")
