"""SIGTERM as an exception in the main thread, so that `kill` is handled where Ctrl+C is.

The handler raises wherever the main thread happens to be. Code that swallows exceptions there
(a bare `except:` in a library, an exception in a finalizer, which Python only prints) would
lose the cancel, so the signal is also remembered: the training loop and the evaluation call
`raise_if_signalled()` at every step and batch, and a lost cancel is raised there again.
`interrupt_behind` finds a cancel that an error raised during clean-up has replaced."""

from __future__ import annotations

import contextlib
import signal
from typing import Callable, Iterator

from peftbench.errors import RunCancelled

# The cancel of the block being run (None outside one, or before its signal came).
_received: BaseException | None = None


def raise_if_signalled() -> None:
    """Raise the cancel again if a signal came within `sigterm_raises` and was swallowed."""
    if _received is not None:
        raise _received.with_traceback(None)


@contextlib.contextmanager
def sigterm_raises(make_exception: Callable[[int], BaseException]) -> Iterator[None]:
    """Within the block, SIGTERM raises make_exception(signum). Off the main thread, where Python
    cannot install handlers, signals are left alone."""
    global _received

    def handler(signum, frame):
        global _received
        _received = make_exception(signum)
        raise _received

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _received = None


def interrupt_behind(exc: BaseException) -> BaseException | None:
    """The Ctrl+C or SIGTERM that `exc` was raised while handling, if any. Library clean-up can
    replace an interrupt by an error of its own: torch.save interrupted mid-write fails again in
    its `__exit__` ("unexpected pos ..."). That run was cancelled, not failed."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (KeyboardInterrupt, RunCancelled)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
