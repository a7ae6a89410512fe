"""Run one untrusted Python program in an isolated, resource-limited process.

`run(source, secret=..., options=...)` runs `source` as main.py with the Python that runs
peftbench, or `SandboxOptions.python` (its standard library only: `python -I -S -B`), and returns an `Outcome`: how the
program ended, its output up to a cap, what it wrote on its report pipe, which isolation held it.

Isolation (`Outcome.isolation`; `available_isolation()` names the strongest this machine allows):

* "bwrap" (bubblewrap, Debian package `bubblewrap`): new PID, network, IPC and UTS namespaces; a
  file-system view made of /usr (and /bin, /lib...), the interpreter's own folders, read-only, a
  private /proc and /dev, and a size-limited tmpfs /tmp as the working directory; nothing else of
  the machine (homes, /etc, projects, results) exists inside.
* "unshare" (util-linux): new PID, network, IPC, UTS and mount namespaces; the whole tree
  read-only, /tmp a fresh size-limited tmpfs (the working directory), /home, /root, /run, /mnt,
  /media, /srv, /var/tmp and /dev/shm hidden under empty read-only tmpfs, the interpreter's
  folders mounted back. Other files stay readable as their permissions allow.
* "none": a plain process, with the limits and the uid below but no namespace: the program can
  reach the network and read and write what its uid may. It is used only when asked for by name
  or when `allow_weak_sandbox=True`; otherwise, on a machine without the two above, `run` raises
  `SandboxUnavailable` (a UserError: install bubblewrap, or opt in).

In every mode: the program runs in a session and process group of its own, with stdin closed and
a clean environment (PATH, HOME and TMPDIR pointing at its working directory, LANG; no tokens, no
HF_*, AWS_* or any other variable of the caller). Limits (`Limits`): CPU seconds, wall seconds,
address space, processes, file size, open files, bytes of output kept (past the cap the program is
killed); no new privileges (setuid programs do not elevate) and no capabilities. When peftbench
runs as root the program runs as a uid of its own, drawn at random from SANDBOX_UIDS and owning
no file: it cannot write what root owns, cannot signal the caller or another sandbox, and its
process limit counts only its own processes. Without root (bwrap and unshare then use a user
namespace), or as a root mapped from a user that has no SANDBOX_UIDS (a rootless container), it
runs as the caller's uid, its process limit is the caller's current process count plus
`Limits.processes`, and it can read in its view what the caller can.
After the program ends, or at a limit, or when `cancel` is set, everything it started is killed:
its process group, its PID namespace (bwrap and unshare) and, as root, every process of its uid.
A weak ("none") sandbox run by a user other than root cannot find a process that left its
session; the namespaces do not have that gap.

How it is built: `sandbox_supervisor.py` is the first program in the sandbox; it reads its job
(JSON) on stdin, sets up the view (unshare), then starts main.py in a child with the limits and
the identity above, and reports the child's wait status on a control pipe that main.py never
holds. A program can therefore not fake how it ended, and a failure of the sandbox itself (bwrap
missing a permission, say) raises `SandboxError` instead of looking like a failed program.

main.py gets two file descriptors: 3, the `secret` (a memory file, for the harness's own inputs,
which it reads and closes before it runs anything untrusted), and 4, the report pipe, whose bytes
come back as `Outcome.report`. Linux only."""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from peftbench.errors import UserError

ISOLATIONS = ("bwrap", "unshare", "none")  # strongest first
# Above the uids of users and of systemd's containers (up to 1,879,048,191), below 2**31.
SANDBOX_UIDS = range(1_900_000_000, 2_000_000_000)
# Folders that hold users' and services' files, hidden in unshare mode (bwrap never shows them).
HIDDEN_IN_UNSHARE = ("/home", "/root", "/run", "/mnt", "/media", "/srv", "/var/tmp", "/dev/shm")
_SUPERVISOR_SOURCE = Path(__file__).with_name("sandbox_supervisor.py")
_POLL_S = 0.05  # how often a waiting run looks at its cancel event


class SandboxError(RuntimeError):
    """The sandbox could not run the program (not the program's failure)."""


