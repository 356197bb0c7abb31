"""The HTML report in headless Chromium with networking off: every probe draws a graph with data, nothing is
fetched, and the trajectory animation plays. A screenshot is saved to ``test-artifacts/`` for review."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dashboard.report import write_report
from landscape.store import Store

pytestmark = pytest.mark.browser
WAIT_S = 40  # two shared CPU cores render a 3-D surface and a dozen plots; it normally takes a few seconds

# Per figure container: its run and probes, and the traces and data points Plotly drew (null until drawn).
_FIGURES = """
return Array.from(document.querySelectorAll('div.figure')).map(function (box) {
  var plot = box.querySelector('.js-plotly-plot');
  var drawn = plot && plot._fullData && plot._fullLayout;
  var points = 0;
  if (drawn) { plot._fullData.forEach(function (t) { var v = t.x || t.z || t.y || []; points += v.length || 0; }); }
  return {run: box.dataset.run, probes: box.dataset.probes, name: box.dataset.name,
          traces: drawn ? plot.data.length : null, points: points};
});
"""


def _wait(driver, condition, message: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"{message} (waited {WAIT_S} s)") from None


@pytest.fixture(scope="module")
def report_page(chrome, synthetic_runs, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("report")
    store = synthetic_runs.write_synthetic_store(folder / "one.sqlite", runs=("sgd",), n_steps=3, grid=5)
    info = write_report([store], folder / "report.html")
    chrome.execute_cdp_cmd("Network.enable", {})
    chrome.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                 "downloadThroughput": -1, "uploadThroughput": -1})
    chrome.get(info.path.as_uri())
    states = _wait(chrome, lambda d: (s := d.execute_script(_FIGURES)) and all(f["traces"] for f in s) and s,
                   "not every figure of the report was drawn")
    return chrome, store, states


def test_every_probe_has_a_drawn_graph_with_data_and_nothing_is_fetched(report_page, artifacts: Path) -> None:
    driver, store, states = report_page
    with Store(store, readonly=True) as opened:
        probes = set(opened.results(run="sgd")["probe"])
    assert probes == {"metrics", "monitor", "hessian", "slices", "sharpness", "collapse", "grokking", "noise",
                      "connectivity", "weights"}
    for probe in probes:
        graphs = [s for s in states if probe in s["probes"].split() and s["traces"] > 0 and s["points"] > 0]
        assert graphs, f"no graph with data for probe {probe}: {states}"
    assert len(driver.find_elements("css selector", ".js-plotly-plot")) == len(states) == 18
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(function (r) { return r.name; })")
    assert [u for u in fetched if not u.startswith("file:")] == []
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"browser console errors: {severe}"
    driver.save_screenshot(str(artifacts / "report-top.png"))


def test_the_trajectory_animation_plays_from_the_first_checkpoint(report_page) -> None:
    driver, _, _ = report_page
    note = ("return document.querySelector('div.figure[data-name=trajectory] .js-plotly-plot')"
            ".layout.annotations[0].text;")
    assert driver.execute_script(note) == "step 200"  # it opens on the whole path
    button = driver.find_element("css selector", "div.figure[data-name=trajectory] g.updatemenu-button")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    time.sleep(0.3)
    button.click()
    seen = set()

    def moved(d) -> bool:
        seen.add(d.execute_script(note))
        return "step 0" in seen or "step 100" in seen

    _wait(driver, moved, f"Play did not move the animation (saw {seen})")
