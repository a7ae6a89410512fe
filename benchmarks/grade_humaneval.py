"""How long grading HumanEval takes: the 164 canonical solutions, fed in as model outputs
(continuations of the prompt), graded in the sandbox with N workers.

    PYTHONPATH=src .venv/bin/python benchmarks/grade_humaneval.py [--workers 2] [--repeats 3]
        [--data ../shared/data/humaneval/HumanEval.jsonl.gz] [--isolation auto]

Prints, per repeat, the wall time of the 164 items and per item, then the median, with the
isolation used, the CPUs this process may use and the load average before each repeat (the
machine's other work shows there). Every item must pass: a failed one is printed and the script
exits with status 1, since then the figure would not be the time of a full grading.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from peftbench.scoring import humaneval, sandbox

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "humaneval" / "HumanEval.jsonl.gz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=humaneval.default_workers())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--isolation", default="auto", choices=("auto", *sandbox.ISOLATIONS))
    args = parser.parse_args()
    rows = humaneval.load_rows(args.data)
    options = sandbox.SandboxOptions(isolation=args.isolation)
    isolation = sandbox.resolve_isolation(options)  # probed once, outside the timing
    print(f"{len(rows)} items, {args.workers} workers, isolation {isolation}, "
          f"{len(os.sched_getaffinity(0))} CPUs usable")
    walls = []
    for repeat in range(args.repeats):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        grades = humaneval.grade_many([(row["canonical_solution"], row) for row in rows],
                                      workers=args.workers, options=options)
        wall = time.perf_counter() - start
        walls.append(wall)
        failed = [(row["task_id"], g) for row, g in zip(rows, grades) if not g.passed]
        print(f"repeat {repeat + 1}: {wall:.2f} s, {wall / len(rows) * 1000:.0f} ms per item "
              f"(load average before: {load:.1f}); {dict(Counter(g.reason for g in grades))}")
        if failed:
            for task_id, g in failed:
                print(f"  {task_id}: {g.reason}: {g.detail}")
            return 1
    median = statistics.median(walls)
    print(f"median: {median:.2f} s for {len(rows)} items, {median / len(rows) * 1000:.0f} ms per item, "
          f"{args.workers} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