class SandboxUnavailable(UserError):
    """The isolation asked for is not available here, or only a weak one is and it was not allowed."""


class Cancelled(Exception):
    """`run` stopped because its cancel event was set; everything it started is killed."""


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 10  # per process; SIGXCPU, then SIGKILL a second later
    wall_s: float = 30.0  # the whole run, from start to the last process killed
    memory_bytes: int = 1 << 30  # address space per process
    processes: int = 8  # HumanEval programs need one; each may map `memory_bytes`
    file_bytes: int = 16 << 20  # largest file it may write
    open_files: int = 64
    output_bytes: int = 1 << 20  # stdout + stderr kept; more and the program is killed
    report_bytes: int = 1 << 20  # what it may write on the report pipe
    tmp_bytes: int = 64 << 20  # size of its /tmp (bwrap, unshare)

    def __post_init__(self):
        kinds = {name: (int, float) if name == "wall_s" else int for name in self.__dataclass_fields__}
        problems = [f"{name}={getattr(self, name)!r} must be a positive {'number' if name == 'wall_s' else 'integer'}"
                    for name, kind in kinds.items()
                    if not isinstance(getattr(self, name), kind) or isinstance(getattr(self, name), bool)
                    or getattr(self, name) <= 0]
        if problems:
            raise ValueError("invalid sandbox limits: " + "; ".join(problems))


@dataclass(frozen=True)
class SandboxOptions:
    limits: Limits = field(default_factory=Limits)
    isolation: str = "auto"  # "auto" (the strongest available) or one of ISOLATIONS
    allow_weak_sandbox: bool = False  # let "auto" fall back to "none"
    python: str | None = None  # the interpreter for main.py; default: the one running peftbench

    def __post_init__(self):
        if self.isolation not in ("auto", *ISOLATIONS):
            raise SandboxUnavailable(f"sandbox isolation {self.isolation!r} is unknown; "
                                     f"available: auto, {', '.join(ISOLATIONS)}")


@dataclass(frozen=True)
class Outcome:
    isolation: str
    exit_code: int | None  # main.py's exit status; None when a signal ended it or it was killed
    signal: int | None  # the signal that ended it
    timed_out: bool  # killed at the wall-time limit
    output_exceeded: bool  # killed for writing more than the output or report cap
    stdout: bytes
    stderr: bytes
    report: bytes
    wall_s: float
    uid: int | None  # the uid it ran as when that was its own (peftbench as root)


def python_executable() -> str:
    """The interpreter that runs peftbench, without a virtual environment (main.py uses only the
    standard library, and inside bwrap only the interpreter's own folders exist)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@functools.lru_cache(maxsize=None)
def _interpreter_folders(python: str) -> tuple[str, ...]:
    """The folders main.py's interpreter needs, those outside /usr (which every view has)."""
    if python == python_executable():
        prefixes = [sys.base_prefix, sys.base_exec_prefix]
    else:  # another interpreter (SandboxOptions.python) says where its standard library is
        answer = subprocess.run([python, "-I", "-S", "-c", "import sys; print(sys.base_prefix); print(sys.base_exec_prefix)"],
                                capture_output=True, text=True, timeout=60)
        if answer.returncode != 0:
            raise SandboxUnavailable(f"SandboxOptions.python={python!r} does not run: {answer.stderr.strip()[-500:]}")
        prefixes = answer.stdout.split()
    folders = {os.path.realpath(p) for p in prefixes} | {os.path.dirname(python)}
    folders = sorted(f for f in folders if f != "/" and not (f + "/").startswith("/usr/"))
    return tuple(f for f in folders if not any(f.startswith(o + "/") for o in folders))


@functools.lru_cache(maxsize=None)
def _supervisor_source() -> str:
    return _SUPERVISOR_SOURCE.read_text(encoding="utf-8")


def _python_argv(python: str) -> list[str]:
    return [python, "-I", "-S", "-B", "-c", _supervisor_source()]


