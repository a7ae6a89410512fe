"""Command line: argument parsing only. Each subcommand lives in `peftbench.commands.<name>`
and exposes HELP, `configure(parser)` and `run(args) -> int`; this module only wires them up
and turns a `UserError` into exit status 2."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from peftbench import __version__
from peftbench.errors import ExitCode, UserError
from peftbench.terminal import printable, quiet_bitsandbytes, silence_closed_output

# name typed by the user -> module under peftbench.commands
COMMANDS: dict[str, str] = {
    "run": "run",
    "run-all": "run_all",
    "status": "status",
    "reproduce": "reproduce",
    "rescore": "rescore",
    "compare": "compare",
    "diff": "diff",
    "report": "report",
    "list": "list_cmd",
    "tune": "tune",
    "bench": "bench",
    "data": "data",
}


def _load(module_name: str):
    return importlib.import_module(f"peftbench.commands.{module_name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peftbench",
        description=(
            "Benchmark PEFT methods: fine-tune a causal LM on a task (MetaMathQA -> GSM8K, commonsense "
            "reasoning, ...), evaluate it, record reproducible results and compare them within and across tasks."
        ),
    )
    parser.add_argument("--version", action="version", version=f"peftbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = _load(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != f"peftbench.commands.{module_name}":
                raise
            continue  # a command not built yet stays out of --help
        # argparse %-formats help strings: a literal % ("95% interval") must be doubled
        p = sub.add_parser(name, help=module.HELP.replace("%", "%%"), description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true",
                       help="show tracebacks: for bad input, and the last lines of a failed run's")
        module.configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.BAD_INPUT
    quiet_bitsandbytes()
    try:
        return int(args._module.run(args))
    except UserError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"peftbench {args.command}: error: {printable(str(exc))}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print(f"peftbench {args.command}: cancelled", file=sys.stderr)
        return ExitCode.CANCELLED
    except BrokenPipeError:
        # Whoever read our output is gone (a killed run-all, `| head`): a cancel, said to nobody.
        silence_closed_output()
        return ExitCode.CANCELLED


if __name__ == "__main__":
    sys.exit(main())
