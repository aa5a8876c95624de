"""The paper exchange's margin rules against hand arithmetic (executor/paper_margin.py): a position
whose collateral falls to or below maintenance is closed at the mark with the liquidation penalty,
the insurance fund covering a negative wallet, all in one store transaction; an order that opens or
increases a position beyond the collateral's initial margin is refused (-2019)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from executor.base import OrderRejectedError, OrderStatus
from executor.paper import PaperGateway, PaperStore
from executor.paper_feed import LivePrices
from executor.plan import OrderLeg, OrderType, Side
from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot

# one linear perpetual: 10x leverage (IM = |n| / 10), one bracket mmr 0.5% (MM = 0.005 |n|),
# taker fee 5 bp
BTC = FuturesContract("BTC-PERP", "BTC")
T0 = pd.Timestamp("2024-06-01", tz="UTC")


def _book(cash: float, long: float = 0.0) -> Book:
    futures = {"BTC-PERP": FuturesPosition(long, 10_000.0)} if long else {}
    return Book(assets=(SpotAsset("BTC"),), contracts=(BTC,), spot={"BTC": 0.1},
                targets={"BTC": 1.0}, cash=cash, futures=futures, name="margin book")


def _market(mark: float, hours: int = 0) -> MarketSnapshot:
    return MarketSnapshot(time=T0 + pd.Timedelta(hours=hours), spot={"BTC": mark},
                          mark={"BTC-PERP": mark}, half_spread={"BTC-PERP": 0.0})


def _leg(cid: str, side: Side, q: float) -> OrderLeg:
    return OrderLeg(0, cid, "BTC-PERP", "X", side, q, 0.0, 0.0, False, OrderType.MARKET, None)


def test_two_steps_a_drop_below_maintenance_liquidates_at_the_mark(tmp_path: Path) -> None:
    """Long 1 BTC-PERP from 10,000 with 1,000 USD cash (no pledges: C = cash + uPnL).
    Step 1, mark 9,100: C = 1,000 - 900 = 100 > MM = 0.005 x 9,100 = 45.5: nothing happens.
    Step 2, mark 9,040: C = 1,000 - 960 = 40 <= MM = 0.005 x 9,040 = 45.2: liquidated. The close
    at 9,040 realises -960 (cash 40), the penalty 1% x 9,040 = 90.4 leaves -50.4, which the
    insurance fund covers (+50.4): cash 0, no position."""
    p = tmp_path / "j.sqlite"
    book = _book(1_000.0, long=1.0)
    gw = PaperGateway(book, _market(10_000.0), store=PaperStore(p, book.name))
    gw.set_market(_market(9_100.0, 8))
    assert gw.liquidate_if_due() is None
    gw.set_market(_market(9_040.0, 16))
    event = gw.liquidate_if_due()
    assert event is not None
    assert event.contracts == {"BTC-PERP": 1.0} and event.marks == {"BTC-PERP": 9_040.0}
    assert event.collateral == pytest.approx(40.0, rel=1e-12)
    assert event.maintenance == pytest.approx(45.2, rel=1e-12)
    assert event.penalty == pytest.approx(90.4, rel=1e-12)
    assert event.insurance == pytest.approx(50.4, rel=1e-12)
    assert pd.Timestamp(event.time) == T0 + pd.Timedelta(hours=16)
    assert gw.liquidations == [event]
    ms = int((T0 + pd.Timedelta(hours=16)).timestamp() * 1000)
    con = sqlite3.connect(p)
    trades = con.execute("SELECT order_id, contracts, price, fee, time_ms FROM paper_trades").fetchall()
    orders = con.execute("SELECT client_id, status, filled FROM paper_orders").fetchall()
    cash = con.execute("SELECT cash FROM paper_account").fetchone()[0]
    held = con.execute("SELECT COUNT(*) FROM paper_positions").fetchone()[0]
    con.close()
    oid = f"liquidate-BTC-PERP-{ms}"
    assert trades == [(oid, -1.0, 9_040.0, pytest.approx(90.4, rel=1e-12), ms)]
    assert orders == [(oid, OrderStatus.FILLED.value, 1.0)]
    assert cash == pytest.approx(0.0, abs=1e-9) and held == 0
    assert gw.account(book, _market(9_040.0, 16)).futures == {}
    assert gw.liquidate_if_due() is None  # nothing left to liquidate


def test_a_small_penalty_leaves_cash_and_the_fund_pays_nothing() -> None:
    """The same breach at mark 9,040 (C = 40 <= MM = 45.2) with a 0.2% penalty: 0.002 x 9,040 =
    18.08, cash 40 - 18.08 = 21.92 >= 0, so the insurance fund covers 0."""
    gw = PaperGateway(_book(1_000.0, long=1.0), _market(10_000.0))
    gw.set_market(_market(9_040.0, 8))
    event = gw.liquidate_if_due(0.002)
    assert event is not None and event.insurance == 0.0
    assert event.penalty == pytest.approx(18.08, rel=1e-12)
    acct = gw.account(_book(0.0), _market(9_040.0, 8))
    assert acct.futures == {} and acct.cash == pytest.approx(21.92, rel=1e-12)


def test_collateral_above_maintenance_keeps_the_position() -> None:
    """Mark 9,050: C = 1,000 - 950 = 50 > MM = 45.25: no liquidation."""
    gw = PaperGateway(_book(1_000.0, long=1.0), _market(10_000.0))
    gw.set_market(_market(9_050.0, 8))
    assert gw.liquidate_if_due() is None
    assert gw.account(_book(0.0), _market(9_050.0, 8)).futures["BTC-PERP"].contracts == 1.0


def test_an_order_beyond_the_initial_margin_is_refused(tmp_path: Path) -> None:
    """1,000 USD cash, flat, mark 10,000 (no spread): buying 1 BTC needs IM 10,000 / 10 = 1,000
    against C = 1,000 - fee 5 = 995: refused (-2019), nothing stored. 0.99 BTC needs 990 against
    1,000 - 4.95 = 995.05: filled. At mark 9,000 (C = 995.05 - 990 = 5.05), a sale of 0.5 (it
    reduces) is filled; a further buy of 0.01 (IM 0.5 x 9,000 / 10 = 450 > C) is refused."""
    p = tmp_path / "j.sqlite"
    book = _book(1_000.0)
    gw = PaperGateway(book, _market(10_000.0), store=PaperStore(p, book.name))
    with pytest.raises(OrderRejectedError, match=r"-2019.*1,000\.00 USD of initial margin "
                                                 r"against 995\.00 USD"):
        gw.create_order(_leg("a", Side.BUY, 1.0))
    acct = gw.account(book, _market(10_000.0))
    assert acct.futures == {} and acct.cash == 1_000.0 and gw.orders == {}
    assert gw.create_order(_leg("b", Side.BUY, 0.99)).status == OrderStatus.FILLED
    gw.set_market(_market(9_000.0, 8))
    assert gw.create_order(_leg("c", Side.SELL, 0.5)).status == OrderStatus.FILLED
    with pytest.raises(OrderRejectedError, match="-2019"):
        gw.create_order(_leg("d", Side.BUY, 0.01))
    held = gw.account(book, _market(9_000.0, 8)).futures["BTC-PERP"]
    assert held.contracts == pytest.approx(0.49, rel=1e-12)


class _Source:
    """A price source whose market the test sets (marks, no funding)."""

    venue = "source"

    def __init__(self, snap: MarketSnapshot) -> None:
        self.snap = snap

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        return self.snap


def test_a_loop_on_live_prices_liquidates_at_its_read() -> None:
    """The paper loop on an exchange's prices (executor/paper_feed.py): a read at mark 9,040 puts
    the long 1 BTC-PERP from 10,000 with 1,000 USD cash at C = 40 <= MM = 45.2: closed at 9,040,
    penalty 90.4, insurance 50.4 (the first case's arithmetic), cash 0."""
    book = _book(1_000.0, long=1.0)
    gw = PaperGateway(book, _market(10_000.0))
    source = _Source(_market(10_000.0))
    feed = LivePrices(gw, source, book, _market(10_000.0))  # type: ignore[arg-type]
    feed(datetime(2024, 6, 1, 1, tzinfo=UTC))
    assert gw.liquidations == []
    source.snap = _market(9_040.0)
    feed(datetime(2024, 6, 1, 2, tzinfo=UTC))
    assert [e.penalty for e in gw.liquidations] == [pytest.approx(90.4, rel=1e-12)]
    assert gw.liquidations[0].insurance == pytest.approx(50.4, rel=1e-12)
    acct = gw.account(book, _market(9_040.0))
    assert acct.futures == {} and acct.cash == pytest.approx(0.0, abs=1e-9)
