"""SIGTERM as an exception in the main thread, so that `kill` is handled where Ctrl+C is."""

from __future__ import annotations

import contextlib
import signal
from typing import Callable, Iterator


@contextlib.contextmanager
def sigterm_raises(make_exception: Callable[[int], BaseException]) -> Iterator[None]:
    """Within the block, SIGTERM raises make_exception(signum). Off the main thread, where Python
    cannot install handlers, signals are left alone."""
    def handler(signum, frame):
        raise make_exception(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
