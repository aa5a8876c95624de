"""What the daily loop remembers between cycles and across restarts, in its own tables of the
journal file, and the health file it rewrites after every wake-up.

- ``run_cycles``: one row per cycle (account, loop time, why it ran, what it did: ``traded``,
  ``held`` (the fall in tracking error did not beat the cost), ``no_trade``, ``refused`` (a limit),
  ``failed``, ``unknown`` (an order in doubt), ``dry_run``, ``recovered`` (a plan a crash left
  unrecorded, read back from the journal)), the plan id, NAV (USD), tracking error
  before and after (annualised fractions), turnover (USD), a message, and the margin ratio and the
  largest drift |e_i - w*_i| at the cycle's read (fractions);
- ``run_alerts``: every alert the loop sent (time, kind, severity, title, text; redacted), for
  the dashboard;
- ``run_state``: per account, key -> value (the last scheduled cycle time, the day's opening NAV,
  the plan in flight).

The health file is one JSON object written atomically (a temporary file renamed over it):
``{status, pid, account, mode, updated, wall_time, last_cycle, next_cycle, cycles, trades, failures,
last_error, alerts_undelivered}``, times ISO 8601 UTC, so a supervisor (systemd, a cron check, a
dashboard) can tell a stuck loop from a healthy one by ``updated``, a failing one by ``last_error``
(the latest error not yet over: :class:`executor.run_loop.Runner`), and a webhook that lost
alerts by ``alerts_undelivered``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from executor.alerts import Alert
from executor.safety import redact

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_cycles (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL,
    time TEXT NOT NULL, reason TEXT NOT NULL, action TEXT NOT NULL, plan_id TEXT, nav REAL,
    te_before REAL, te_after REAL, turnover_usd REAL NOT NULL, message TEXT NOT NULL,
    margin_ratio REAL, max_drift REAL);
CREATE TABLE IF NOT EXISTS run_alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL,
    time TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL, title TEXT NOT NULL,
    text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run_state (account TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (account, key));
"""


@dataclass(frozen=True)
class CycleRecord:
    """One cycle of the loop (see the module docstring for ``action``). Money in USD, tracking
    errors annualised fractions (None when not computed)."""

    time: datetime
    reason: str
    action: str
    plan_id: str | None = None
    nav: float | None = None
    te_before: float | None = None
    te_after: float | None = None
    turnover_usd: float = 0.0
    message: str = ""
    margin_ratio: float | None = None
    max_drift: float | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (time as ISO 8601 UTC)."""
        return {"time": self.time.isoformat(), "reason": self.reason, "action": self.action,
                "plan_id": self.plan_id, "nav": self.nav, "te_before": self.te_before,
                "te_after": self.te_after, "turnover_usd": self.turnover_usd,
                "message": self.message, "margin_ratio": self.margin_ratio,
                "max_drift": self.max_drift}


class RunStore:
    """The loop's tables in the journal file at ``path``, for one ``account``."""

    def __init__(self, path: str | Path, account: str) -> None:
        self.account = account
        self._conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        self._conn.executescript(_SCHEMA)
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(run_cycles)")}
        for column in ("margin_ratio", "max_drift"):  # tables written before these columns
            if column not in have:
                self._conn.execute(f"ALTER TABLE run_cycles ADD COLUMN {column} REAL")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def record(self, c: CycleRecord) -> None:
        """Append one cycle (its message redacted)."""
        self._conn.execute(
            "INSERT INTO run_cycles (account, time, reason, action, plan_id, nav, te_before, "
            "te_after, turnover_usd, message, margin_ratio, max_drift) VALUES (?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?)",
            (self.account, _utc(c.time), c.reason, c.action, c.plan_id, c.nav, c.te_before,
             c.te_after, c.turnover_usd, redact(c.message), _finite(c.margin_ratio), c.max_drift))

    def record_alert(self, alert: Alert) -> None:
        """Append one alert (its strings redacted)."""
        self._conn.execute(
            "INSERT INTO run_alerts (account, time, kind, severity, title, text) VALUES "
            "(?, ?, ?, ?, ?, ?)", (self.account, _utc(alert.time), alert.kind.value,
                                   alert.severity.value, redact(alert.title), redact(alert.text)))

    def alerts(self) -> list[tuple[str, str, str]]:
        """(time, kind, title) of this account's alerts, oldest first."""
        rows = self._conn.execute("SELECT time, kind, title FROM run_alerts WHERE account = ? "
                                  "ORDER BY id", (self.account,)).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def cycles(self) -> list[CycleRecord]:
        """Every cycle of this account, oldest first."""
        rows = self._conn.execute(
            "SELECT time, reason, action, plan_id, nav, te_before, te_after, turnover_usd, message, "
            "margin_ratio, max_drift FROM run_cycles WHERE account = ? ORDER BY id",
            (self.account,)).fetchall()
        return [CycleRecord(datetime.fromisoformat(r[0]), r[1], r[2], r[3], r[4], r[5], r[6],
                            float(r[7]), r[8], r[9], r[10]) for r in rows]

    def get(self, key: str) -> str | None:
        """A state value (None when unset)."""
        row = self._conn.execute("SELECT value FROM run_state WHERE account = ? AND key = ?",
                                 (self.account, key)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str | None) -> None:
        """Set (or with None, clear) a state value."""
        if value is None:
            self._conn.execute("DELETE FROM run_state WHERE account = ? AND key = ?",
                               (self.account, key))
        else:
            self._conn.execute("INSERT OR REPLACE INTO run_state VALUES (?, ?, ?)",
                               (self.account, key, value))

    def turnover_since(self, t: datetime) -> float:
        """Sum of the turnover (USD) of this account's cycles at or after ``t``."""
        row = self._conn.execute("SELECT COALESCE(SUM(turnover_usd), 0) FROM run_cycles WHERE "
                                 "account = ? AND time >= ?", (self.account, _utc(t))).fetchone()
        return float(row[0])


class AlertLog:
    """An alert sink that keeps every alert in the run tables (what the dashboard shows)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def send(self, alert: Alert) -> bool:
        """Record the alert (False, logged, when the journal cannot take it now: a sink never
        raises for a delivery failure)."""
        try:
            self.store.record_alert(alert)
        except sqlite3.Error as exc:
            log.warning("alert %s not recorded in the run tables: %s", alert.kind.value, exc)
            return False
        return True


def _finite(x: float | None) -> float | None:
    """``x``, or None when it has no finite value (an infinite margin ratio: liquidatable)."""
    return x if x is not None and math.isfinite(x) else None


def _utc(t: datetime) -> str:
    """ISO 8601 in UTC (a naive time is taken as UTC), so stored times sort as text."""
    aware = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


def write_health(path: Path, doc: Mapping[str, object]) -> None:
    """Write the health file atomically (``path`` + ``.tmp`` renamed over ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(redact(json.dumps(dict(doc), indent=2, default=str, allow_nan=False)) + "\n")
    os.replace(tmp, path)
