"""The dashboard's pages and JSON endpoints against independent sources: the CLI's own JSON
documents (``fbr status``, ``fbr solve``, ``fbr whatif``, ``fbr execute``), the cycles, alerts and
health file the fixtures wrote, and the files of the reports folder."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import FUTURES_ONLY
from starlette.testclient import TestClient
from web_world import ALERTS, CYCLES, HEALTH, REPORT_HTML, SECRET_HTML, SHOCK, World, table

from fbr.config import load_book_file
from fbr.web.state import ServeConfig

SHOCK_Q = "BTC%3D-30%25"
CHART = 'class="plotly-graph-div"'
#: (path, plotly chart divs the page holds)
PAGES = (("/", 1), ("/history", 3), ("/plan", 1), (f"/whatif?shock={SHOCK_Q}", 1), ("/whatif", 0),
         ("/reports", 0), ("/orders", 0), ("/run", 0))
APIS = ("/api/status", "/api/plan", "/api/history", "/api/orders", "/api/run", "/api/reports",
        f"/api/whatif?shock={SHOCK_Q}")


def close(a: Any, b: Any, path: str = "$") -> list[str]:
    """Where two JSON documents differ (floats to 1e-9 relative / 1e-12 absolute)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return [] if a is b else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12):
            return []
        return [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}: keys {sorted(set(a) ^ set(b))} in one only"] if set(a) != set(b) else []
        for k in set(a) & set(b):
            out += close(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in close(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``doc`` without ``keys``."""
    return {k: v for k, v in doc.items() if k not in keys}


def get_html(client: TestClient, path: str) -> str:
    """GET an HTML page: 200, text/html."""
    r = client.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("text/html")
    text: str = r.text
    return text


def legs(plan: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(contract, side, contracts) of a plan's legs, in order."""
    return [(leg["symbol"], leg["side"], leg["contracts"]) for leg in plan["legs"]]


def book_figures(page: str, s: dict[str, Any]) -> None:
    """The book page shows the status document ``s`` as book.html formats it."""
    assert f"<h3>NAV</h3><p>{s['nav']:,.2f} USD</p>" in page
    assert f"<h3>Tracking error</h3><p>{s['tracking_error']:.2%}</p>" in page
    assert s["weights_before"], "the status has no weights"
    rows = table(page, "asset", "effective", "target", "drift (pp)")
    assert [(r["asset"], r["effective"], r["target"], r["drift (pp)"]) for r in rows] == [
        (a, f"{w:.2%}", f"{s['targets'][a]:.2%}", f"{s['drift_pp'][a]:+.2f}")
        for a, w in s["weights_before"].items()]
    rows = table(page, "contract", "contracts")
    assert [(r["contract"], r["contracts"]) for r in rows] == [
        (c, f"{q:g}") for c, q in s["positions"].items()]


# --- every page -------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "charts"), PAGES)
def test_every_page_is_html_with_its_charts(client: TestClient, world: World, path: str,
                                            charts: int) -> None:
    """200, an HTML page of the dashboard (navigation to every page), and exactly the plotly chart
    divs the page should hold; plotly.js comes from this origin."""
    page = get_html(client, path)
    assert page.startswith("<!doctype html>")
    name = load_book_file(world.book).book.name  # the header names the book ([book] name)
    assert "<title>fbr · " in page and name in page
    for href in ("/", "/history", "/plan", "/whatif", "/reports", "/orders", "/run"):
        assert f'<a href="{href}"' in page
    assert page.count(CHART) == charts
    assert '<script src="/static/plotly.js"></script>' in page
    assert "read-only" in page and '<a href="/execute"' not in page


@pytest.mark.parametrize("path", APIS)
def test_every_api_endpoint_is_strict_json(client: TestClient, path: str) -> None:
    """200, application/json, parseable as strict JSON (no NaN / Infinity)."""
    r = client.get(path)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == "application/json"
    for bad in ("NaN", "Infinity"):
        assert bad not in r.text
    r.json()


def test_static_files(client: TestClient) -> None:
    """plotly.js and the style sheet are served; any other static name is 404."""
    js = client.get("/static/plotly.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert len(js.content) > 1_000_000  # the whole bundle
    assert client.get("/static/fbr.css").status_code == 200
    assert client.get("/static/other.js").status_code == 404


# --- the book -----------------------------------------------------------------------------------

def test_book_page_shows_fbr_status(client: TestClient, world: World) -> None:
    """NAV, TE, every weight row (effective, target, drift) and every position equal
    ``fbr status --exchange paper --json``, formatted as the template prints them."""
    book_figures(get_html(client, "/"), world.status)


def test_api_status_is_fbr_status(client: TestClient, world: World) -> None:
    """/api/status is the ``fbr status --json`` document, but for the embedded plan's id and
    creation time (made per call)."""
    doc = client.get("/api/status").json()
    cli = world.status
    assert close(without(doc, "plan"), without(cli, "plan")) == []
    assert close(without(doc["plan"], "plan_id", "created"),
                 without(cli["plan"], "plan_id", "created")) == []
    assert doc["venue"] == "paper" and doc["funding"]["plan_id"] == world.executed["plan_id"]


# --- the plan -----------------------------------------------------------------------------------

def test_plan_after_execution_is_fbr_solve(client: TestClient, world: World) -> None:
    """On the executed paper account, /api/plan's solution is ``fbr solve --exchange paper
    --json`` (but for timings, data labels and the holdings note), and the page prints its status,
    TE and the (empty) order list."""
    doc = client.get("/api/plan").json()
    assert doc["status"] == "ok"
    sol = doc["solution"]
    volatile = ("solve_time_ms", "total_time_ms", "labels", "holdings_source")
    assert close(without(sol, *volatile), without(world.solve, *volatile)) == []
    assert world.solve["trades"] == [] and doc["plan"]["legs"] == []
    page = get_html(client, "/plan")
    assert f"<h3>Status</h3><p>{world.solve['status']}</p>" in page
    te = f"{world.solve['tracking_error_before']:.2%} → {world.solve['tracking_error_after']:.2%}"
    assert te in page
    assert "no order: the book is where the optimiser wants it" in page
    for b in world.solve["binding_constraints"]:
        assert (b["explanation"] or b["name"]) in html.unescape(page)


def test_plan_lists_the_legs_of_fbr_execute(make_client: Callable[..., TestClient],
                                            world: World) -> None:
    """Holdings from the book file (no journal): the page and /api/plan list the legs of the dry
    run ``fbr execute BOOK --json`` (same contracts, sides, sizes and notionals), and the journal
    is not created."""
    missing = world.root / "plan-journal.sqlite"
    c = make_client(world.config(journal=missing))
    expected = world.dry_plan["plan"]["legs"]
    assert len(expected) >= 5
    page = get_html(c, "/plan")
    rows = table(page, "leg", "contract", "side", "contracts", "notional (USD)")
    assert [(r["contract"], r["side"], r["contracts"], r["notional (USD)"]) for r in rows] == [
        (leg["symbol"], leg["side"], f"{leg['contracts']:g}", f"{leg['notional']:,.2f}")
        for leg in expected]
    assert page.count(CHART) == 1
    doc = c.get("/api/plan").json()
    assert legs(doc["plan"]) == legs(world.dry_plan["plan"])
    assert doc["blocked"] is None
    trades = {t["symbol"]: t["contracts"] for t in doc["solution"]["trades"]}
    assert trades == pytest.approx({leg["symbol"]: (1 if leg["side"] == "buy" else -1)
                                    * leg["contracts"] for leg in expected})
    assert not missing.exists()


# --- what-if ------------------------------------------------------------------------------------

def test_whatif_is_fbr_whatif(client: TestClient, world: World) -> None:
    """/api/whatif?shock=BTC=-30% is the scenario of ``fbr whatif -s BTC=-30% --exchange paper
    --json`` (but for the scenario's name and source), and the page prints its NAV, TE and
    liquidation figures."""
    cli = world.whatif["scenarios"]
    assert len(cli) == 1
    ref = cli[0]
    doc = client.get(f"/api/whatif?shock={SHOCK_Q}").json()
    assert doc["status"] == "ok" and doc["shocks"] == ref["shocks"]
    names = ("status", "scenario", "source", "notes")
    assert close(without(doc, *names), without(ref, *names)) == []
    page = get_html(client, f"/whatif?shock={SHOCK_Q}")
    assert f"{ref['nav_before']:,.2f} → {ref['nav_after']:,.2f} USD" in page
    assert f"{ref['tracking_error_before']:.2%} → {ref['tracking_error_after']:.2%}" in page
    assert f"<h3>Liquidated</h3><p>{'yes' if ref['liquidated'] else 'no'}</p>" in page
    assert f'value="{SHOCK}"' in page


def test_whatif_on_a_futures_only_book(tmp_path: Path,
                                       make_client: Callable[..., TestClient]) -> None:
    """A futures-only book (no spot; 10,000 USD wallet, long 0.1 BTC at 60,000, short 1 ETH at
    2,500) is what-if'd on the NAV base, as ``fbr whatif`` does (the page answered 422): after
    BTC -10% the BTC leg loses 600, NAV 9,400; weights BTC 6,000 / 10,000 = 0.6 before and
    5,400 / 9,400 after, ETH -2,500 / 10,000 and -2,500 / 9,400; the note says so."""
    book = tmp_path / "futures_only.toml"
    book.write_text(FUTURES_ONLY)
    c = make_client(ServeConfig(book=book, journal=tmp_path / "none.sqlite"))
    r = c.get("/api/whatif", params={"shock": "BTC=-10%"})
    assert r.status_code == 200, r.text[:500]
    doc = r.json()
    assert doc["nav_before"] == pytest.approx(10_000.0) and doc["nav_after"] == pytest.approx(9_400.0)
    assert doc["weights_before"] == {"BTC": pytest.approx(0.6), "ETH": pytest.approx(-0.25)}
    assert doc["weights_after"] == {"BTC": pytest.approx(5_400 / 9_400),
                                    "ETH": pytest.approx(-2_500 / 9_400)}
    assert len(doc["notes"]) == 1 and "futures-only" in doc["notes"][0]
    page = get_html(c, "/whatif?shock=BTC%3D-10%25")
    assert "10,000.00 → 9,400.00 USD" in page and doc["notes"][0] in html.unescape(page)


def test_whatif_page_shows_an_infeasible_re_solve_as_no_order(
        tmp_path: Path, make_client: Callable[..., TestClient]) -> None:
    """The backtest example book with a funding budget of -1,000,000 USD (infeasible against the
    margin row): the what-if page says the re-solve is infeasible and that no order would be
    sent, with the conflict named, and heads its trades as the least-violation book's (not
    tradeable); the plan page names the conflict and plans no order."""
    book = tmp_path / "book.toml"
    book.write_text((Path(__file__).resolve().parents[3] / "examples" / "backtest_book.toml")
                    .read_text().replace("[constraints]\n",
                                         "[constraints]\nfunding_budget_usd = -1000000\n", 1))
    c = make_client(ServeConfig(book=book, journal=tmp_path / "none.sqlite"))
    doc = c.get("/api/whatif", params={"shock": "BTC=-10%"}).json()
    assert doc["next"]["status"] == "infeasible"
    page = html.unescape(get_html(c, "/whatif?shock=BTC%3D-10%25"))
    assert '<p class="error">infeasible, no order would be sent. ' in page
    assert "funding_budget" in page.split("no order would be sent.")[1].split("</p>")[0]
    assert "the least-violation book's trade (USD, not tradeable)" in page
    assert "<p>infeasible: TE" not in page
    # the plan page: not tradeable, the conflict named, no order (it answered 422 with the
    # least-violation book's 147,000 USD ETH order past the 50,000 USD per-order limit)
    plan = html.unescape(get_html(c, "/plan"))
    assert '<p class="error">Not tradeable: the solution may not be traded' in plan
    assert "funding_budget" in plan.split("Not tradeable:")[1].split("</p>")[0]
    assert "none: the solution may not be traded (above)" in plan
    doc = c.get("/api/plan").json()
    assert doc["plan"]["legs"] == [] and "infeasible" in doc["blocked"]
    home = html.unescape(get_html(c, "/"))  # the book page: not possible, the alert says why
    assert "<h3>Rebalance</h3><p>not possible</p>" in home
    assert '<p class="error">the solution may not be traded' in home


def test_whatif_comma_separated_shocks(client: TestClient) -> None:
    """Two shocks in one comma-separated value are two shocks."""
    doc = client.get("/api/whatif", params={"shock": "BTC=-30%, ETH=-10%"}).json()
    assert doc["status"] == "ok" and len(doc["shocks"]) == 2


@pytest.mark.parametrize("shock", ["XYZ=-30%", "BTC=banana"])
def test_bad_shock_is_422_with_one_message(client: TestClient, shock: str) -> None:
    """A shock the parser refuses: 422 and one line naming the shock (the page shows the same
    message and no chart)."""
    r = client.get("/api/whatif", params={"shock": shock})
    assert r.status_code == 422
    doc = r.json()
    assert set(doc) == {"status", "error"} and doc["status"] == "error"
    assert shock in doc["error"] and "\n" not in doc["error"]
    page = client.get("/whatif", params={"shock": shock}).text
    assert f'<p class="error">{doc["error"]}</p>' in html.unescape(page)
    assert page.count(CHART) == 0


def test_whatif_without_shock(client: TestClient) -> None:
    """No shock: the API asks for one (422); the page shows the empty form."""
    r = client.get("/api/whatif")
    assert r.status_code == 422 and "shock" in r.json()["error"]
    assert 'name="shock" value=""' in get_html(client, "/whatif")


# --- orders, history, run, reports ---------------------------------------------------------------

def test_orders_are_the_executed_legs(client: TestClient, world: World) -> None:
    """Every leg ``fbr execute --exchange paper`` sent is in the orders page (client id, contract)
    and /api/orders, filled in full."""
    sent = world.executed["plan"]["legs"]
    assert sent
    page = get_html(client, "/orders")
    assert f"<td>{world.executed['plan_id']}</td>" in page
    rows = client.get("/api/orders").json()
    assert {r["client_id"] for r in rows} == {leg["client_id"] for leg in sent}
    by_id = {r["client_id"]: r for r in rows}
    shown = table(page, "updated", "plan", "leg", "contract", "side", "planned", "filled", "status")
    assert len(shown) == len(sent)
    cells = {(r["plan"], r["leg"]): r for r in shown}
    for leg in sent:
        r = by_id[leg["client_id"]]
        assert (r["symbol"], r["side"], r["status"]) == (leg["symbol"], leg["side"], "filled")
        assert r["filled"] == pytest.approx(leg["contracts"])
        c = cells[(world.executed["plan_id"], str(leg["index"]))]
        assert (c["contract"], c["side"], c["planned"], c["filled"], c["status"]) == (
            leg["symbol"], leg["side"], f"{leg['contracts']:g}", f"{r['filled']:g}", "filled")


def test_orders_page_shows_client_ids(client: TestClient, world: World) -> None:
    """The orders page names every journal order by its client id (what an exchange shows)."""
    page = get_html(client, "/orders")
    missing = [leg["client_id"] for leg in world.executed["plan"]["legs"]
               if leg["client_id"] not in page]
    assert missing == [], f"client ids absent from /orders: {missing}"


def test_history_shows_the_cycles_and_fills(client: TestClient, world: World) -> None:
    """Every cycle the loop recorded (latest first) and every fill of the executed plan."""
    page = get_html(client, "/history")
    rows = table(page, "time", "reason", "action", "NAV (USD)", "TE before", "TE after",
                 "turnover (USD)")
    assert [(r["time"], r["reason"], r["action"], r["NAV (USD)"], r["TE before"], r["TE after"],
             r["turnover (USD)"]) for r in rows] == [
        (c.time.isoformat(), c.reason, c.action, f"{c.nav:,.2f}", f"{c.te_before:.2%}",
         f"{c.te_after:.2%}", f"{c.turnover_usd:,.2f}") for c in reversed(CYCLES)]
    doc = client.get("/api/history").json()
    keys = ("time", "reason", "action", "nav", "te_before", "te_after", "turnover_usd", "message")
    assert [{k: row[k] for k in keys} for row in doc["cycles"]] == [
        {k: c.to_dict()[k] for k in keys} for c in CYCLES]
    filled: dict[str, float] = {}
    for f in doc["fills"]:
        filled[f["symbol"]] = filled.get(f["symbol"], 0.0) + f["contracts"]
        assert f["plan_id"] == world.executed["plan_id"]
    sent = {leg["symbol"]: leg["contracts"] for leg in world.executed["plan"]["legs"]}
    assert filled == pytest.approx(sent)
    fills = table(page, "time", "contract", "side", "contracts", "price", "fee (USD)", "plan")
    assert len(fills) == len(doc["fills"]) == len(sent)
    assert {(f["contract"], f["side"], f["contracts"]) for f in fills} == {
        (leg["symbol"], leg["side"], f"{leg['contracts']:g}") for leg in world.executed["plan"]["legs"]}


def test_run_shows_health_and_alerts(client: TestClient) -> None:
    """The health file's status and counters, and every alert title (escaped), newest first."""
    page = get_html(client, "/run")
    assert f"<h3>Status</h3><p>{HEALTH['status']}</p>" in page
    assert f"pid {HEALTH['pid']}, {HEALTH['mode']}" in page
    assert f"<h3>Cycles</h3><p>{HEALTH['cycles']}</p>" in page
    rows = table(page, "time", "kind", "severity", "title", "text")
    assert [(r["kind"], r["severity"], r["title"], r["text"]) for r in rows] == [
        (a.kind.value, a.severity.value, a.title, a.text) for a in reversed(ALERTS)]
    assert "<BTC>" not in page
    doc = client.get("/api/run").json()
    assert doc["health"] == HEALTH
    assert [a["title"] for a in doc["alerts"]] == [a.title for a in reversed(ALERTS)]
    assert [a["severity"] for a in doc["alerts"]] == [a.severity.value for a in reversed(ALERTS)]


def test_reports(client: TestClient) -> None:
    """The reports folder's HTML files are listed and served as they are; other files are not."""
    page = get_html(client, "/reports")
    assert '<a href="/reports/backtest.html">backtest.html</a>' in page
    assert "notes.txt" not in page
    assert [r["name"] for r in client.get("/api/reports").json()] == ["backtest.html"]
    r = client.get("/reports/backtest.html")
    assert r.status_code == 200 and r.text == REPORT_HTML


@pytest.mark.parametrize("path", ["/reports/..%2Fsecret.html", "/reports/..%5Csecret.html",
                                  "/reports/%2E%2E%2Fsecret.html", "/reports/notes.txt",
                                  "/reports/absent.html", "/reports/.%2F..%2Fsecret.html"])
def test_report_outside_the_folder_is_404(client: TestClient, path: str) -> None:
    """A traversal out of the reports folder, a non-.html name or an absent file: 404."""
    r = client.get(path)
    assert r.status_code == 404
    assert SECRET_HTML not in r.text and "not a report" not in r.text


# --- no journal ----------------------------------------------------------------------------------

def test_pages_without_a_journal(make_client: Callable[..., TestClient], world: World) -> None:
    """A journal path that does not exist: every page and endpoint answers from the book file (the
    book page equals ``fbr status --exchange dry-run``), history/orders/run are empty, and no page
    creates the journal (nor its folder)."""
    missing = world.root / "absent" / "journal.sqlite"
    c = make_client(world.config(journal=missing, state_dir=world.root / "no-state"))
    for path, charts in PAGES:
        assert get_html(c, path).count(CHART) == charts, path
    for path in APIS:
        assert c.get(path).status_code == 200, path
    book_figures(get_html(c, "/"), world.dry_status)
    doc = c.get("/api/status").json()
    for key in ("nav", "tracking_error", "weights_before", "targets", "drift_pp", "positions",
                "margin"):
        assert close(doc[key], world.dry_status[key]) == [], key
    assert c.get("/api/history").json() == {"cycles": [], "fills": [], "funding": [], "positions": []}
    assert c.get("/api/orders").json() == []
    assert c.get("/api/run").json() == {"health": None, "health_error": None, "alerts": []}
    assert "The journal holds no order yet." in get_html(c, "/orders")
    assert "The journal holds no cycles or fills yet" in get_html(c, "/history")
    assert "No health file" in get_html(c, "/run")
    assert not missing.exists() and not missing.parent.exists()


def test_pages_never_write_the_journal(client: TestClient, world: World) -> None:
    """The dashboard is read-only: after every page and endpoint the journal file is
    byte-identical (no schema upgrade, no paper-account initialisation, no lock row)."""
    import hashlib

    before = hashlib.sha256(world.journal.read_bytes()).hexdigest()
    for path, _ in PAGES:
        get_html(client, path)
    for path in APIS:
        assert client.get(path).status_code == 200
    assert hashlib.sha256(world.journal.read_bytes()).hexdigest() == before


def test_report_symlink_out_of_the_folder_is_404(make_client: Callable[..., TestClient],
                                                 world: World, tmp_path: Path) -> None:
    """A .html symlink inside the reports folder that points outside it is not served."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "link.html").symlink_to(world.root / "secret.html")
    (reports / "real.html").write_text(REPORT_HTML)
    c = make_client(world.config(reports=reports))
    r = c.get("/reports/link.html")
    assert r.status_code == 404 and SECRET_HTML not in r.text
    assert c.get("/reports/real.html").text == REPORT_HTML