def _bwrap_command(python: str, limits: Limits, as_root: bool) -> list[str]:
    command = ["bwrap", "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid",
               "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if not as_root:  # as root, a user namespace would map the sandbox to root; the child drops to its uid instead
        command += ["--unshare-user", "--disable-userns"]
    command += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
                "--size", str(limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    for folder in _interpreter_folders(python):  # after /tmp, in case the interpreter lives there
        # bwrap gives the folders it creates on the way the host's modes (/root: 0700), which the
        # sandbox's uid could not cross.
        for parent in reversed(Path(folder).parents[:-1]):
            command += ["--perms", "0755", "--dir", str(parent)]
        command += ["--ro-bind", folder, folder]
    command += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/", "--chdir", "/tmp", "--"]
    return command + _python_argv(python)


def _unshare_command(python: str, as_root: bool) -> list[str]:
    # setpriv: unshare dies with the thread that started it; --kill-child: the namespace's init
    # (the supervisor) dies with unshare, and the kernel then kills the whole namespace.
    command = ["setpriv", "--pdeathsig", "KILL", "--", "unshare", "--mount", "--net", "--pid", "--ipc",
               "--uts", "--fork", "--kill-child", "--mount-proc"]
    if not as_root:
        command.append("--map-root-user")
    return command + ["--"] + _python_argv(python)


def _process_state(pid: str) -> tuple[int, str] | None:
    """(real uid, state letter) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["Uid"].split()[0]), fields["State"].split()[0]
    except (OSError, KeyError, ValueError, IndexError):
        return None


def processes_of(uid: int) -> list[int]:
    """Live (not zombie) processes whose real uid is `uid`, in the whole machine."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            state = _process_state(pid)
            if state is not None and state[0] == uid and state[1] != "Z":
                found.append(int(pid))
    return found


@functools.lru_cache(maxsize=None)
def _uids_mapped() -> bool:
    """Whether SANDBOX_UIDS exist in this process's user namespace: not so for a root that is
    itself mapped from a user (a rootless container), which then runs programs as itself."""
    try:
        with open("/proc/self/uid_map", encoding="utf-8") as f:
            ranges = [tuple(map(int, line.split())) for line in f if line.strip()]
    except OSError:
        return False
    return any(inside <= SANDBOX_UIDS.start and SANDBOX_UIDS.stop <= inside + count
               for inside, _, count in ranges)


def _fresh_uid() -> int:
    while True:
        uid = SANDBOX_UIDS[secrets.randbelow(len(SANDBOX_UIDS))]
        if not processes_of(uid):
            return uid


def _kill_uid(uid: int, rounds: int = 100) -> None:
    """SIGKILL every process of `uid`, again until none is left (a fork bomb keeps forking)."""
    for _ in range(rounds):
        pids = processes_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _clean_environment(home: str) -> dict[str, str]:
    """Nothing of the caller's environment: no tokens, no HF_*, AWS_*, PYTHONPATH."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home,
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


_probe_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def _problem(isolation: str, python: str) -> str:
    missing = [tool for tool in {"bwrap": ["bwrap"], "unshare": ["unshare", "setpriv"], "none": []}[isolation]
               if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found"
    options = SandboxOptions(limits=Limits(cpu_s=5, wall_s=60), isolation=isolation, python=python)
    try:
        outcome = _run(isolation, "import os; os.write(4, b'ok')", "", options, None)
    except SandboxError as error:
        return str(error)
    if outcome.exit_code != 0 or outcome.report != b"ok":
        return f"a test program failed: {outcome.stderr.decode(errors='replace')[-500:]}"
    return ""


def isolation_problem(isolation: str, python: str | None = None) -> str:
    """Why `isolation` cannot run a program on this machine, "" when it can (tried once, then
    remembered)."""
    with _probe_lock:
        return _problem(isolation, python or python_executable())


def isolation_works(isolation: str, python: str | None = None) -> bool:
    """Whether `isolation` can run a program on this machine."""
    return not isolation_problem(isolation, python)


def available_isolation(python: str | None = None) -> str:
    """The strongest isolation this machine allows: "bwrap", "unshare" or "none"."""
    return next(name for name in ISOLATIONS if name == "none" or isolation_works(name, python))


def resolve_isolation(options: SandboxOptions) -> str:
    """The isolation `run` will use with these options, or SandboxUnavailable saying what to do."""
    python = options.python or python_executable()
    if options.isolation == "auto":
        chosen = available_isolation(python)
        if chosen == "none" and not options.allow_weak_sandbox:
            problems = "; ".join(f"{name}: {isolation_problem(name, python)}" for name in ISOLATIONS[:2])
            raise SandboxUnavailable(
                "cannot grade code safely here: no network isolation is available "
                f"({problems}). Install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or pass "
                "the training parameter allow_weak_sandbox: true (`--set allow_weak_sandbox=true`; rescore: --allow-weak-sandbox) to run model-written code without "
                "network or file-system isolation; the result then records isolation 'none'.")
        return chosen
    if options.isolation != "none" and not isolation_works(options.isolation, python):
        raise SandboxUnavailable(f"sandbox isolation {options.isolation!r} does not work on this machine "
                                 f"({isolation_problem(options.isolation, python)}); "
                                 f"available: {available_isolation(python)}")
    return options.isolation


def run(source: str, *, secret: str = "", options: SandboxOptions | None = None,
        cancel: threading.Event | None = None) -> Outcome:
    """Run `source` as main.py in a sandbox (see the module docstring); raises SandboxUnavailable
    (before running anything), SandboxError, or Cancelled once `cancel` is set."""
    options = options or SandboxOptions()
    return _run(resolve_isolation(options), source, secret, options, cancel)


class _Streams:
    """The pipes from the sandbox, read without blocking, each up to its cap."""

    def __init__(self, stdout: int, stderr: int, report: int, control: int, limits: Limits):
        self.chunks: dict[int, list[bytes]] = {fd: [] for fd in (stdout, stderr, report, control)}
        self.sizes = dict.fromkeys(self.chunks, 0)
        self.stdout, self.stderr, self.report, self.control = stdout, stderr, report, control
        self.limits = limits
        self.selector = selectors.DefaultSelector()
        for fd in self.chunks:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ)
        self.open = set(self.chunks)

    def pump(self, timeout: float) -> None:
        """Read what is there, waiting at most `timeout` seconds for something to come."""
        for key, _ in self.selector.select(timeout):
            fd = key.fd
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                self.selector.unregister(fd)
                self.open.discard(fd)
                continue
            self.chunks[fd].append(data)
            self.sizes[fd] += len(data)

    def drain(self, until: float) -> None:
        while self.open and not self.exceeded() and time.monotonic() < until:
            self.pump(min(_POLL_S, max(0.0, until - time.monotonic())))

    def exceeded(self) -> bool:
        return (self.sizes[self.stdout] + self.sizes[self.stderr] > self.limits.output_bytes
                or self.sizes[self.report] > self.limits.report_bytes)

    def data(self, fd: int, cap: int) -> bytes:
        return b"".join(self.chunks[fd])[:cap]

    def close(self) -> None:
        """Closes the report and control pipes; stdout and stderr belong to the Popen object."""
        self.selector.close()
        os.close(self.report)
        os.close(self.control)


def _run(isolation: str, source: str, secret: str, options: SandboxOptions,
         cancel: threading.Event | None) -> Outcome:
    limits = options.limits
    python = options.python or python_executable()
    as_root = os.geteuid() == 0
    uid = _fresh_uid() if as_root and _uids_mapped() else None
    # Without a uid of its own the process limit counts the caller's processes too.
    nproc = limits.processes if uid is not None else len(processes_of(os.getuid())) + limits.processes
    workdir = None
    if isolation == "none":
        workdir = tempfile.mkdtemp(prefix="peftbench-sandbox-")
        if uid is not None:
            os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        cwd = workdir
        command = _python_argv(python)
    else:
        cwd = "/tmp"
        command = _bwrap_command(python, limits, as_root) if isolation == "bwrap" else _unshare_command(python, as_root)
    report_r, report_w = os.pipe()
    control_r, control_w = os.pipe()
    mounts = None
    if isolation == "unshare":
        mounts = {"tmp_bytes": limits.tmp_bytes, "hide": list(HIDDEN_IN_UNSHARE),
                  "rebind": list(_interpreter_folders(python))}
    job = json.dumps({"control_fd": control_w, "report_fd": report_w, "cwd": cwd, "source": source,
                      "secret": secret, "python": python, "uid": uid, "nproc": nproc,
                      "mounts": mounts, "limits": {
                          "cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes,
                          "file_bytes": limits.file_bytes, "open_files": limits.open_files}}).encode()
    started = time.monotonic()
    try:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, pass_fds=(report_w, control_w),
                                   start_new_session=True, env=_clean_environment(cwd),
                                   cwd=workdir or "/")
    except BaseException:
        for fd in (report_r, report_w, control_r, control_w):
            os.close(fd)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    os.close(report_w)
    os.close(control_w)
    streams = _Streams(process.stdout.fileno(), process.stderr.fileno(), report_r, control_r, limits)
    timed_out = exceeded = False
    try:
        _send_job(process, job)
        timed_out, exceeded = _watch(process, streams, started + limits.wall_s, cancel)
    finally:
        _kill_everything(process, uid)
        streams.drain(time.monotonic() + 1.0)  # what was written just before the end
        stdout, stderr = streams.data(streams.stdout, limits.output_bytes), streams.data(streams.stderr, limits.output_bytes)
        report, control = streams.data(streams.report, limits.report_bytes), streams.data(streams.control, 1 << 16)
        streams.close()
        process.stdout.close()
        process.stderr.close()
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    wall_s = time.monotonic() - started
    exit_code, signum = _program_status(control, process.returncode, stderr, timed_out or exceeded)
    return Outcome(isolation=isolation, exit_code=exit_code, signal=signum, timed_out=timed_out,
                   output_exceeded=exceeded, stdout=stdout, stderr=stderr, report=report,
                   wall_s=wall_s, uid=uid)


def _watch(process: subprocess.Popen, streams: _Streams, deadline: float,
           cancel: threading.Event | None) -> tuple[bool, bool]:
    """Read the sandbox's pipes until it ends; (timed out, output exceeded) when it had to be
    stopped, Cancelled once `cancel` is set."""
    exited_at = None
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("grading was cancelled")
        now = time.monotonic()
        if now >= deadline:
            return True, False
        if streams.open:
            streams.pump(min(_POLL_S, deadline - now))
        else:  # every pipe closed: only the sandbox's own exit is left to wait for
            try:
                process.wait(min(_POLL_S, deadline - now))
            except subprocess.TimeoutExpired:
                pass
        if streams.exceeded():
            return False, True
        if process.poll() is not None:
            # Output still held open by a process it left behind is not waited for long.
            exited_at = exited_at or time.monotonic()
            if not streams.open or time.monotonic() - exited_at > 0.5:
                return False, False


def _send_job(process: subprocess.Popen, job: bytes) -> None:
    try:
        process.stdin.write(job)
        process.stdin.close()
    except BrokenPipeError:  # the sandbox ended before reading it: the control pipe says why
        pass


def _kill_everything(process: subprocess.Popen, uid: int | None) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
    if uid is not None:
        _kill_uid(uid)


def _program_status(control: bytes, returncode: int, stderr: bytes, killed: bool) -> tuple[int | None, int | None]:
    """(exit code, signal) of main.py from the supervisor's messages."""
    if control.startswith(b"LE"):  # b"L", b"E<text>", perhaps b"S<status>" after it
        raise SandboxError(re.sub(r"S-?\d+$", "", control[2:].decode(errors="replace")))
    if control.startswith(b"LS"):
        code = os.waitstatus_to_exitcode(int(control[2:]))
        return (code, None) if code >= 0 else (None, -code)
    if killed:
        return None, signal.SIGKILL
    if not control:  # bwrap or unshare failed before the supervisor ran
        raise SandboxError(f"the sandbox did not start (status {returncode}): "
                           f"{stderr.decode(errors='replace').strip()[-2000:]}")
    # The supervisor ran but main.py's end was not reported: the supervisor was killed.
    return None, signal.SIGKILL
