"""Import boundaries of the layers (the code map in src/peftbench/__init__.py): what plans runs
(experiment), grades answers (scoring) and reads results (analysis) never imports torch, so that
`compare`, `report`, `status` and grading work without it and start fast.

Each check runs in a fresh interpreter: this test process has imported torch long ago."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

LIGHT_PACKAGES = ("peftbench.analysis", "peftbench.scoring", "peftbench.experiment", "peftbench.tasks")
HEAVY = ("torch",)

_IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
heavy, light, found = {heavy!r}, {light!r}, {{}}
for name in light:
    package = importlib.import_module(name)
    for info in [package, *pkgutil.walk_packages(package.__path__, prefix=name + ".")]:
        module = getattr(info, "name", None) or info.__name__
        before = set(sys.modules)
        importlib.import_module(module)
        for h in heavy:
            if h in sys.modules and h not in before:
                found[h] = module  # the first module whose import brought it in
print(json.dumps({{"found": found, "modules": len(sys.modules)}}))
"""


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_importing_every_analysis_scoring_and_experiment_module_never_imports_torch():
    proc = _python(_IMPORT_EVERY_MODULE.format(heavy=HEAVY, light=LIGHT_PACKAGES))
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])["found"]
    assert not found, (f"these light modules import a heavy library at import time: {found}; "
                       "import it inside the function that needs it (see the code map in peftbench/__init__.py)")


def test_compare_and_report_on_the_published_results_leave_torch_unimported(published_results, tmp_path):
    report = tmp_path / "report.html"
    code = (
        "import sys\n"
        "from peftbench.cli import main\n"
        f"assert main(['compare', {str(published_results)!r}]) == 0\n"
        f"assert main(['compare', {str(published_results)!r}, '--format', 'json', '--filter', 'test_acc > 0.4']) == 0\n"
        f"assert main(['report', {str(published_results)!r}, '-o', {str(report)!r}]) == 0\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []", proc.stdout[-500:]
    assert report.is_file()


@pytest.mark.parametrize("command", [["compare", "--list-columns"], ["--help"]])
def test_cli_entry_points_that_read_nothing_leave_torch_unimported(command):
    code = ("import sys\nfrom peftbench.cli import main\n"
            f"try:\n    main({command!r})\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
