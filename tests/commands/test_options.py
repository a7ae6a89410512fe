"""Exit statuses come from one enum, and options shared by several commands are defined once
(commands/options.py), so they are spelled, typed and explained the same way everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import peftbench
from peftbench.cli import build_parser, main
from peftbench.commands import options
from peftbench.errors import ExitCode

SRC = Path(peftbench.__file__).parent


def test_exit_codes_have_the_documented_values():
    assert [(c.name, int(c)) for c in ExitCode] == [("OK", 0), ("FAILED", 1), ("BAD_INPUT", 2), ("CANCELLED", 130)]


def test_no_command_decides_an_exit_status_with_a_bare_number():
    # `return 2` in one place and EXIT_BAD_INPUT in another drift apart; ExitCode is the one list
    bare = re.compile(r"^\s*return (?:\d+|\d+ if .* else \d+)\s*$|sys\.exit\(\d+\)|EXIT_[A-Z]+ = ")
    found = [f"{path.relative_to(SRC)}:{n}: {line.strip()}"
             for path in [SRC / "cli.py", *sorted((SRC / "commands").glob("*.py"))]
             for n, line in enumerate(path.read_text().splitlines(), 1) if bare.search(line)]
    assert found == []


@pytest.mark.parametrize("command", [["run", "x"], ["run-all"], ["status"]])
def test_seed_options_are_the_same_in_every_command(command):
    parser = build_parser()
    args = parser.parse_args([*command, "--seeds", "0,1,2", "--set", "max_steps=3"])
    assert options.seeds_of(args) == [0, 1, 2] and args.overrides == ["max_steps=3"]
    args = parser.parse_args([*command, "--seed", "4"])
    assert options.seeds_of(args) == [4]
    assert options.seeds_of(parser.parse_args(command)) is None


@pytest.mark.parametrize("command", [["run", "x"], ["run-all"], ["status"]])
@pytest.mark.parametrize("seeds", ["0,x", ","])
def test_bad_seed_lists_are_bad_input_in_every_command(command, seeds, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--seeds", seeds])
    assert info.value.code == ExitCode.BAD_INPUT
    assert "--seeds" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["compare", "report"])
def test_commands_that_read_results_share_their_options(command):
    args = build_parser().parse_args([command, "--strict", "--include-temporary"])
    assert args.strict and args.include_temporary
