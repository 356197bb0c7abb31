"""The dashboard in a real browser: every tab draws graphs with data, the checkpoint slider changes the
surface, and a result appended to the store appears without a page reload.

A screenshot of each tab is saved to ``test-artifacts/`` for review.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dashboard.layout import TAB_GRAPHS
from dashboard.views import TAB_LABELS, TABS

pytestmark = pytest.mark.browser

WAIT_S = 30  # generous: two CPU cores are shared with other work; the page normally answers in ~1 s

# Per graph id: number of traces and of data points (x, or z rows for surfaces/heat maps); null until drawn.
# `_fullData` holds the decoded arrays (figures travel as typed-array specs, so `data[i].x` is not an array).
_GRAPH_STATE = """
return arguments[0].map(function (id) {
  var box = document.getElementById(id);
  var plot = box && box.querySelector('.js-plotly-plot');
  if (!plot || !plot._fullData || !plot._fullLayout) { return null; }
  var points = 0;
  plot._fullData.forEach(function (t) {
    var values = t.x || t.z || t.y || [];
    points += values.length || 0;
  });
  return {traces: plot.data.length, points: points, width: plot._fullLayout.width};
});
"""
_ERRORS = """
var found = document.querySelectorAll('.dash-fe-error__title, .dash-error-card, .dash-backend-error, ._dash-error');
var count = document.querySelector('.test-devtools-error-count');
return {banners: found.length, count: count ? count.textContent.trim() : '0'};
"""


def _wait(driver, condition, message: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"{message} (waited {WAIT_S} s)") from None


def _graphs_drawn(driver, ids: list[str]) -> list[dict]:
    def ready(d):
        states = d.execute_script(_GRAPH_STATE, ids)
        return states if all(s and s["traces"] > 0 and s["points"] > 0 for s in states) else False

    return _wait(driver, ready, f"graphs {ids} did not all draw traces with data")


def _no_errors(driver) -> None:
    errors = driver.execute_script(_ERRORS)
    assert errors == {"banners": 0, "count": "0"}, f"the page shows a Dash error: {errors}"
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"browser console errors: {severe}"


def _open_tab(driver, tab: str) -> None:
    label = TAB_LABELS[tab]
    driver.find_element("xpath", f"//div[@id='tabs']/div[normalize-space()='{label}']").click()


def _full_page_screenshot(driver, path: Path) -> None:
    """Screenshot of the whole page: the viewport is stretched to the page height, then restored."""
    import base64

    driver.execute_script("var m = document.querySelector('.dash-debug-menu__outer');"
                          "if (m) { m.style.display = 'none'; }")
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        time.sleep(0.5)  # let plotly settle after the viewport change
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
        path.write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.execute_script("var m = document.querySelector('.dash-debug-menu__outer');"
                              "if (m) { m.style.display = ''; }")


@pytest.fixture(scope="module")
def page(chrome, dashboard_url):
    chrome.get(dashboard_url)
    _graphs_drawn(chrome, TAB_GRAPHS["overview"])
    return chrome


def test_every_tab_draws_its_graphs_without_errors(page, artifacts):
    for tab in TABS:
        _open_tab(page, tab)
        states = _graphs_drawn(page, TAB_GRAPHS[tab])
        notice = page.find_element("id", f"{tab}-notice")
        assert not notice.is_displayed(), f"tab {tab} shows a notice: {notice.text}"
        assert all(s["width"] > 300 for s in states), f"tab {tab} has a squeezed graph: {states}"
        _no_errors(page)
        _full_page_screenshot(page, artifacts / f"dashboard-{tab}.png")


def test_checkpoint_slider_changes_the_surface(page):
    from selenium.webdriver.common.keys import Keys

    _open_tab(page, "landscape")
    _graphs_drawn(page, TAB_GRAPHS["landscape"])
    surface_z = ("var t = document.querySelector('#landscape-surface .js-plotly-plot')._fullData[0];"
                 "return Array.from(t.z, function (row) { return Array.from(row); });")
    before = page.execute_script(surface_z)
    label_before = page.find_element("id", "checkpoint-label").text
    thumb = page.find_element("css selector", "#checkpoint [role='slider']")
    thumb.send_keys(Keys.HOME)  # the first checkpoint
    _wait(page, lambda d: d.execute_script(surface_z) != before, "the surface did not change with the slider")
    assert page.find_element("id", "checkpoint-label").text != label_before
    assert page.find_element("id", "checkpoint-label").text.startswith("step 0 ·")
    title = page.execute_script("return document.querySelector('#landscape-surface .js-plotly-plot').layout.title.text")
    assert "step 0" in title
    _no_errors(page)


def test_line_switches_to_the_interpolation(page):
    from selenium.webdriver.common.keys import Keys

    _open_tab(page, "landscape")
    _graphs_drawn(page, TAB_GRAPHS["landscape"])
    page.find_element("css selector", "#checkpoint [role='slider']").send_keys(Keys.END)  # the first has none
    names = "return document.querySelector('#landscape-slice .js-plotly-plot').data.map(function (t) { return t.name; });"
    page.find_element("xpath", "//div[@id='slice-line']//label[contains(., 'interpolation')]").click()
    _wait(page, lambda d: any("→" in n for n in d.execute_script(names)),
          "the 1-D graph did not switch to the interpolation")
    page.find_element("xpath", "//div[@id='slice-line']//label[contains(., 'slice along')]").click()
    _wait(page, lambda d: all("@" in n for n in d.execute_script(names)), "the 1-D graph did not switch back")
    _no_errors(page)


def test_appended_result_appears_without_reload(page, browser_store, synthetic_runs):
    from landscape.store import Store
    from probes.base import Result

    _open_tab(page, "overview")
    _graphs_drawn(page, TAB_GRAPHS["overview"])
    page.execute_script("window.__landscapeMarker = 'still here';")
    new_step = 100_000
    with Store(browser_store) as store:
        store.write_result("sgd", new_step, "monitor", Result(scalars={"train_loss": 0.001, "lr": 0.05}))
    steps_of_sgd_train = ("var p = document.querySelector('#overview-curves .js-plotly-plot');"
                          "var t = p._fullData.filter(function (t) { return t.name === 'sgd · train'; })[0];"
                          "return t ? Array.from(t.x) : [];")
    _wait(page, lambda d: new_step in d.execute_script(steps_of_sgd_train),
          "the appended monitor row did not reach the overview figure")
    assert page.execute_script("return window.__landscapeMarker") == "still here", "the page was reloaded"
    card = page.find_element("css selector", ".summary-card[data-run='sgd']").text
    assert f"monitor to step {new_step:,}" in card
    _no_errors(page)
