"""Limit legs are sent immediate-or-cancel at the slippage guard (``--order-type limit``): on
Binance an IOC order that cannot trade at its price now expires at once with nothing filled; it
never rests on the book to fill later. The emulator does the same; fbr journals the expiry, does
not chase the price past its guard, and ends the plan INCOMPLETE naming the gap, each order
once. Real ccxt against the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, SimClock

from executor.base import OrderStatus, Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import OrderLeg, OrderType, PlanOptions, Side
from executor.workflow import prepare_plan
from fbr.config import load_book_file


def test_an_ioc_limit_below_the_market_expires_at_once_and_nothing_rests() -> None:
    with BinanceEmulator() as emu:
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        gw.instruments(load_book_file(SEED_BOOK).book)
        leg = OrderLeg(0, "fbr-ioc-000", "ETH-PERP", "ETH/USDT:USDT", Side.BUY, 0.01, 20.0,
                       2000.0, False, OrderType.LIMIT, 2000.0)  # a buy 1,000 below the mark
        state = gw.create_order(leg)
        assert state.status == OrderStatus.CANCELED and state.filled == 0.0
        (order,) = emu.orders_for("fbr-ioc-000")
        assert order.status == "EXPIRED" and order.timeInForce == "IOC"
        emu.set_mark("ETHUSDT", 1_900.0)  # the market comes to the price: nothing fills now
        assert emu.positions["ETHUSDT"] == 0.0 and emu.trades == []


def test_a_market_that_moved_past_the_guard_leaves_the_plan_incomplete_once(tmp_path: Path) -> None:
    """The plan sells BTC at the 60,000 mark less the 0.5% guard (59,700); the mark falls 1% to
    59,400 before it is sent: each BTC leg expires unfilled (three rounds, each journalled), BTC
    keeps its position and is named as the gap; ETH and SOL fill once."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        loaded = load_book_file(SEED_BOOK)
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            PlanOptions(order_type=OrderType.LIMIT))
        (btc,) = [leg for leg in prep.plan.legs if leg.symbol == "BTC-PERP"]
        assert btc.side == Side.SELL and btc.limit_price == pytest.approx(59_700.0)
        emu.set_mark("BTCUSDT", 59_400.0)
        j = Journal(tmp_path / "j.sqlite")
        ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments,
                                                loaded.risk),
                               retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep)
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.INCOMPLETE and set(report.gaps) == {"BTC-PERP"}
        btc_rows = [r for r in j.orders(prep.plan.plan_id) if r.symbol == "BTC-PERP"]
        assert [r.status for r in btc_rows] == [OrderStatus.CANCELED] * 3
        assert {o.status for o in emu.accepted_orders() if o.symbol == "BTCUSDT"} == {"EXPIRED"}
        assert emu.positions["BTCUSDT"] == pytest.approx(prep.plan.start["BTC-PERP"])
        for book_sym, bsym in (("ETH-PERP", "ETHUSDT"), ("SOL-PERP", "SOLUSDT")):
            assert emu.positions[bsym] == pytest.approx(prep.plan.reachable[book_sym], abs=1e-9)
            assert len([o for o in emu.accepted_orders() if o.symbol == bsym]) == 1
        j.close()
