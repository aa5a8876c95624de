"""The dashboard in a real browser: headless Chromium through selenium against the app served by
uvicorn on 127.0.0.1. Every page loads, every plotly chart draws (its div holds plotly's
``.main-svg``) and the browser console shows no error (CSP violations, script errors, failed
loads). Skipped, with the install hint, where Chromium or chromedriver is missing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from web_world import TOKEN, World

SCRIPTS = str(Path(__file__).resolve().parents[3] / "scripts")
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

from screenshot_dashboard import ALL_DRAWN, DRIVERS, browser, executable, serving  # noqa: E402

from fbr.web.app import create_app  # noqa: E402
from fbr.web.state import DashboardState  # noqa: E402

INSTALL_HINT = "headless Chromium not installed: apt-get install -y chromium chromium-driver"
CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium",
             "/usr/lib/chromium/chromium")
#: (path, plotly chart divs the page draws)
PAGES = (("/", 1), ("/history", 3), ("/plan", 1), ("/whatif?shock=BTC%3D-30%25", 1), ("/whatif", 0),
         ("/whatif?shock=XYZ%3D-30%25", 0), ("/reports", 0), ("/reports/backtest.html", 0),
         ("/orders", 0), ("/run", 0))
NAV = ("/", "/history", "/plan", "/whatif", "/reports", "/orders", "/run")
LOAD_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver), or skip."""
    chromium, driver = executable(None, CHROMIUMS), executable(None, DRIVERS)
    if chromium is None or driver is None:
        pytest.skip(INSTALL_HINT)
    pytest.importorskip("selenium", reason="selenium not installed: pip install selenium")
    return chromium, driver


@contextmanager
def serve(state: DashboardState, token: str | None) -> Iterator[str]:
    """The app on a free loopback port (the screenshot script's server); yields the base URL."""
    with serving(create_app(state, token)) as url:
        yield url


@pytest.fixture(scope="module")
def base_url(browser_paths: tuple[str, str], shared_state: DashboardState) -> Iterator[str]:
    """The read-only dashboard (no token) over the fixture world."""
    with serve(shared_state, None) as url:
        yield url


@pytest.fixture(scope="module")
def driver(browser_paths: tuple[str, str]) -> Iterator[Any]:
    """A headless Chromium session (console log captured)."""
    d = browser(*browser_paths)
    try:
        yield d
    finally:
        d.quit()


def console_errors(driver: Any) -> list[str]:
    """SEVERE console entries since the last call (the favicon request the app does not serve
    is left out: Chromium asks for /favicon.ico on its own)."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]


def load(driver: Any, url: str) -> None:
    """Open ``url`` and wait until the document is complete and every chart drew its SVG."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, LOAD_TIMEOUT_S)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    wait.until(lambda d: bool(d.execute_script(ALL_DRAWN)))


@pytest.mark.parametrize(("path", "charts"), PAGES)
def test_page_draws_its_charts_without_console_errors(driver: Any, base_url: str, path: str,
                                                       charts: int) -> None:
    """The page loads, holds its charts, each drawn (plotly's .main-svg inside the chart div),
    and the console has no error."""
    from selenium.webdriver.common.by import By

    console_errors(driver)  # drop what earlier pages left
    load(driver, base_url + path)
    divs = driver.find_elements(By.CSS_SELECTOR, ".plotly-graph-div")
    assert len(divs) == charts
    for div in divs:
        assert div.find_elements(By.CSS_SELECTOR, ".main-svg"), div.get_attribute("id")
        assert div.size["width"] > 100 and div.size["height"] > 100
    bare = path.split("?")[0]
    if bare in NAV:
        active = driver.find_element(By.CSS_SELECTOR, "header nav a.active")
        assert active.get_attribute("href") == base_url + bare
    assert console_errors(driver) == []


def test_navigation_links_reach_every_page(driver: Any, base_url: str) -> None:
    """Clicking through the navigation reaches every page (each answers, no console error)."""
    from selenium.webdriver.common.by import By

    console_errors(driver)
    load(driver, base_url + "/")
    hrefs = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "header nav a")]
    assert hrefs == [base_url + p for p in NAV]
    for href in hrefs:
        load(driver, href)
        assert driver.find_element(By.TAG_NAME, "h1").text
        assert "401" not in driver.page_source[:200]
    assert console_errors(driver) == []


