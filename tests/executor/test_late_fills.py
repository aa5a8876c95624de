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
from exec_helpers import SEED_BOOK, SimClock, market, solution_with, three_asset_book

from executor.alerts import AlertKind, Severity
from executor.base import ExecutionReport, OrderState, OrderStatus, Outcome, Trade
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.late_fills import WATCH_MS, find_late_fills
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import (
    Instrument,
    OrderLeg,
    OrderPlan,
    PlanOptions,
    book_instruments,
    plan_orders,
)
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


# --- by hand: a fake gateway and a real journal ---------------------------------------------------

class _Gateway:
    """``find_order`` answers from ``found`` by client id; ``trades_since`` records its since_ms
    and gives ``trades``."""

    def __init__(self, found: dict[str, OrderState], trades: list[Trade] | None = None) -> None:
        self.found, self.trades = found, trades or []
        self.looked: list[str] = []
        self.since: list[int] = []

    def find_order(self, leg: OrderLeg) -> OrderState | None:
        self.looked.append(leg.client_id)
        return self.found.get(leg.client_id)

    def trades_since(self, instrument: Instrument, since_ms: int) -> list[Trade]:
        self.since.append(since_ms)
        return self.trades



def _journal(tmp_path: Path) -> tuple[Journal, OrderPlan]:
    """The seed plan (BTC sell, ETH buy, SOL buy: legs 0-2) journalled for account "acct", sent at
    1,000,000 / 1,100,000 / 1,200,000 ms: leg 0 filled, legs 1 and 2 not placed."""
    book = three_asset_book()
    plan = plan_orders(solution_with({"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0}),
                       book, market(), book_instruments(book), PlanOptions(),
                       plan_id="20240601000000aaaa")
    j = Journal(tmp_path / "j.sqlite")
    j.record_plan(plan, "", "acct")
    for leg, t in zip(plan.legs, (1_000_000, 1_100_000, 1_200_000), strict=True):
        j.mark_sending(plan.plan_id, leg.index, 0.0, t)
    j.record_state(plan.plan_id, 0, OrderState(plan.legs[0].client_id, "x0", OrderStatus.FILLED,
                                               plan.legs[0].contracts, 60_000.0, 0.3))
    j.set_status(plan.plan_id, 1, OrderStatus.NOT_PLACED, "proven not placed")
    j.set_status(plan.plan_id, 2, OrderStatus.NOT_PLACED, "proven not placed")
    return j, plan


def _find(gw: _Gateway, j: Journal, now_ms: int, settle_ms: int = 120_000) -> list[str]:
    book = three_asset_book()
    return find_late_fills(gw, j, "acct", now_ms, settle_ms,  # type: ignore[arg-type]
                           book_instruments(book), market())


def test_only_legs_journalled_not_placed_are_looked_up_and_filled_ones_journalled(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Leg 0 (filled) is not looked up; leg 1 (ETH) is found canceled with nothing filled: left
    not placed, not named; leg 2 (SOL) is found filled 3.33 at 151.2 with its fee from the trades
    since its send (1,200,000 ms): journalled filled with the why, named once (and logged as a
    warning), exactly."""
    j, plan = _journal(tmp_path)
    eth, sol = plan.legs[1], plan.legs[2]
    gw = _Gateway({eth.client_id: OrderState(eth.client_id, "x1", OrderStatus.CANCELED, 0.0, None),
                   sol.client_id: OrderState(sol.client_id, "x2", OrderStatus.FILLED, sol.contracts,
                                             151.2, 0.25, fee_estimated=True)},
                  [Trade("x2", sol.contracts, 151.2, 0.2, 1_300_000)])
    said = _find(gw, j, 2_000_000)
    assert gw.looked == [eth.client_id, sol.client_id] and gw.since == [1_200_000]
    assert j.order(plan.plan_id, 1).status == OrderStatus.NOT_PLACED
    row = j.order(plan.plan_id, 2)
    assert (row.status, row.filled, row.average, row.fee) == (OrderStatus.FILLED, sol.contracts,
                                                             151.2, 0.2)
    assert row.message == ("executed by the exchange after it was proven not placed (nothing "
                           "showed it 120 s after the send): a second order on the contract")
    assert said == [f"leg 2 of plan {plan.plan_id} (SOL-PERP, buy {sol.contracts:g}), journalled "
                    f"not placed, was executed late: {sol.contracts:g} contracts at 151.2. The "
                    "account held that much more than the plan meant; this run starts from the "
                    "account as it is"]
    assert [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == "executor.late_fills"] == [("WARNING", said[0])]
    j.close()


def test_the_window_is_three_days_back_to_settle_s_ago(tmp_path: Path) -> None:
    """Sends at 1.1e6 and 1.2e6 ms: at now = 1,300,000 with settle 120 s only leg 1 (sent
    200 s before) is looked up, leg 2 (100 s) not yet; 1 ms past three days after leg 1's send it
    is out of the window and leg 2 still in (exactly three days: both); a fill with no average
    price is named as such, and a fee the trades cannot show is kept and the note says so."""
    j, plan = _journal(tmp_path)
    gw = _Gateway({})
    assert _find(gw, j, 1_300_000) == [] and gw.looked == [plan.legs[1].client_id]
    gw.looked.clear()
    assert _find(gw, j, 1_100_001 + WATCH_MS) == [] and gw.looked == [plan.legs[2].client_id]
    gw.looked.clear()
    assert _find(gw, j, 1_100_000 + WATCH_MS) == [] and len(gw.looked) == 2  # [since, until)
    sol = plan.legs[2]
    gw = _Gateway({sol.client_id: OrderState(sol.client_id, "x2", OrderStatus.FILLED, sol.contracts,
                                             None, 0.25, fee_estimated=True)})
    (said,) = _find(gw, j, 2_000_000)
    assert f"was executed late: {sol.contracts:g} contracts at an unreported price. The" in said
    row = j.order(plan.plan_id, 2)
    assert row.fee == 0.25 and row.message.endswith(
        "; fee estimated at the taker fee (the account's trades do not show it all)")
    j.close()
