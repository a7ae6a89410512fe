"""Math-Verify's symbolic equality check, run in a worker process that can be killed.

Apart from the grading rules (`grader`), which are pure and import nothing heavy: sympy and
Math-Verify are imported only inside the worker, and only when two answers cannot be compared as
plain numbers. Why a process and not a thread: see the "Time bound" paragraph of `grader`."""

from __future__ import annotations

import functools
import threading

SYMBOLIC_TIMEOUT_S = 5.0  # per item, once the worker is up; simple checks take milliseconds
SYMBOLIC_STARTUP_TIMEOUT_S = 120.0  # importing sympy + Math-Verify; minutes on a loaded machine
MAX_SYMBOLIC_CHARS = 300  # longest MATH test answer is ~150 chars; GSM8K answers are numbers


# The worker is a separate Python program (run with `python -c`), not a multiprocessing target:
# a spawned multiprocessing child re-imports the parent's __main__ (e.g. run.py), and a forked
# one inherits CUDA state and threads. It imports only Math-Verify and talks JSON lines:
# ["gold", "predicted"] in, true/false out, "ready" once imported.
_WORKER_SOURCE = r"""
import json, logging, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is for the parent to handle
# Math-Verify warns that its timeouts are off; the parent bounds the time instead.
logging.getLogger("math_verify").setLevel(logging.ERROR)
from math_verify import parse, verify

def check(gold, predicted):
    try:
        g = parse("$" + gold + "$", parsing_timeout=None)
        p = parse("$" + predicted + "$", parsing_timeout=None)
        return bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=None))
    except Exception:  # an error while parsing or comparing: not shown equal
        return False

check("1", "1")  # builds the LaTeX parser now, not within the first item's time bound
print("ready", flush=True)
for line in sys.stdin:
    gold, predicted = json.loads(line)
    print(json.dumps(check(gold, predicted)), flush=True)
"""


class SymbolicChecker:
    """Runs Math-Verify in a worker process and waits at most `timeout_s` per comparison.

    The worker starts with the first comparison and is killed and replaced when an item runs
    past its bound (the item is then graded wrong). Thread-safe: one comparison at a time."""

    def __init__(self, timeout_s: float = SYMBOLIC_TIMEOUT_S,
                 startup_timeout_s: float = SYMBOLIC_STARTUP_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._process = None
        self._lines = None  # queue of the worker's output lines, None once it closed stdout

    def _start(self) -> None:
        import queue
        import subprocess
        import sys

        process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_SOURCE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1,
        )
        lines: queue.Queue = queue.Queue()

        def pump() -> None:  # a blocking read with a timeout, on every platform
            # This thread alone reads and closes stdout: closing it from another thread while a
            # read is blocked aborts the interpreter at shutdown ("could not acquire lock").
            with process.stdout:
                for line in process.stdout:
                    lines.put(line.strip())
            lines.put(None)

        threading.Thread(target=pump, name="peftbench-symbolic-reader", daemon=True).start()
        self._process, self._lines = process, lines
        if self._read(self.startup_timeout_s) != "ready":
            self.close()
            raise RuntimeError(
                "the Math-Verify worker process did not start (is math-verify installed? "
                f"`{sys.executable} -c 'import math_verify'` should work); "
                f"waited up to {self.startup_timeout_s:.0f}s"
            )

    def _read(self, timeout_s: float) -> str | None:
        import queue

        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop the worker (a later comparison starts a new one)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        try:
            self._process.stdin.close()
        except OSError:
            pass
        # stdout ends with the process and is closed by the reader thread
        self._process = self._lines = None

    def equal(self, gold: str, predicted: str) -> bool:
        if len(gold) > MAX_SYMBOLIC_CHARS or len(predicted) > MAX_SYMBOLIC_CHARS:
            return False
        import json

        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self.close()
                self._start()
            try:
                self._process.stdin.write(json.dumps([gold, predicted]) + "\n")
                self._process.stdin.flush()
                answer = self._read(self.timeout_s)
            except (BrokenPipeError, OSError):
                answer = None  # the worker died (e.g. out of memory on this item)
            if answer in ("true", "false"):
                return answer == "true"
            self.close()  # stuck past the bound or dead: the item is wrong, the next gets a new worker
            return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the OS reaps the worker
            pass


_CHECKER: SymbolicChecker | None = None
_CHECKER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=65536)
def symbolic_equal(gold: str, predicted: str) -> bool:
    """Math-Verify's verdict on two answers, within SYMBOLIC_TIMEOUT_S (False past it)."""
    global _CHECKER
    with _CHECKER_LOCK:
        if _CHECKER is None:
            _CHECKER = SymbolicChecker()
        checker = _CHECKER
    return checker.equal(gold, predicted)
