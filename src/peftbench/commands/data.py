"""`peftbench data fetch TASK`: download a task's data ahead of time, verified, into the cache."""

from __future__ import annotations

import argparse
import sys

from peftbench import tasks
from peftbench.errors import ExitCode
from peftbench.terminal import printable

HELP = "download a task's data ahead of time (verified) so that runs need no network"
DESCRIPTION = """\
peftbench data fetch TASK

Download the data of TASK that runs would otherwise miss offline, check each file against the
hash it is pinned to, and write it atomically into the cache ($PEFTBENCH_CACHE, else
~/.cache/peftbench). A file already there with the right hash is not downloaded again; a download
that does not match is refused, nothing written for it, with the expected and the found hash.

  commonsense   LLM-Adapters' eight test sets and their train splits (the validation pool), at a
                pinned commit, each checked against its git blob sha1. The training set
                (zwhe99/commonsense_170k) loads from the Hugging Face Hub on first use.
Other tasks load their data from the Hub on first use (metamathqa) or generate it (demo:word-problems).
"""


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download a task's data into the cache, verified")
    fetch.add_argument("task", metavar="TASK", help=f"the task ({', '.join(tasks.names())})")


def run(args: argparse.Namespace) -> int:
    task = tasks.get(args.task)
    task.fetch(lambda line: print(printable(line), file=sys.stderr, flush=True))
    return ExitCode.OK
