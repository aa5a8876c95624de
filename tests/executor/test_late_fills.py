"""An order journalled "not placed" that the exchange executed later than ``settle_s`` after its
send (a second order on the contract, which no client can rule out) is found by the next run:
journalled with its fill, named in that run's messages, and the next plan, made from the account,
trades the extra back. An order that never executed stays "not placed" and is not named. Real ccxt
against the emulator on a simulated clock."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, SimClock

from executor.alerts import AlertKind, Severity
from executor.base import ExecutionReport, OrderStatus, Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions
from executor.reconcile import SETTLE_S
from executor.run_trade import report_alerts
from executor.workflow import Prepared, prepare_plan
from fbr.config import load_book_file


def _run(emu: BinanceEmulator, journal: Journal, clock: SimClock
         ) -> tuple[Prepared, ExecutionReport]:
    """A plan of the seed book made from the account now, executed."""
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
    ex = JournaledExecutor(gw, journal, PlanBasis(prep.book, prep.market, prep.instruments,
                                                  loaded.risk),
                           retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep,
                           clock=lambda: int(1000 * clock.now()))
    return prep, ex.execute(prep.plan)


def _btc(emu: BinanceEmulator) -> float:
    return float(sum(t.qty if t.side == "BUY" else -t.qty for t in emu.trades
                     if t.symbol == "BTCUSDT"))


def test_an_order_executed_after_settle_s_is_found_by_the_next_run(tmp_path: Path) -> None:
    """The BTC sell (leg 0) answered -1007 and executed 200 s later: the first run proves it not
    placed at 120 s and resends it (two sells once the first executes: the double); the second
    run journals leg 0 of the first plan as filled, says so, and its plan (from the account)
    buys the extra back, so the account ends at the target."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        j = Journal(tmp_path / "j.sqlite")
        emu.inject_unknown_status(-1007, execute_after_s=200.0)
        first, report1 = _run(emu, j, clock)
        assert report1.outcome == Outcome.COMPLETE  # the resend filled; nothing seemed amiss
        leg0 = first.plan.legs[0]
        assert leg0.symbol == "BTC-PERP" and j.order(first.plan.plan_id, 0).status == \
            OrderStatus.NOT_PLACED
        want = first.plan.reachable["BTC-PERP"] - first.plan.start["BTC-PERP"]
        assert _btc(emu) == pytest.approx(want, abs=1e-9)  # the resend; the first not yet
        clock.sleep(600.0)  # the first executes (on the emulator's next request)
        second, report2 = _run(emu, j, clock)
        assert first.plan.start["BTC-PERP"] + 2 * want == pytest.approx(
            second.plan.start["BTC-PERP"], abs=1e-9)  # the double, read by the next plan
        row = j.order(first.plan.plan_id, 0)
        assert row.status == OrderStatus.FILLED and row.filled == pytest.approx(leg0.contracts)
        assert "executed by the exchange after it was proven not placed" in row.message
        assert f"over {SETTLE_S:g} s" not in row.message
        (said,) = [m for m in report2.messages if "was executed late" in m]
        assert f"leg 0 of plan {first.plan.plan_id} (BTC-PERP" in said
        assert report2.late_fills == (said,)
        assert json.loads(json.dumps(report2.to_dict()))["late_fills"] == [said]
        assert report1.late_fills == ()
        # the daily loop's alerts of that report: the late fill, critical (a second order)
        assert report_alerts(report2) == [
            (AlertKind.UNKNOWN_LEG, Severity.CRITICAL, "order executed late", said)]
        assert report2.outcome == Outcome.COMPLETE
        assert emu.positions["BTCUSDT"] == pytest.approx(second.plan.reachable["BTC-PERP"],
                                                         abs=1e-9)  # the extra traded back
        _, report3 = _run(emu, j, clock)  # found once, not again
        assert not [m for m in report3.messages if "was executed late" in m]
        j.close()


def test_an_order_never_executed_stays_not_placed(tmp_path: Path) -> None:
    """Answered -1007 and never executed: the next run looks it up, finds nothing, names nothing."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        j = Journal(tmp_path / "j.sqlite")
        emu.inject_unknown_status(-1007, after_accept=False)
        first, _ = _run(emu, j, clock)
        clock.sleep(600.0)
        _, report = _run(emu, j, clock)
        assert j.order(first.plan.plan_id, 0).status == OrderStatus.NOT_PLACED
        assert not [m for m in report.messages if "executed late" in m]
        j.close()


def test_report_alerts_of_an_unknown_and_an_incomplete_plan() -> None:
    """By hand: an order in doubt -> one critical alert with the messages; a plan short of its
    target -> one warning naming the gaps; a complete plan -> none (late fills aside)."""
    base = ExecutionReport("p", "binanceusdm", "live", (), {}, {}, None, ("leg 0 in doubt",))
    unknown = dataclasses.replace(base, outcome=Outcome.UNKNOWN)
    short = dataclasses.replace(base, outcome=Outcome.INCOMPLETE, gaps={"BTC-PERP": -0.001})
    assert report_alerts(unknown) == [
        (AlertKind.UNKNOWN_LEG, Severity.CRITICAL, "order in doubt", "leg 0 in doubt")]
    assert report_alerts(short) == [
        (AlertKind.FAILURE, Severity.WARNING, "plan incomplete", "gaps (contracts): {'BTC-PERP': -0.001}")]
    assert report_alerts(base) == []
