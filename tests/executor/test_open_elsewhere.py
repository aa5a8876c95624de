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
from exec_helpers import SEED_BOOK, SimClock

from executor.base import Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions
from executor.workflow import Prepared, prepare_plan
from fbr.config import load_book_file


def _setup(emu: BinanceEmulator, journal: Path, clock: SimClock, locks: Path
           ) -> tuple[Prepared, Journal, JournaledExecutor]:
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
    j = Journal(journal)
    ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                           retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep,
                           clock=lambda: int(1000 * clock.now()), lock_dir=locks)
    return prep, j, ex


def _filled(emu: BinanceEmulator, symbol: str) -> float:
    return float(sum(t.qty if t.side == "BUY" else -t.qty for t in emu.trades if t.symbol == symbol))


def test_a_second_journal_waits_for_the_first_journals_open_order(tmp_path: Path) -> None:
    clock = SimClock()
    locks = tmp_path / "locks"
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        prep_a, ja, ex_a = _setup(emu, tmp_path / "a.sqlite", clock, locks)
        emu.answer_new_next(300.0)
        assert ex_a.execute(prep_a.plan).outcome == Outcome.UNKNOWN
        leg = next(x for x in prep_a.plan.legs if x.symbol == "BTC-PERP")
        want = prep_a.plan.reachable["BTC-PERP"] - prep_a.plan.start["BTC-PERP"]
        assert [o.clientOrderId for o in emu.orders if o.status == "NEW"] == [leg.client_id]
        sent_before = len(emu.orders)

        prep_b, jb, ex_b = _setup(emu, tmp_path / "b.sqlite", clock, locks)
        rep_b = ex_b.execute(prep_b.plan)
        assert rep_b.outcome == Outcome.UNKNOWN
        assert len(emu.orders) == sent_before  # nothing sent by run B
        assert any(leg.client_id in m and "open" in m for m in rep_b.messages), rep_b.messages
        assert jb.open_plans(ex_b.gateway.account_key()) == [prep_b.plan.plan_id]

        clock.sleep(400.0)
        emu.exchange().fetch_time()  # A's order fills on the next request served
        assert _filled(emu, "BTCUSDT") == pytest.approx(want, abs=1e-12)
        done = ex_b.resume(prep_b.plan.plan_id)
        assert _filled(emu, "BTCUSDT") == pytest.approx(want, abs=1e-12)  # still one BTC trade
        assert done.positions["BTC-PERP"] == pytest.approx(prep_b.plan.reachable["BTC-PERP"])
        ja.close()
        jb.close()
