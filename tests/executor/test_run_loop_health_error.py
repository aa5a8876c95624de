"""The health file's ``last_error`` (README: "health.json: status, pid, last and next cycle,
counts, last error"): the latest error not yet over, for a monitor. A failed cycle's message
until a cycle runs through, a failed read's until the exchange answers, a busy journal's, and the
error the loop died of.

The rig is ``test_run_loop``'s (paper venue, simulated clock, real journaled executor): the book
0.1 BTC / 1 ETH / 10 SOL and 3 000 USD cash against 50/30/20, scheduled daily and read every 6 h;
at BTC = 70 000 the naive hedge is -0.014 BTC / +0.2 ETH / +2 SOL. Each clock advance (the loop
asleep between wake-ups) reads the health file the last wake-up wrote. Nothing here is random.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import datetime, timedelta
from typing import Any

import pytest
import test_run_loop as rig  # tests/executor, on sys.path (its paper venue and clock)
from test_run_loop import AT_TARGET, BTC_UP, DAY, T0, Fixed, H, Make, Reads, Rig

from executor.base import ReadFailedError
from executor.paper import PaperGateway
from executor.plan import Instrument
from executor.run_settings import Triggers
from executor.schedule import SimClock
from optimizer.policies import NaiveFutures

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir


class PrepareFails:
    """The paper venue, but setting the account up for trading (margin mode, leverage) raises
    ``error`` the first ``fails`` times, as ``CcxtGateway.prepare`` does after its retries (as in
    test_run_loop_failures)."""

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


def _health(loop: Rig) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((loop.tmp / "state" / "health.json").read_text())
    return doc


def _watch(seen: dict[datetime, Any], loops: list[Rig]) -> Any:
    """A clock hook: the health file's last_error as the wake-up before ``t_to`` left it."""
    def hook(t_from: datetime, t_to: datetime) -> None:
        seen[t_from] = _health(loops[0])["last_error"]
    return hook


def test_health_last_error_names_a_cycle_failing_every_wakeup(make: Make) -> None:
    """Setting the account up fails at every wake-up for two days (a 503 past retries): each
    6-hourly wake-up runs a cycle (start, then retry) that fails: 9 wake-ups 00:00 .. 48:00, 9
    failed cycles, each with a CRITICAL alert. The health file names the error (not null)."""
    error = ReadFailedError("binanceusdm: set_leverage failed: 503")
    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 2 * DAY,
                wrap=lambda p, c: PrepareFails(p, c, error, fails=10_000))
    summary = loop.run()
    assert summary.failures == 9 and len(loop.cycles()) == 9
    assert all(c.action == "failed" for c in loop.cycles())
    health = _health(loop)
    assert health["failures"] == summary.failures
    assert health["last_error"] is not None and "set_leverage failed: 503" in health["last_error"]


def test_health_of_a_died_loop_names_the_error(make: Make) -> None:
    """A bug ends the loop at the start cycle: health ``died``, last_error the exception."""
    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + DAY,
                wrap=lambda p, c: PrepareFails(p, c, RuntimeError("index out of range"), fails=1))
    with pytest.raises(RuntimeError):
        loop.run()
    health = _health(loop)
    assert health["status"] == "died"
    assert health["last_error"] == "RuntimeError: index out of range"


def test_last_error_is_cleared_by_a_cycle_that_runs_through(make: Make) -> None:
    """00:00: the start cycle fails (503), last_error names it; 06:00: the retry trades the hedge,
    last_error null again (and stays null at 12:00, 18:00 and the end)."""
    error = ReadFailedError("binanceusdm: set_leverage failed: 503")
    seen: dict[datetime, Any] = {}
    loops: list[Rig] = []
    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + DAY, hooks=[_watch(seen, loops)],
                wrap=lambda p, c: PrepareFails(p, c, error, fails=1))
    loops.append(loop)
    loop.run()
    assert [c.action for c in loop.cycles()] == ["failed", "traded", "no_trade"]
    assert "set_leverage failed: 503" in seen[T0]
    assert [seen[T0 + k * 6 * H] for k in (1, 2, 3)] == [None, None, None]
    assert _health(loop)["last_error"] is None


