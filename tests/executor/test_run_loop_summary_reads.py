"""The daily summary's ``cycles`` are the loop's cycles (the health file's and ``--json``'s
``cycles``, what ``--max-cycles`` counts): a failed account read is a row of the run tables
(reason ``read``) but no cycle, so the summary counts it apart (``read_failures``).

The rig is ``test_run_loop``'s (paper venue, simulated clock), a fixed policy holding no futures:
nothing is ever traded. Nothing here is random.
"""

from __future__ import annotations

import json
from datetime import datetime

import test_run_loop as rig  # tests/executor, on sys.path (its paper venue and clock)
from test_run_loop import DAY, T0, Fixed, H, Make, Reads

from executor.base import ReadFailedError
from executor.paper import PaperGateway
from executor.run_settings import Triggers
from executor.schedule import SimClock
from models.book import Book
from models.market import MarketSnapshot

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir


def test_daily_summary_cycles_match_the_loop_s_cycles(make: Make) -> None:
    """Reads fail 00:00 .. 00:55 (12 reads, 5 min apart: retry_every), the start cycle runs at
    01:00, then 6-hourly reads find nothing due until the 00:00 schedule of day 1.
    By hand: day 0 has exactly one cycle (the 01:00 start) and 12 failed reads; the loop ran 2
    cycles in total (health ``cycles`` = 2)."""
    reads: list[Reads] = []

    def wrap(paper: PaperGateway, clock: SimClock) -> Reads:
        reads.append(Reads(paper, clock, error=ReadFailedError("503 maintenance"), fails=12))
        return reads[0]

    loop = make(Fixed({}), end=T0 + DAY, wrap=wrap, triggers=Triggers(check_every=6 * H))
    summary = loop.run()
    assert summary.cycles == 2 and summary.failures == 12
    assert [c.reason for c in loop.cycles()] == ["read"] * 12 + ["start", "schedule"]
    health = json.loads((loop.tmp / "state" / "health.json").read_text())
    assert health["cycles"] == 2
    (day0,) = loop.alerts("daily_summary")
    assert day0.fields["day"] == T0.date().isoformat()
    assert day0.fields["cycles"] == 1 and day0.fields["read_failures"] == 12
    assert day0.text.startswith("1 cycles, 0 traded, 12 account reads failed, turnover 0.00 USD")


def test_a_day_without_failed_reads_says_nothing_of_them(make: Make) -> None:
    """Reads never fail: day 0's summary is the 00:00 start cycle only, read_failures 0 and no
    mention of reads in its text."""
    loop = make(Fixed({}), end=T0 + DAY, triggers=Triggers(check_every=6 * H))
    loop.run()
    (day0,) = loop.alerts("daily_summary")
    assert day0.fields["cycles"] == 1 and day0.fields["read_failures"] == 0
    assert day0.text.startswith("1 cycles, 0 traded, turnover 0.00 USD")


class Outage:
    """The paper gateway, its account reads (``market()``) failing from ``start`` (inclusive) to
    ``end`` (exclusive), loop-clock time."""

    def __init__(self, inner: PaperGateway, clock: SimClock, start: datetime, end: datetime) -> None:
        self.inner, self.clock, self.start, self.end = inner, clock, start, end
        self.venue = inner.venue

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        if self.start <= self.clock.now() < self.end:
            raise ReadFailedError("503 maintenance")
        return self.inner.market(book, fallback)


def test_a_day_the_exchange_never_answered_gets_its_summary(make: Make) -> None:
    """Reads fail from day 0 12:00 to day 2 01:00: at the first read that answers (day 2, 01:00)
    the loop sends day 0's summary (the 00:00 start cycle, its opening NAV) and day 1's (no cycle,
    every read failed, the opening NAV not read), in that order; day 2's follows at day 3.
    By hand: 6-hourly reads while no cycle is due, so day 0 fails at 12:00 and 18:00 (2); from
    day 1's 00:00 schedule on a cycle is overdue and the loop retries every 5 min (retry_every):
    24 x 12 = 288 failed reads on day 1, 12 on day 2 (00:00 .. 00:55), whose 01:00 read runs the
    overdue cycle (day 2: 1 cycle)."""
    outage: list[Outage] = []

    def wrap(paper: PaperGateway, clock: SimClock) -> Outage:
        outage.append(Outage(paper, clock, T0 + 12 * H, T0 + 2 * DAY + H))
        return outage[0]

    loop = make(Fixed({}), end=T0 + 3 * DAY, wrap=wrap, triggers=Triggers(check_every=6 * H))
    loop.run()
    day0, day1, day2 = loop.alerts("daily_summary")
    days = [(T0 + k * DAY).date().isoformat() for k in range(3)]
    assert [a.fields["day"] for a in (day0, day1, day2)] == days
    assert day0.time == day1.time == T0 + 2 * DAY + H
    counts = [(a.fields["cycles"], a.fields["read_failures"]) for a in (day0, day1, day2)]
    assert counts == [(1, 2), (0, 288), (1, 12)]
    assert day0.fields["nav_open"] == day0.fields["nav"]  # nothing traded: the NAV did not move
    assert day1.fields["nav_open"] is None and day2.fields["nav_open"] is not None
    assert "NAV (not read that day) -> " in day1.text


def test_a_plan_met_on_restart_is_no_cycle_of_the_summary(make: Make) -> None:
    """A restart finds the crashed run's plan superseded (a manual execute in between): its row
    (reason ``resume``, action ``recovered``) is no cycle of the loop's; the interrupted cycle
    runs again at once and trades (reason ``restart``). Day 0's summary: 1 cycle (as the loop
    counted it), 1 traded, 1 open plan met on restart; the loop's own count on day 0 is the
    same 1 (its total, 2, adds day 1's 00:00 schedule cycle)."""
    first, _ = rig._crashed_first_run(make)
    plan_id = first.state("plan_in_flight")
    old = first.journal.plan(plan_id)
    first.journal.record_plan(rig.dataclasses.replace(old, plan_id=old.plan_id[:-4] + "beef",
                                                      legs=()), "", first.runner.account)
    first.journal.close()
    first.store.close()

    second = make(rig.NaiveFutures(band=0.01), prices=rig.BTC_UP, end=T0 + DAY)
    summary = second.run()
    assert [(r, a) for _, r, a in second.reasons()] == [("resume", "recovered"),
                                                        ("restart", "traded"),
                                                        ("schedule", "no_trade")]
    assert summary.cycles == 2
    (day0,) = second.alerts("daily_summary")
    assert (day0.fields["cycles"], day0.fields["trades"], day0.fields["resumed"]) == (1, 1, 1)
    assert day0.text.startswith("1 cycles, 1 traded, 1 open plans met on restart, turnover ")


def test_days_the_loop_did_not_run_get_no_summary(make: Make) -> None:
    """The loop runs on day 0 until 06:00, then is off until day 3 (stopped, not failing): the
    first read of day 3 sends day 0's summary only; days 1 and 2 have no row of the run tables
    and get none (an outage's days have their failed reads: the test above)."""
    first = make(Fixed({}), end=T0 + 6 * H, triggers=Triggers(check_every=6 * H))
    first.run()
    first.journal.close()
    first.store.close()
    second = make(Fixed({}), end=T0 + 3 * DAY + H, clock_start=T0 + 3 * DAY,
                  triggers=Triggers(check_every=6 * H))
    second.run()
    (day0,) = second.alerts("daily_summary")
    assert day0.fields["day"] == T0.date().isoformat() and day0.time == T0 + 3 * DAY
    assert (day0.fields["cycles"], day0.fields["read_failures"]) == (1, 0)
