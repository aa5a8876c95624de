"""An "execution status unknown" answer bounds nothing: Binance's -1006/-1007 say the backend may
still execute the order, at a time they do not state. A send is proven not placed (and resent)
only when nothing shows it ``settle_s`` (executor.reconcile.SETTLE_S, 120 s) after it: an order
the backend executes within that is found, never doubled. Real ccxt against the emulator on a
simulated clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, SimClock

from executor.base import OrderStatus, Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions
from executor.reconcile import SETTLE_S
from executor.workflow import Prepared, prepare_plan
from fbr.config import load_book_file

BINANCE = {"BTC-PERP": "BTCUSDT", "ETH-PERP": "ETHUSDT", "SOL-PERP": "SOLUSDT"}


def _run(emu: BinanceEmulator, tmp_path: Path, clock: SimClock) -> tuple[Prepared, Journal,
                                                                           JournaledExecutor]:
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
    j = Journal(tmp_path / "j.sqlite")
    ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                           retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep,
                           clock=lambda: int(1000 * clock.now()))
    return prep, j, ex


def _filled(emu: BinanceEmulator, bsym: str) -> float:
    return float(sum(t.qty if t.side == "BUY" else -t.qty for t in emu.trades if t.symbol == bsym))


@pytest.mark.parametrize("code", [-1006, -1007])
@pytest.mark.parametrize("late_s", [20.0, 90.0])
def test_an_order_the_backend_executes_late_is_found_not_sent_again(
        tmp_path: Path, code: int, late_s: float) -> None:
    """Answered ``code``, executed ``late_s`` later (past the ~16 s backoff, within settle_s):
    the reconcile finds it, the run completes with one order per contract and the exchange's
    fills add up to the plan's trades (the old verdict at 15.75 s was NOT_PLACED, a resend, and
    twice the BTC trade once the first order executed)."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        prep, j, ex = _run(emu, tmp_path, clock)
        emu.inject_unknown_status(code, execute_after_s=late_s)
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.COMPLETE, report.messages
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.FILLED
        clock.sleep(600.0)  # nothing else executes later
        assert len(emu.accepted_orders()) == len(prep.plan.legs)
        for book_sym, bsym in BINANCE.items():
            want = prep.plan.reachable[book_sym] - prep.plan.start[book_sym]
            assert _filled(emu, bsym) == pytest.approx(want, abs=1e-9), book_sym
        j.close()


def test_an_order_never_executed_is_resent_only_settle_s_after_its_send(tmp_path: Path) -> None:
    """Answered -1007 and never executed: nothing shows it, so it is proven not placed, but only
    at the check ``settle_s`` after the send; the re-planned leg (a fresh client id) then fills,
    once."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        prep, j, ex = _run(emu, tmp_path, clock)
        emu.inject_unknown_status(-1007, after_accept=False)
        t0 = clock.now()
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.COMPLETE, report.messages
        row = j.order(prep.plan.plan_id, 0)
        assert row.status == OrderStatus.NOT_PLACED and f"over {SETTLE_S:g} s" in row.message
        resent = [o for o in emu.accepted_orders() if o.symbol == "BTCUSDT"]
        assert len(resent) == 1 and resent[0].clientOrderId != prep.plan.legs[0].client_id
        assert clock.now() - t0 >= SETTLE_S
        j.close()