def test_last_error_names_a_failed_read_until_the_exchange_answers(make: Make) -> None:
    """The first 2 reads fail (00:00 and, retry_every 5 min later, 00:05): last_error the read's
    message; 00:10 the read works and the start cycle runs: null again."""
    seen: dict[datetime, Any] = {}
    loops: list[Rig] = []

    def wrap(paper: PaperGateway, clock: SimClock) -> Reads:
        return Reads(paper, clock, error=ReadFailedError("503 maintenance"), fails=2)

    loop = make(Fixed({}), end=T0 + 6 * H, wrap=wrap, hooks=[_watch(seen, loops)])
    loops.append(loop)
    loop.run()
    five = timedelta(minutes=5)  # the rig's retry_every (Triggers' default)
    assert seen[T0] == "503 maintenance" and seen[T0 + five] == "503 maintenance"
    assert seen[T0 + 2 * five] is None
    assert [(c.reason, c.action) for c in loop.cycles()] == [
        ("read", "failed"), ("read", "failed"), ("start", "no_trade")]


def test_last_error_names_a_busy_journal(make: Make) -> None:
    """test_run_loop_busy_journal's run: the journal held by another connection from 06:00 to the
    12:00 wake-up. The 06:00 wake-up stops (journal busy): last_error names it; 12:00, the journal
    free, the drift cycle trades: null again."""
    holder: list[sqlite3.Connection] = []
    seen: dict[datetime, Any] = {}
    loops: list[Rig] = []

    def hold(t_from: datetime, t_to: datetime) -> None:
        if t_to == T0 + 6 * H:
            c = sqlite3.connect(str(loops[0].journal.path), isolation_level=None)
            c.execute("BEGIN IMMEDIATE")
            holder.append(c)
        elif holder and t_to >= T0 + 12 * H:
            holder[0].execute("COMMIT")
            holder.pop().close()

    loop = make(NaiveFutures(band=0.01), prices=AT_TARGET, moves={T0 + 6 * H: BTC_UP},
                end=T0 + 18 * H, hooks=[_watch(seen, loops), hold],
                triggers=Triggers(drift_band=0.02, check_every=6 * H))
    loops.append(loop)
    for conn in (loop.runner.store._conn, loop.journal._conn, loop.store._conn):
        conn.execute("PRAGMA busy_timeout = 200")
    loop.run()
    assert seen[T0] is None
    assert seen[T0 + 6 * H] is not None and seen[T0 + 6 * H].startswith("journal busy: ")
    assert "locked" in seen[T0 + 6 * H]
    assert seen[T0 + 12 * H] is None
    assert [c.reason for c in loop.cycles()][-1] == "drift"


def test_a_cron_wakeup_still_names_the_failed_cycle(make: Make) -> None:
    """cron (``--once``): 00:00's start cycle fails (the policy raises); 01:00's process runs no
    cycle (nothing due). No cycle ran through since, so its health file still names the failure
    (a review: it was kept in the process's memory, and the next process wrote null)."""
    first = make(Fixed({}, fail=True), end=T0 + DAY, triggers=Triggers(check_every=H))
    first.runner.settings = dataclasses.replace(first.runner.settings, once=True)
    first.run()
    assert [(c.reason, c.action) for c in first.cycles()] == [("start", "failed")]
    first.journal.close()
    first.store.close()
    second = make(Fixed({}), clock_start=T0 + H, end=T0 + DAY, triggers=Triggers(check_every=H))
    second.runner.settings = dataclasses.replace(second.runner.settings, once=True)
    second.run()
    assert len(second.cycles()) == 1  # no new cycle
    last = _health(second)["last_error"]
    assert last is not None and "the policy broke" in last
