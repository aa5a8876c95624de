"""A restart of the daily loop after a crash mid-plan: the kill file, the daily loss halt and the
plan's age are checked before the plan left in flight is resumed (``executor.run_restart``).

The rig is ``test_run_loop``'s (paper venue, simulated clock, real journaled executor): the book
0.1 BTC / 1 ETH / 10 SOL and 3 000 USD cash against 50/30/20; at BTC = 70 000 the naive hedge is
-0.014 BTC / +0.2 ETH / +2 SOL (1 980 USD), NAV 15 000 USD. The first run dies while the hedge is
being sent. Nothing here is random.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import test_run_loop as rig  # tests/executor, on sys.path (its fake exchange and clock)
from test_run_loop import (
    AT_TARGET,
    BTC_DOWN,
    BTC_UP,
    DAY,
    SYMS,
    T0,
    TURNOVER_UP,
    Crash,
    H,
    Make,
    _crashed_first_run,
    ms,
)

from executor.base import ExecutionReport, OrderStatus
from executor.live import JournaledExecutor, PlanBasis
from executor.paper import PaperGateway
from executor.plan import OrderLeg, OrderType, Side
from executor.run_settings import DailyLimits
from executor.schedule import SimClock
from optimizer.policies import NaiveFutures

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir


def test_a_kill_file_present_at_restart_sends_nothing(make: Make, tmp_path: Path) -> None:
    """The loop died after the hedge's BTC leg (1 of 3) went out. The holder touches the kill
    file, then the process is restarted: it ends ``killed`` without resuming the plan (the ETH
    and SOL legs were sent before the kill file was looked at). The plan stays in flight: once
    the kill file is removed, the next run resumes it and sends the two missing legs."""
    first, _ = _crashed_first_run(make)
    plan_id = first.state("plan_in_flight")
    assert plan_id is not None and [s for s, _ in first.trades()] == ["BTC-PERP"]
    first.journal.close()
    first.store.close()

    kill = tmp_path / "state" / "KILL"
    kill.parent.mkdir(parents=True, exist_ok=True)
    kill.touch()
    second = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H)
    summary = second.run()
    assert summary.status == "killed"
    assert [s for s, _ in second.trades()] == ["BTC-PERP"]  # nothing more sent
    assert second.alerts("restart") == [] and second.cycles() == []
    assert second.state("plan_in_flight") == plan_id
    assert second.journal.plan_status(plan_id) == "open"
    second.journal.close()
    second.store.close()

    kill.unlink()
    third = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H)
    third.run()
    assert sorted(s for s, _ in third.trades()) == sorted(SYMS)
    assert third.journal.plan_status(plan_id) == "done"


def test_a_restart_past_the_daily_loss_limit_does_not_resume(make: Make) -> None:
    """The plan is made at 00:00 (BTC 70 000, the day's opening NAV 15 000) and the process dies
    after its BTC leg (-0.014 at 70 000, fee 0.49). It is back at 06:00 with BTC at 35 000: NAV =
    3 500 + 3 000 + 2 000 spot + 3 000 cash + 0.014 x 35 000 short gain - 0.49 = 11 989.51, i.e.
    3 010.49 below the opening, past the 1 000 USD loss limit. The ETH +0.2 and SOL +2 legs (toward
    the 70 000 target) are not sent; the day is halted, a refused ``resume`` cycle says why, the
    limit is alerted once."""
    lim = DailyLimits(loss_usd=1_000.0)
    seen: list[OrderLeg] = []

    def crash_on_second_leg(leg: OrderLeg) -> None:
        seen.append(leg)
        if len(seen) == 2:
            raise Crash

    first = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H, limits=lim,
                 on_leg=crash_on_second_leg)
    with pytest.raises(Crash):
        first.run()
    plan_id = first.state("plan_in_flight")
    assert plan_id is not None and first.state("day_nav") == repr(15_000.0)
    first.journal.close()
    first.store.close()

    second = make(NaiveFutures(band=0.01), prices=BTC_DOWN, clock_start=T0 + 6 * H,
                  end=T0 + 6 * H, limits=lim)
    second.run()
    assert [s for s, _ in second.trades()] == ["BTC-PERP"]
    (row,) = second.cycles()
    assert (row.time, row.reason, row.action, row.plan_id) == (T0 + 6 * H, "resume", "refused",
                                                               plan_id)
    assert row.nav == pytest.approx(11_989.51, abs=1e-6)
    assert "3,010.49 below the day's opening 15,000.00" in row.message
    assert row.turnover_usd == pytest.approx(0.014 * 70_000, rel=1e-12)  # the BTC leg's fill
    assert second.state("halted") == "loss" and second.state("plan_in_flight") is None
    assert len(second.alerts("limit", "daily loss limit")) == 1
    assert [a.title for a in second.alerts("restart")] == ["restart: plan not resumed"]


class EthAnsweredLost:
    """The paper venue, but the process dies right after the exchange took the plan's ETH order
    (it fills) and before the journal heard of it: the leg stays ``sending`` (in doubt)."""

    def __init__(self, inner: PaperGateway, clock: SimClock) -> None:
        self.inner = inner
        self.venue = inner.venue
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create_order(self, leg: OrderLeg) -> Any:
        state = self.inner.create_order(leg)
        if leg.symbol == "ETH-PERP" and self.armed:
            raise Crash
        return state


def test_a_restart_days_later_settles_the_stale_plan_and_plans_afresh(make: Make) -> None:
    """The process dies at 00:00 after the BTC (-0.014) and ETH (+0.2) orders filled, the ETH
    one still ``sending`` in the journal; the SOL leg (+2) was never sent. It is back three days
    later with BTC at 50 000, where the policy wants no hedge. The plan is older than
    check_every (6 h), so it is not resumed (that sent SOL +2 toward the old target, and the
    schedule cycle sold it back at once): a refused ``resume`` row, then a ``restart`` cycle on
    the account as it is. Its execution first settles the old ETH leg against the account
    (filled 0.2), supersedes the old plan, then buys 0.014 BTC and sells 0.2 ETH: flat, and SOL
    never traded."""
    first = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H, wrap=EthAnsweredLost)
    with pytest.raises(Crash):
        first.run()
    plan_id = first.state("plan_in_flight")
    assert plan_id is not None
    eth_leg = next(o for o in first.journal.orders(plan_id) if o.symbol == "ETH-PERP")
    assert eth_leg.status == OrderStatus.SENDING
    first.journal.close()
    first.store.close()

    later = T0 + 3 * DAY
    second = make(NaiveFutures(band=0.01), prices=AT_TARGET, clock_start=later, end=later)
    second.run()
    at_restart = [(s, t.contracts) for s, t in second.trades() if t.time_ms == ms(later)]
    assert sorted(at_restart) == [("BTC-PERP", pytest.approx(0.014)),
                                  ("ETH-PERP", pytest.approx(-0.2))]
    assert second.positions() == pytest.approx({s: 0.0 for s in SYMS}, abs=1e-9)
    assert [(c.reason, c.action) for c in second.cycles()] == [("resume", "refused"),
                                                               ("restart", "traded")]
    assert "more than check_every (6:00:00)" in second.cycles()[0].message
    assert second.journal.plan_status(plan_id) == "superseded"
    settled = second.journal.order(plan_id, eth_leg.leg)
    assert settled.status == OrderStatus.FILLED and settled.filled == pytest.approx(0.2)
    assert second.state("plan_in_flight") is None


def test_a_plan_a_manual_resume_finishes_while_the_restart_waits_is_recovered(make: Make) -> None:
    """The loop died after the hedge's BTC leg. At the restart it sees the plan open; before it
    holds the account's lock a manual ``fbr execute --resume`` of the same plan sends the ETH and
    SOL legs and finishes it. The loop sends nothing and reports no trade of its own: the plan's
    fills (the whole hedge, 1,980 USD) are a ``recovered`` cycle counted toward the day's
    turnover, as for a plan finished before the restart; the interrupted cycle then runs again
    and finds the account on target."""
    first, _ = _crashed_first_run(make)
    plan_id = first.state("plan_in_flight")
    assert plan_id is not None
    first.journal.close()
    first.store.close()

    second = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H)
    loops = second.runner.venue.executor
    assert loops is not None

    def racing(basis: PlanBasis) -> JournaledExecutor:
        ex: JournaledExecutor = loops(basis)
        own = ex.resume

        def resume(pid: str, *, open_only: bool = False, exact: bool = False) -> ExecutionReport:
            manual = loops(basis).resume(pid)  # the other process, first to the lock
            assert manual.complete and manual.plan_id == pid
            return own(pid, open_only=open_only, exact=exact)

        setattr(ex, "resume", resume)  # noqa: B010 (the racing run, on this one object)
        return ex

    second.runner.venue.executor = racing
    second.run()
    assert sorted(s for s, _ in second.trades()) == sorted(SYMS)  # each leg once
    assert second.alerts("trade") == []
    assert second.reasons()[0] == (T0, "resume", "recovered")
    assert second.cycles()[0].turnover_usd == pytest.approx(TURNOVER_UP, rel=1e-12)
    assert all(action != "traded" for _, _, action in second.reasons())
    assert [a.title for a in second.alerts("restart")] == ["restart: resuming a plan",
                                                           "restart: plan not resumed"]
    assert second.state("plan_in_flight") is None


def test_a_restart_resumes_its_plan_as_made_after_a_hand_trade(make: Make) -> None:
    """The loop died after its plan's BTC leg (-0.014); the user bought 0.005 BTC by hand before
    the restart. The restart's resume is exact, as the loop's plans are: BTC is at -0.009, not the
    -0.014 its own fill put it at, so it sends nothing (it re-planned and sold 0.005 more, an
    order nobody planned: a review) and the cycle is incomplete, naming BTC-PERP."""
    first, _ = _crashed_first_run(make)
    plan_id = first.state("plan_in_flight")
    assert plan_id is not None
    first.journal.close()
    first.store.close()

    second = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H)
    second.paper.create_order(OrderLeg(0, "hand-1", "BTC-PERP", "BTC/USDT:USDT", Side.BUY, 0.005,
                                       350.0, 70_000.0, False, OrderType.MARKET))
    second.run()
    fbr_at_restart = [(s, t.contracts) for s, t in second.trades()
                      if t.time_ms == ms(T0) and not t.order_id.startswith("paper-hand")]
    assert [s for s, _ in fbr_at_restart].count("BTC-PERP") == 1  # the crashed run's leg only
    resumed = next(c for c in second.cycles() if c.reason == "resume")
    assert resumed.action == "incomplete" and resumed.plan_id == plan_id
    assert "BTC-PERP -0.009 (the plan's own fills put it at -0.014)" in resumed.message
