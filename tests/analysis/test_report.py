import base64
import errno
import hashlib
import json
import os
import re
from importlib import resources
from pathlib import Path

import pytest

from peftbench.analysis import leaderboard as compare
from peftbench.analysis import html_report as report
from peftbench.cli import main

XSS_NAME = "lora/<script>alert(1)</script>"
XSS_ERROR = "</script><script>alert('error')</script><!-- & <img src=x onerror=alert(2)>"


@pytest.fixture
def hostile_suite(make_result, write_run, tmp_path):
    """A suite whose names and errors try to break out of the page."""
    (tmp_path / "results").mkdir()
    (tmp_path / "cancelled_results").mkdir()
    write_run(tmp_path / "results" / "lora--xss.json", make_result(XSS_NAME, 0.5))
    write_run(tmp_path / "results" / "ia3--b.json", make_result("ia3/b", 0.3, peft_type="IA3"))
    write_run(tmp_path / "cancelled_results" / "lora--c--2026.json",
              make_result("lora/c\u2028line", None, status="failed", error=XSS_ERROR))
    return tmp_path


def page_data(page):
    block = re.search(r'<script type="application/json" id="peftbench-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(block)


def test_embedded_json_cannot_close_the_script_block():
    text = report.embed_json({"a": "</script><!-- <b>&amp;", "b": "\u2028\u2029"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- <b>&amp;", "b": "\u2028\u2029"}


def test_hostile_names_never_appear_as_markup(hostile_suite):
    page = report.build_report(compare.load_runs([hostile_suite]))
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert page.count("</script>") == 2  # the data block and the drawing script, nothing else
    assert page.lower().count("<script") == 2
    data = page_data(page)
    assert XSS_NAME in {r["values"]["experiment"] for r in data["rows"]}
    assert XSS_ERROR in {r["values"]["error"] for r in data["rows"]}


def test_title_is_escaped(hostile_suite):
    page = report.build_report(compare.load_runs([hostile_suite]), title="<b>mine</b>")
    assert "<title>&lt;b&gt;mine&lt;/b&gt;</title>" in page


def test_page_is_self_contained_and_its_policy_allows_only_its_own_script(hostile_suite):
    page = report.build_report(compare.load_runs([hostile_suite]))
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)  # nothing fetched
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1)
    assert "default-src &#x27;none&#x27;" in policy or "default-src 'none'" in policy
    assert f"sha256-{digest}" in policy


@pytest.mark.parametrize("asset", ["axes.js", "report.js"])
def test_drawing_script_never_parses_strings_as_html(asset):
    source = resources.files("peftbench.analysis").joinpath("report_assets", asset).read_text()
    script = "\n".join(line for line in source.splitlines() if not line.strip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


def test_report_data_has_rows_fronts_and_curves(hostile_suite):
    data = report.report_data(compare.load_runs([hostile_suite]))
    assert len(data["rows"]) == 3
    assert sum(r["values"]["ranked"] for r in data["rows"]) == 2
    assert data["default_x"] == "mem_max" and data["default_y"] == "test_acc"
    assert "mem_max|test_acc" in data["fronts"] and "test_acc|mem_max" in data["fronts"]
    assert set(data["curves"]) == {XSS_NAME, "ia3/b"}
    assert data["curves"]["ia3/b"][0]["valid_acc"] == [0.2, 0.3]
    assert data["families"].keys() == {"LoRA", "IA3"}
    assert "cpu_rss" not in data["table_columns"]  # empty everywhere
    assert data["rows"][0]["display"]["test_acc"].startswith("50.0 [")


def test_family_colours_are_distinct():
    colours = report.family_colours([f"family {i}" for i in range(40)])
    assert len(set(colours.values())) == 40


def test_report_cli_writes_a_readable_file(hostile_suite, tmp_path, capsys):
    out = tmp_path / "out" / "r.html"
    assert main(["report", str(hostile_suite), "-o", str(out), "--title", "T"]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert out.stat().st_mode & 0o044  # readable beyond its owner (umask permitting)
    assert "wrote" in capsys.readouterr().out


def test_report_cli_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{}")
    assert main(["report", str(tmp_path / "x.json"), "-o", str(tmp_path / "r.html")]) == 2
    assert "x.json" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_report_to_a_path_below_a_file_exits_2_naming_it_before_reading_anything(tmp_path, capsys):
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    out = a_file / "x.html"
    # No result folder at all: the output path is refused before the inputs are read.
    assert main(["report", str(tmp_path / "no-such-suite"), "-o", str(out)]) == 2
    assert f"cannot write the report to {out}: {a_file} is not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "root:x:0:0\n"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, a folder that takes no new files")
def test_report_to_a_folder_that_takes_no_files_exits_2_naming_it(hostile_suite, capsys):
    out = Path("/proc/peftbench-report.html")
    assert main(["report", str(hostile_suite), "-o", str(out)]) == 2
    assert f"cannot write the report to {out}: No such file or directory" in capsys.readouterr().err
    assert not out.exists()


def test_a_report_that_cannot_be_written_leaves_the_old_one_and_exits_2(hostile_suite, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report.html"
    out.write_text("the old report")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    assert main(["report", str(hostile_suite), "-o", str(out)]) == 2
    assert f"cannot write the report to {out}: {os.strerror(errno.ENOSPC)}" in capsys.readouterr().err
    assert out.read_text() == "the old report"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []  # no temporary file


def test_report_of_the_published_results(published_results, tmp_path):
    data = report.report_data(compare.load_runs([published_results]))
    assert len(data["rows"]) == 63
    assert len(data["curves"]) == 63
    front = data["fronts"]["mem_max|test_acc"]
    best = max(data["rows"], key=lambda r: r["values"]["test_acc"])
    assert best["id"] in front  # the most accurate run is always on an accuracy front
