"""`peftbench report`: the leaderboard, Pareto plot, learning curves and failures as one HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path

from peftbench.analysis import html_report as report
from peftbench.analysis import leaderboard as compare
from peftbench.capabilities import matrix
from peftbench.commands.options import add_result_reading_options
from peftbench.errors import ExitCode, UserError
from peftbench.experiment.config import DEFAULTS_FILE, EXPERIMENTS_DIR
from peftbench.experiment.suite import state_dir
from peftbench.fs import atomic_write_bytes

HELP = "write a self-contained HTML report (leaderboard, Pareto plot, learning curves, failures)"
DESCRIPTION = """\
Write one HTML file that works offline: data, script and style are inlined, nothing is fetched
(the page's Content-Security-Policy forbids any network access). It holds:

  - the sortable leaderboard, test accuracy with its 95% Wilson interval and the runs not
    significantly worse than the best (same rules as `peftbench compare --help`);
  - a Pareto scatter with selectable axes (log scale optional), the front drawn, points
    coloured by method family (click the legend to hide a family), hover for details;
  - learning curves (validation accuracy and train loss against step) of chosen experiments;
  - the failed and cancelled runs with their errors;
  - for a suite folder given, the capability matrix `peftbench list --capabilities` measured
    and cached (merge, unmerge, several adapters, int8/int4 base); never measured here.

Inputs are read as by `peftbench compare`: suite folders, folders of result files, or files;
an unreadable file is skipped with a warning on stderr (an error with --strict).

Without -o the report goes to <suite>/.peftbench/report.html (the first suite folder given; that
folder is ignored by git and by the check that sends results made from a changed tree to
temporary_results/), else to report.html in the current folder; the path is printed.

Screenshot for a quick look (Debian package chromium):
  peftbench report ../shared/data/peft-results -o report.html
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1500,2600 \\
      --user-data-dir="$(mktemp -d)" --screenshot=report.png "file://$PWD/report.html"
More in docs/comparing.md.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", default=["."], metavar="SUITE_OR_RESULT",
                        help="suite folders, folders of result files, or result files (default: .)")
    parser.add_argument("-o", "--output", help="HTML file to write (default: <suite>/.peftbench/report.html for the "
                                              "first suite folder given, else report.html in the current folder)")
    parser.add_argument("--title", default=None, help="page title (default: peftbench report)")
    add_result_reading_options(parser)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else default_output(args.paths)
    _check_output(output)  # before reading the results: a typo in -o costs no time
    runs = compare.load_runs(args.paths, include_temporary=args.include_temporary, strict=args.strict)
    page = report.build_report(runs, sources=args.paths, title=args.title, capabilities=_capabilities(args.paths))
    try:
        atomic_write_bytes(output, page.encode("utf-8"))  # fs gives it shared permissions (0666 less umask)
    except OSError as exc:
        # What only the write can tell: a folder that takes no files (/proc, read-only, full disk).
        # An existing report at that path is left as it was.
        raise UserError(_cannot_write(output, exc.strerror or str(exc))) from None
    print(f"wrote {output} ({len(runs)} result files, {len(page) / 1024:.0f} KiB)")
    return ExitCode.OK


def _check_output(output: Path) -> None:
    """UserError when `output` cannot be a file: it is a folder, or a part of its path is a file."""
    if output.is_dir():
        raise UserError(f"{output} is a folder; give a file name, e.g. {output / 'report.html'}")
    existing = output.parent
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(_cannot_write(output, f"{existing} is not a folder"))


def _cannot_write(output: Path, reason: str) -> str:
    return f"cannot write the report to {output}: {reason}; give -o a file in a folder you can write to"


def default_output(paths: list[str]) -> Path:
    """Where the report goes without -o: the state folder of the first suite given, which git and
    the dirty check ignore (an untracked report.html in a suite kept in git would send every later
    result to temporary_results/); report.html in the current folder when no suite is given."""
    suite = next((Path(p) for p in paths if (Path(p) / DEFAULTS_FILE).is_file()), None)
    return state_dir(suite) / "report.html" if suite is not None else Path("report.html")


def _capabilities(paths: list[str]) -> list[dict] | None:
    """The capability rows `peftbench list --capabilities` cached for the suites among `paths`
    (the report reads them, never measures); None when no suite has a complete cache."""
    rows = []
    for path in map(Path, paths):
        if (path / DEFAULTS_FILE).is_file() and (path / EXPERIMENTS_DIR).is_dir():
            rows.extend(matrix.cached_rows(path) or [])
    return rows or None
