"""Text on its way to the terminal.

Experiment names are folder names, and a folder name can hold any byte but "/": an ESC in one
("lora/x\\x1b[2J") would clear the user's screen when `status` prints it. Everything that prints
a name or a message passes it through `printable`, which writes control characters as visible
escapes; `short_path` shows a path as short as it can be read from here. `silence_closed_output`
is for the other direction: the reader of our output is gone (a killed run-all, `peftbench
compare | head`)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

# C0 controls but tab and newline, DEL, and the C1 controls (U+0080-U+009F; U+009B is a CSI).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with each control character written as a \\xNN escape (tab and newline kept)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def short_path(path: Path | str) -> str:
    """A path relative to the current folder when it lies below it, else absolute."""
    path = Path(path)
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except (OSError, ValueError):
        return str(path)


def counted(n: int, noun: str) -> str:
    """"1 experiment", "2 experiments", "0 experiments": a count and its noun, in agreement."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def signed_points(fraction: float) -> str:
    """A difference of two accuracies in percentage points, signed, one decimal: "+2.0", "0.0".
    A difference that rounds to zero has no sign: "-0.0 points" reads as a loss that is not there."""
    points = round(fraction * 100, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    return "0.0" if points == 0 else f"{points:+.1f}"


def silence_closed_output() -> None:
    """Point stdout and stderr at the null device, so that Python's final flush does not print
    "Exception ignored ... BrokenPipeError" to a pipe nobody reads (as the Python docs advise)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):  # a stream without a file (tests): nothing to do
            pass


def quiet_bitsandbytes() -> None:
    """bitsandbytes, when installed, is imported by `import peft` (every command that loads an
    experiment) and on a machine without its GPU build says so on every command, through its
    logger or a warning. peftbench quantizes only for dtype int8/int4, which is checked where it
    is used (training/modeling.quantization_config) with a message of its own; the notice says
    nothing about the command at hand."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"(?s).*bitsandbytes")
    warnings.filterwarnings("ignore", module=r"bitsandbytes(\..*)?$")
