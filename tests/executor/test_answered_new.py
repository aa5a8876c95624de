"""A market order answered NEW: Binance can accept a MARKET order and answer status NEW with
nothing executed (under load, even with ``newOrderRespType=RESULT``), filling it moments later.
The answer is not final, so the leg is reconciled by client id: never sent twice, journalled
with the fill when it comes, left in doubt (and resumed later) when it has not come within the
window. Real ccxt against the emulator on a simulated clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, SimClock

from executor.base import OrderStatus, Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions
from executor.workflow import Prepared, prepare_plan
from fbr.config import load_book_file

BINANCE = {"BTC-PERP": "BTCUSDT", "ETH-PERP": "ETHUSDT", "SOL-PERP": "SOLUSDT"}


def _setup(emu: BinanceEmulator, tmp_path: Path, clock: SimClock
           ) -> tuple[Prepared, Journal, JournaledExecutor, Any]:
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
    j = Journal(tmp_path / "j.sqlite")
    ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                           retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep)
    return prep, j, ex, loaded.risk


def _at_target_once(emu: BinanceEmulator, prep: Prepared) -> None:
    """Leg 0 was sent once; per contract the exchange's fills add up to the plan's trade (no
    second order anywhere) and the position is the target."""
    assert len(emu.orders_for(prep.plan.legs[0].client_id)) == 1
    for book_sym, bsym in BINANCE.items():
        filled = sum(t.qty if t.side == "BUY" else -t.qty for t in emu.trades if t.symbol == bsym)
        want = prep.plan.reachable[book_sym] - prep.plan.start[book_sym]
        assert filled == pytest.approx(want, abs=1e-9), book_sym
        assert emu.positions[bsym] == pytest.approx(prep.plan.reachable[book_sym], abs=1e-9)


def test_an_order_answered_new_that_fills_soon_is_journalled_filled_once(tmp_path: Path) -> None:
    """Answered NEW, filled 0.5 s later: the reconciliation finds it FILLED by client id (at the
    0.75 s check), the journal holds the fill at the 60,000 mark with the taker fee
    0.012 x 60,000 x 0.05% = 0.36 USD, and nothing is resent."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        prep, j, ex, _ = _setup(emu, tmp_path, clock)
        emu.answer_new_next(0.5)
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.COMPLETE
        row = j.order(prep.plan.plan_id, 0)
        assert row.status == OrderStatus.FILLED and row.filled == pytest.approx(0.012)
        assert row.average == pytest.approx(60_000.0) and row.fee == pytest.approx(0.36)
        assert 0.5 <= sum(clock.slept) < 5.0
        _at_target_once(emu, prep)
        j.close()


def test_an_order_still_new_after_the_window_is_left_in_doubt_and_resumed_once(
        tmp_path: Path) -> None:
    """Answered NEW and filled only 300 s later, past the reconcile (its last check at
    ``settle_s`` = 120 s after the send): the run stops UNKNOWN naming the leg (the order still
    open on the exchange), sends nothing more, and a resume after the fill journals it and
    completes the plan, one order per leg."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        prep, j, ex, _ = _setup(emu, tmp_path, clock)
        emu.answer_new_next(300.0)
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.UNKNOWN
        assert any("is still open on the exchange" in m for m in report.messages), report.messages
        assert [len(emu.orders_for(leg.client_id)) for leg in prep.plan.legs] == [1, 0, 0]
        clock.sleep(300.0)
        done = ex.resume(prep.plan.plan_id)
        assert done.outcome == Outcome.COMPLETE
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.FILLED
        _at_target_once(emu, prep)
        j.close()


def test_an_order_answered_new_whose_lookups_lag_is_found_before_anything_is_resent(
        tmp_path: Path) -> None:
    """Answered NEW, filled 40 s later, and invisible to every lookup for 60 s (longer than the
    ~16 s backoff): the answer itself proves the order exists, so the reconcile never calls it not
    placed; its last check (120 s after the send) finds it filled. One order per leg, complete."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        prep, j, ex, _ = _setup(emu, tmp_path, clock)
        lags = iter([60.0])
        emu.lookup_lag_s = lambda: next(lags, 0.0)
        emu.answer_new_next(40.0)
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.COMPLETE, report.messages
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.FILLED
        _at_target_once(emu, prep)
        j.close()


def test_an_acknowledged_order_nobody_can_see_stays_in_doubt_and_is_never_resent(
        tmp_path: Path) -> None:
    """Answered NEW, filled only 300 s later, lookups blind for 250 s: at the reconcile's end
    nothing shows the order, but the exchange's answer did, so the leg is UNKNOWN (never
    ``not_placed``), its exchange id journalled; a resume once the fill shows settles it from that
    id, and the plan completes with one order per leg (the old verdict was NOT_PLACED and a
    second order)."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        prep, j, ex, _ = _setup(emu, tmp_path, clock)
        lags = iter([250.0])
        emu.lookup_lag_s = lambda: next(lags, 0.0)
        emu.answer_new_next(300.0)
        report = ex.execute(prep.plan)
        row = j.order(prep.plan.plan_id, 0)
        assert report.outcome == Outcome.UNKNOWN
        assert row.status == OrderStatus.UNKNOWN and row.exchange_id is not None
        assert "the exchange says the client id exists" in row.message
        assert [len(emu.orders_for(leg.client_id)) for leg in prep.plan.legs] == [1, 0, 0]
        clock.sleep(300.0)
        done = ex.resume(prep.plan.plan_id)
        assert done.outcome == Outcome.COMPLETE
        _at_target_once(emu, prep)
        j.close()
