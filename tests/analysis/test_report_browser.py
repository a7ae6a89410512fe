"""The report opened in a real headless Chromium (Debian packages chromium + chromium-driver,
Python package selenium). Skipped with the reason when any of them is missing; CI installs them.

Set PEFTBENCH_SCREENSHOT_DIR to keep screenshots of the pages for a human look."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from peftbench.analysis import leaderboard as compare
from peftbench.analysis import html_report as report

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver import ActionChains, Chrome, ChromeOptions
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    SELENIUM = True
except ImportError:
    SELENIUM = False

if not (CHROMIUM and CHROMEDRIVER and SELENIUM):
    missing = [name for name, ok in (("chromium", CHROMIUM), ("chromedriver (chromium-driver)", CHROMEDRIVER),
                                     ("selenium", SELENIUM)) if not ok]
    pytest.skip(f"headless browser test needs {', '.join(missing)}", allow_module_level=True)

XSS_NAME = "lora/<script>alert(1)</script>"
IMG_NAME = "ia3/<img src=x onerror=\"document.title='pwned'\">"
XSS_ERROR = "</script><script>alert('error')</script><!-- <b>bold?</b>"


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="peftbench-chromium-")
    options = ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1500,1400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_report(driver, path):
    driver.get_log("browser")  # reading the log empties it: what follows is this page's
    driver.get(path.resolve().as_uri())
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", "the script did not finish"


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def assert_no_alert(driver):
    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    pytest.fail(f"an alert fired: {text!r}")


def screenshot(driver, name):
    folder = os.environ.get("PEFTBENCH_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


@pytest.fixture
def hostile_report(make_result, write_run, tmp_path):
    for sub in ("results", "cancelled_results"):
        (tmp_path / sub).mkdir()
    write_run(tmp_path / "results" / "lora--xss.json", make_result(XSS_NAME, 0.5))
    write_run(tmp_path / "results" / "ia3--img.json", make_result(IMG_NAME, 0.3, peft_type="IA3", train_time=50.0))
    write_run(tmp_path / "results" / "vera--v.json", make_result("vera/v", 0.1, peft_type="VERA", **{"accelerator_memory_max": None}))
    write_run(tmp_path / "cancelled_results" / "lora--c--2026.json",
              make_result("lora/c", None, status="failed", error=XSS_ERROR))
    out = tmp_path / "report.html"
    out.write_text(report.build_report(compare.load_runs([tmp_path])), encoding="utf-8")
    return out


def test_hostile_names_show_as_text_and_run_nothing(browser, hostile_report):
    open_report(browser, hostile_report)
    assert_no_alert(browser)
    assert browser.title == "peftbench report"  # the onerror handler never ran
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table tbody td")]
    assert XSS_NAME in cells and IMG_NAME in cells
    assert browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table img") == []
    error = browser.find_element(By.CSS_SELECTOR, "#failures-table td.error pre").text
    assert error == XSS_ERROR
    assert browser.find_elements(By.CSS_SELECTOR, "#failures b") == []
    assert console_errors(browser) == []


def test_table_rows_plot_points_and_failures_match_the_data(browser, hostile_report):
    open_report(browser, hostile_report)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table tbody tr")) == 3
    # vera/v has no memory figure: two points on the default memory/accuracy axes
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pareto-plot circle.point")) == 2
    Select(browser.find_element(By.ID, "pareto-x")).select_by_value("train_time")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pareto-plot circle.point")) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "#failures-table tbody tr")) == 1
    assert console_errors(browser) == []


def test_clicking_a_header_sorts_the_leaderboard(browser, hostile_report):
    open_report(browser, hostile_report)

    def experiments():
        return [tr.get_attribute("data-experiment") for tr in browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table tbody tr")]

    assert experiments() == [XSS_NAME, IMG_NAME, "vera/v"]  # best accuracy first
    browser.find_element(By.CSS_SELECTOR, 'th[data-col="test_acc"]').click()
    assert experiments() == ["vera/v", IMG_NAME, XSS_NAME]
    browser.find_element(By.CSS_SELECTOR, 'th[data-col="train_time"]').click()  # lower is better: ascending
    assert experiments()[0] == IMG_NAME


def test_hovering_a_point_shows_its_experiment(browser, hostile_report):
    open_report(browser, hostile_report)
    point = browser.find_element(By.CSS_SELECTOR, "#pareto-plot circle.point")
    ActionChains(browser).move_to_element(point).perform()
    tooltip = browser.find_element(By.ID, "tooltip")
    assert tooltip.is_displayed()
    assert point.get_attribute("data-experiment") in tooltip.text
    assert_no_alert(browser)


def test_published_report_draws_every_experiment(published_results, browser, tmp_path):
    out = tmp_path / "published.html"
    out.write_text(report.build_report(compare.load_runs([published_results]), sources=[str(published_results)]), encoding="utf-8")
    open_report(browser, out)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table tbody tr")) == 63
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pareto-plot circle.point")) == 63
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pareto-plot polyline.front")) == 1
    # the five best experiments' learning curves are drawn at first, in both charts
    assert len(browser.find_elements(By.CSS_SELECTOR, "#curve-valid polyline.curve")) == 5
    assert len(browser.find_elements(By.CSS_SELECTOR, "#curve-loss polyline.curve")) == 5
    browser.find_element(By.CSS_SELECTOR, '#curve-list input[data-experiment="ia3/llama-3.2-3B-default"]').click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#curve-valid polyline.curve")) == 6
    browser.find_element(By.ID, "pareto-logx").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pareto-plot circle.point")) == 63
    screenshot(browser, "published-report.png")
    assert console_errors(browser) == []


def test_a_tuned_row_shows_its_budget_and_a_plot_of_its_trials(browser, make_result, write_run, tmp_path):
    import json

    (tmp_path / "results" / "tuning").mkdir(parents=True)
    write_run(tmp_path / "results" / "lora--x-tuned.json", make_result("lora/x-tuned", 0.5))
    write_run(tmp_path / "results" / "lora--x.json", make_result("lora/x", 0.4))

    def trial(number, lr, acc, status="success"):
        return {"number": number, "overrides": {"optimizer_kwargs.lr": lr}, "run_key": f"k{number}", "status": status,
                "valid_accuracy": acc, "valid_loss": 1.0, "seconds": 2.0, "result": None, "error": ""}

    record = {"schema_version": 1, "kind": "peftbench-tuning", "experiment": "lora/x", "tuned_experiment": "lora/x-tuned",
              "search_space": {"optimizer_kwargs.lr": [1e-4, 1e-3, 1e20]}, "sampler": "grid",
              "budget": {"trials": 3, "steps_per_trial": 4, "tune_valid_size": 200, "seconds": 6.0},
              "trials": [trial(0, 1e-4, 0.25), trial(1, 1e-3, 0.5), trial(2, 1e20, None, "failed")],
              "choice": {"number": 1, "run_key": "k1", "overrides": {"optimizer_kwargs.lr": 1e-3}}}
    (tmp_path / "results" / "tuning" / "lora--x.tuning.json").write_text(json.dumps(record), encoding="utf-8")
    out = tmp_path / "tuned.html"
    out.write_text(report.build_report(compare.load_runs([tmp_path])), encoding="utf-8")
    open_report(browser, out)
    assert "3 trials x 4 steps" in browser.find_element(By.ID, "leaderboard-table").text
    [figure] = browser.find_elements(By.CSS_SELECTOR, "#tuning-body figure")
    assert figure.get_attribute("data-experiment") == "lora/x-tuned" and "3 trials x 4 steps" in figure.text
    assert len(figure.find_elements(By.CSS_SELECTOR, "circle.trial")) == 2  # the failed trial has no score
    assert len(figure.find_elements(By.CSS_SELECTOR, "circle.chosen")) == 1
    assert len(figure.find_elements(By.CSS_SELECTOR, "text.trial-failed")) == 1
    screenshot(browser, "tuned-report.png")
    assert console_errors(browser) == []


def test_results_of_two_tasks_show_a_heat_map_of_ranks_and_one_front_per_task(browser, make_result, write_run, tmp_path):
    for name, math, boolq in (("full-finetuning/a", 0.5, 0.6), ("lora/b", 0.4, 0.7), ("ia3/c", 0.2, 0.9)):
        stem = name.replace("/", "--")
        write_run(tmp_path / f"{stem}.json", make_result(name, math, train_time=100 * math))
        write_run(tmp_path / f"{stem}--cs.json", make_result(name, (boolq + 0.5) / 2, task="commonsense",
                                                            test_sets={"boolq": (boolq, 100), "piqa": (0.5, 80)},
                                                            train_time=100 * boolq))
    out = tmp_path / "two-tasks.html"
    out.write_text(report.build_report(compare.load_runs([tmp_path])), encoding="utf-8")
    open_report(browser, out)
    rows = browser.find_elements(By.CSS_SELECTOR, "#cross-task-table tbody tr")
    assert len(rows) == 3
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#cross-task-table thead th")]
    assert header == ["experiment", "method", "commonsense", "commonsense: boolq", "commonsense: piqa", "metamathqa"]
    firsts = browser.find_elements(By.CSS_SELECTOR, '#cross-task-table td[data-rank="1"]')
    lasts = browser.find_elements(By.CSS_SELECTOR, '#cross-task-table td[data-rank="3"]')
    assert firsts and lasts
    green, red = firsts[0].value_of_css_property("background-color"), lasts[0].value_of_css_property("background-color")
    assert green != red  # ranks are told apart at a glance
    r, g, b = (int(v) for v in green[green.index("(") + 1:].split(",")[:3])
    assert g > r and g > b  # the first of a column is green
    assert "metamathqa: full-finetuning/a" in browser.find_element(By.ID, "cross-task-leads").text.replace("\n", " ")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#leaderboard-table tbody tr")) == 6
    fronts = browser.find_elements(By.CSS_SELECTOR, "#pareto-plot polyline.front")
    assert {f.get_attribute("data-task") for f in fronts} <= {"metamathqa", "commonsense"}
    screenshot(browser, "two-tasks-report.png")
    assert console_errors(browser) == []
