"""The daily loop's daily summary (:func:`send_daily_summary`): one ``daily_summary`` alert per UTC
day, sent by :class:`executor.run_loop.Runner` when a new day starts: at the first successful
account read of a later day, one per day since the last day the loop read the account on which
it ran (:func:`days_to_close`), so a day the exchange never answered gets its summary too (its
cycles 0, its failed reads counted, its opening NAV not read).

Its ``cycles`` are the day's cycles as the loop counts them (the health file's and ``--json``'s
``cycles``): a failed account read is a row of the run tables (reason ``read``) but no cycle, so it
is counted apart (``read_failures``), and so is a plan a restart found open (reason ``resume``:
resumed, not resumed, or finished by another run; ``resumed``). Its ``trades`` are the rows that
traded, a resumed plan's among them (as the health file counts them). Money in USD; tracking
error and margin ratio fractions.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from executor.alerts import AlertHub, AlertKind, Severity
from executor.run_cycle import View
from executor.run_store import CycleRecord

#: the reason of the run-table row of a failed account read (not a cycle)
READ = "read"
#: the reason of the run-table row of a plan a restart found open (not a cycle)
RESUME = "resume"


def day_rows(rows: list[CycleRecord], start: datetime) -> dict[str, list[CycleRecord]]:
    """Of the account's run-table ``rows`` (:meth:`RunStore.cycles`), those of the UTC day starting
    at ``start`` by kind: ``cycles``, ``reads`` (failed account reads) and ``resumes`` (plans a
    restart found open)."""
    rows = [c for c in rows if start <= c.time < start + timedelta(days=1)]
    return {"cycles": [c for c in rows if c.reason not in (READ, RESUME)],
            "reads": [c for c in rows if c.reason == READ],
            "resumes": [c for c in rows if c.reason == RESUME]}


def days_to_close(rows: list[CycleRecord], last: str | None, today: str) -> list[str]:
    """The days whose summaries are due on ``today`` (ISO dates): ``last`` (the last UTC day the
    loop read the account; None: none yet, nothing due) and every later day before ``today`` with
    one of the account's run-table ``rows`` (a failed read at least); a day the loop did not run
    at all (stopped, or a cron job off) has none and gets no summary."""
    if last is None:
        return []
    first, end = date.fromisoformat(last), date.fromisoformat(today)
    seen = {c.time.date() for c in rows if first < c.time.date() < end}
    return [last, *(d.isoformat() for d in sorted(seen))] if first < end else []


def send_daily_summary(alerts: AlertHub, rows: list[CycleRecord], now: datetime, day: str,
                       view: View, turnover: float, nav_open: float | None) -> None:
    """Alert the summary of ``day`` (ISO date, UTC): its cycles, how many traded, its failed
    account reads (when any), ``turnover`` (USD, the journal's), NAV at the day's opening
    (``nav_open``; None: the account was not read that day) and now, and ``view``'s tracking
    error and margin ratio (``view``: the account now); ``rows``: the account's run-table rows."""
    kinds = day_rows(rows, datetime.fromisoformat(day).replace(tzinfo=UTC))
    cycles, reads, resumes = kinds["cycles"], kinds["reads"], kinds["resumes"]
    traded = [c for c in cycles + resumes if c.action == "traded"]
    failed_reads = f", {len(reads)} account reads failed" if reads else ""
    restarts = f", {len(resumes)} open plans met on restart" if resumes else ""
    opening = f"{nav_open:,.2f}" if nav_open is not None else "(not read that day)"
    alerts.emit(AlertKind.DAILY_SUMMARY, Severity.INFO, f"daily summary {day}",
                f"{len(cycles)} cycles, {len(traded)} traded{failed_reads}{restarts}, turnover "
                f"{turnover:,.2f} USD, NAV {opening} -> {view.nav:,.2f} USD now, TE "
                f"{view.tracking_error:.2%}, margin ratio {view.margin_ratio:.1%}", now,
                day=day, cycles=len(cycles), trades=len(traded), read_failures=len(reads),
                resumed=len(resumes), nav=view.nav, nav_open=nav_open, turnover_usd=turnover,
                tracking_error=view.tracking_error, margin_ratio=view.margin_ratio)
