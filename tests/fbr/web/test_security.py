"""The dashboard's safety rules: where it may bind, the token (header, login cookie), the security
headers, the guarded ``POST /execute`` (token + CSRF double submit + confirmation) and that no
registered secret (API key) reaches a response body."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from cli_helpers import ROOT as REPO
from cli_helpers import run_fbr
from starlette.testclient import TestClient
from web_world import TEN, TOKEN, World, table

import executor.safety as safety
from executor.journal import Journal
from executor.plan import OrderLeg, OrderPlan, OrderType, Side
from executor.plan_doc import OrderPlanDoc
from fbr.execute_wiring import ExchangeChoice
from fbr.web.security import check_bind
from fbr.web.state import DashboardState, plan_fingerprint
from models.errors import FbrError, RefusedError, ValidationError

SHOCK_Q = "BTC%3D-30%25"
PAGES = ("/", "/history", "/plan", f"/whatif?shock={SHOCK_Q}", "/whatif", "/reports",
         "/reports/backtest.html", "/orders", "/run")
APIS = ("/api/status", "/api/plan", "/api/history", "/api/orders", "/api/run", "/api/reports",
        f"/api/whatif?shock={SHOCK_Q}")
CANARY = "canary-key-7f3a9c1e5b2d4086"
CANARY_SECRET = "canary-secret-0a1b2c3d4e5f6789"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def csrf_of(page: str) -> str:
    """The CSRF value of the execute form."""
    m = re.search(r'<input type="hidden" name="csrf" value="([^"]+)">', page)
    assert m is not None, "the page has no CSRF field"
    return m.group(1)


def plan_of(page: str) -> str:
    """The plan fingerprint of the execute form."""
    m = re.search(r'<input type="hidden" name="plan" value="([^"]+)">', page)
    assert m is not None, "the page has no plan fingerprint"
    return m.group(1)


def _plan(*legs: tuple[str, str, float, float]) -> OrderPlanDoc:
    """A plan's document whose legs are (contract, side, contracts, notional USD)."""
    return OrderPlan("p", "paper", "", "b", tuple(
        OrderLeg(i, f"c{i}", sym, sym, Side(side), q, n, 1.0, False, OrderType.MARKET)
        for i, (sym, side, q, n) in enumerate(legs)), (), {}, {}, {}, None, None, None).to_dict()


def test_plan_fingerprint_names_the_orders() -> None:
    """Same legs, same digest; a leg's size, side or contract changed, another digest."""
    legs = [("BTC-PERP", "sell", 0.017, -1000.0), ("ETH-PERP", "buy", 0.2, 500.0)]
    base = plan_fingerprint(_plan(*legs))
    assert base == plan_fingerprint(_plan(*[(sym, side, q, 0.0) for sym, side, q, _ in legs]))
    for other in (("BTC-PERP", "sell", 0.018, -1000.0), ("BTC-PERP", "buy", 0.017, -1000.0),
                  ("SOL-PERP", "sell", 0.017, -1000.0)):
        assert plan_fingerprint(_plan(other, legs[1])) != base
    assert plan_fingerprint(_plan()) != base


# --- bind -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_check_bind_refuses_a_public_address_without_token(host: str) -> None:
    """An address other machines can reach needs a token; the error names --host and the fix."""
    with pytest.raises(ValidationError) as info:
        check_bind(host, None)
    assert info.value.field == "--host" and "127.0.0.1" in info.value.fix
    with pytest.raises(ValidationError):
        check_bind(host, "")
    check_bind(host, TOKEN)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_check_bind_allows_loopback_without_token(host: str) -> None:
    """Loopback needs no token."""
    check_bind(host, None)


def test_check_bind_refuses_a_short_token() -> None:
    """A token shorter than 16 characters is refused, even on loopback."""
    with pytest.raises(ValidationError) as info:
        check_bind("127.0.0.1", "short")
    assert info.value.field == "token"