def test_login_in_the_browser(browser_paths: tuple[str, str], world: World) -> None:
    """With a token: a page is 401 until /login?token=... sets the cookie; then the book page
    draws its chart."""
    from selenium.webdriver.common.by import By

    state = DashboardState(world.config())
    d = browser(*browser_paths)
    try:
        with serve(state, TOKEN) as url:
            d.get(url + "/")
            assert "401" in d.find_element(By.TAG_NAME, "body").text
            load(d, f"{url}/login?token={TOKEN}")
            assert d.current_url.rstrip("/") == url
            assert len(d.find_elements(By.CSS_SELECTOR, ".plotly-graph-div .main-svg")) >= 1
            assert d.get_cookie("fbr_token") is not None
            errors = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"
                      and "favicon.ico" not in e["message"] and " 401 " not in e["message"]
                      and "status of 401" not in e["message"]]
            assert errors == []
    finally:
        d.quit()


def _plotly_report(path: Path) -> None:
    """A report as fbr's commands write them: one HTML file, plotly.js and the chart's drawing
    script inlined, a style element, a dropdown (plotly's updatemenus) and a probe of what the
    page's script may reach (the dashboard's cookies and its API)."""
    import plotly.graph_objects as go  # type: ignore[import-untyped]
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    fig = go.Figure([go.Scatter(x=[1, 2, 3], y=[1.0, 3.0, 2.0], name="equity")])
    fig.update_layout(updatemenus=[{"buttons": [{"label": "a", "method": "update", "args": [{}]}]}])
    chart = fig.to_html(full_html=False, include_plotlyjs=False, div_id="fbr-chart-equity")
    probe = ("<script>var probe = {origin: window.origin, cookie: null, api: 'pending'};"
             "try { probe.cookie = document.cookie; } catch (e) { probe.cookie = 'blocked'; }"
             "fetch('/api/status').then(function () { probe.api = 'read'; },"
             " function () { probe.api = 'blocked'; });</script>")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><style>body{{margin:9px}}"
                    f"</style><script>{get_plotlyjs()}</script></head><body><h1>Backtest</h1>"
                    f"{chart}{probe}</body></html>")


def test_report_draws_in_its_sandbox(browser_paths: tuple[str, str], driver: Any,
                                     world: World, tmp_path: Path) -> None:
    """A plotly report under its sandbox policy: the chart draws, but its scripts run in an opaque
    origin: no cookie of the dashboard (which the page set), no call to its API. The only console
    errors are the blocked call's."""
    from selenium.webdriver.support.ui import WebDriverWait

    _plotly_report(tmp_path / "plotly.html")
    state = DashboardState(world.config(reports=tmp_path))
    with serve(state, None) as url:
        load(driver, url + "/reports")  # sets the dashboard's CSRF cookie
        console_errors(driver)
        load(driver, url + "/reports/plotly.html")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return probe.api") != "pending")
        probe = driver.execute_script("return probe")
        assert probe == {"origin": "null", "cookie": "blocked", "api": "blocked"}, probe
        assert driver.execute_script(ALL_DRAWN) and driver.find_elements("css selector",
                                                                         ".updatemenu-container")
        assert all("connect-src" in e or "api/status" in e for e in console_errors(driver))


def test_execute_form_posts_from_the_browser(browser_paths: tuple[str, str], world: World,
                                            tmp_path: Path) -> None:
    """The Execute page's form submitted by Chromium (which sends Origin and Sec-Fetch-Site:
    same-origin) passes the cross-site rules: the plan is sent on paper and the journal holds
    it."""
    import shutil

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from web_world import TEN

    from executor.journal import Journal

    shutil.copy(TEN, tmp_path / "book.toml")
    journal = tmp_path / "journal.sqlite"
    state = DashboardState(world.config(book=tmp_path / "book.toml", journal=journal,
                                        allow_execute=True))
    d = browser(*browser_paths)
    try:
        with serve(state, TOKEN) as url:
            d.get(f"{url}/login?token={TOKEN}")
            load(d, url + "/execute")
            d.find_element(By.CSS_SELECTOR, "input[name=confirm]").click()
            d.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()
            WebDriverWait(d, LOAD_TIMEOUT_S).until(lambda dr: "/execute" in dr.current_url and not
                                                   dr.find_elements(By.NAME, "confirm"))
            body = d.find_element(By.TAG_NAME, "body").text
            # a refusal is a page of one line, "403: <why>" (a plan id can hold the digits 403)
            assert "(paper)" in body and not body.lstrip().startswith("403"), body[:500]
        with Journal(journal) as j:
            assert [o for p in j.plan_ids() for o in j.orders(p)]
    finally:
        d.quit()
