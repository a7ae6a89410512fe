"""The sandbox's guarantees, one program each: what the program sees (its uid, folder, environment,
file descriptors, files of the machine), the network, the limits, how it ended, cancellation, and
what happens where no isolation is available. The hostile programs of a model are graded in
test_humaneval_hostile.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from peftbench.errors import UserError
from peftbench.scoring import sandbox
from peftbench.scoring.sandbox import Limits, SandboxOptions

SMALL = Limits(cpu_s=2, wall_s=60, processes=8)


def run(source: str, isolation: str, limits: Limits = SMALL, **options) -> sandbox.Outcome:
    return sandbox.run(source, options=SandboxOptions(isolation=isolation, limits=limits, **options))


def test_program_runs_in_its_own_folder_with_a_clean_environment_and_stdin_closed(isolation, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "PYTHONPATH"):
        monkeypatch.setenv(name, "fake-secret-value")
    outcome = run("import json, os, sys\n"
                  "print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), 'uid': os.getuid(),\n"
                  "                  'stdin': sys.stdin.read(), 'files': os.listdir('.'),\n"
                  "                  'fds': sorted(int(fd) for fd in os.listdir('/proc/self/fd'))}))\n", isolation)
    assert outcome.exit_code == 0, outcome
    seen = json.loads(outcome.stdout)
    assert "fake-secret-value" not in outcome.stdout.decode()
    assert set(seen["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PWD"}, seen["env"]
    assert seen["env"]["HOME"] == seen["env"]["TMPDIR"] == seen["cwd"]
    assert seen["files"] == ["main.py"]
    assert seen["stdin"] == ""
    # 0-2, the secret (3), the report pipe (4), and the one listdir had open: nothing of the caller's
    assert seen["fds"][:5] == [0, 1, 2, 3, 4] and len(seen["fds"]) == 6, seen["fds"]
    assert outcome.isolation == isolation
    if os.geteuid() == 0:
        assert seen["uid"] == outcome.uid and outcome.uid in sandbox.SANDBOX_UIDS


def test_secret_comes_on_fd_3_and_what_is_written_on_fd_4_comes_back(isolation):
    outcome = sandbox.run("import os\nsecret = os.read(3, 100)\nos.write(4, secret[::-1])\nraise SystemExit(3)",
                          secret="abc123", options=SandboxOptions(isolation=isolation, limits=SMALL))
    assert (outcome.report, outcome.exit_code, outcome.signal) == (b"321cba", 3, None)


def test_a_signal_that_ends_the_program_is_reported_as_such(isolation):
    outcome = run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", isolation)
    assert (outcome.exit_code, outcome.signal) == (None, signal.SIGSEGV)


def test_files_of_the_caller_are_out_of_reach(isolation, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    token = home / "token"
    token.write_text("hf_FAKE_TOKEN_0123456789")
    token.chmod(0o644)
    real_bashrc = os.path.expanduser("~/.bashrc")
    outcome = run("import json, os\nfound = {}\n"
                  f"for path in [{str(token)!r}, {real_bashrc!r}]:\n"
                  "    try:\n        found[path] = open(path).read()\n"
                  "    except OSError as error:\n        found[path] = type(error).__name__\n"
                  "print(json.dumps(found))", isolation)
    found = json.loads(outcome.stdout)
    assert found[str(token)] in ("FileNotFoundError", "PermissionError"), found
    assert found[real_bashrc] in ("FileNotFoundError", "PermissionError"), found
    assert "hf_FAKE" not in outcome.stdout.decode() + outcome.stderr.decode()


def test_bwrap_shows_no_file_of_the_machine_outside_the_system_and_the_interpreter(outside_folder):
    if sandbox.isolation_problem("bwrap"):
        pytest.skip(f"bwrap does not work on this machine: {sandbox.isolation_problem('bwrap')}")
    folder = outside_folder
    token = folder / "token"
    token.write_text("hf_FAKE_TOKEN_world_readable")
    token.chmod(0o644)
    outcome = run(f"import os\nprint(os.path.exists({str(token)!r}), os.path.exists({str(folder)!r}), "
                  "sorted(os.listdir('/')))", "bwrap")
    exists_token, exists_folder, _ = outcome.stdout.decode().split(" ", 2)
    assert (exists_token, exists_folder) == ("False", "False"), outcome.stdout


def test_nothing_outside_the_working_directory_is_writable(isolation, outside_folder, tmp_path):
    outside = [outside_folder, tmp_path]
    for folder in outside:
        os.chmod(folder, 0o777)  # even a folder anyone may write to
    outcome = run("import json, os\nresult = {}\n"
                  f"for folder in {[str(f) for f in outside]!r} + [os.getcwd()]:\n"
                  "    try:\n        open(os.path.join(folder, 'written'), 'w').write('x')\n"
                  "        result[folder] = 'written'\n"
                  "    except OSError as error:\n        result[folder] = type(error).__name__\n"
                  "print(json.dumps(result))", isolation)
    result = json.loads(outcome.stdout)
    assert result.pop("/tmp") == "written"
    assert all(v != "written" for v in result.values()), result
    assert not any((folder / "written").exists() for folder in outside)


def test_no_network_the_listener_on_localhost_sees_no_connection(isolation):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        outcome = run("import socket\ntry:\n"
                      f"    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n    print('connected')\n"
                      "except OSError as error:\n    print(type(error).__name__)", isolation)
        assert outcome.stdout.strip() in (b"ConnectionRefusedError", b"OSError"), outcome
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_the_cpu_limit_ends_a_busy_program(isolation):
    outcome = run("while True:\n    pass", isolation)
    assert outcome.signal in (signal.SIGXCPU, signal.SIGKILL) and not outcome.timed_out, outcome


def test_the_wall_time_limit_ends_a_sleeping_program(isolation, sandbox_processes):
    outcome = run("import time\ntime.sleep(600)", isolation, Limits(wall_s=2))
    assert outcome.timed_out and outcome.exit_code is None
    assert sandbox_processes.left() == []


def test_the_address_space_limit_makes_a_large_allocation_fail(isolation):
    outcome = run("try:\n    bytearray(50 * 10**9)\nexcept MemoryError:\n    print('MemoryError')", isolation)
    assert outcome.stdout == b"MemoryError\n"


def test_output_past_the_cap_kills_the_program_and_only_the_cap_is_kept(isolation, sandbox_processes):
    limits = Limits(cpu_s=60, wall_s=120, output_bytes=100_000)
    outcome = run("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(10 * 1024):\n    sys.stdout.write(chunk)",
                  isolation, limits)
    assert outcome.output_exceeded and not outcome.timed_out
    assert len(outcome.stdout) == 100_000
    assert sandbox_processes.left() == []


def test_a_file_larger_than_the_limit_cannot_be_written(isolation):
    outcome = run("try:\n    open('big', 'wb').write(b'x' * (20 << 20))\nexcept OSError as error:\n"
                  "    print(error.errno)", isolation, Limits(file_bytes=1 << 20))
    assert outcome.stdout == b"27\n"  # EFBIG


def test_the_process_limit_stops_forking(isolation, sandbox_processes):
    outcome = run("import os, time\nchildren = 0\ntry:\n    for _ in range(100):\n"
                  "        if os.fork() == 0:\n            time.sleep(60)\n            os._exit(0)\n"
                  "        children += 1\nexcept OSError:\n    pass\nprint(children)", isolation,
                  Limits(processes=5, wall_s=60))
    assert 0 < int(outcome.stdout) < 5, outcome
    assert sandbox_processes.left() == []


def test_cancel_kills_a_running_sandbox(isolation, sandbox_processes):
    cancel, raised = threading.Event(), []

    def target():
        try:
            sandbox.run("import time\ntime.sleep(600)", options=SandboxOptions(isolation=isolation), cancel=cancel)
        except sandbox.Cancelled as error:
            raised.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + (60 if os.geteuid() == 0 else 1)  # without root: no uid to watch
    while not (sandbox_processes.uids and sandbox.processes_of(sandbox_processes.uids[-1])) and time.monotonic() < deadline:
        time.sleep(0.05)
    cancel.set()
    thread.join(timeout=60)
    assert not thread.is_alive() and len(raised) == 1
    assert sandbox_processes.left() == []


def test_auto_without_namespaces_refuses_unless_weak_sandboxes_are_allowed(monkeypatch):
    monkeypatch.setattr(sandbox, "isolation_problem",
                        lambda isolation, python=None: "" if isolation == "none" else "no namespaces here")
    with pytest.raises(UserError, match="bwrap: no namespaces here.*allow_weak_sandbox"):
        sandbox.resolve_isolation(SandboxOptions())
    with pytest.raises(UserError, match="allow_weak_sandbox"):
        sandbox.run("print(1)")
    assert sandbox.resolve_isolation(SandboxOptions(allow_weak_sandbox=True)) == "none"
    with pytest.raises(UserError, match="'bwrap' does not work on this machine \\(no namespaces here\\)"):
        sandbox.resolve_isolation(SandboxOptions(isolation="bwrap"))


def test_an_unknown_isolation_is_a_user_error():
    with pytest.raises(UserError, match="'docker' is unknown"):
        SandboxOptions(isolation="docker")


def test_bad_limits_are_named():
    with pytest.raises(ValueError, match="cpu_s=0.*wall_s=-1"):
        Limits(cpu_s=0, wall_s=-1)


def test_a_sandbox_that_cannot_start_raises_instead_of_failing_the_program(monkeypatch):
    if sandbox.isolation_problem("bwrap"):
        pytest.skip(f"bwrap does not work on this machine: {sandbox.isolation_problem('bwrap')}")
    monkeypatch.setattr(sandbox, "_bwrap_command", lambda *args: ["bwrap", "--no-such-option", "true"])
    with pytest.raises(sandbox.SandboxError, match="did not start"):
        run("print(1)", "bwrap")


def _world_readable_python() -> str:
    """An interpreter the weak sandbox's own uid may run (as root, peftbench's own may sit under
    /root, which that uid cannot enter)."""
    if os.geteuid() != 0:
        return sandbox.python_executable()
    for python in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if shutil.which(python) and all(os.stat(p).st_mode & 0o001 for p in _parents(os.path.realpath(python))):
            return python
    pytest.skip("no Python that an unprivileged uid can run (needed by the weak sandbox as root)")


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) or "/" for i in range(1, len(parts))]


def test_the_weak_sandbox_keeps_its_limits_and_records_itself(sandbox_processes):
    python = _world_readable_python()
    busy = run("while True:\n    pass", "none", python=python)
    assert busy.isolation == "none" and busy.signal in (signal.SIGXCPU, signal.SIGKILL)
    memory = run("try:\n    bytearray(50 * 10**9)\nexcept MemoryError:\n    print('MemoryError')", "none", python=python)
    assert memory.stdout == b"MemoryError\n"
    escaped = run("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n", "none", python=python)
    assert escaped.exit_code == 0
    if os.geteuid() == 0:  # the uid sweep finds what left the session; see the module docstring
        assert sandbox_processes.left() == []


_AS_A_USER = r"""
import json, sys
from peftbench.scoring import sandbox
folder = sys.argv[1]
program = (
    "import json, os, socket\n"
    "seen = {'caps': open('/proc/self/status').read().split('CapEff:')[1].split()[0]}\n"
    f"try:\n    open({folder!r} + '/written', 'w')\n    seen['write'] = 'written'\n"
    "except OSError as error:\n    seen['write'] = type(error).__name__\n"
    "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=2)\n    seen['network'] = 'connected'\n"
    "except OSError as error:\n    seen['network'] = type(error).__name__\n"
    "print(json.dumps(seen))\n")
