"""The dashboard against other sites: a state-changing request whose ``Origin`` or
``Sec-Fetch-Site`` says it came from elsewhere is refused before anything runs (403, one line
saying why, no order in the journal), while the dashboard's own same-origin POST still sends; and
the content security policies: the pages' (their chart scripts admitted by hash, nothing framed)
and the reports' (an opaque-origin sandbox)."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from web_world import TEN, TOKEN, World

from executor.journal import Journal
from fbr.web.security import cross_site_refusal, fetch_site_refusal, normal_origin, origin_refusal

OWN = "http://127.0.0.1:8765"
#: (headers, a word of the refusal) of requests a browser sends from another site or from no page
FOREIGN = (
    ({"Origin": "http://evil.example"}, "origin"),
    ({"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, "another site"),
    ({"Sec-Fetch-Site": "cross-site"}, "another site"),
    ({"Sec-Fetch-Site": "same-site"}, "same site"),
    ({"Sec-Fetch-Site": "none"}, "typed URL"),
    ({"Origin": "null"}, "origin"),
    ({"Origin": "http://127.0.0.1:9999"}, "origin"),
    ({"Origin": "https://127.0.0.1:8765"}, "origin"),
    ({"Origin": "http://localhost:8765"}, "origin"),
    ({"Origin": "http://127.0.0.1:8765", "Sec-Fetch-Site": "cross-site"}, "another site"),
)


def orders_in(journal: Path) -> list[tuple[str, str, float]]:
    """(contract, side, contracts) of every order the journal holds (none when it is absent)."""
    if not journal.exists():
        return []
    with Journal(journal) as j:
        return [(o.symbol, o.side, o.contracts) for p in j.plan_ids() for o in j.orders(p)]


def form_of(page: str) -> dict[str, str]:
    """The execute form's hidden fields (CSRF, plan fingerprint) and the ticked confirmation."""
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]+)">', page))
    assert {"csrf", "plan"} <= set(fields), "the page has no execute form"
    return {**fields, "confirm": "yes"}


@pytest.fixture
def executing(make_client: Callable[..., TestClient], tmp_path: Path,
              world: World) -> tuple[TestClient, World]:
    """A dashboard with --allow-execute and a token over a copy of the book with its own (absent)
    journal, logged in through /login (the token cookie, as in a browser)."""
    book = tmp_path / "book.toml"
    shutil.copy(TEN, book)
    own = replace(world, book=book, journal=tmp_path / "exec" / "journal.sqlite")
    c = make_client(own.config(allow_execute=True), TOKEN)
    assert c.get(f"/login?token={TOKEN}", follow_redirects=False).status_code == 303
    return c, own


# --- the rules ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("scheme", "netloc", "expected"), [
    ("http", "127.0.0.1:8765", OWN), ("HTTP", "127.0.0.1:8765", OWN),
    ("http", "LocalHost", "http://localhost:80"), ("http", "localhost:80", "http://localhost:80"),
    ("https", "Example.COM", "https://example.com:443"), ("http", "[::1]:8765", "http://[::1]:8765"),
    ("null", "", None), ("ftp", "example.com", None), ("http", "", None),
    ("http", "example.com:notaport", None), ("http", "example.com/path", None),
    ("http", "user@127.0.0.1:8765", None)])
def test_normal_origin(scheme: str, netloc: str, expected: str | None) -> None:
    """Scheme and host in lower case, the default port written out; anything else None."""
    assert normal_origin(scheme, netloc) == expected


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "post"])
def test_state_changes_need_the_same_origin(method: str) -> None:
    """A state-changing method from another site, another origin, no page or a null origin is
    refused with one sentence; from the same origin (default port and case aside) or with neither
    header it passes."""
    for headers, _ in FOREIGN:
        why = cross_site_refusal(method, {k.lower(): v for k, v in headers.items()}, OWN)
        assert why is not None and "\n" not in why and why.startswith("refused"), headers
    assert cross_site_refusal(method, {}, OWN) is None
    assert cross_site_refusal(method, {"sec-fetch-site": "same-origin", "origin": OWN}, OWN) is None
    assert origin_refusal(method, {"origin": "HTTP://LOCALHOST"}, "http://localhost:80") is None
    assert origin_refusal(method, {"origin": OWN}, None) is not None


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_reading_is_not_a_state_change(method: str) -> None:
    """GET (a link from another site, a typed URL: Sec-Fetch-Site none) is judged by the token and
    Host rules alone."""
    for headers, _ in FOREIGN:
        lower = {k.lower(): v for k, v in headers.items()}
        assert cross_site_refusal(method, lower, OWN) is None
        assert fetch_site_refusal(method, lower) is None


# --- POST /execute --------------------------------------------------------------------------------

