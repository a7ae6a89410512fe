"""The package builds as setuptools wants it today: pyproject.toml's metadata without deprecation
warnings (a `project.license` table is deprecated since setuptools 77: an SPDX string instead)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest


def test_the_package_metadata_builds_without_a_deprecation_warning(repo_root, tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} predates SPDX license strings; a build fetches >= 77")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo_root / name, tmp_path / name)
    shutil.copytree(repo_root / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (tmp_path / "meta").mkdir()
    code = "from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel('meta'))"
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Warning" not in proc.stderr, proc.stderr[-2000:]
    [metadata] = (tmp_path / "meta").glob("*.dist-info/METADATA")
    assert "License-Expression: Apache-2.0" in metadata.read_text()
