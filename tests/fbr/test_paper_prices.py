"""A paper account an ``fbr run`` loop follows on an exchange's prices is traded and read at them.

The loop (``[run] prices = "binanceusdm"``) moves its paper account to the exchange's marks at
every read. A manual ``fbr execute --exchange paper`` between two cycles filled at the book file's
market instead (stale, possibly by months), booking its fills and the account's PnL at prices the
account never traded at, and ``fbr status``/``solve --exchange paper`` valued it there. Here a fake
exchange quotes every price 10% above the book file's; expected fills by hand: mark x (1 +- half
spread), the book's half spread 0.05%, no impact (no ADV given)."""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fbr.cli import app
from fbr.web.state import DashboardState
from models.book import Book
from models.market import MarketSnapshot

BOOK_MARKS = {"BTC-PERP": 60000.0, "ETH-PERP": 2500.0, "SOL-PERP": 150.0}
#: the exchange's marks: 10% above the book file's
LIVE_MARKS = {s: 1.1 * m for s, m in BOOK_MARKS.items()}
HALF_SPREAD = 0.0005
BOOK = """[book]
name = "paper prices"
cash = 3000.0
[targets]
BTC = 0.50
ETH = 0.30
SOL = 0.20
[spot]
BTC = 0.1
ETH = 1.0
SOL = 30.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 10.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
SOL = 150.0
[market.half_spread]
"BTC-PERP" = 0.0005
"ETH-PERP" = 0.0005
"SOL-PERP" = 0.0005
[risk]
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95
"""


class LiveSource:
    """An exchange quoting spot and marks 10% above the book file's market (spreads, ADV and
    funding the book file's), stating no funding interval."""

    venue = "fake"

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        return MarketSnapshot(time=fallback.time, spot={a: 1.1 * p for a, p in fallback.spot.items()},
                              mark=dict(LIVE_MARKS), funding=fallback.funding,
                              half_spread=fallback.half_spread, adv=fallback.adv)


def _json(*args: str) -> dict[str, Any]:
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


@pytest.fixture
def followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The journal of a paper loop that followed :class:`LiveSource` (its venue opened and
    closed, as ``fbr run`` opens it); the fake source stays in place for the test."""
    from fbr import paper_prices, run_wiring
    from fbr.run_config import load_run_file

    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(paper_prices, "public_gateway", lambda *a, **k: LiveSource())
    (tmp_path / "book.toml").write_text(BOOK, encoding="utf-8")
    run = tmp_path / "run.toml"
    run.write_text('book = "book.toml"\n[[policies]]\nkind = "naive_futures"\nband = "1%"\n'
                   'name = "naive"\n[run]\nexchange = "paper"\nprices = "binanceusdm"\n',
                   encoding="utf-8")
    journal = tmp_path / "j.sqlite"
    opened = run_wiring.paper_venue(load_run_file(run), journal)
    opened.started()  # the loop holds its run lock: it records the prices it follows
    opened.close()
    return journal


def _fills(doc: dict[str, Any]) -> dict[str, tuple[str, float]]:
    return {leg["symbol"]: (leg["side"], leg["average"]) for leg in doc["report"]["legs"]
            if leg["filled"] > 0}


def test_a_manual_paper_trade_fills_at_the_prices_the_loop_follows(
        tmp_path: Path, followed: Path) -> None:
    doc = _json("execute", str(tmp_path / "book.toml"), "--exchange", "paper",
                "--journal", str(followed))
    fills = _fills(doc)
    assert fills, doc["report"]
    for symbol, (side, price) in fills.items():
        sign = 1.0 if side == "buy" else -1.0
        assert price == pytest.approx(LIVE_MARKS[symbol] * (1 + sign * HALF_SPREAD), rel=1e-12)


def test_status_and_solve_value_the_account_at_those_prices(tmp_path: Path, followed: Path) -> None:
    """NAV on the exchange's prices: cash 3,000 + spot 0.1 x 66,000 + 1 x 2,750 + 30 x 165
    = 17,300 USD (no futures yet); the book file's market gives 15,730."""
    book = str(tmp_path / "book.toml")
    st = _json("status", book, "--exchange", "paper", "--journal", str(followed))
    assert st["nav"] == pytest.approx(3000 + 6600 + 2750 + 4950, rel=1e-12)
    sol = _json("solve", book, "--exchange", "paper", "--journal", str(followed))
    assert sol["holdings_source"].endswith("at binanceusdm prices")
    assert sol["nav"] == pytest.approx(17300.0, rel=1e-12)


def test_an_account_no_loop_followed_on_an_exchange_trades_at_the_book_s_market(
        tmp_path: Path) -> None:
    (tmp_path / "book.toml").write_text(BOOK, encoding="utf-8")
    doc = _json("execute", str(tmp_path / "book.toml"), "--exchange", "paper",
                "--journal", str(tmp_path / "j.sqlite"))
    fills = _fills(doc)
    assert fills
    for symbol, (side, price) in fills.items():
        sign = 1.0 if side == "buy" else -1.0
        assert price == pytest.approx(BOOK_MARKS[symbol] * (1 + sign * HALF_SPREAD), rel=1e-12)