def test_serve_refuses_a_public_bind(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fbr serve BOOK --host 0.0.0.0`` without a token exits 2 before serving, with one line
    naming --host and the fix."""
    monkeypatch.delenv("FBR_SERVE_TOKEN", raising=False)
    res = run_fbr("serve", str(world.book), "--host", "0.0.0.0", "--port", str(free_port()),
                  env=world.env, timeout=60)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "--host" in lines[0] and "Fix:" in lines[0] and "FBR_SERVE_TOKEN" in lines[0]
    assert res.stdout == ""


def test_serve_refuses_a_short_token(world: World) -> None:
    """``--token`` shorter than 16 characters: exit 2, one line naming the token."""
    res = run_fbr("serve", str(world.book), "--token", "short", "--port", str(free_port()),
                  env=world.env, timeout=60)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: token")


@pytest.mark.parametrize("args", [("--exchange", "binanceusdm", "--allow-execute"),
                                  ("--exchange", "paper", "--allow-execute", "--live")])
def test_serve_refuses_to_trade_another_account_than_it_shows(world: World,
                                                              args: tuple[str, ...]) -> None:
    """Execution goes to the account the page reads: paper without --live, binanceusdm with it."""
    res = run_fbr("serve", str(world.book), *args, "--port", str(free_port()), timeout=120)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Fix:" in res.stderr
    assert "would read one account and trade another" in res.stderr


def test_serve_refuses_to_execute_a_dry_run(world: World) -> None:
    """--exchange dry-run reads no account: --allow-execute with it is refused at start (it sent
    the plan on paper and journalled the fills), and a dashboard so configured sends nothing."""
    res = run_fbr("serve", str(world.book), "--exchange", "dry-run", "--allow-execute",
                  "--port", str(free_port()), timeout=120)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "--exchange dry-run" in res.stderr
    state = DashboardState(world.config(exchange=ExchangeChoice.DRY_RUN, allow_execute=True))
    with pytest.raises(RefusedError, match="nothing was sent"):
        state.execute("any")


def test_serve_on_loopback_without_token_serves(world: World,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``fbr serve BOOK`` (127.0.0.1, no token) starts and answers the API without a token."""
    monkeypatch.delenv("FBR_SERVE_TOKEN", raising=False)
    port = free_port()
    cmd = [sys.executable, "-m", "fbr.cli", "serve", str(world.book), "--port", str(port),
           "--journal", str(world.journal), "--reports", str(world.reports)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **world.env})
    try:
        deadline = time.monotonic() + 90
        answer: httpx.Response | None = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/reports", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()[1]
        assert answer is not None, "fbr serve did not answer within 90 s"
        assert answer.status_code == 200
        assert [r["name"] for r in answer.json()] == ["backtest.html"]
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


# --- token ----------------------------------------------------------------------------------------

@pytest.fixture
def guarded(make_client: Callable[..., TestClient], world: World) -> TestClient:
    """The read-only dashboard with a token."""
    return make_client(world.config(), TOKEN)


@pytest.mark.parametrize("path", [*PAGES, *APIS, "/static/plotly.js", "/execute", "/nowhere"])
def test_token_required_everywhere(guarded: TestClient, path: str) -> None:
    """Without the token (or with a wrong one, header or cookie): 401 and nothing of the book."""
    for headers, cookies in (({}, {}), ({"Authorization": "Bearer wrong-token-0123456789"}, {}),
                             ({"Authorization": f"Basic {TOKEN}"}, {}),
                             ({}, {"fbr_token": "wrong-token-0123456789"})):
        guarded.cookies.clear()
        for k, v in cookies.items():
            guarded.cookies.set(k, v)
        r = guarded.get(path, headers=headers)
        assert r.status_code == 401, (path, headers, cookies)
        assert "/login?token=" in r.text and "NAV" not in r.text and "BTC" not in r.text


@pytest.mark.parametrize("path", [*PAGES, *APIS])
def test_bearer_token_opens_every_page(guarded: TestClient, path: str) -> None:
    """``Authorization: Bearer TOKEN``: 200, and the token is never echoed in a body."""
    r = guarded.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert TOKEN not in r.text


