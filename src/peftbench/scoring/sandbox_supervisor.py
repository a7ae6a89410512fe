"""The first program inside the sandbox: it sets the sandbox up, starts main.py as an
unprivileged child and reports how that child ended. `sandbox.py` runs this file's text with
`python -I -S -B -c` (inside bwrap or unshare, or as a plain process) and writes its job, a JSON
object, on its stdin. Standard library only; importing this module does nothing.

The supervisor keeps the privileges the sandbox started with (root, root inside a user namespace,
or the calling user); the child gives them up before it runs main.py:

* stdin is /dev/null; fd 3 holds the job's secret (an anonymous memory file, read from its start);
  fd 4 is the report pipe back to the caller; no other file descriptor stays open;
* resource limits: CPU seconds, address space, processes, file size, open files, no core dumps;
* no new privileges (setuid binaries stop working), an empty capability bounding set, and, where
  the job names one, a uid and gid of its own with no supplementary groups (the sandbox starts as
  root then);
* it dies with the supervisor (parent-death signal).

In `unshare` mode the job also asks for the file-system view (`mounts`): the whole tree read-only,
/tmp a fresh size-limited tmpfs, the folders that hold users' files (/home, /root, /run, ...)
hidden under empty read-only tmpfs, and the interpreter's own folders mounted back read-only. bwrap
builds its view itself. In `unshare` mode the supervisor is the PID namespace's init: it reaps
orphans, and when it exits the kernel kills whatever is left in the namespace.

Messages on the control pipe, which the child loses when main.py starts: b"L" once the supervisor
runs; b"E<text>" when setting up failed; b"S<wait status>" when main.py's process ended."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (Linux >= 5.12)
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 1
SECRET_FD, REPORT_FD = 3, 4

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option}, {value})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
           f"mount {source} on {target}")


def _read_only_tree() -> None:
    """Every mount, / and those below it, read-only in this mount namespace."""
    attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr),
                         ctypes.sizeof(attr)), "mount_setattr(/, read-only, recursive)")


def _mount_view(mounts: dict) -> None:
    # Folders to mount back must be opened before the tmpfs above them hides them.
    kept = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in mounts["rebind"]}
    _read_only_tree()
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={mounts['tmp_bytes']},mode=1777")
    hidden = [p for p in mounts["hide"] if os.path.isdir(p) and not os.path.islink(p)]
    for path in hidden:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path, fd in kept.items():
        os.makedirs(path, exist_ok=True)  # inside a hiding tmpfs, still writable here
        # A bind mount keeps its source's read-only flag, set on the whole tree above.
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
        os.close(fd)
    for path in hidden:
        _mount(None, path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)


def _secret_file(secret: str) -> int:
    fd = os.memfd_create("secret")
    data = secret.encode()
    while data:
        data = data[os.write(fd, data):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _limit(kind: int, value: int, hard: int | None = None) -> None:
    hard = value if hard is None else hard
    _, current_hard = resource.getrlimit(kind)
    if current_hard != resource.RLIM_INFINITY:  # only root may raise a hard limit
        value, hard = min(value, current_hard), min(hard, current_hard)
    resource.setrlimit(kind, (value, hard))


def _become_program(job: dict, secret: int, control: int) -> None:
    """In the child: the file descriptors, limits and identity of main.py, then exec it."""
    try:
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (secret, job["report_fd"], control)]
        control = high[2]
        os.dup2(high[0], SECRET_FD)
        os.dup2(high[1], REPORT_FD)
        os.closerange(REPORT_FD + 1, control)
        os.closerange(control + 1, os.sysconf("SC_OPEN_MAX"))
        limits = job["limits"]
        _limit(resource.RLIMIT_CORE, 0)
        # The soft limit sends SIGXCPU, the hard one a second later SIGKILL.
        _limit(resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 1)
        _limit(resource.RLIMIT_AS, limits["memory_bytes"])
        _limit(resource.RLIMIT_FSIZE, limits["file_bytes"])
        _limit(resource.RLIMIT_NOFILE, limits["open_files"])
        # Counted per uid across the machine: a uid of the sandbox's own makes this its own budget.
        _limit(resource.RLIMIT_NPROC, job["nproc"])
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        if os.geteuid() == 0:
            for cap in range(64):  # an empty bounding set: exec gives root no capabilities
                if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
                    break  # EINVAL: past the last capability this kernel knows
        uid = job["uid"]
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
        python = job["python"]
        os.execve(python, [python, "-I", "-S", "-B", "main.py"], os.environ)
    except BaseException as error:  # noqa: BLE001  (anything here is a setup failure to report)
        os.write(control, f"Estarting main.py: {type(error).__name__}: {error}".encode()[:4000])
        os._exit(127)


def _wait(child: int) -> int:
    """The wait status of `child`; as a namespace's init, orphans are reaped on the way."""
    while True:
        pid, status = os.wait()
        if pid == child:
            return status


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    control = job["control_fd"]
    os.write(control, b"L")
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # Not dumpable: a child of the same uid cannot read this process's memory (the secret).
        _prctl(PR_SET_DUMPABLE, 0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        if job["mounts"] is not None:
            _mount_view(job["mounts"])
        os.chdir(job["cwd"])
        with open("main.py", "w", encoding="utf-8") as f:
            f.write(job["source"])
        secret = _secret_file(job["secret"])
    except BaseException as error:  # noqa: BLE001
        os.write(control, f"Esetting up: {type(error).__name__}: {error}".encode()[:4000])
        os._exit(1)
    child = os.fork()
    if child == 0:
        _become_program(job, secret, control)
    os.close(secret)
    os.write(control, b"S%d" % _wait(child))
    os._exit(0)


if __name__ == "__main__":
    main()
