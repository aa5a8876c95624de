"""The time a paper account's funding is paid up to is kept with the account.

A paper loop on an exchange's prices pays, at each read, the funding settlements since the last
one was paid (executor/paper_feed.py). That time lived in the loop's memory: a loop run from cron
(``fbr run --once``: a new process at every wake-up, each one's first read paying nothing) never
paid any funding, and a position a manual ``fbr execute --exchange paper`` opened between a
settlement and the loop's next read was paid that settlement. Now the time is stored with the
account (``PaperGateway.settle_funding_to``) and moved in the same transaction as the payment, so
every process pays each settlement once, on the positions held when it was first read after it.

The book: short 10 SOL-PERP at mark 150 (the exchange's funding 0.05% per 8 h, settlements at
00:00, 08:00, 16:00 UTC), 3,000 USD cash. The 08:00 settlement pays the short
10 x 150 x 0.0005 = 0.75 USD; a taker fee on 10 SOL is 0.05% x 1,500 = 0.75 USD. By hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from executor.base import ExchangeGateway
from executor.paper_feed import live_paper
from executor.paper_store import PaperStore
from executor.plan import OrderLeg, OrderType, Side
from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot

T0 = datetime(2024, 6, 1, tzinfo=UTC)


def at(hour: float) -> datetime:
    return datetime.fromtimestamp(T0.timestamp() + 3600 * hour, tz=UTC)


class Source:
    """The exchange's public market: SOL at 150, SOL-PERP funding 0.05% per 8 h."""

    venue = "source"

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        return dataclasses.replace(fallback, funding={"SOL-PERP": 5e-4})


def gateway(source: Source) -> ExchangeGateway:
    """The fake source where the feed takes an exchange gateway (it reads only ``market``)."""
    return cast(ExchangeGateway, source)


def book(short: bool) -> Book:
    sol = FuturesContract(symbol="SOL-PERP", underlying="SOL", taker_fee=0.0005, lot_step=1e-8)
    futures = {"SOL-PERP": FuturesPosition(-10.0, 150.0)} if short else {}
    return Book(assets=(SpotAsset("SOL"),), contracts=(sol,), spot={"SOL": 10.0},
                targets={"SOL": 1.0}, cash=3000.0, futures=futures, name="clock")


def market() -> MarketSnapshot:
    return MarketSnapshot(time=T0, spot={"SOL": 150.0}, mark={"SOL-PERP": 150.0})


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "j.sqlite"


def process_read(path: Path, bk: Book, t: datetime, *, liquidate: bool = True) -> float:
    """One process (a cron wake-up, a manual command) reading the account at ``t``: its own
    store and feed, as ``fbr run --once`` opens them; the funding it paid (USD)."""
    with closing(PaperStore(path, bk.name)) as store:
        _, feed = live_paper(bk, bk, market(), gateway(Source()), daily_vol={}, store=store,
                             liquidate=liquidate)
        feed(t)
        return feed.paid


def cash(path: Path) -> float:
    with closing(PaperStore(path, "clock")) as store:
        saved = store.load()
    assert saved is not None
    return saved[1]


def test_cron_wakeups_pay_the_settlement_between_them(journal: Path) -> None:
    """Wake-ups at 07:30 and 08:30, each a new process: the second pays the 08:00 settlement
    (it paid nothing before: each process's first read paid nothing)."""
    assert process_read(journal, book(True), at(7.5)) == 0.0  # the account's first read
    assert process_read(journal, book(True), at(8.5)) == pytest.approx(0.75, rel=1e-12)
    assert cash(journal) == pytest.approx(3000.75, rel=1e-12)
    # a third wake-up at 09:00, and one with a clock stepped back to 08:10: nothing more
    assert process_read(journal, book(True), at(9.0)) == 0.0
    assert process_read(journal, book(True), at(8 + 1 / 6)) == 0.0
    assert cash(journal) == pytest.approx(3000.75, rel=1e-12)


def test_a_position_opened_after_a_settlement_is_not_paid_it(journal: Path) -> None:
    """The loop reads a flat account at 07:30; at 08:15 a manual paper trade reads the prices
    (paying the 08:00 settlement on the flat account: nothing) and sells 10 SOL-PERP; the loop's
    08:30 read pays nothing either. Only the fee leaves the wallet: 3,000 - 0.75."""
    flat = book(False)
    process_read(journal, flat, at(7.5))
    with closing(PaperStore(journal, flat.name)) as store:
        gw, feed = live_paper(flat, flat, market(), gateway(Source()), daily_vol={}, store=store,
                              liquidate=False)
        feed(at(8.25))
        gw.create_order(OrderLeg(0, "fbrmanual-000", "SOL-PERP", "SOL/USDT:USDT", Side.SELL, 10.0,
                                 -1500.0, 150.0, False, OrderType.MARKET))
    assert process_read(journal, flat, at(8.5)) == 0.0
    assert cash(journal) == pytest.approx(3000.0 - 0.75, rel=1e-12)


def test_a_one_off_read_does_not_liquidate(journal: Path) -> None:
    """A read with ``liquidate=False`` (a manual command's) leaves an account at or below
    maintenance as it is (the loop's read liquidates it, and alerts): the short of 10 SOL at
    entry 150 on 3,000 USD cash is liquidatable at a mark of 450 (3,000 - 10 x 300 = 0 USD)."""

    class Squeeze(Source):
        def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
            return dataclasses.replace(fallback, spot={"SOL": 450.0}, mark={"SOL-PERP": 450.0})

    bk = book(True)
    with closing(PaperStore(journal, bk.name)) as store:
        gw, feed = live_paper(bk, bk, market(), gateway(Squeeze()), daily_vol={}, store=store,
                              liquidate=False)
        feed(at(1.0))
        assert gw.liquidations == [] and store.load() == ({"SOL-PERP": FuturesPosition(-10.0, 150.0)},
                                                          3000.0)
        gw2, feed2 = live_paper(bk, bk, market(), gateway(Squeeze()), daily_vol={}, store=store)
        feed2(at(2.0))
        assert len(gw2.liquidations) == 1


class Settled(Source):
    """:class:`Source` that also serves settled rates: 0.0002 at 08:00 only (16:00 not yet
    published), its calls recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def exchange_symbol(self, contract: FuturesContract) -> str:
        return f"{contract.underlying}/USDT:USDT"

    def funding_rate_history(self, symbol: str, since_ms: int,
                             until_ms: int) -> list[tuple[int, float]]:
        self.calls.append((symbol, since_ms, until_ms))
        return [(int(at(8).timestamp() * 1000), 0.0002)]


def test_settled_rates_first_the_rate_now_for_the_rest(journal: Path) -> None:
    """Reads at 07:30 and 16:30 hold the 08:00 and 16:00 settlements: 08:00 at its settled
    0.0002, 16:00 (not served) at the rate now 0.0005: the short receives
    (0.0002 + 0.0005) x 10 x 150 = 1.05 USD. The history is asked once, for (07:30, 16:30]."""
    src = Settled()
    bk = book(True)
    with closing(PaperStore(journal, bk.name)) as store:
        _, feed = live_paper(bk, bk, market(), gateway(src), daily_vol={}, store=store)
        feed(at(7.5))
        assert src.calls == []  # the first read pays nothing: no history needed
        feed(at(16.5))
    ms = [int(at(h).timestamp() * 1000) for h in (7.5, 16.5)]
    assert src.calls == [("SOL/USDT:USDT", ms[0], ms[1])]
    assert feed.paid == pytest.approx(1.05, rel=1e-12)
