"""Options shared by several commands, defined once so that they are spelled, typed and
explained the same way everywhere (`run`, `run-all`, `status`, ...)."""

from __future__ import annotations

import argparse
import sys

from peftbench.errors import UserError
from peftbench.experiment.config import DEFAULTS_FILE, TRAINING_PARAMS_FILES, locate_experiment, read_json_file
from peftbench.training.cpu_kernels import pin_portable_kernels


def number_above(kind: type, low: float, *, inclusive: bool = False):
    """An argparse type: `kind(text)` that must be > low (>= low with inclusive=True)."""
    bound = f">= {low:g}" if inclusive else f"> {low:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
        return value

    return parse


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seed given")
    return seeds


def add_seed_options(parser: argparse.ArgumentParser, what: str = "run") -> None:
    """--seed N | --seeds A,B,C. `what` words the help: "run" or "show the state of runs"."""
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help=f"{what} with this seed (default: the suite's)")
    seeds.add_argument("--seeds", type=parse_seeds, help=f"{what} once per seed, e.g. 0,1,2")


def add_overrides_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training parameter, typed by its field (repeatable); "
                             "KEY.SUB=VALUE changes one key of a mapping, e.g. optimizer_kwargs.lr=1e-3")


def add_verbose_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help=help)


def add_common_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `run-all`."""
    add_overrides_option(parser)
    add_seed_options(parser)
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start from step 0 even when a checkpoint of the same run exists")
    parser.add_argument("--keep-checkpoint", action="store_true", help="keep the last checkpoint after success")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def add_result_reading_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that read results (`compare`, `report`)."""
    parser.add_argument("--include-temporary", action="store_true",
                        help="also read temporary_results/ of suite folders (runs made outside branch main, "
                             "from a dirty tree, or outside git)")
    parser.add_argument("--strict", action="store_true",
                        help="an unreadable result file is an error (exit 2); by default it is skipped with "
                             "a warning on stderr naming the file and the reason")


def seeds_of(args) -> list[int] | None:
    """The seeds asked for, or None for each suite's default seed."""
    if args.seeds:
        return list(args.seeds)
    return [args.seed] if args.seed is not None else None


def seed_list(args) -> list[int | None]:
    """The seeds asked for, [None] meaning the suite's default seed: one run per entry."""
    return seeds_of(args) or [None]


def pin_cpu_kernels_if_deterministic(paths, overrides) -> None:
    """`deterministic: true` in any of these experiments (their JSON layers, then the --set
    overrides) pins PyTorch, MKL and oneDNN to their AVX2 paths (training/cpu_kernels.py).
    Call it before anything imports torch (load_experiment does). Reads only the JSON layers,
    without validating them: load_experiment reports any problem right after."""
    wanted = False
    for path in paths:
        try:
            exp_dir, suite, _, _ = locate_experiment(path)
            layers = [read_json_file(suite / DEFAULTS_FILE)]
            layers += [read_json_file(exp_dir / f) for f in TRAINING_PARAMS_FILES if (exp_dir / f).is_file()]
        except UserError:
            continue
        value = False
        for layer in [*layers, overrides]:
            if isinstance(layer, dict) and "deterministic" in layer:
                value = layer["deterministic"]
        wanted = wanted or value is True
    if not wanted:
        return

    outcome = pin_portable_kernels()
    if not outcome.pinned:
        print(f"warning: {outcome.reason}", file=sys.stderr)