seen = {}
for isolation in ("bwrap", "unshare"):
    problem = sandbox.isolation_problem(isolation)
    seen[isolation] = problem or json.loads(sandbox.run(program, options=sandbox.SandboxOptions(isolation=isolation)).stdout)
print(json.dumps(seen))
"""


def test_without_root_the_namespaces_still_hold(outside_folder, repo_root):
    """Run by a user (nobody), the sandbox uses a user namespace: no capabilities inside, no
    network, and a folder that user owns is still not writable from inside."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to become another user")
    python = _world_readable_python()
    if not all(os.stat(p).st_mode & 0o001 for p in _parents(str(repo_root / "src" / "peftbench"))):
        pytest.skip(f"{repo_root} is not readable by other users")
    folder = outside_folder
    os.chown(folder, 65534, 65534)
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", _AS_A_USER,
                           str(folder)], capture_output=True, text=True, timeout=300, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo_root / "src"), "HOME": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    working = {name: found for name, found in seen.items() if isinstance(found, dict)}
    assert working, f"no namespace isolation works for a user here: {seen}"
    for name, found in working.items():
        assert found == {"caps": "0000000000000000", "write": found["write"], "network": found["network"]}, (name, found)
        assert found["write"] != "written" and found["network"] != "connected", (name, found)
    assert not (folder / "written").exists()


def test_a_root_mapped_from_a_user_runs_programs_as_itself(repo_root):
    """In a user namespace where only root exists (a rootless container), no uid of the sandbox's
    range can be switched to: the program runs as that root, still isolated."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare not found")
    code = ("import json, os\nfrom peftbench.scoring import sandbox\n"
            "outcome = sandbox.run('import os\\nprint(os.getuid())')\n"
            "print(json.dumps([os.geteuid(), outcome.isolation, outcome.uid, outcome.stdout.decode()]))")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(repo_root / "src")})
    if proc.returncode != 0 and "unshare failed" in proc.stderr:
        pytest.skip(f"cannot create a user namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    euid, isolation, uid, printed = json.loads(proc.stdout)
    assert (euid, uid, printed) == (0, None, "0\n")
    assert isolation in ("bwrap", "unshare")
