"""Paper funding on live prices when the wall clock steps backwards (NTP correction).

A settlement is a fixed instant (08:00 UTC): it must be paid once, whatever order the loop's
reads come in. Expected by hand: one 8 h settlement at r = 0.0003 on a 0.02 BTC short at mark
62,000 = 0.0003 x 0.02 x 62,000 = 0.372 USD received.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from executor.paper import PaperGateway
from executor.paper_feed import LivePrices
from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot


def utc(h: int, mi: int = 0) -> datetime:
    return datetime(2024, 6, 1, h, mi, tzinfo=UTC)


def book() -> Book:
    return Book(assets=(SpotAsset("BTC"),), contracts=(FuturesContract("BTC-PERP", "BTC"),),
                spot={"BTC": 0.1}, targets={"BTC": 1.0}, cash=3000.0,
                futures={"BTC-PERP": FuturesPosition(-0.02, 60_000.0)}, name="clock")


def snap() -> MarketSnapshot:
    return MarketSnapshot(time=utc(0), spot={"BTC": 62_000.0}, mark={"BTC-PERP": 62_000.0},
                          funding={"BTC-PERP": 0.0003})


class Source:
    venue = "source"

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        return snap()


def test_backwards_clock_does_not_pay_a_settlement_twice() -> None:
    b = book()
    paper = PaperGateway(b, snap())
    feed = LivePrices(paper, Source(), b, snap())  # type: ignore[arg-type]
    feed(utc(7, 0))
    feed(utc(9, 0))     # pays the 08:00 settlement
    feed(utc(7, 30))    # the clock steps back 1.5 h (NTP): nothing to pay
    feed(utc(9, 30))    # no settlement since 08:00, which is paid already
    once = 0.0003 * 0.02 * 62_000.0
    assert feed.paid == pytest.approx(once, rel=1e-12)
    assert paper.account(b, snap()).cash == pytest.approx(3000.0 + once, rel=1e-12)
