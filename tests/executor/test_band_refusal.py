"""A limit leg refused at the exchange's price band because the mark moved after the plan
(Binance -4016: a BUY above mark x multiplierUp; -4024: a SELL below mark x multiplierDown) was
definitely not placed: its contract is re-planned in the next round at the contract's mark read
again, its limit never past the refused one (the plan's slippage guard still bounds what the run
pays), and it fills, once. Real ccxt against the emulator, whose band follows its own mark.

Markets as in ``test_percent_price``: ETHUSDT 0.98 / 1.02, BTCUSDT and SOLUSDT 0.95 / 1.05;
marks BTC 60,123.45 (tick 0.1), ETH 3,001.37 (tick 0.01), SOL 150.07; the seed plan sells BTC
and buys ETH and SOL; slippage guard 10%, so the limits sit at the bands' edges: BTC sell
57,117.3, ETH buy 3,061.39, SOL buy 157.57.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, SimClock, market, three_asset_book
from test_percent_price import MARKS, _markets, _prepared

from executor.band_refusal import held_to_refused, marks_now
from executor.base import OrderStatus, Outcome
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import OrderLeg, OrderType, Side
from executor.workflow import Prepared
from fbr.config import load_book_file
from models.book import Book
from models.market import MarketSnapshot

BINANCE = {"BTC-PERP": "BTCUSDT", "ETH-PERP": "ETHUSDT", "SOL-PERP": "SOLUSDT"}


def _executor(emu: BinanceEmulator, tmp_path: Path, clock: SimClock,
              on_leg: Callable[[OrderLeg], None] | None = None
              ) -> tuple[Prepared, Journal, JournaledExecutor]:
    gw, prep = _prepared(emu, 0.10)
    j = Journal(tmp_path / "j.sqlite")
    loaded = load_book_file(SEED_BOOK)
    ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                           retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep,
                           on_leg=on_leg)
    return prep, j, ex


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize(("bsym", "moved", "code", "new_limit"), [
    # ETH falls 3% after the plan: cap 2,911.33 x 1.02 = 2,969.5566 < 3,061.39 -> -4016;
    # re-priced: min(2,911.33 x 1.10, 2,969.5566) down to the tick = 2,969.55
    ("ETHUSDT", 2_911.33, "-4016", 2_969.55),
    # BTC rises 6%: floor 63,730.86 x 0.95 = 60,544.317 > 57,117.3 -> -4024;
    # re-priced: max(63,730.86 x 0.90, 60,544.317) up to the tick = 60,544.4
    ("BTCUSDT", 63_730.86, "-4024", 60_544.4),
])
def test_a_limit_refused_at_the_band_after_the_mark_moved_is_repriced_and_fills(
        tmp_path: Path, bsym: str, moved: float, code: str, new_limit: float, exact: bool) -> None:
    """``exact``: the daily loop's run (the plan's own legs or nothing): the refused leg is the
    plan's, so the re-planned one is sent all the same."""
    clock = SimClock()
    with BinanceEmulator(markets=_markets(), lag_clock=clock.now).start() as emu:
        prep, j, ex = _executor(emu, tmp_path, clock)
        emu.set_mark(bsym, moved)  # the mark moves after the plan was made
        report = ex.execute(prep.plan, exact=exact)
        assert report.outcome == Outcome.COMPLETE, report.messages
        book_sym = next(s for s, b in BINANCE.items() if b == bsym)
        rows = [r for r in j.orders(prep.plan.plan_id) if r.symbol == book_sym]
        assert [r.status for r in rows] == [OrderStatus.REJECTED, OrderStatus.FILLED]
        assert code in rows[0].message
        assert any("re-planned at the mark read again" in m for m in report.messages)
        sent = [o for o in emu.accepted_orders() if o.symbol == bsym]
        assert len(sent) == 1 and float(sent[0].price) == pytest.approx(new_limit, abs=1e-9)
        for s, b in BINANCE.items():
            assert emu.positions[b] == pytest.approx(prep.plan.reachable[s], abs=1e-9), s
        j.close()


