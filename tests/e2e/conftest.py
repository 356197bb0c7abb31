"""Fixtures for the browser tests: a synthetic store, the dashboard served on a free port, headless Chromium."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver",)


def _synthetic_runs():
    """The synthetic-store writer shared with the dashboard unit tests."""
    spec = importlib.util.spec_from_file_location("synthetic_runs", ROOT / "tests" / "dashboard" / "synthetic_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _first_existing(candidates: tuple[str, ...], name: str) -> str | None:
    found = next((c for c in candidates if Path(c).exists()), None)
    return found or shutil.which(name)


@pytest.fixture(scope="module")
def synthetic_runs():
    return _synthetic_runs()


@pytest.fixture(scope="module")
def browser_store(tmp_path_factory: pytest.TempPathFactory, synthetic_runs) -> Path:
    """A store with two runs × 8 checkpoints and every probe's keys."""
    path = tmp_path_factory.mktemp("browser-store") / "demo.sqlite"
    synthetic_runs.write_synthetic_store(path, runs=("sgd", "adam"), n_steps=8, grid=21)
    return path


@pytest.fixture(scope="module")
def dashboard_url(browser_store: Path) -> Iterator[str]:
    """The dashboard for ``browser_store``, served from a thread on a free localhost port (dev-tools UI on, so
    a callback error shows the error banner the tests look for)."""
    from werkzeug.serving import make_server

    from dashboard import create_app

    app = create_app([browser_store])
    app.enable_dev_tools(debug=True, dev_tools_ui=True, dev_tools_props_check=True, dev_tools_hot_reload=False,
                         dev_tools_silence_routes_logging=True, dev_tools_disable_version_check=True)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        app.catalog.close()


@pytest.fixture(scope="module")
def chrome() -> Iterator[object]:
    """Headless Chromium through chromedriver (skipped with the reason when either is not installed, except
    under CI, where ``.ci/run`` installs both and a missing browser is a failure)."""
    chromium = _first_existing(CHROMIUM_CANDIDATES, "chromium")
    driver_path = _first_existing(CHROMEDRIVER_CANDIDATES, "chromedriver")
    if chromium is None or driver_path is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("browser tests need Chromium and chromedriver (Debian packages `chromium` and `chromium-driver`); "
                    f"found chromium={chromium}, chromedriver={driver_path}.")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("browser tests need selenium 4 (`pip install selenium`).")
    profile = tempfile.mkdtemp(prefix="landscape-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1500,1000", "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