class CrashSource(LiveSource):
    """An exchange quoting BTC at 59,000 (the book file's 60,000 less 1,000 USD)."""

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        marks = {**fallback.mark, "BTC-PERP": 59_000.0}
        return MarketSnapshot(time=fallback.time, spot={**fallback.spot, "BTC": 59_000.0},
                              mark=marks, funding=fallback.funding,
                              half_spread=fallback.half_spread, adv=fallback.adv)


def test_a_liquidation_at_the_exchange_s_marks_is_alerted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's paper account holds 1 BTC-PERP long (entry 60,000) on 1,000 USD of wallet cash.
    At the exchange's 59,000 its collateral is 1,000 - 1 x 1,000 = 0 USD <= maintenance: the
    paper exchange closes the position, and the loop's alert hub gets one CRITICAL margin alert
    naming it (it had none: the liquidation was only kept in a list no one read)."""
    from contextlib import closing
    from datetime import UTC, datetime

    from executor.alerts import AlertHub, AlertKind, MemorySink, Severity
    from executor.paper_store import PaperStore
    from fbr import paper_prices, run_wiring
    from fbr.run_config import load_run_file

    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(paper_prices, "public_gateway", lambda *a, **k: CrashSource())
    book = BOOK.replace("cash = 3000.0", "cash = 1000.0") + (
        '[[futures]]\nsymbol = "BTC-PERP"\ncontracts = 1.0\nentry_price = 60000.0\n')
    (tmp_path / "book.toml").write_text(book, encoding="utf-8")
    run = tmp_path / "run.toml"
    run.write_text('book = "book.toml"\n[[policies]]\nkind = "naive_futures"\nband = "1%"\n'
                   'name = "naive"\n[run]\nexchange = "paper"\nprices = "binanceusdm"\n',
                   encoding="utf-8")
    hub = AlertHub([sink := MemorySink()], book="paper prices")
    opened = run_wiring.paper_venue(load_run_file(run), tmp_path / "j.sqlite", hub)
    try:
        opened.venue.fallback(datetime(2024, 6, 1, 1, tzinfo=UTC))  # the loop's read
    finally:
        opened.close()
    with closing(PaperStore(tmp_path / "j.sqlite", "paper prices")) as store:
        saved = store.load()
    assert saved is not None and "BTC-PERP" not in saved[0]  # closed in the stored account
    (alert,) = sink.alerts
    assert (alert.kind, alert.severity, alert.title) == (AlertKind.MARGIN, Severity.CRITICAL,
                                                         "paper account liquidated")
    assert "collateral 0.00 USD" in alert.text and "BTC-PERP +1" in alert.text


RUN_FILE = ('book = "book.toml"\n[[policies]]\nkind = "naive_futures"\nband = "1%"\n'
            'name = "naive"\n[run]\nexchange = "paper"\nprices = "{prices}"\n')


def _followed_short(tmp_path: Path, prices: str, entry: float) -> Path:
    """A paper account short 0.5 BTC-PERP at ``entry`` on 3,100 USD (spot not pledged), whose loop
    (``prices``) has started."""
    from executor.paper_store import PaperStore
    from fbr import run_wiring
    from fbr.run_config import load_run_file
    from models.book import FuturesPosition

    journal = tmp_path / "short.sqlite"
    store = PaperStore(journal, "paper prices")
    store.init_account({"BTC-PERP": FuturesPosition(-0.5, entry)}, 3100.0)
    store.close()
    (tmp_path / "run.toml").write_text(RUN_FILE.format(prices=prices), encoding="utf-8")
    opened = run_wiring.paper_venue(load_run_file(tmp_path / "run.toml"), journal)
    opened.started()
    opened.close()
    return journal


def test_a_second_loop_refused_at_the_lock_leaves_the_price_source(
        tmp_path: Path, followed: Path) -> None:
    """A loop on the exchange's prices runs (its run lock held); a second ``fbr run`` on the
    book file's prices is refused ("another fbr run is running"): it records nothing, and a
    manual paper trade still fills at the exchange's marks +- the half spread (it recorded
    "book" before it met the lock, and the trade filled 10% off)."""
    from executor.lock import account_lock

    (tmp_path / "static.toml").write_text(RUN_FILE.format(prices="book"), encoding="utf-8")
    with account_lock("run-paper:paper prices"):
        res = CliRunner().invoke(app, ["run", str(tmp_path / "static.toml"), "--once",
                                       "--journal", str(followed), "--json"])
        assert res.exit_code == 6 and "another fbr run" in res.output, res.output
    doc = _json("execute", str(tmp_path / "book.toml"), "--exchange", "paper",
                "--journal", str(followed))
    fills = _fills(doc)
    assert fills
    for symbol, (side, price) in fills.items():
        sign = 1.0 if side == "buy" else -1.0
        assert price == pytest.approx(LIVE_MARKS[symbol] * (1 + sign * HALF_SPREAD), rel=1e-12)


def test_reads_and_a_refused_trade_leave_a_liquidatable_account_to_the_loop(
        tmp_path: Path, followed: Path) -> None:
    """Short 0.5 BTC-PERP from 60,000 at the exchange's 66,000 on 3,100 USD: collateral
    C = 3,100 - 0.5 x 6,000 = 100 USD, at or below maintenance. ``fbr status`` reports that
    account (NAV = 3,100 + 0.1 x 66,000 + 2,750 + 30 x 165 - 3,000 = 14,400 USD), not one its read
    liquidated in memory; ``fbr execute`` is refused by the plan's margin checks and leaves the
    journal's account as it is (its read had liquidated it, silently, with a 330 USD penalty)."""
    from executor.paper_store import PaperStore

    journal = _followed_short(tmp_path, "binanceusdm", 60000.0)
    book = str(tmp_path / "book.toml")
    st = _json("status", book, "--exchange", "paper", "--journal", str(journal))
    assert st["positions"]["BTC-PERP"] == pytest.approx(-0.5)
    assert st["margin"]["collateral"] == pytest.approx(100.0, abs=1e-6)
    assert st["nav"] == pytest.approx(14400.0, rel=1e-12)
    res = CliRunner().invoke(app, ["execute", book, "--exchange", "paper", "--journal",
                                   str(journal), "--json"])
    assert res.exit_code != 0
    with closing(PaperStore(journal, "paper prices")) as store:
        saved = store.load()
    assert saved is not None and saved[0]["BTC-PERP"].contracts == -0.5 and saved[1] == 3100.0


