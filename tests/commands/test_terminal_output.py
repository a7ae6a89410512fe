"""Names reach the terminal escaped: an experiment folder called "x\\x1b[2J" must not clear it."""

from __future__ import annotations

import shutil

from peftbench.cli import main
from peftbench.terminal import printable


def test_printable_escapes_control_characters_but_keeps_tabs_and_newlines():
    assert printable("lora/x\x1b[2J") == "lora/x\\x1b[2J"
    assert printable("a\rb\x07c\x9bd") == "a\\x0db\\x07c\\x9bd"
    assert printable("line 1\n\tline 2 ünïcode") == "line 1\n\tline 2 ünïcode"


def test_status_prints_an_escape_sequence_in_an_experiment_name_escaped(tiny_suite, capsys):
    evil = tiny_suite / "experiments" / "lora" / "tiny\x1b[2J"
    shutil.copytree(tiny_suite / "experiments" / "lora" / "tiny-r4", evil)
    main(["status", str(tiny_suite)])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "\x1b" not in output
    assert "tiny\\x1b[2J" in output


def test_bitsandbytes_notices_are_silenced_for_every_command(tmp_path):
    """A stand-in bitsandbytes that complains on import as the real one does on a machine
    without its GPU build (through its logger and through a warning)."""
    import os
    import subprocess
    import sys

    package = tmp_path / "bitsandbytes"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import logging, warnings\n"
        "logging.getLogger('bitsandbytes.cextension').warning('The installed version of bitsandbytes was compiled without GPU support.')\n"
        "warnings.warn('bitsandbytes: no GPU kernels found', UserWarning)\n")
    code = ("import logging, sys; logging.basicConfig()\n"
            "import peftbench.cli as cli\n"
            "cli.quiet_bitsandbytes(); import bitsandbytes\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "bitsandbytes" not in proc.stderr


def test_every_command_silences_bitsandbytes_before_it_runs(tmp_path, monkeypatch):
    import peftbench.cli

    calls = []
    monkeypatch.setattr(peftbench.cli, "quiet_bitsandbytes", lambda: calls.append(1))
    main(["compare", str(tmp_path)])  # an empty folder: refused, but only after the call
    assert calls == [1]
