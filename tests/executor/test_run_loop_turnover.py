"""The daily turnover limit counts what the account sent today, from the journal: the fills of a
leg that was in doubt when its cycle was recorded (settled by a later plan), and a cycle whose row
a crash lost while its trade alert was being delivered.

The rig is ``test_run_loop``'s (paper venue, simulated clock, real journaled executor): the book
0.1 BTC / 1 ETH / 10 SOL and 3 000 USD cash against 50/30/20. At 00:00 (BTC 70 000) the naive
hedge is -0.014 BTC / +0.2 ETH / +2 SOL: 980 + 600 + 400 = 1 980 USD. At 06:00 BTC is back at
50 000 and a drift cycle plans the unwind +0.014 BTC / -0.2 ETH / -2 SOL: 700 + 600 + 400 =
1 700 USD. Nothing here is random.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import test_run_loop as rig  # tests/executor, on sys.path (its fake exchange and clock)
from test_run_loop import AT_TARGET, BTC_UP, DAY, T0, TURNOVER_UP, Crash, H, Make, ms

from executor.alerts import Alert
from executor.base import AmbiguousOrderError, OrderState, ReadFailedError, Trade
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.paper import PaperGateway
from executor.plan import Instrument, OrderLeg
from executor.run_settings import DailyLimits, Triggers
from executor.schedule import SimClock
from optimizer.policies import NaiveFutures

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir

UNWIND = 0.014 * 50_000 + 0.2 * 3_000 + 2.0 * 200  # 1 700 USD


class SolAnswerLost:
    """The paper venue, but the first SOL order fills and its answer is a timeout, and every read
    the reconcile then makes fails at that instant: the leg stays in doubt (the cycle is recorded
    ``unknown`` with 980 + 600 = 1 580 USD). From the next wake-up the exchange answers."""

    def __init__(self, inner: PaperGateway, clock: SimClock) -> None:
        self.inner, self.clock = inner, clock
        self.venue = inner.venue
        self.blind_at: datetime | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _check(self, what: str) -> None:
        if self.blind_at is not None and self.clock.now() == self.blind_at:
            raise ReadFailedError(f"{what}: 503")

    def create_order(self, leg: OrderLeg) -> OrderState:
        state: OrderState = self.inner.create_order(leg)
        if leg.symbol == "SOL-PERP" and self.blind_at is None:
            self.blind_at = self.clock.now()
            raise AmbiguousOrderError("RequestTimeout: POST /fapi/v1/order")
        return state

    def positions(self, instruments: dict[str, Instrument]) -> dict[str, float]:
        self._check("positions")
        got: dict[str, float] = self.inner.positions(instruments)
        return got

    def find_order(self, leg: OrderLeg) -> OrderState | None:
        self._check("order lookup")
        got: OrderState | None = self.inner.find_order(leg)
        return got

    def orders_since(self, instrument: Instrument, since_ms: int) -> list[OrderState]:
        self._check("order history")
        got: list[OrderState] = self.inner.orders_since(instrument, since_ms)
        return got

    def trades_since(self, instrument: Instrument, since_ms: int) -> list[Trade]:
        self._check("trade history")
        got: list[Trade] = self.inner.trades_since(instrument, since_ms)
        return got


def _in_doubt_rig(make: Make, limit: float) -> Any:
    """The SOL-in-doubt loop, 00:00 to the next day's 00:00, drift band 2 %, read every 6 h; its
    executor proves nothing "not placed" before a reconcile (settle_s 0) on the simulated clock."""
    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, moves={T0 + 6 * H: AT_TARGET},
                end=T0 + DAY, limits=DailyLimits(turnover_usd=limit), wrap=SolAnswerLost,
                triggers=Triggers(drift_band=0.02, check_every=6 * H))
    gateway, journal = loop.runner.venue.gateway, loop.journal

    def executor(basis: PlanBasis) -> JournaledExecutor:
        return JournaledExecutor(gateway, journal, basis, mode="paper",
                                 retry=RetryPolicy(base_delay_s=0.0, reconcile_delays_s=(),
                                                   settle_s=0.0),
                                 clock=lambda: ms(loop.clock.now()), sleep=lambda s: None)

    loop.runner.venue.executor = executor
    return loop


def test_a_leg_in_doubt_counts_toward_the_daily_turnover_limit(make: Make) -> None:
    """Limit 3 500 USD. 00:00: the hedge is sent, its SOL leg (400 USD) filled but in doubt; the
    cycle row says ``unknown``, 1 580 USD. 06:00: the 1 700 USD unwind would bring the day to
    1 980 + 1 700 = 3 680 USD, so it is refused (the rows' 1 580 + 1 700 = 3 280 let it through,
    and the execution then settled the SOL fill: 3 680 sent). The next day's 00:00 schedule cycle
    sends it."""
    loop = _in_doubt_rig(make, 3_500.0)
    loop.run()
    rows = [(c.time, c.reason, c.action, round(c.turnover_usd, 6)) for c in loop.cycles()]
    assert rows[:2] == [(T0, "start", "unknown", 1_580.0), (T0 + 6 * H, "drift", "refused", 0.0)]
    assert "with 1,980.00 already today" in loop.cycles()[1].message
    day_one = [t for _, t in loop.trades() if t.time_ms < ms(T0 + DAY)]
    assert sum(abs(t.contracts) * t.price for t in day_one) == pytest.approx(TURNOVER_UP, rel=1e-12)
    assert len(loop.alerts("limit", "daily turnover limit")) == 1
    # the next day starts afresh: the unwind goes out with the 00:00 schedule cycle
    assert rows[-1] == (T0 + DAY, "schedule", "traded", pytest.approx(UNWIND, rel=1e-12))


def test_the_daily_summary_counts_a_leg_settled_after_its_cycle(make: Make) -> None:
    """Limit 3 700 USD: the 06:00 unwind passes (3 680) and its execution settles the 00:00 SOL
    leg (filled, 400 USD, recorded in no cycle row). The next day's summary reports the 3 680 USD
    the account traded (the rows' sum, 1 580 + 1 700 = 3 280, missed the settled leg)."""
    loop = _in_doubt_rig(make, 3_700.0)
    loop.run()
    assert [(c.reason, c.action) for c in loop.cycles()][:2] == [("start", "unknown"),
                                                                 ("drift", "traded")]
    sent = sum(abs(t.contracts) * t.price for _, t in loop.trades())
    assert sent == pytest.approx(TURNOVER_UP + UNWIND, rel=1e-12)  # 3 680
    (summary,) = loop.alerts("daily_summary")
    assert summary.fields["turnover_usd"] == pytest.approx(3_680.0, rel=1e-12)
    assert "turnover 3,680.00 USD" in summary.text


class DiesOnTradeAlert:
    """An alert sink during whose delivery of the trade alert the process dies."""

    def send(self, alert: Alert) -> bool:
        if alert.kind.value == "trade":
            raise Crash
        return True


def test_a_crash_while_the_trade_alert_is_sent_keeps_the_day_s_turnover(make: Make) -> None:
    """Limit 2 500 USD. The 00:00 hedge (1 980 USD) is sent and journalled, the plan is cleared
    from the run state, then the process dies while the webhook delivers the trade alert: no cycle
    row. After the restart, the 06:00 unwind (1 700 USD) is refused, 1 980 + 1 700 > 2 500; the
    day's sends stay at 1 980 USD (the 3 680 USD the lost row allowed)."""
    lim = DailyLimits(turnover_usd=2_500.0)
    first = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H, limits=lim)
    first.runner.alerts.sinks.append(DiesOnTradeAlert())
    with pytest.raises(Crash):
        first.run()
    assert len(first.trades()) == 3 and first.cycles() == []
    assert first.state("plan_in_flight") is None
    first.journal.close()
    first.store.close()

    second = make(NaiveFutures(band=0.01), prices=BTC_UP, moves={T0 + 6 * H: AT_TARGET},
                  end=T0 + 12 * H, limits=lim,
                  triggers=Triggers(drift_band=0.02, check_every=6 * H))
    second.run()
    assert [(c.time, c.reason, c.action) for c in second.cycles()] == [
        (T0 + 6 * H, "drift", "refused"), (T0 + 12 * H, "drift", "refused")]
    assert "with 1,980.00 already today" in second.cycles()[0].message
    sent = sum(abs(t.contracts) * t.price for _, t in second.trades())
    assert sent == pytest.approx(TURNOVER_UP, rel=1e-12)
