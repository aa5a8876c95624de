"""An exact run (the loop's, the dashboard's: "the plan as made or nothing") with a trade by hand
between its legs: it sends the plan's own orders and no other (a review: after the hand buy of
0.005 BTC its next round re-planned BTC and sold 0.005 more, an order nobody planned, confirmed or
counted against the day's turnover). The default run re-plans from the account, as it always did.
The loopback emulator through real ccxt."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, SimClock

from executor.base import Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions, Side
from executor.workflow import prepare_plan
from fbr.config import load_book_file


def _run(tmp_path: Path, exact: bool) -> tuple[Any, Any, Any, BinanceEmulator]:
    clock = SimClock()
    emu = BinanceEmulator(lag_clock=clock.now).start()
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
    hand = emu.exchange(timeout=2000)

    def on_leg(leg: Any) -> None:
        if leg.index == 1:  # BTC's leg (0) has filled; the user buys 0.005 BTC by hand
            hand.create_order("BTC/USDT:USDT", "market", "buy", 0.005)

    j = Journal(tmp_path / "j.sqlite")
    ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                           retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep, on_leg=on_leg)
    report = ex.execute(prep.plan, exact=exact)
    return prep, report, j, emu


def test_an_exact_run_sends_only_the_plan_as_made(tmp_path: Path) -> None:
    """An exact run (the loop's, the dashboard's) 'sends the plan as made or nothing' and the
    loop's day-turnover check covers the plan's legs only. The seed plan has 3 legs (BTC sell
    0.012, ETH buy, SOL buy). A hand buy of 0.005 BTC lands between leg 0 and leg 1. The orders
    fbr may send: the 3 planned legs (or fewer, stopping). fbr sends a 4th order, a BTC sell of
    0.005 (300 USD) that nobody planned, checked or confirmed, undoing the hand trade."""
    prep, report, j, emu = _run(tmp_path, exact=True)
    try:
        assert (prep.plan.legs[0].symbol, prep.plan.legs[0].side) == ("BTC-PERP", Side.SELL)
        fbr_orders = [o for o in emu.accepted_orders() if o.clientOrderId.startswith("fbr")]
        assert [o.clientOrderId for o in fbr_orders] == [leg.client_id for leg in prep.plan.legs]
        # BTC: -0.012 by the plan + 0.005 by hand = -0.007, left where the hand put it
        assert report.outcome == Outcome.INCOMPLETE
        assert report.gaps["BTC-PERP"] == pytest.approx(0.005, abs=1e-12)
        assert any("BTC-PERP -0.007 (the plan's own fills put it at -0.012)" in m
                   for m in report.messages), report.messages
    finally:
        j.close()
        emu.stop()


def test_the_default_run_re_plans_from_the_account(tmp_path: Path) -> None:
    """Without ``exact`` (``fbr execute`` on the CLI) the account is the book: the next round
    sells the 0.005 the hand bought, and the plan completes."""
    prep, report, j, emu = _run(tmp_path, exact=False)
    try:
        fbr_orders = [o for o in emu.accepted_orders() if o.clientOrderId.startswith("fbr")]
        assert len(fbr_orders) == len(prep.plan.legs) + 1
        assert (fbr_orders[-1].symbol, fbr_orders[-1].side, fbr_orders[-1].quantity) == (
            "BTCUSDT", "SELL", 0.005)
        assert report.outcome == Outcome.COMPLETE
    finally:
        j.close()
        emu.stop()
