"""Two runs on one paper account (one journal file, one book): a long-lived gateway (an ``fbr run``
loop's) and another one opened meanwhile (a manual ``fbr execute --exchange paper``). The stored
account is the account: the long-lived gateway reads what the other run did, and its own fills,
funding and expiry settlements are applied on top of the stored account, never over it with the
copy it read when it started. Every figure by hand: fills at the mark (no spread, no impact), taker
fee 5 bp of the notional at the mark; the account's positions always equal the sum of its trades."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from exec_helpers import market, three_asset_book

from executor.base import OrderRejectedError
from executor.journal_schema import JournalError
from executor.paper import PaperGateway, PaperStore
from executor.plan import OrderLeg, OrderType, Side, book_instruments
from models.book import Book
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot


def _leg(cid: str, symbol: str, side: Side, q: float, *, reduce_only: bool = False) -> OrderLeg:
    return OrderLeg(0, cid, symbol, "X", side, q, 0.0, 0.0, reduce_only, OrderType.MARKET, None)


def _stored(path: Path, book: str) -> tuple[dict[str, float], float, dict[str, float]]:
    """(positions, cash, sum of trades per contract) of ``book``'s paper account, read from the
    file with plain SQL."""
    c = sqlite3.connect(path)
    try:
        pos = {s: q for s, q in c.execute(
            "SELECT symbol, contracts FROM paper_positions WHERE book_name = ?", (book,))}
        cash = c.execute("SELECT cash FROM paper_account WHERE book_name = ?", (book,)).fetchone()[0]
        trades: dict[str, float] = {}
        for s, q in c.execute("SELECT symbol, contracts FROM paper_trades WHERE book_name = ?", (book,)):
            trades[s] = trades.get(s, 0.0) + q
    finally:
        c.close()
    return pos, float(cash), trades


def _two(path: Path, book: Book, m: MarketSnapshot) -> tuple[PaperGateway, PaperGateway]:
    """The loop's gateway (opened first, on a flat account) and the manual run's."""
    loop = PaperGateway(book, m, store=PaperStore(path, book.name))
    manual = PaperGateway(book, m, store=PaperStore(path, book.name))
    return loop, manual


def test_a_fill_lands_on_the_account_another_run_traded(tmp_path: Path) -> None:
    book, p = three_asset_book(), tmp_path / "j.sqlite"
    loop, manual = _two(p, book, market())
    manual.create_order(_leg("manual-1", "BTC-PERP", Side.SELL, 0.02))  # fee 5 bp x 1,200 = 0.6
    # the loop reads the account the manual run left
    assert loop.positions(book_instruments(book)) == {"BTC-PERP": -0.02, "ETH-PERP": 0.0,
                                                      "SOL-PERP": 0.0}
    assert loop.account(book, market()).cash == pytest.approx(3000.0 - 0.6, rel=1e-12)
    # BTC at 61,000: the loop buys 0.005 back: realises 0.005 x (60,000 - 61,000) = -5, fee
    # 5 bp x 0.005 x 61,000 = 0.1525; the short left is 0.015 from 60,000
    m2 = market({"BTC": 61_000.0, "ETH": 2_500.0, "SOL": 150.0})
    loop.set_market(m2)
    loop.create_order(_leg("loop-1", "BTC-PERP", Side.BUY, 0.005))
    pos, cash, trades = _stored(p, book.name)
    assert pos == pytest.approx({"BTC-PERP": -0.015}, abs=1e-12)
    assert trades == pytest.approx(pos, abs=1e-12)
    assert cash == pytest.approx(3000.0 - 0.6 - 5.0 - 0.1525, rel=1e-12)
    for gw in (loop, manual):  # both runs read the stored account
        acc = gw.account(book, m2)
        assert acc.futures["BTC-PERP"].contracts == pytest.approx(-0.015, abs=1e-12)
        assert acc.futures["BTC-PERP"].entry_price == 60_000.0
        assert acc.cash == pytest.approx(cash, rel=1e-12)
        assert set(gw.orders) == {"manual-1", "loop-1"}


def test_a_reduce_only_leg_is_checked_against_the_stored_position(tmp_path: Path) -> None:
    book, p = three_asset_book(), tmp_path / "j.sqlite"
    loop, manual = _two(p, book, market())
    manual.create_order(_leg("manual-1", "ETH-PERP", Side.BUY, 0.4))  # long 0.4 ETH, fee 0.5
    st = loop.create_order(_leg("loop-1", "ETH-PERP", Side.SELL, 0.4, reduce_only=True))
    assert st.filled == 0.4  # closes the manual run's long (the loop's first read was flat)
    pos, cash, trades = _stored(p, book.name)
    assert pos == {} and trades == pytest.approx({"ETH-PERP": 0.0}, abs=1e-12)
    assert cash == pytest.approx(3000.0 - 0.5 - 0.5, rel=1e-12)
    # a client id the other run used is refused by both
    with pytest.raises(OrderRejectedError, match="already used"):
        loop.create_order(_leg("manual-1", "ETH-PERP", Side.BUY, 0.1))


def test_funding_is_paid_on_the_stored_position(tmp_path: Path) -> None:
    book, p = three_asset_book(), tmp_path / "j.sqlite"
    loop, manual = _two(p, book, market())
    manual.create_order(_leg("manual-1", "BTC-PERP", Side.SELL, 0.02))  # fee 0.6
    # rate 1 bp on a short 0.02 x 60,000 = 1,200 USD: the short receives 0.12
    assert loop.settle_funding({"BTC-PERP": 0.0001}) == pytest.approx(0.12, rel=1e-12)
    pos, cash, trades = _stored(p, book.name)
    assert pos == {"BTC-PERP": -0.02} and trades == pos
    assert cash == pytest.approx(3000.0 - 0.6 + 0.12, rel=1e-12)
    c = sqlite3.connect(p)
    rows = c.execute("SELECT venue, book_name, symbol, amount FROM funding").fetchall()
    c.close()
    assert rows == [("paper", book.name, "BTC-PERP", pytest.approx(0.12, rel=1e-12))]


EXPIRY = datetime(2024, 6, 1, 8, tzinfo=UTC)
# 20x: the 30,000 USD short below needs 1,500 USD of initial margin against the 3,000 USD wallet
# (at the default 10x it needs 3,000 > 2,985 after its fee: the paper venue's -2019 refuses it)
BTC_Q = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED, expiry=EXPIRY, taker_fee=0.0005,
                        leverage=20.0)


def _dated_market(time: str, btc: float) -> MarketSnapshot:
    return MarketSnapshot(time=pd.Timestamp(time, tz="UTC"), spot={"BTC": btc},
                          mark={"BTC-Q": btc}, half_spread={"BTC-Q": 0.0})


def test_an_expiry_settles_the_stored_position(tmp_path: Path) -> None:
    book = Book(assets=(SpotAsset("BTC"),), contracts=(BTC_Q,), spot={"BTC": 0.1},
                targets={"BTC": 0.5}, cash=3000.0, futures={}, name="dated book")
    p = tmp_path / "j.sqlite"
    loop, manual = _two(p, book, _dated_market("2024-06-01", 60_000.0))
    manual.create_order(_leg("manual-1", "BTC-Q", Side.SELL, 0.5))  # fee 5 bp x 30,000 = 15
    # past the expiry at S = 60,500: the short loses 0.5 x 500 = 250, fee 5 bp x 0.5 x 60,500
    fees = loop.set_market(_dated_market("2024-06-02", 62_000.0), None, {"BTC-Q": 60_500.0})
    assert fees == pytest.approx(15.125, rel=1e-12)
    pos, cash, trades = _stored(p, book.name)
    assert pos == {} and trades == pytest.approx({"BTC-Q": 0.0}, abs=1e-12)
    assert cash == pytest.approx(3000.0 - 15.0 - 250.0 - 15.125, rel=1e-12)
    assert manual.account(book, _dated_market("2024-06-02", 62_000.0)).cash == pytest.approx(cash)


def test_a_contract_the_book_does_not_list_is_refused_at_the_next_read(tmp_path: Path) -> None:
    """Another run with a book (same name) listing a fourth contract trades it: the loop's book
    could neither value nor close it, so its next read of the account is refused, naming it."""
    p = tmp_path / "j.sqlite"
    book = three_asset_book()
    loop = PaperGateway(book, market(), store=PaperStore(p, book.name))
    wide = dataclasses.replace(book, contracts=(*book.contracts, FuturesContract("BTC-Q2", "BTC")))
    m = market()
    m = dataclasses.replace(m, mark={**m.mark, "BTC-Q2": 60_000.0})
    other = PaperGateway(wide, m, store=PaperStore(p, book.name))
    other.create_order(_leg("manual-1", "BTC-Q2", Side.SELL, 0.01))
    with pytest.raises(JournalError, match=r"BTC-Q2 -0\.01 contracts"):
        loop.account(book, market())
