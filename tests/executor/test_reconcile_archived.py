"""A leg the exchange said exists (answered NEW) that then expired with nothing filled, resumed
after Binance stopped listing it: Binance's Query Order and All Orders do not find an order that
ended CANCELED or EXPIRED with no fill once "created time + 3 days < current time" (the emulator
follows the rule). Before the fix such a leg stayed in doubt for ever: every resume and every new
plan on the account was refused. Now (executor.reconcile.ARCHIVED_AFTER_MS) it is final with 0
filled when the position is as before and no trade came since, and the resume sends the trade
once. Real ccxt against the emulator; the journal's and the exchange's clocks both move 4 days."""

from __future__ import annotations

from pathlib import Path

import pytest
from binance_emulator import DAY_MS, BinanceEmulator
from exec_helpers import SimClock, filled, seed_executor

from executor.base import OrderStatus, Outcome

T0_MS = 1_750_000_000_000


@pytest.mark.parametrize("days", [2, 4])
def test_an_expired_unfilled_leg_is_settled_before_and_after_binance_archives_it(
        tmp_path: Path, days: int) -> None:
    """2 days: the lookup still finds it EXPIRED (settled as before); 4 days: not found, settled by
    the archive rule. Either way the resume completes with the BTC trade sent once."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        emu.set_time(T0_MS)
        prep, j, ex = seed_executor(emu, tmp_path / "j.sqlite", clock, lock_dir=tmp_path / "locks",
                                  t0_ms=T0_MS)
        lags = iter([250.0])
        emu.lookup_lag_s = lambda: next(lags, 0.0)
        emu.answer_new_next(10_000.0)  # accepted, answered NEW; invisible to lookups for 250 s
        assert ex.execute(prep.plan).outcome == Outcome.UNKNOWN
        leg0 = prep.plan.legs[0]
        with emu._lock:  # the exchange expires it unfilled (no liquidity inside price protection)
            emu._pending_new.clear()
            (order,) = emu.orders_for(leg0.client_id)
            order.status = "EXPIRED"
        clock.sleep(days * 86_400.0)
        emu.set_time(T0_MS + days * DAY_MS)
        done = ex.resume(prep.plan.plan_id)
        assert done.outcome == Outcome.COMPLETE, done.messages
        want = prep.plan.reachable[leg0.symbol] - prep.plan.start[leg0.symbol]
        symbol = leg0.exchange_symbol.split("/")[0] + "USDT"
        assert filled(emu, symbol) == pytest.approx(want, abs=1e-9)
        row = next(r for r in j.orders(prep.plan.plan_id) if r.leg == leg0.index)
        assert row.status in (OrderStatus.CANCELED, OrderStatus.PARTIAL) and row.filled == 0.0
        j.close()
