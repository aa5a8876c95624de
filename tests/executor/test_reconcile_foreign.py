"""The reconcile of an order in doubt, with a trade by hand on the same contract in its window.

The position change since the send was taken as fbr's order's (the account's lock keeps other fbr
runs out, not a hand or another bot): a leg that timed out before the exchange took it, followed
by a hand sell of the same size inside the window, was journalled FILLED 0.012 ("estimated"), a
fill it never had, and the hand short became the book's hedge (a review). Now the fills of
orders the history shows under another client id after the send are netted out of the change.
The loopback emulator through real ccxt; expectations from its own order book."""
from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from binance_emulator import BinanceEmulator, Fault
from exec_helpers import SEED_BOOK, SimClock, three_asset_book

from executor.base import ExchangeGateway, OrderState, OrderStatus, Trade
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import OrderLeg, OrderType, PlanOptions, Side, book_instruments
from executor.reconcile import Reconciler, SentLeg, Verdict
from executor.workflow import prepare_plan
from fbr.config import load_book_file

ORDER = "/fapi/v1/order"


def test_a_hand_trade_in_the_window_is_not_taken_for_fbr_s_lost_order(tmp_path: Path) -> None:
    """fbr's leg 0 (sell 0.012 BTCUSDT) times out *before* the exchange accepts it: it was never
    placed. 0.25 s later, inside the reconcile window, the user sells 0.012 BTCUSDT by hand (an
    order with the exchange's own client id, visible in the order and trade history). The
    exchange's record, read independently: no order with fbr's client id exists; one order
    (the hand one) explains the whole position change. So the leg must not be journalled FILLED
    (NOT_PLACED, or UNKNOWN to stop and ask). fbr journals it FILLED 0.012 'estimated' at the
    plan's mark: a fill it never had; the journal's fills no longer equal the exchange's fbr
    fills, and the hand short is silently absorbed as the book's hedge."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        loaded = load_book_file(SEED_BOOK)
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            PlanOptions())
        first = prep.plan.legs[0]
        assert (first.symbol, first.side, first.contracts) == ("BTC-PERP", Side.SELL, 0.012)
        hand = emu.exchange(timeout=2000)
        done = {"hand": False}

        def sleep(dt: float) -> None:
            clock.sleep(dt)
            if not done["hand"]:
                done["hand"] = True
                hand.create_order("BTC/USDT:USDT", "market", "sell", 0.012)

        emu.inject(Fault.TIMEOUT_BEFORE_ACCEPT, path=ORDER, method="POST", delay_s=1.0)
        j = Journal(tmp_path / "j.sqlite")
        ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments,
                                                loaded.risk),
                               retry=RetryPolicy(base_delay_s=0.0), sleep=sleep)
        report = ex.execute(prep.plan)
        assert done["hand"]
        assert emu.orders_for(first.client_id) == []  # the exchange never had fbr's order
        row = j.order(prep.plan.plan_id, 0)
        assert row.status == OrderStatus.NOT_PLACED and row.filled == 0.0, (row.status, row.message)
        # the journal's fbr fills are the exchange's: no fbr order on BTCUSDT; the account reached
        # the plan's -0.012 through the hand sell, so the re-planned round had nothing to send
        fbr_btc = [o for o in emu.accepted_orders()
                   if o.symbol == "BTCUSDT" and o.clientOrderId.startswith("fbr")]
        assert fbr_btc == [] and report.outcome.value == "complete"
        j.close()



class Account:
    """A fake exchange for the reconcile alone: BTC-PERP's position, trades and order history
    (another client's order ``hand-1``); fbr's own order never found by its client id."""

    venue = "fake"

    def __init__(self, position: float, hand: float, mine: float) -> None:
        self.position, self.hand, self.mine = position, hand, mine

    def positions(self, instruments: object) -> dict[str, float]:
        return {"BTC-PERP": self.position}

    def find_order(self, leg: object) -> None:
        return None

    def orders_since(self, instrument: object, since_ms: int) -> list[OrderState]:
        return [OrderState("hand-1", "h1", OrderStatus.FILLED, abs(self.hand), 60_000.0)]

    def trades_since(self, instrument: object, since_ms: int) -> list[Trade]:
        out = [Trade("h1", self.hand, 60_000.0, 0.1, 2_000)]
        if self.mine:
            out.append(Trade("x9", self.mine, 60_010.0, 0.36, 2_000))
        return out


def _sent() -> SentLeg:
    book = three_asset_book()
    inst = book_instruments(book)["BTC-PERP"]
    leg = OrderLeg(0, "fbr-1-000", "BTC-PERP", inst.exchange_symbol, Side.SELL, 0.012, -720.0,
                   60_000.0, False, OrderType.MARKET)
    return SentLeg(leg, inst, 0.0, 1_000)


@pytest.mark.parametrize(("position", "hand", "mine", "verdict", "filled"), [
    (-0.007, 0.005, -0.012, Verdict.PLACED, 0.012),  # fbr's whole sell, netted: -0.007 - 0.005
    (-0.005, -0.005, 0.0, Verdict.NOT_PLACED, 0.0),  # the hand sell alone: fbr's order not there
    (-0.009, -0.005, 0.0, Verdict.UNKNOWN, 0.0),  # -0.004 left beside the hand's: cannot tell
])
def test_the_position_change_is_netted_of_another_order_s_fills(
        position: float, hand: float, mine: float, verdict: Verdict, filled: float) -> None:
    """By hand: net = (position now - 0 before) - the hand order's fills since the send."""
    rec = Reconciler(cast(ExchangeGateway, Account(position, hand, mine)), delays_s=(0.0,),
                     sleep=lambda s: None, skew_ms=0)
    finding = rec.reconcile(_sent())
    assert finding.verdict == verdict, finding.reason
    assert (finding.state.filled if finding.state else 0.0) == pytest.approx(filled)


def test_sends_are_stamped_on_the_exchange_s_clock(tmp_path: Path) -> None:
    """The same hand sell, with this machine's clock 1 s ahead of the exchange's: the send time is
    the exchange's (``CcxtGateway.now_ms``: the local clock less the offset ccxt measured), so the
    hand fill 0.25 s after the send is after it on the exchange's clock too and is netted out (on
    the local clock it looked 0.75 s before the send, and the leg was journalled FILLED): leg 0
    is NOT_PLACED (a review)."""
    import time

    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        loaded = load_book_file(SEED_BOOK)
        ex = emu.exchange(timeout=400)
        real = ex.milliseconds
        setattr(ex, "milliseconds", lambda: real() + 1000)  # noqa: B010 (this machine's clock)
        ex.load_time_difference()  # as the markets' load measures it
        gw = CcxtGateway(ex, base_delay_s=0.0)
        assert abs(gw.now_ms() - time.time() * 1000) < 300
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            PlanOptions())
        hand = emu.exchange(timeout=2000)
        done = {"hand": False}

        def sleep(dt: float) -> None:
            clock.sleep(dt)
            if not done["hand"]:
                done["hand"] = True
                time.sleep(0.25)
                hand.create_order("BTC/USDT:USDT", "market", "sell", 0.012)

        emu.inject(Fault.TIMEOUT_BEFORE_ACCEPT, path=ORDER, method="POST", delay_s=1.0)
        with Journal(tmp_path / "j.sqlite") as j:
            ex_ = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments,
                                                     loaded.risk),
                                    retry=RetryPolicy(base_delay_s=0.0), sleep=sleep,
                                    clock=gw.now_ms)
            ex_.execute(prep.plan)
            row = j.order(prep.plan.plan_id, 0)
            assert row.status == OrderStatus.NOT_PLACED, (row.status, row.message)
