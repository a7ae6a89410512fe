"""Provenance: git state of the repository holding a suite, package versions, hardware.

All of it is read when a run starts and recorded in the result, so that every result says which
code, libraries and machine made it."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peftbench.record import hardware
from peftbench.record.layout import CANCELLED_RESULTS, DEFAULTS_FILE, RESULTS, STATE_DIR, TEMPORARY_RESULTS

# Folders a run writes into; changes under them never make the tree "dirty".
RUN_OUTPUT_DIRS = (RESULTS, TEMPORARY_RESULTS, CANCELLED_RESULTS, STATE_DIR)
PACKAGES = ("torch", "transformers", "peft", "datasets", "accelerate", "bitsandbytes", "safetensors", "math-verify")


@dataclass
class GitState:
    root: str | None  # None: the suite is not inside a git repository
    branch: str | None
    commit: str | None
    dirty: bool
    diff_sha256: str | None  # hash of `git diff HEAD` plus untracked file names, when dirty
    # `git status --porcelain` lines that make the tree dirty ("?? report.html"), for messages;
    # not recorded in results (diff_sha256 stands for them there)
    changes: list[str] = field(default_factory=list)

    @property
    def is_main_and_clean(self) -> bool:
        return self.root is not None and self.branch == "main" and not self.dirty

    @property
    def why_not_main_and_clean(self) -> str | None:
        """Why a successful run goes to temporary_results/ ("tree is dirty: ?? report.html",
        "branch is dev, not main"); None when it does not."""
        if self.root is None:
            return "the suite is not inside a git repository"
        reasons = []
        if self.branch != "main":
            detached = self.branch in (None, "HEAD")
            reasons.append("HEAD is detached, not on main" if detached else f"branch is {self.branch}, not main")
        if self.dirty:
            shown = ", ".join(self.changes[:3]) or "uncommitted changes"
            more = f" and {len(self.changes) - 3} more" if len(self.changes) > 3 else ""
            reasons.append(f"tree is dirty: {shown}{more}")
        return "; ".join(reasons) or None

    def to_dict(self) -> dict[str, Any]:
        recorded = asdict(self)
        del recorded["changes"]
        return recorded


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(suite_dir: str | os.PathLike) -> GitState:
    """Branch, commit and dirty flag of the repository holding `suite_dir`.

    The results and state folders of the suite, and of every other suite in the repository, do
    not count as changes: writing a result must not make the next run "dirty", whichever suite
    it belongs to (the demo suite lives inside the root suite)."""
    suite_dir = Path(suite_dir).resolve()
    root = _git(["rev-parse", "--show-toplevel"], suite_dir)
    if root is None:
        return GitState(None, None, None, False, None)
    root_path = Path(root.strip())
    branch = (_git(["rev-parse", "--abbrev-ref", "HEAD"], root_path) or "").strip() or None
    commit = (_git(["rev-parse", "HEAD"], root_path) or "").strip() or None
    excludes = [f":(exclude){rel}" for rel in _run_output_paths(root_path, suite_dir)]
    status = _git(["status", "--porcelain", "--untracked-files=all", "--", ".", *excludes], root_path) or ""
    dirty = bool(status.strip())
    diff_sha = None
    if dirty:
        diff = _git(["diff", "HEAD", "--", ".", *excludes], root_path) or ""
        h = hashlib.sha256(diff.encode())
        h.update(status.encode())
        diff_sha = h.hexdigest()
    return GitState(str(root_path), branch, commit, dirty, diff_sha, [line for line in status.splitlines() if line.strip()])


def _run_output_paths(root_path: Path, suite_dir: Path) -> list[str]:
    """RUN_OUTPUT_DIRS of `suite_dir` and of every suite found in the repository (tracked or not),
    relative to the repository root."""
    listed = _git(["ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", f"*{DEFAULTS_FILE}"],
                  root_path) or ""
    suites = {os.path.relpath(suite_dir, root_path)}
    suites |= {os.path.dirname(p) or "." for p in listed.split("\0") if os.path.basename(p) == DEFAULTS_FILE}
    return sorted(os.path.normpath(os.path.join(s, name)) for s in suites for name in RUN_OUTPUT_DIRS)


def installed_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """name -> installed version (None when not installed). Read once per process and name
    list: ~8 ms a package, which a 70-experiment plan would pay 70 times."""
    return dict(_installed_versions(tuple(names)))


@functools.cache
def _installed_versions(names: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    out = []
    for name in names:
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            out.append((name, None))
    return tuple(out)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[f"{name}-version"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[f"{name}-version"] = None
        out[f"{name}-commit-hash"] = _editable_commit(name)
    return out


def _editable_commit(name: str) -> str | None:
    """Commit (and dirty flag) of a package installed from a git checkout, e.g. peft from source."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    import json

    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    url = direct.get("url", "")
    if not direct.get("dir_info", {}).get("editable") or not url.startswith("file://"):
        return None
    path = Path(url[len("file://"):])
    commit = (_git(["rev-parse", "HEAD"], path) or "").strip()
    if not commit:
        return None
    dirty = bool((_git(["status", "--porcelain"], path) or "").strip())
    return commit + ("-dirty" if dirty else "")


def system_info(device: str) -> dict[str, Any]:
    """The machine, and the hardware and kernel libraries that decide a run's last bits
    (record/hardware.py says why each field is there)."""
    info: dict[str, Any] = {
        "system": platform.system(), "release": platform.release(), "version": platform.version(),
        "machine": platform.machine(), "processor": platform.processor(), "python": sys.version.split()[0],
        "device": device,
    }
    info.update(hardware.cpu_info())
    info.update(hardware.kernel_libraries())
    info["cpu_kernels_pinned"] = hardware.pinned_level(torch_capability=info["torch_cpu_capability"])
    info.update(hardware.gpu_info(device))
    return info


def pytorch_info() -> str:
    import torch

    return torch.__config__.show()


def command_line() -> list[str]:
    """The command as typed: orig_argv keeps `-m peftbench.cli` where argv has the file path."""
    return [sys.executable, *getattr(sys, "orig_argv", sys.argv)[1:]]


def hostname() -> str:
    return socket.gethostname()
