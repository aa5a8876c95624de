"""Paper trading on live prices (executor/paper_feed.py): the paper exchange follows the source's
market and pays every funding settlement passed since the previous read, by hand."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from exec_helpers import market, three_asset_book

from executor.journal import Journal
from executor.paper import PaperGateway, PaperStore
from executor.paper_feed import LivePrices
from models.book import Book, FuturesPosition
from models.market import MarketSnapshot, settlements_between


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


@pytest.mark.parametrize(("t0", "t1", "h", "n"), [
    (utc(2024, 6, 1, 7, 59), utc(2024, 6, 1, 8, 0), 8.0, 1),   # 08:00 is in (t0, t1]
    (utc(2024, 6, 1, 8, 0), utc(2024, 6, 1, 15, 59), 8.0, 0),  # 08:00 itself is not
    (utc(2024, 6, 1, 1, 0), utc(2024, 6, 2, 1, 0), 8.0, 3),    # 08, 16, 00
    (utc(2024, 6, 1, 1, 0), utc(2024, 6, 2, 1, 0), 4.0, 6),
    (utc(2024, 6, 1, 1, 0), utc(2024, 6, 1, 0, 0), 8.0, 0),    # backwards: none
])
def test_settlements_between(t0: datetime, t1: datetime, h: float, n: int) -> None:
    assert settlements_between(t0, t1, h) == n


class Source:
    """A market source whose marks and funding the test sets."""

    venue = "source"

    def __init__(self, snap: MarketSnapshot) -> None:
        self.snap = snap

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        return self.snap


def test_paper_follows_the_source_and_pays_funding() -> None:
    book = three_asset_book(futures={"BTC-PERP": FuturesPosition(-0.02, 60_000.0)}, cash=3000.0)
    paper = PaperGateway(book, market())
    moved = dataclasses.replace(market({"BTC": 62_000.0, "ETH": 2_600.0, "SOL": 140.0}),
                                funding={"BTC-PERP": 0.0003, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    feed = LivePrices(paper, Source(moved), book, market())  # type: ignore[arg-type]
    first = feed(utc(2024, 6, 1, 7, 0))
    assert first.mark_price("BTC-PERP") == 62_000.0 and first.time == utc(2024, 6, 1, 7, 0)
    assert paper.market(book, market()).mark_price("BTC-PERP") == 62_000.0
    assert paper.account(book, first).cash == 3000.0  # the first read pays nothing
    feed(utc(2024, 6, 2, 1, 0))  # 08:00, 16:00, 00:00: three settlements at 0.03%
    received = 3 * 0.0003 * 0.02 * 62_000.0  # a short receives a positive rate
    assert paper.account(book, first).cash == pytest.approx(3000.0 + received, rel=1e-12)
    assert feed.paid == pytest.approx(received, rel=1e-12)


def test_paper_funding_reaches_the_journal(tmp_path: Path) -> None:
    """Each settlement the paper exchange pays is a row of the journal's funding table (what
    ``fbr status`` and the dashboard read): by contract, USD received, at the paper clock."""
    book = three_asset_book(futures={"BTC-PERP": FuturesPosition(-0.02, 60_000.0),
                                     "ETH-PERP": FuturesPosition(0.5, 2_500.0)}, cash=3000.0)
    with Journal(tmp_path / "j.sqlite") as j:
        store = PaperStore(j.path, book.name)
        paper = PaperGateway(book, market(), store=store, clock=lambda: 1_717_200_000_000)
        got = paper.settle_funding({"BTC-PERP": 0.0002, "ETH-PERP": 0.0004, "SOL-PERP": 0.001})
        store.close()
        rows = j.funding_since("paper", book.name, 0)
    btc, eth = 0.0002 * 0.02 * 60_000.0, -0.0004 * 0.5 * 2_500.0  # short receives, long pays
    assert rows == pytest.approx({"BTC-PERP": btc, "ETH-PERP": eth})  # SOL: no position, no row
    assert got == pytest.approx(btc + eth)
    saved = PaperStore(tmp_path / "j.sqlite", book.name).load()
    assert saved is not None and saved[1] == pytest.approx(3000.0 + btc + eth)