def test_a_repriced_limit_never_passes_the_refused_one(tmp_path: Path) -> None:
    """ETH falls 3% after the plan (its buy at 3,061.39 refused, -4016), then rises to 3,121.42
    (+4% on the plan's mark) before the mark is read again: today's band would allow a buy up to
    3,121.42 x 1.02 = 3,183.85, but the re-planned buys stay at 3,061.39, below the mark, so the
    IOC orders expire unfilled and the run ends INCOMPLETE with ETH's gap named: no ETH order is
    ever priced past the plan's own limit."""
    clock = SimClock()
    seen: list[OrderLeg] = []

    def on_leg(leg: OrderLeg) -> None:
        seen.append(leg)
        if leg.symbol == "SOL-PERP" and len(seen) == 3:  # after ETH's refusal, in round 1
            emu.set_mark("ETHUSDT", 3_121.42)

    with BinanceEmulator(markets=_markets(), lag_clock=clock.now).start() as emu:
        prep, j, ex = _executor(emu, tmp_path, clock, on_leg)
        emu.set_mark("ETHUSDT", round(MARKS["ETHUSDT"] * 0.97, 2))
        report = ex.execute(prep.plan)
        eth = [leg for leg in seen if leg.symbol == "ETH-PERP"]
        assert len(eth) >= 2
        assert all(leg.limit_price is not None and leg.limit_price <= 3_061.39 for leg in eth)
        assert report.outcome == Outcome.INCOMPLETE and "ETH-PERP" in report.gaps
        assert all(o.symbol != "ETHUSDT" or float(o.executedQty) == 0 for o in emu.accepted_orders())
        j.close()


def _leg(symbol: str, side: Side, limit: float | None) -> OrderLeg:
    return OrderLeg(0, "c", symbol, symbol, side, 1.0, 100.0, 100.0, False,
                    OrderType.LIMIT if limit is not None else OrderType.MARKET, limit)


def test_held_to_refused_by_hand() -> None:
    """A buy's limit is min(new, refused), a sell's max(new, refused); a leg on the other side, on
    another contract or without a limit is left as it is."""
    refused = {"B": _leg("B", Side.BUY, 100.0), "S": _leg("S", Side.SELL, 50.0)}
    legs = [_leg("B", Side.BUY, 101.5), _leg("B", Side.BUY, 99.0), _leg("S", Side.SELL, 48.0),
            _leg("S", Side.SELL, 52.0), _leg("B", Side.SELL, 120.0), _leg("X", Side.BUY, 200.0),
            _leg("B", Side.BUY, None)]
    held = [leg.limit_price for leg in held_to_refused(legs, refused)]
    assert held == [100.0, 99.0, 50.0, 52.0, 120.0, 200.0, None]


class _Market:
    """A gateway whose ``market`` answers ``now`` and counts its reads."""

    def __init__(self, now: MarketSnapshot) -> None:
        self.now, self.market_reads = now, 0

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        self.market_reads += 1
        return self.now


def test_marks_now_takes_the_refused_contracts_marks_only() -> None:
    """The market read again answers new marks for every contract; only the refused one's is
    taken (BTC 61,000), the others keep the run's (ETH 2,500, SOL 150); nothing refused: no read."""
    now = market({"BTC": 61_000.0, "ETH": 2_600.0, "SOL": 160.0})
    gw = _Market(now)
    book = three_asset_book()
    old = market()
    assert marks_now(gw, book, old, set()) is old and gw.market_reads == 0  # type: ignore[arg-type]
    got = marks_now(gw, book, old, {"BTC-PERP"})  # type: ignore[arg-type]
    assert dict(got.mark) == {"BTC-PERP": 61_000.0, "ETH-PERP": 2_500.0, "SOL-PERP": 150.0}
    assert got.spot == old.spot and gw.market_reads == 1
