"""The daily summary's ``cycles`` are the loop's cycles (the health file's and ``--json``'s
``cycles``, what ``--max-cycles`` counts): a failed account read is a row of the run tables
(reason ``read``) but no cycle, so the summary counts it apart (``read_failures``).

The rig is ``test_run_loop``'s (paper venue, simulated clock), a fixed policy holding no futures:
nothing is ever traded. Nothing here is random.
"""

from __future__ import annotations

import json

import test_run_loop as rig  # tests/executor, on sys.path (its paper venue and clock)
from test_run_loop import DAY, T0, Fixed, H, Make, Reads

from executor.base import ReadFailedError
from executor.paper import PaperGateway
from executor.run_settings import Triggers
from executor.schedule import SimClock

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
