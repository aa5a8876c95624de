"""Under cron (``fbr run --once``, one process per wake-up) a cycle whose execution failed is tried
again at the next wake-up (reason ``retry``), as the long-running loop does: the pending retry is
in the run state, not only in the process that failed. A retry is only a reason to run a cycle:
the kill file and the day's loss halt still stop it.

The rig is ``test_run_loop``'s (paper venue, simulated clock, real journaled executor): the book
0.1 BTC / 1 ETH / 10 SOL and 3 000 USD cash against 50/30/20, scheduled daily, read hourly here.
At BTC = 70 000 the spot values are 7 000 / 3 000 / 2 000 (V = 12 000, NAV 15 000 with the cash)
and the naive hedge is w*_i V - spot_i = -1 000 / +600 / +400 USD = -0.014 / +0.2 / +2 contracts.
At 00:00 each test's first ``--once`` run finds the account held by a manual ``fbr execute`` (its
lock): the start cycle's execution is refused, a ``failed`` row. Nothing here is random.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import test_run_loop as rig  # tests/executor, on sys.path (its paper venue and clock)
from test_run_loop import BTC_DOWN, BTC_UP, DAY, HEDGE_UP, SYMS, T0, H, Make, Rig

from executor.lock import account_lock
from executor.run_settings import DailyLimits, Triggers
from optimizer.policies import NaiveFutures

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir

NO_TRADE = dict.fromkeys(SYMS, 0.0)


def _once(make: Make, at: datetime, **kwargs: Any) -> Rig:
    """One ``fbr run --once`` process woken at ``at`` (hourly reads, the naive hedge)."""
    kwargs.setdefault("prices", BTC_UP)
    loop = make(NaiveFutures(band=0.01), clock_start=at, end=T0 + DAY,
                triggers=Triggers(check_every=H), **kwargs)
    loop.runner.settings = dataclasses.replace(loop.runner.settings, once=True)
    return loop


def _close(loop: Rig) -> None:
    """The process exits (its journal connections closed)."""
    loop.journal.close()
    loop.store.close()


def _failed_first_run(make: Make, **kwargs: Any) -> Rig:
    """00:00, cron --once: a manual fbr execute holds the account, the start cycle fails."""
    first = _once(make, T0, **kwargs)
    manual = ExitStack()
    manual.enter_context(account_lock(first.runner.account))
    first.run()
    manual.close()
    assert first.reasons() == [(T0, "start", "failed")]
    assert "tries again at the next wake-up" in first.alerts("failure", "cycle failed")[0].text
    assert first.state("retry") == "start"
    _close(first)
    return first


def test_a_failed_cycle_is_retried_by_the_next_cron_wakeup(make: Make) -> None:
    """01:00 (cron --once, the manual run is over): README "the loop tries it again at its next
    wake-up (reason retry)". By hand: a ``retry`` cycle at 01:00 trading the naive hedge at BTC
    70 000, -0.014 / +0.2 / +2 contracts (as the in-process loop does at its next wake-up); the
    retry is then no longer pending, so the 02:00 run finds nothing due (next: 00:00 tomorrow)."""
    _failed_first_run(make)

    second = _once(make, T0 + H)
    second.run()
    assert second.reasons() == [(T0, "start", "failed"), (T0 + H, "retry", "traded")]
    assert second.positions() == pytest.approx(HEDGE_UP, abs=1e-9)
    assert second.state("retry") is None
    _close(second)

    third = _once(make, T0 + 2 * H)
    third.run()
    assert third.reasons() == [(T0, "start", "failed"), (T0 + H, "retry", "traded")]


def test_a_pending_retry_waits_while_the_kill_file_exists(make: Make, tmp_path: Path) -> None:
    """01:00: the kill file exists, the run ends ``killed`` with no cycle and no order; the retry
    stays pending. 02:00, the kill file removed: the retry cycle runs and trades the hedge
    (-0.014 / +0.2 / +2 contracts, by hand as above)."""
    _failed_first_run(make)
    kill = tmp_path / "state" / "KILL"
    kill.parent.mkdir(parents=True, exist_ok=True)
    kill.touch()

    second = _once(make, T0 + H)
    assert second.run().status == "killed"
    assert second.reasons() == [(T0, "start", "failed")]
    assert second.positions() == NO_TRADE and second.state("retry") == "start"
    _close(second)

    kill.unlink()
    third = _once(make, T0 + 2 * H)
    third.run()
    assert third.reasons() == [(T0, "start", "failed"), (T0 + 2 * H, "retry", "traded")]
    assert third.positions() == pytest.approx(HEDGE_UP, abs=1e-9)


def test_a_pending_retry_does_not_pass_the_daily_loss_limit(make: Make) -> None:
    """daily_loss_usd = 1 000. The day opens at 00:00 at NAV 7 000 + 3 000 + 2 000 + 3 000 cash =
    15 000 USD. By 01:00 BTC has fallen to 35 000: NAV 3 500 + 3 000 + 2 000 + 3 000 = 11 500,
    3 500 below the opening (> 1 000). The 01:00 retry cycle runs but the loss limit refuses its
    plan (a ``refused`` row, the day halted, nothing sent); the retry is used up, so the 02:00
    run runs no cycle at all."""
    limits = DailyLimits(loss_usd=1_000.0)
    _failed_first_run(make, limits=limits)

    second = _once(make, T0 + H, prices=BTC_DOWN, limits=limits)
    second.run()
    assert second.reasons() == [(T0, "start", "failed"), (T0 + H, "retry", "refused")]
    assert "below the day's opening 15,000.00" in second.cycles()[-1].message
    assert second.state("halted") == "loss" and second.state("retry") is None
    assert second.positions() == NO_TRADE
    _close(second)

    third = _once(make, T0 + 2 * H, prices=BTC_DOWN, limits=limits)
    third.run()
    assert len(third.cycles()) == 2 and third.positions() == NO_TRADE


def test_a_failed_plan_resumed_at_the_next_wakeup_is_not_retried_as_well(make: Make) -> None:
    """00:00: the start plan is journalled, then setting the account up fails (a 503): the plan
    stays open and a retry is pending. 01:00 (cron --once): the restart resumes that plan (the
    hedge: -0.014 / +0.2 / +2 contracts), which is the failed cycle's work done; no ``retry``
    cycle follows it in the same run (it planned again from the account and found nothing)."""
    from test_run_loop_health_error import PrepareFails

    from executor.base import ReadFailedError

    error = ReadFailedError("binanceusdm: set_leverage failed: 503")
    first = _once(make, T0, wrap=lambda p, c: PrepareFails(p, c, error, fails=1))
    first.run()
    assert first.reasons() == [(T0, "start", "failed")] and first.state("retry") == "start"
    assert first.state("plan_in_flight") is not None
    _close(first)

    second = _once(make, T0 + H)
    second.run()
    assert [(t, r) for t, r, _ in second.reasons()] == [(T0, "start"), (T0 + H, "resume")]
    assert second.reasons()[1][2] == "traded"
    assert second.positions() == pytest.approx(HEDGE_UP, abs=1e-9)
    assert second.state("retry") is None
    _close(second)