def test_login_sets_the_token_cookie(guarded: TestClient) -> None:
    """``/login?token=TOKEN``: 303 to / with an HttpOnly, SameSite=Strict cookie; later requests
    without the header are let in; a wrong or missing token at /login is 401 with no cookie."""
    for query in ("?token=wrong-token-0123456789", "?token=", ""):
        r = guarded.get(f"/login{query}", follow_redirects=False)
        assert r.status_code == 401 and "set-cookie" not in r.headers
    assert guarded.get("/api/status").status_code == 401
    r = guarded.get(f"/login?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("fbr_token=") and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    for path in (*PAGES, *APIS):
        page = guarded.get(path)
        assert page.status_code == 200, path
        assert TOKEN not in page.text


def test_login_without_a_configured_token(client: TestClient) -> None:
    """A dashboard without a token has no login: 401, no cookie."""
    r = client.get(f"/login?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 401 and "set-cookie" not in r.headers


# --- headers --------------------------------------------------------------------------------------

def _assert_security_headers(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0] or (
        csp.startswith("sandbox allow-scripts") and "allow-same-origin" not in csp)


@pytest.mark.parametrize("path", [*PAGES, *APIS, "/api/whatif", "/api/whatif?shock=XYZ%3D1",
                                  "/reports/..%2Fsecret.html", "/static/fbr.css", "/execute",
                                  "/login", "/nowhere"])
def test_security_headers_on_every_response(client: TestClient, guarded: TestClient,
                                            path: str) -> None:
    """nosniff, DENY framing, no referrer to another origin and a CSP that loads nothing by
    default and no inline script but by hash (a report's: an opaque-origin sandbox) on every
    answer: pages, JSON, errors (401, 403, 404, 422) and static files."""
    _assert_security_headers(client.get(path, follow_redirects=False))
    _assert_security_headers(guarded.get(path, follow_redirects=False))


# --- POST /execute --------------------------------------------------------------------------------

def _journal_orders(path: Path) -> list[tuple[str, str, float]]:
    """(contract, side, contracts) of every order of the journal at ``path``, plan by plan."""
    with Journal(path) as j:
        return [(o.symbol, o.side, o.contracts) for p in j.plan_ids() for o in j.orders(p)]


def test_execute_refused_when_not_enabled(guarded: TestClient, world: World) -> None:
    """Read-only dashboard: GET and POST /execute are 403 even with the token, a CSRF pair and
    the confirmation; the journal gets no order; no page links to /execute."""
    before = _journal_orders(world.journal)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/execute", headers=auth).status_code == 403
    guarded.cookies.set("fbr_csrf", "c" * 32)
    r = guarded.post("/execute", headers=auth, data={"csrf": "c" * 32, "confirm": "yes"})
    assert r.status_code == 403 and "read-only" in r.text
    assert _journal_orders(world.journal) == before
    assert 'href="/execute"' not in guarded.get("/", headers=auth).text


@pytest.fixture
def exec_world(tmp_path: Path, world: World) -> Iterator[World]:
    """A copy of the world's book with its own (absent) journal, for tests that execute."""
    book = tmp_path / "book.toml"
    shutil.copy(TEN, book)

    yield replace(world, book=book, journal=tmp_path / "exec" / "journal.sqlite")


def test_execute_needs_token_csrf_and_confirmation(make_client: Callable[..., TestClient],
                                                   exec_world: World, world: World) -> None:
    """With --allow-execute and a token: POST /execute without the token is refused by the guard
    (401), with the token but no / a wrong CSRF value or no confirmation 403, and nothing reaches
    the journal; with all three, 200 and the paper journal holds the plan's orders (those of the
    dry run ``fbr execute BOOK``)."""
    c = make_client(exec_world.config(allow_execute=True), TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    page = c.get("/execute", headers=auth)
    assert page.status_code == 200
    assert "fbr_csrf" in page.headers["set-cookie"] and "HttpOnly" in page.headers["set-cookie"]
    csrf = csrf_of(page.text)
    assert c.cookies.get("fbr_csrf") == csrf
    shown = table(page.text, "contract", "side", "contracts", "notional (USD)")
    expected = [(leg["symbol"], leg["side"], leg["contracts"]) for leg in world.dry_plan["plan"]["legs"]]
    assert [(r["contract"], r["side"], r["contracts"]) for r in shown] == [
        (s, side, f"{q:g}") for s, side, q in expected]

    refused = [
        ({}, {"csrf": csrf, "confirm": "yes"}, 401, "token"),
        ({"Authorization": "Bearer wrong-token-0123456789"}, {"csrf": csrf, "confirm": "yes"}, 401,
         "token"),
        (auth, {"confirm": "yes"}, 403, "CSRF"),
        (auth, {"csrf": "x" * 32, "confirm": "yes"}, 403, "CSRF"),
        (auth, {"csrf": "", "confirm": "yes"}, 403, "CSRF"),
        (auth, {"csrf": csrf}, 403, "confirm"),
        (auth, {"csrf": csrf, "confirm": "no"}, 403, "confirm"),
    ]
    for headers, form, status, word in refused:
        r = c.post("/execute", headers=headers, data=form)
        assert r.status_code == status, (headers, form, r.text)
        assert word in r.text
        assert not exec_world.journal.exists(), (headers, form)
    # the CSRF cookie is what the form must match: without it, the right field is not enough
    c.cookies.delete("fbr_csrf")
    r = c.post("/execute", headers=auth, data={"csrf": csrf, "confirm": "yes"})
    assert r.status_code == 403 and not exec_world.journal.exists()
    c.cookies.set("fbr_csrf", csrf)

    # the plan confirmed must be the plan sent: a stale or missing fingerprint is 409, nothing sent
    for stale in ({}, {"plan": "0" * 32}):
        r = c.post("/execute", headers=auth, data={"csrf": csrf, "confirm": "yes", **stale})
        assert r.status_code == 409 and "plan changed" in r.text, r.text[:300]
        assert not exec_world.journal.exists() or not _journal_orders(exec_world.journal)
    assert plan_of(page.text) == plan_fingerprint(c.get("/api/plan", headers=auth).json()["plan"])

    r = c.post("/execute", headers=auth, data={"csrf": csrf, "confirm": "yes",
                                               "plan": plan_of(page.text)})
    assert r.status_code == 200, r.text[:1000]
    assert "(paper)" in r.text
    got = sorted(_journal_orders(exec_world.journal))
    assert [(s, side) for s, side, _ in got] == [(s, side) for s, side, _ in sorted(expected)]
    assert [q for _, _, q in got] == pytest.approx([q for _, _, q in sorted(expected)])
    done = table(r.text, "contract", "planned", "filled")
    signed = {s: (q if side == "buy" else -q) for s, side, q in expected}
    assert {(d["contract"], d["planned"], d["filled"]) for d in done} >= {
        (s, f"{q:g}", f"{q:g}") for s, q in signed.items()}


def test_execute_sends_only_the_confirmed_plan(make_client: Callable[..., TestClient],
                                              exec_world: World,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Prices move after the user confirmed the page's plan, while the POST solves again: the plan
    about to be sent (sized on one asset's new prices) is not the confirmed one, so nothing is sent (409,
    no journal). The old dashboard checked a solve of its own and then sent a second solve's plan."""
    import executor.workflow as workflow
    from executor.base import ExchangeGateway
    from executor.ccxt_metadata import with_instruments
    from executor.plan import Instrument
    from models.book import Book
    from models.market import MarketSnapshot

    c = make_client(exec_world.config(allow_execute=True), TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    page = c.get("/execute", headers=auth)
    real = workflow.account_view

    def moved(gateway: ExchangeGateway, book: Book,
              market: MarketSnapshot) -> tuple[Book, MarketSnapshot, dict[str, Instrument]]:
        """The send's account view (and only the send's: the page reads its own) with one
        asset's prices 20% lower than the page's."""
        instruments = gateway.instruments(book)
        book_x = with_instruments(book, instruments)
        now = gateway.market(book_x, market)
        first = min(now.spot)
        lower = replace(now, spot={a: p * (0.8 if a == first else 1) for a, p in now.spot.items()},
                        mark={s: p * (0.8 if s.startswith(first) else 1)
                              for s, p in now.mark.items()})
        return gateway.account(book_x, lower), lower, instruments

    monkeypatch.setattr(workflow, "account_view", moved)
    form = {"csrf": csrf_of(page.text), "confirm": "yes", "plan": plan_of(page.text)}
    assert plan_of(page.text) == plan_fingerprint(c.get("/api/plan", headers=auth).json()["plan"])
    r = c.post("/execute", headers=auth, data=form)
    assert r.status_code == 409 and "plan changed" in r.text, r.text[:300]
    assert not exec_world.journal.exists() or not _journal_orders(exec_world.journal)
    monkeypatch.setattr(workflow, "account_view", real)
    r = c.post("/execute", headers=auth, data=form)
    assert r.status_code == 200, r.text[:1000]
    assert _journal_orders(exec_world.journal)


def test_execute_enabled_without_token_is_refused(make_client: Callable[..., TestClient],
                                                  exec_world: World) -> None:
    """--allow-execute without a token (only possible in-process: fbr serve generates one): the
    page shows, but POST is 403 whatever the form says."""
    c = make_client(exec_world.config(allow_execute=True), None)
    page = c.get("/execute")
    assert page.status_code == 200
    r = c.post("/execute", data={"csrf": csrf_of(page.text), "confirm": "yes"})
    assert r.status_code == 403 and "token" in r.text
    assert not exec_world.journal.exists()


# --- no secret served -----------------------------------------------------------------------------

@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A registered API key (and secret) in a fresh secret set, also in the environment."""
    monkeypatch.setattr(safety, "_SECRETS", set())
    safety.register_secret(CANARY)
    safety.register_secret(CANARY_SECRET)
    monkeypatch.setenv("FBR_BINANCEUSDM_API_KEY", CANARY)
    monkeypatch.setenv("FBR_BINANCEUSDM_SECRET", CANARY_SECRET)
    yield CANARY


def _leaky_world(root: Path, world: World, key: str) -> World:
    """The world with the key in the book's name, a report, the health file's last error and a
    journal alert (written raw, as a process that had not registered the key would)."""
    import json
    import sqlite3

    book = root / "book.toml"
    book.write_text(TEN.read_text().replace('name = "ten assets (synthetic)"',
                                            f'name = "ten assets {key}"'))
    journal = root / "journal.sqlite"
    shutil.copy(world.journal, journal)
    conn = sqlite3.connect(journal)
    conn.execute("INSERT INTO run_alerts (account, time, kind, severity, title, text) VALUES "
                 "(?, ?, ?, ?, ?, ?)", ("paper", "2026-01-08T08:00:00+00:00", "failure",
                                        "critical", f"auth failed for {key}", f"key={key}"))
    conn.commit()
    conn.close()
    reports = root / "reports"
    reports.mkdir()
    (reports / "leak.html").write_text(f"<html><body>api key {key}</body></html>")
    state = root / "state"
    state.mkdir()
    health = json.loads((world.state_dir / "health.json").read_text())
    (state / "health.json").write_text(json.dumps({**health, "last_error": f"401 for key {key}"}))
    return replace(world, book=book, journal=journal, reports=reports, state_dir=state)


def test_no_api_key_in_any_response(canary: str, tmp_path: Path, world: World,
                                    make_client: Callable[..., TestClient],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered key that reaches the book's name, a report, the health file, an alert, a shock
    text and an error message is never in a response body or header (it is shown as ***)."""
    leaky = _leaky_world(tmp_path, world, canary)
    c = make_client(leaky.config(allow_execute=True), TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    paths = [*PAGES, *APIS, "/reports/leak.html", "/execute", f"/api/whatif?shock={canary}%3D-30%25",
             f"/whatif?shock={canary}%3D-30%25", f"/api/whatif?shock=BTC%3D{canary}"]
    bodies: dict[str, str] = {}
    for path in paths:
        r = c.get(path, headers=auth)
        assert r.status_code in (200, 404, 422), (path, r.status_code)
        bodies[path] = r.text
        assert canary not in r.text and CANARY_SECRET not in r.text, path
        assert canary not in str(r.headers), path
    assert "***" in bodies["/reports/leak.html"] and "***" in bodies["/api/run"]
    assert "***" in bodies["/run"] and "***" in bodies[f"/api/whatif?shock={canary}%3D-30%25"]

    def boom(self: DashboardState) -> object:
        raise FbrError(f"boom: the exchange refused key {canary}")

    monkeypatch.setattr(DashboardState, "status", boom)
    for path in ("/", "/api/status"):
        r = c.get(path, headers=auth)
        assert r.status_code >= 400 and "boom" in r.text, path
        assert canary not in r.text and "***" in r.text, path


def test_foreign_host_header_is_refused(client: TestClient) -> None:
    """A request whose Host is not the dashboard's own name (DNS rebinding: an attacker's page
    whose name now resolves to 127.0.0.1) gets no book data."""
    r = client.get("/api/status", headers={"Host": "rebind.attacker.example:8765"})
    assert r.status_code == 400
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765"):
        assert client.get("/api/reports", headers={"Host": host}).status_code == 200
