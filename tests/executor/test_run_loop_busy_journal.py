"""A journal another process holds past SQLite's busy timeout (30 s; shortened to 0.2 s here with
PRAGMA busy_timeout, the same path) killed the daily loop: 'database is locked' from the run tables
escaped every cycle handler and the loop ended with "fbr run died". Now that wake-up stops with a
CRITICAL "journal busy" alert and the loop goes on.

Rig (tests/executor/test_run_loop): the book at target at 00:00 (nothing to trade); BTC moves to
70,000 at 06:00, so a drift cycle runs then (band 2%); a second connection holds a write
transaction from 06:00 until the 12:00 wake-up (as a stopped process or a sqlite3 shell would).
Expected: at 12:00, the journal free again, the loop sends the drift hedge -0.014 BTC / +0.2 ETH /
+2 SOL, 1,980 USD (by hand, test_run_loop's docstring)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import pytest
import test_run_loop as rig  # tests/executor, on sys.path (its paper venue and clock)
from test_run_loop import AT_TARGET, BTC_UP, T0, TURNOVER_UP, H, Make

from executor.run_settings import Triggers
from optimizer.policies import NaiveFutures

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir


def test_a_busy_journal_stops_one_wake_up_not_the_loop(make: Make) -> None:
    holder: list[sqlite3.Connection] = []

    def hold(t_from: datetime, t_to: datetime) -> None:
        if t_to == T0 + 6 * H:
            c = sqlite3.connect(str(loop.journal.path), isolation_level=None)
            c.execute("BEGIN IMMEDIATE")
            holder.append(c)
        elif holder and t_to >= T0 + 12 * H:
            holder[0].execute("COMMIT")
            holder.pop().close()

    loop = make(NaiveFutures(band=0.01), prices=AT_TARGET, moves={T0 + 6 * H: BTC_UP},
                end=T0 + 18 * H, hooks=[hold],
                triggers=Triggers(drift_band=0.02, check_every=6 * H))
    for conn in (loop.runner.store._conn, loop.journal._conn, loop.store._conn):
        conn.execute("PRAGMA busy_timeout = 200")
    summary = loop.run()
    assert summary.status == "finished"
    busy = loop.alerts("failure", "journal busy")
    assert len(busy) == 1 and busy[0].time == T0 + 6 * H
    sent = sum(abs(t.contracts) * t.price for _, t in loop.trades())
    assert sent == pytest.approx(TURNOVER_UP, rel=1e-12)
