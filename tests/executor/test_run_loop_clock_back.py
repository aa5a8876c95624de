"""The daily loop when the wall clock steps back across 00:00 UTC (an NTP step of a few seconds):
day D+1 has started, its opening NAV is recorded and its daily loss limit has halted trading; the
clock then reads 23:59:55 of day D for a moment and comes back. By the README's rule (the loss
limit halts trading for the rest of the UTC day) D+1 stays halted with its opening NAV
(13,000 USD), and no second daily summary is sent: a 15-second step lifted the halt and reset the
day's opening NAV to 11,500."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

import test_run_loop as rig  # tests/executor, on sys.path (its paper venue and clock)
from test_run_loop import Make

from executor.run_cycle import View
from optimizer.policies import NaiveFutures

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir

D1 = datetime(2024, 6, 2, tzinfo=UTC)


def _view(nav: float) -> View:
    return cast(View, SimpleNamespace(nav=nav, tracking_error=0.0, margin_ratio=0.0))


def test_a_backwards_clock_step_keeps_the_day_halted(make: Make) -> None:
    r = make(NaiveFutures(band=0.01))
    loop = r.runner
    loop.store.put("day", "2024-06-01")
    loop._day(D1 + timedelta(seconds=10), _view(13_000.0))  # day D+1 opens at 13,000
    loop.store.put("halted", "loss")  # the loss limit halts D+1
    loop._day(D1 - timedelta(seconds=5), _view(11_500.0))  # the clock steps back 15 s
    loop._day(D1 + timedelta(seconds=20), _view(11_500.0))  # and forward again
    assert loop.store.get("day") == "2024-06-02"
    assert loop.store.get("halted") == "loss"
    assert float(loop.store.get("day_nav") or 0) == 13_000.0
    summaries = [a.title for a in r.sink.alerts if a.kind.value == "daily_summary"]
    assert summaries == ["daily summary 2024-06-01"]
