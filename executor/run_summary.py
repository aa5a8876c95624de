"""The daily loop's daily summary (:func:`send_daily_summary`): one ``daily_summary`` alert per UTC
day, sent by :class:`executor.run_loop.Runner` when a new day starts.

Its ``cycles`` are the day's cycles as the loop counts them (the health file's and ``--json``'s
``cycles``): a failed account read is a row of the run tables (reason ``read``) but no cycle, so it
is counted apart (``read_failures``). Money in USD; tracking error and margin ratio fractions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from executor.alerts import AlertHub, AlertKind, Severity
from executor.run_cycle import View
from executor.run_store import CycleRecord, RunStore

#: the reason of the run-table row of a failed account read (not a cycle)
READ = "read"


def day_rows(store: RunStore, start: datetime) -> tuple[list[CycleRecord], list[CycleRecord]]:
    """The cycles of the UTC day starting at ``start`` and, apart, its failed account reads."""
    rows = [c for c in store.cycles() if start <= c.time < start + timedelta(days=1)]
    return [c for c in rows if c.reason != READ], [c for c in rows if c.reason == READ]


def send_daily_summary(alerts: AlertHub, store: RunStore, now: datetime, day: str, view: View,
                       turnover: float) -> None:
    """Alert the summary of ``day`` (ISO date, UTC): its cycles, how many traded, its failed
    account reads (when any), ``turnover`` (USD, the journal's), NAV at the day's opening (the run
    state's ``day_nav``, else ``view``'s) and now, and ``view``'s tracking error and margin
    ratio."""
    cycles, reads = day_rows(store, datetime.fromisoformat(day).replace(tzinfo=UTC))
    traded = [c for c in cycles if c.action == "traded"]
    nav0 = float(store.get("day_nav") or view.nav)
    failed_reads = f", {len(reads)} account reads failed" if reads else ""
    alerts.emit(AlertKind.DAILY_SUMMARY, Severity.INFO, f"daily summary {day}",
                f"{len(cycles)} cycles, {len(traded)} traded{failed_reads}, turnover "
                f"{turnover:,.2f} USD, NAV {nav0:,.2f} -> {view.nav:,.2f} USD, TE "
                f"{view.tracking_error:.2%}, margin ratio {view.margin_ratio:.1%}", now,
                day=day, cycles=len(cycles), trades=len(traded), read_failures=len(reads),
                nav=view.nav, nav_open=nav0, turnover_usd=turnover,
                tracking_error=view.tracking_error, margin_ratio=view.margin_ratio)
