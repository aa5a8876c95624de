"""The daily loop when a cycle cannot be carried out: an error while executing the plan (the
exchange failing to set the account up, a manual ``fbr execute`` holding the account) is a failed
cycle, alerted, and the loop tries again at its next wake-up; a bug still ends the loop, alerted
first; a failed read at the wake-up ahead of a funding settlement is tried again before it.

The rig is ``test_run_loop``'s (paper venue, simulated clock, real journaled executor): the book
0.1 BTC / 1 ETH / 10 SOL and 3 000 USD cash against 50/30/20; at BTC = 70 000 the naive hedge is
-0.014 BTC / +0.2 ETH / +2 SOL (1 980 USD); the account is read every 6 h. Nothing here is random.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import pytest
import test_run_loop as rig  # tests/executor, on sys.path (its fake exchange and clock)
from test_run_loop import BTC_UP, DAY, HEDGE_UP, SYMS, T0, Fixed, H, Make, Reads

from executor import safety
from executor.base import ReadFailedError
from executor.lock import account_lock
from executor.paper import PaperGateway
from executor.plan import Instrument
from executor.run_settings import Triggers
from executor.schedule import SimClock
from models.book import Book
from models.errors import FbrError
from models.market import MarketSnapshot
from optimizer.policies import NaiveFutures

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir

SECRET = "canary-secret-2b7d"


class PrepareFails:
    """The paper venue, but setting the account up for trading (margin mode, leverage) raises
    ``error`` the first ``fails`` times, as ``CcxtGateway.prepare`` does after its retries."""

    def __init__(self, inner: PaperGateway, clock: SimClock, error: Exception, fails: int) -> None:
        self.inner = inner
        self.venue = inner.venue
        self.error = error
        self.left = fails

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def prepare(self, instruments: dict[str, Instrument]) -> None:
        if self.left > 0:
            self.left -= 1
            raise self.error
        self.inner.prepare(instruments)


def test_an_error_while_executing_is_a_failed_cycle_retried_at_the_next_wakeup(
        make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    """00:00: the start cycle plans the 1 980 USD hedge, but setting the leverage fails with a
    503 past the gateway's retries (ReadFailedError, its text carrying a registered secret). The
    loop records a failed cycle, sends one CRITICAL "cycle failed" alert (secret redacted) and goes
    on; at the 06:00 wake-up the cycle runs again (``retry``) and trades the hedge, superseding
    the plan that was journalled but never sent."""
    monkeypatch.setattr(safety, "_SECRETS", set())
    safety.register_secret(SECRET)
    error = ReadFailedError(f"binanceusdm: set_leverage failed: 503 (key {SECRET})")
    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + DAY,
                wrap=lambda p, c: PrepareFails(p, c, error, fails=1))
    summary = loop.run()

    assert summary.status == "finished" and summary.failures == 1
    assert loop.reasons() == [(T0, "start", "failed"), (T0 + 6 * H, "retry", "traded"),
                              (T0 + DAY, "schedule", "no_trade")]
    (alert,) = loop.alerts("failure", "cycle failed")
    assert alert.severity.value == "critical" and alert.time == T0
    assert "set_leverage failed: 503 (key ***)" in alert.text and SECRET not in alert.text
    assert alert.fields["error"] == "ReadFailedError"
    failed = loop.cycles()[0]
    assert SECRET not in failed.message and failed.turnover_usd == 0.0
    first_plan, second_plan = loop.journal.plan_ids()
    assert failed.plan_id == first_plan
    assert loop.journal.plan_status(first_plan) == "superseded"
    assert loop.journal.orders(first_plan)[0].attempts == 0  # nothing of it was sent
    assert loop.journal.plan_status(second_plan) == "done"
    assert loop.positions() == pytest.approx(HEDGE_UP, abs=1e-9)
    assert loop.state("plan_in_flight") is None


def test_a_manual_execute_holding_the_account_fails_the_cycle_not_the_loop(make: Make) -> None:
    """A manual ``fbr execute`` holds the account's lock at 00:00 and is done by 06:00. The start
    cycle's execution is refused (AccountBusyError): a failed cycle whose alert names the manual
    run (not "another fbr run", which is only the loop's own lock), no plan journalled; at 06:00
    the retry trades the hedge."""
    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H)
    manual = ExitStack()
    manual.enter_context(account_lock(loop.runner.account))
    loop.clock.on_advance.append(lambda t_from, t_to: manual.close())
    summary = loop.run()

    assert summary.status == "finished"
    assert loop.reasons() == [(T0, "start", "failed"), (T0 + 6 * H, "retry", "traded")]
    (alert,) = loop.alerts("failure", "cycle failed")
    assert "another fbr execute/--resume is running" in alert.text
    assert "another fbr run" not in alert.text
    assert len(loop.journal.plan_ids()) == 1  # the 00:00 plan never reached the journal
    assert sorted(s for s, _ in loop.trades()) == sorted(SYMS)


def test_an_unexpected_error_ends_the_loop_after_a_critical_alert(make: Make) -> None:
    """A bug (a RuntimeError, not an FbrError) while executing is not hidden: it ends the loop
    and propagates, after a CRITICAL "fbr run died" alert naming it."""
    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + DAY,
                wrap=lambda p, c: PrepareFails(p, c, RuntimeError("index out of range"), fails=1))
    with pytest.raises(RuntimeError, match="index out of range"):
        loop.run()
    (alert,) = loop.alerts("failure", "fbr run died")
    assert alert.severity.value == "critical" and alert.time == T0
    assert alert.text.startswith("RuntimeError: index out of range")


def test_a_failed_read_ahead_of_a_funding_settlement_is_retried_before_it(make: Make) -> None:
    """Carry matters (gamma_fund 1), a cycle runs 30 min ahead of each 8-hourly settlement, the
    account is read hourly. The 07:30 read fails once (503); retry_every is 5 min, so the 08:00
    settlement's cycle runs at 07:35 (it was skipped: the next wake-up was 08:30, after the
    settlement); the loop then wakes hourly from there (08:35, then the clock's end at 09:00).
    Cycles: 00:00 start, 07:30 read failed, 07:35 funding."""
    fail_at = T0 + 7 * H + timedelta(minutes=30)

    class FailsAt(Reads):  # type: ignore[misc]
        def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
            if self.clock.now() == fail_at:
                raise FbrError("503 Service Unavailable")
            market: MarketSnapshot = self.inner.market(book, fallback)
            return market

    loop = make(Fixed({}), end=T0 + 9 * H, gamma_fund=1.0, wrap=lambda p, c: FailsAt(p, c),
                triggers=Triggers(funding_ahead=timedelta(minutes=30), check_every=H))
    loop.run()
    m5 = timedelta(minutes=5)
    assert loop.reasons() == [(T0, "start", "no_trade"), (fail_at, "read", "failed"),
                              (fail_at + m5, "funding", "no_trade")]
    assert [w for w in loop.wakes if w >= T0 + 7 * H] == [T0 + 7 * H, fail_at, fail_at + m5,
                                                          fail_at + m5 + H, T0 + 9 * H]
