"""The report's axis ticks and labels (report_assets/axes.js), run under node: pure functions that
the page inlines before its drawing script. Skipped with the reason where node is absent."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources

import pytest

NODE = shutil.which("node") or shutil.which("nodejs")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs node (Debian package nodejs) to run the report's axes.js")


def _axes(expression: str):
    """The JSON value of `expression`, evaluated with axes.js loaded as `axes`."""
    path = resources.files("peftbench.analysis").joinpath("report_assets", "axes.js")
    code = f"const axes = require({json.dumps(str(path))});\nprocess.stdout.write(JSON.stringify({expression}));"
    proc = subprocess.run([NODE, "-e", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _labels(fmt: str, values: list[float]) -> list[str]:
    return _axes(f"axes.tickLabels({json.dumps(fmt)}, axes.scale({json.dumps(values)}, false, {json.dumps(fmt)}, 0, 100).ticks)")


def test_a_hundred_percent_is_labelled_100_percent():
    assert _axes('["pct", "count", "bytes"].map(f => axes.tickText(f, f === "pct" ? 1 : 100))') == ["100%", "100", "100 B"]
    labels = _labels("pct", [0.2, 1.0])
    assert labels[-1] == "100%" and "1%" not in labels


def test_accuracies_that_are_all_zero_span_0_to_100_percent_not_minus_100():
    labels = _labels("pct", [0.0, 0.0, 0.0])
    assert labels[0] == "0%" and labels[-1] == "100%", labels
    assert not any(label.startswith("-") for label in labels)
    labels = _labels("pct", [1.0, 1.0])  # and all 100%: nothing above 100%
    assert labels[-1] == "100%" and all(float(label[:-1]) <= 100 for label in labels), labels


def test_ticks_close_together_get_the_digits_that_tell_them_apart():
    mib = 2**20
    labels = _labels("bytes", [504.1 * mib, 504.3 * mib])
    assert len(set(labels)) == len(labels) > 2, labels  # not "504 MiB, 504 MiB, ..."
    assert all(label.endswith(" MiB") for label in labels)


def test_small_shares_keep_their_digits():
    assert _axes('[axes.tickText("pct", 0.000002), axes.tickText("pct", 0.5), axes.tickText("pct", 0.123456)]') == [
        "0.0002%", "50%", "12.3%"]