def test_cross_site_post_sends_nothing(executing: tuple[TestClient, World]) -> None:
    """A POST /execute carrying everything a logged-in user's browser would (token cookie, CSRF
    pair, confirmation, the plan's fingerprint) but coming from another site or no page: 403 with
    the reason, and the journal gets no order."""
    c, own = executing
    form = form_of(c.get("/execute").text)
    for headers, word in FOREIGN:
        r = c.post("/execute", headers=headers, data=form)
        assert r.status_code == 403, (headers, r.text[:300])
        assert r.text.startswith("403: refused") and word in r.text, (headers, r.text)
        assert len(r.text.strip().splitlines()) == 1
        assert orders_in(own.journal) == [], headers
    r = c.post("/api/status", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["status"] == "error" and "origin" in r.json()["error"]


def test_same_origin_post_still_sends(executing: tuple[TestClient, World], world: World) -> None:
    """The page's own form, as a browser sends it (Origin: the dashboard's, Sec-Fetch-Site:
    same-origin), with the token cookie: 200 and the paper journal holds the plan's orders."""
    c, own = executing
    form = form_of(c.get("/execute").text)
    r = c.post("/execute", data=form, headers={"Origin": OWN, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, r.text[:1000]
    assert "(paper)" in r.text
    expected = sorted((leg["symbol"], leg["side"]) for leg in world.dry_plan["plan"]["legs"])
    assert sorted((s, side) for s, side, _ in orders_in(own.journal)) == expected


def test_same_origin_under_another_loopback_name(executing: tuple[TestClient, World]) -> None:
    """Opened as http://localhost:8765, the page posts with that Origin: the origin compared is
    the one the request was addressed to (its Host), so the request gets past the cross-site rules
    (the stale plan fingerprint then answers 409: nothing sent)."""
    c, own = executing
    form = {**form_of(c.get("/execute").text), "plan": "0" * 32}
    r = c.post("/execute", data=form, headers={"Host": "localhost:8765",
                                               "Origin": "http://LOCALHOST:8765",
                                               "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 409 and "plan changed" in r.text, r.text[:300]
    assert orders_in(own.journal) == []


# --- content security policies --------------------------------------------------------------------

def _directives(csp: str) -> dict[str, list[str]]:
    """The policy's directives: name -> values."""
    parts = [d.split() for d in csp.split(";") if d.strip()]
    return {p[0]: p[1:] for p in parts}


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@pytest.mark.parametrize(("path", "charts"), [("/", 1), ("/history", 3), ("/plan", 1),
                                              ("/reports", 0), ("/whatif?shock=BTC%3D-30%25", 1)])
def test_page_policy_admits_only_its_own_scripts(client: TestClient, path: str,
                                                 charts: int) -> None:
    """A dashboard page: scripts from this origin (plotly.js) and exactly its own inline chart
    scripts, by hash (no 'unsafe-inline', no eval); nothing else loads by default; no framing."""
    r = client.get(path)
    assert r.status_code == 200
    csp = _directives(r.headers["content-security-policy"])
    inline = re.findall(r"<script[^>]*>(.*?)</script>", r.text, re.DOTALL)
    inline = [s for s in inline if s.strip()]
    assert len(inline) == charts
    assert sorted(csp["script-src"]) == sorted({"'self'", *(_sha256(s) for s in inline)})
    assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["form-action"] == ["'self'"] and csp["base-uri"] == ["'none'"]
    assert "sandbox" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_report_is_sandboxed(client: TestClient) -> None:
    """A report (HTML another command wrote): served in a sandbox whose inline scripts run but in
    an opaque origin (no allow-same-origin: no cookie, no call to the dashboard), loading nothing
    from the network, never framed, not sniffed."""
    r = client.get("/reports/backtest.html")
    assert r.status_code == 200 and "Backtest report 7" in r.text
    csp = _directives(r.headers["content-security-policy"])
    assert "allow-scripts" in csp["sandbox"] and "allow-same-origin" not in csp["sandbox"]
    assert not any(v.startswith("allow-top-navigation") or v in ("allow-forms", "allow-popups")
                   for v in csp["sandbox"])
    assert csp["default-src"] == ["'none'"] and csp["form-action"] == ["'none'"]
    assert "'self'" not in r.headers["content-security-policy"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["content-type"].startswith("text/html")


def test_execute_runs_off_the_event_loop(executing: tuple[TestClient, World],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /execute runs the executor in a worker thread: a live reconcile can wait minutes, and
    in the event loop's thread it froze every other page meanwhile. Inside the send there is no
    running event loop (there is one in the handler's thread)."""
    import asyncio

    from fbr.web.state import DashboardState

    c, _ = executing
    form = form_of(c.get("/execute").text)
    seen: list[bool] = []
    real = DashboardState.execute

    def watched(self: DashboardState, confirmed: str) -> Any:
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:
            seen.append(False)
        return real(self, confirmed)

    monkeypatch.setattr(DashboardState, "execute", watched)
    r = c.post("/execute", data=form, headers={"Origin": OWN, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, r.text[:500]
    assert seen == [False]
