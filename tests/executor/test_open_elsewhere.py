"""An fbr order another journal sent, still open on the exchange, stops a plan before any send
(executor.open_elsewhere). Run A's BTC market order is answered NEW and fills 300 s later (as
Binance does under load); run A ends unknown. Run B, on the same account with another journal
(`fbr execute --journal other.sqlite`), saw an unchanged position and sent the same trade again:
the account held twice the trade once both filled. Real ccxt against the emulator, simulated
clock. Expected figures by hand: one BTC trade, the plan's own."""

from __future__ import annotations

from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SimClock, filled, seed_executor

from executor.base import Outcome


def test_a_second_journal_waits_for_the_first_journals_open_order(tmp_path: Path) -> None:
    clock = SimClock()
    locks = tmp_path / "locks"
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        prep_a, ja, ex_a = seed_executor(emu, tmp_path / "a.sqlite", clock, lock_dir=locks)
        emu.answer_new_next(300.0)
        assert ex_a.execute(prep_a.plan).outcome == Outcome.UNKNOWN
        leg = next(x for x in prep_a.plan.legs if x.symbol == "BTC-PERP")
        want = prep_a.plan.reachable["BTC-PERP"] - prep_a.plan.start["BTC-PERP"]
        assert [o.clientOrderId for o in emu.orders if o.status == "NEW"] == [leg.client_id]
        sent_before = len(emu.orders)

        prep_b, jb, ex_b = seed_executor(emu, tmp_path / "b.sqlite", clock, lock_dir=locks)
        rep_b = ex_b.execute(prep_b.plan)
        assert rep_b.outcome == Outcome.UNKNOWN
        assert len(emu.orders) == sent_before  # nothing sent by run B
        assert any(leg.client_id in m and "open" in m for m in rep_b.messages), rep_b.messages
        assert jb.open_plans(ex_b.gateway.account_key()) == [prep_b.plan.plan_id]

        clock.sleep(400.0)
        emu.exchange().fetch_time()  # A's order fills on the next request served
        assert filled(emu, "BTCUSDT") == pytest.approx(want, abs=1e-12)
        done = ex_b.resume(prep_b.plan.plan_id)
        assert filled(emu, "BTCUSDT") == pytest.approx(want, abs=1e-12)  # still one BTC trade
        assert done.positions["BTC-PERP"] == pytest.approx(prep_b.plan.reachable["BTC-PERP"])
        ja.close()
        jb.close()
