"""Fixtures of the sandbox and HumanEval tests.

- `isolation`: each namespace isolation ("bwrap", "unshare") that works on this machine; a test
  that takes it runs once per isolation and is skipped, with the reason, for one that does not.
- `sandbox_processes`: what is left of the sandboxes a test ran: `.left()` lists the processes
  still alive after a grace for dying ones (as root, every process of the uids the sandboxes ran
  as; otherwise the processes descended from this test process).
- `outside_folder`: a fresh folder outside /tmp and any home (in the repository's .pytest_cache),
  removed after the test: where a sandboxed program must not reach.
- `process_children`: a function that maps each pid of the machine to its children's pids.
- `add_row`: a HumanEval-shaped row small enough to read in a test (`add(a, b)`).
- `humaneval_rows`: HumanEval's 164 rows from ../shared/data/humaneval (skipped when absent).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid

import pytest

from peftbench.scoring import humaneval, sandbox

NAMESPACE_ISOLATIONS = ("bwrap", "unshare")


@pytest.fixture(params=NAMESPACE_ISOLATIONS)
def isolation(request) -> str:
    problem = sandbox.isolation_problem(request.param)
    if problem:
        pytest.skip(f"sandbox isolation {request.param!r} does not work on this machine: {problem}")
    return request.param


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(pid))
    return children


class SandboxProcesses:
    def __init__(self):
        self.uids: list[int] = []

    def left(self, wait_s: float = 30.0) -> list[int]:
        """The processes still alive, once none is or after `wait_s` (a killed process needs a
        moment of CPU to exit, longer on a loaded machine)."""
        deadline = time.monotonic() + wait_s
        while (alive := self._alive()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return alive

    def _alive(self) -> list[int]:
        if self.uids:
            return [pid for uid in self.uids for pid in sandbox.processes_of(uid)]
        children, found, todo = _children(), [], [os.getpid()]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found


@pytest.fixture
def sandbox_processes(monkeypatch) -> SandboxProcesses:
    record = SandboxProcesses()
    fresh_uid = sandbox._fresh_uid

    def recording_fresh_uid() -> int:
        uid = fresh_uid()
        record.uids.append(uid)
        return uid

    monkeypatch.setattr(sandbox, "_fresh_uid", recording_fresh_uid)
    return record


@pytest.fixture
def outside_folder(request):
    folder = request.config.cache.mkdir(f"sandbox-{uuid.uuid4().hex[:12]}")
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def process_children():
    return _children


@pytest.fixture
def add_row() -> dict:
    return {"task_id": "Test/0", "entry_point": "add",
            "prompt": 'def add(a: int, b: int) -> int:\n    """The sum of a and b.\n    >>> add(2, 3)\n    5\n    """\n',
            "canonical_solution": "    return a + b\n",
            "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}


@pytest.fixture(scope="session")
def humaneval_rows(shared_data) -> list[dict]:
    return humaneval.load_rows(shared_data("humaneval", "HumanEval.jsonl.gz"))
