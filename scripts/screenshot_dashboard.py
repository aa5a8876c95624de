#!/usr/bin/env python3
"""Screenshot every page of the ``fbr serve`` dashboard for a book in headless Chromium.

    python scripts/screenshot_dashboard.py BOOK [--journal J] [--state-dir D] [--reports D]
        [--shock BTC=-30%] [--out DIR] [--chromium PATH] [--chromedriver PATH]

Serves the dashboard (read-only, no token) on a free 127.0.0.1 port in this process (uvicorn in a
thread), opens each page in headless Chromium through selenium (window 1400x2000), waits until every
plotly chart div holds its rendered SVG (``.main-svg``), and saves one PNG per page in DIR (default
``out/dashboard``), printing each path. Exit 0 when every page loaded with its charts drawn and no
console error; 1 when a page failed a check (the PNGs are still written); 2 when Chromium or
chromedriver is missing or fails to start. Holdings come from the journal's paper account
(``--journal``), else from the book file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHROMIUM = "/usr/bin/chromium"
DRIVERS = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
INSTALL_HINT = "install it with: apt-get update && apt-get install -y chromium chromium-driver"
WINDOW = (1400, 2000)
TIMEOUT_S = 60
ALL_DRAWN = ("return Array.from(document.querySelectorAll('.plotly-graph-div'))"
             ".every(function (e) { return e.querySelector('.main-svg') !== null; });")


def pages(shock: str) -> list[tuple[str, str]]:
    """(file stem, path) of every dashboard page."""
    from urllib.parse import quote

    return [("book", "/"), ("history", "/history"), ("plan", "/plan"),
            ("whatif", f"/whatif?shock={quote(shock, safe='')}"), ("reports", "/reports"),
            ("orders", "/orders"), ("run", "/run")]


def executable(name: str | None, fallbacks: tuple[str, ...] = ()) -> str | None:
    """``name`` (a path or a command on PATH), else the first fallback found."""
    for n in ((name,) if name else ()) + fallbacks:
        path = n if os.path.sep in n else shutil.which(n)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` on a free loopback port (uvicorn in a daemon thread); yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="fbr-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the dashboard did not start within 30 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def browser(chromium: str, chromedriver: str) -> Any:
    """A headless Chromium session (window 1400x2000, console log captured)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}", "--no-first-run",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))


def shoot(driver: Any, url: str, png: Path) -> list[str]:
    """Load ``url``, wait for its charts, save ``png``; the problems found (empty when fine)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    problems: list[str] = []
    driver.get_log("browser")  # drop earlier entries
    driver.get(url)
    wait = WebDriverWait(driver, TIMEOUT_S)
    try:
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        wait.until(lambda d: bool(d.execute_script(ALL_DRAWN)))
    except TimeoutException:
        drawn = len(driver.find_elements(By.CSS_SELECTOR, ".plotly-graph-div .main-svg"))
        total = len(driver.find_elements(By.CSS_SELECTOR, ".plotly-graph-div"))
        problems.append(f"{drawn} of {total} charts drawn after {TIMEOUT_S} s")
    errors = [e["message"] for e in driver.get_log("browser")
              if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    problems += [f"console: {m}" for m in errors]
    if not driver.save_screenshot(str(png)):
        problems.append(f"no screenshot written to {png}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("book", type=Path, help="book file (TOML)")
    ap.add_argument("--journal", type=Path, default=None,
                    help="journal (paper account, orders, the loop's tables); default: none")
    ap.add_argument("--state-dir", type=Path, default=None, help="fbr run's state folder")
    ap.add_argument("--reports", type=Path, default=None, help="folder of HTML reports")
    ap.add_argument("--shock", default="BTC=-30%", help="the what-if page's shock (BTC=-30%%)")
    ap.add_argument("--out", type=Path, default=Path("out") / "dashboard",
                    help="folder of the PNGs (out/dashboard)")
    ap.add_argument("--chromium", default=DEFAULT_CHROMIUM,
                    help=f"browser binary ({DEFAULT_CHROMIUM})")
    ap.add_argument("--chromedriver", default=None, help="chromedriver binary (default: on PATH)")
    args = ap.parse_args(argv)

    chromium = executable(args.chromium, ("chromium", "chromium-browser"))
    if chromium is None:
        print(f"error: Chromium not found at {args.chromium}; {INSTALL_HINT}", file=sys.stderr)
        return 2
    chromedriver = executable(args.chromedriver, DRIVERS)
    if chromedriver is None:
        print(f"error: chromedriver not found; {INSTALL_HINT}", file=sys.stderr)
        return 2
    if not args.book.is_file():
        print(f"error: no book file at {args.book}", file=sys.stderr)
        return 1

    sys.path.insert(0, str(ROOT))
    from fbr.web.app import create_app
    from fbr.web.state import DashboardState, ServeConfig
    from models.errors import FbrError

    config = ServeConfig(book=args.book.resolve(), journal=args.journal,
                         state_dir=args.state_dir, reports=args.reports)
    state = DashboardState(config)
    try:
        state.loaded()
    except FbrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    with serving(create_app(state, None)) as base:
        try:
            driver = browser(chromium, chromedriver)
        except Exception as exc:  # selenium's WebDriverException and OS errors alike
            print(f"error: Chromium failed to start: {exc}; {INSTALL_HINT}", file=sys.stderr)
            return 2
        try:
            for stem, path in pages(args.shock):
                png = out / f"{stem}.png"
                problems = shoot(driver, base + path, png)
                print(png)
                for p in problems:
                    print(f"FAIL {path}: {p}", file=sys.stderr)
                failures += bool(problems)
        finally:
            driver.quit()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