def test_the_exchange_down_is_one_message_naming_the_account_and_the_fix(
        tmp_path: Path, followed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from executor.base import ReadFailedError
    from fbr import paper_prices

    class Down(LiveSource):
        def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
            raise ReadFailedError("binanceusdm: fetch_funding_rate failed 4 times: NetworkError")

    monkeypatch.setattr(paper_prices, "public_gateway", lambda *a, **k: Down())
    res = CliRunner().invoke(app, ["status", str(tmp_path / "book.toml"), "--exchange", "paper",
                                   "--journal", str(followed), "--json"])
    doc = json.loads(res.stdout)
    assert doc["status"] == "error"
    assert "paper account of book 'paper prices' follows binanceusdm's live prices" in doc["error"]
    assert "NetworkError" in doc["error"] and "Fix: check the network" in doc["error"]


class Gated(LiveSource):
    """:class:`LiveSource`, counting its reads; each waits for ``gate`` when one is set."""

    def __init__(self) -> None:
        self.reads = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        self.reads += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        return super().market(book, fallback)


def _dashboard(tmp_path: Path, followed: Path, source: Gated,
               monkeypatch: pytest.MonkeyPatch) -> DashboardState:
    from fbr import paper_prices
    from fbr.execute_wiring import ExchangeChoice
    from fbr.web.state import ServeConfig

    monkeypatch.setattr(paper_prices, "public_gateway", lambda *a, **k: source)
    return DashboardState(ServeConfig(book=tmp_path / "book.toml", exchange=ExchangeChoice.PAPER,
                                      journal=followed, state_dir=tmp_path / "state",
                                      reports=tmp_path / "reports"))


def test_the_dashboard_s_journal_pages_read_no_prices(
        tmp_path: Path, followed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/history, /orders and /run show journal rows and the health file: they read no price (they
    read the exchange's, to learn the account's key)."""
    source = Gated()
    state = _dashboard(tmp_path, followed, source, monkeypatch)
    state.history()
    state.orders()
    state.run_state()
    assert source.reads == 0


def test_a_slow_price_read_holds_up_no_other_page(
        tmp_path: Path, followed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While /api/status waits for the exchange's prices, /reports answers (the state's lock was
    held across that read, and every page's header waited for it)."""
    import httpx

    from fbr.web.app import create_app

    source = Gated()
    source.gate = threading.Event()
    state = _dashboard(tmp_path, followed, source, monkeypatch)

    async def scenario() -> tuple[bool, int]:
        transport = httpx.ASGITransport(app=create_app(state, None))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as c:
            first = asyncio.ensure_future(c.get("/api/status"))
            while not source.entered.is_set():
                await asyncio.sleep(0.01)
            other = await asyncio.wait_for(c.get("/reports"), 20)
            waiting = not first.done()
            assert source.gate is not None
            source.gate.set()
            assert (await first).status_code == 200
            return waiting, other.status_code

    waiting, code = asyncio.run(scenario())
    assert waiting and code == 200
