"""The daily loop (``fbr run``): read the account, solve, trade when it pays, record, alert; for months.

Each wake-up (every ``triggers.check_every``, at each scheduled time and ahead of funding
settlements when carry matters) the loop

1. stops when the kill file exists, a kill/stop was requested (a signal sets a flag; the wake-up
   in progress finishes first: the loop never cuts a plan) or its book file changed (run_book_watch);
2. reads the account (:func:`executor.run_cycle.read_view`); a failed read is recorded and alerted
   once per outage (and once when the exchange answers again) and the loop waits for the next
   wake-up, never one inside a silence the exchange asked for (an IP ban: executor.silence);
3. alerts on the margin ratio (``margin_warn``) and on funding spikes (``funding_alert``), once per
   episode;
4. runs a cycle when one is due: the first wake-up, a scheduled time, a drift beyond the band, a
   margin ratio beyond the de-risk threshold (at once, without the cost gate) or a funding
   settlement ahead. A cycle asks the policy, de-risks, plans, gates, checks the day's turnover and
   loss limits and executes through the journaled executor (or shows the plan in a dry run); every
   cycle is a row of the run tables (:mod:`executor.run_store`) and trades, failures and orders in
   doubt are alerted;
5. rewrites the health file.

A new UTC day first sends the previous day's summary. Restart: the scheduled grid, the last cycle
and the plan in flight are in the run tables; unless the kill file exists or a stop was requested,
a plan a crash left open is resumed first (the journaled executor reconciles its legs in doubt and
sends only what is missing) when the day is not halted by the loss limit and the plan is no older
than ``check_every`` (:mod:`executor.run_restart`), then the loop goes on where it stopped. A cycle
whose execution fails is recorded, alerted and run again at the next wake-up, in this process or
the next (the pending retry is in the run tables: a cron ``--once`` run retries it; every gate
still applies); an unexpected error (a bug) is alerted and ends the loop. The health file's
``last_error`` is the latest error not yet over (a failed read until the exchange answers; a failed
cycle, a busy journal until a cycle runs through; the error the loop died of). One loop per
account: the loop holds the account's run lock for its lifetime (a second ``fbr run`` is refused; a
crashed one releases it).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from executor.alerts import AlertHub, AlertKind, Severity
from executor.base import ExchangeGateway
from executor.journal import Journal, journal_busy
from executor.live import JournaledExecutor, PlanBasis
from executor.lock import AccountBusyError, account_lock
from executor.plan import Instrument, PlanOptions
from executor.run_book_watch import BookWatch
from executor.run_cycle import View, read_view
from executor.run_restart import RestartHandler
from executor.run_settings import RunSettings
from executor.run_store import AlertLog, CycleRecord, RunStore, write_health
from executor.run_summary import READ, days_to_close, send_daily_summary
from executor.run_trade import RETRY
from executor.safety import redact
from executor.schedule import Clock, next_settlement
from executor.silence import silence_kept
from models.book import Book
from models.errors import FbrError, RefusedError
from models.market import MarketSnapshot
from optimizer.policies import Policy
from optimizer.te_band import RiskInput

log = logging.getLogger("executor.run")


@dataclass
class Venue:
    """Where the loop reads and trades: the gateway, the journal (None in a dry run), how to build
    the journaled executor for a plan's basis (None in a dry run), the fallback market at a time
    (what the exchange does not give), and each contract's daily vol (impact in the gate)."""

    gateway: ExchangeGateway
    journal_path: Path
    journal: Journal | None
    executor: Callable[[PlanBasis], JournaledExecutor] | None
    fallback: Callable[[datetime], MarketSnapshot]
    daily_vol: Mapping[str, float] = field(default_factory=dict)


@dataclass
class RunSummary:
    """How the loop ended: ``status`` (``stopped``, ``killed``, ``finished``, ``book_changed``), counts."""

    status: str
    cycles: int = 0
    trades: int = 0
    failures: int = 0
    alerts: int = 0


class Runner(BookWatch, RestartHandler):
    """The loop over one account (see the module docstring). ``clock`` is a
    :class:`executor.schedule.WallClock` or a :class:`executor.schedule.SimClock`. ``risk`` (the
    cost gate's, the recorded tracking error's, the plan's residual TE's) is the book's model, or
    a model per cycle time ``risk(t)``, read at each wake-up's time (a simulation over history
    must not read returns after t: fbr.run_sim)."""

    def __init__(self, venue: Venue, book: Book, risk: RiskInput, policy: Policy,
                 settings: RunSettings, options: PlanOptions, clock: Clock, alerts: AlertHub,
                 *, book_path: str = "", gamma_fund: float = 0.0,
                 book_changed: Callable[[], str | None] | None = None) -> None:
        self.venue, self.book, self.risk, self.policy = venue, book, risk, policy
        self.settings, self.options, self.clock, self.alerts = settings, options, clock, alerts
        self.book_path, self.gamma_fund, self.book_changed = book_path, gamma_fund, book_changed
        self.account = venue.gateway.account_key()
        self.store = RunStore(venue.journal_path, self.account)
        self._log = AlertLog(self.store)
        self.summary = RunSummary("running")
        self._stop: str | None = None
        self._instruments: dict[str, Instrument] = {}
        self._instruments_day: date | None = None  # lots, caps, tiers, funding hours: read daily
        self._outage: str | None = None
        self._rerun = False  # a cycle a crash interrupted, not resumed: run one at once

    # --- control ------------------------------------------------------------------------------
    def request_stop(self, why: str = "stop") -> None:
        """Stop after the wake-up in progress (``why``: ``stop`` or ``kill``)."""
        self._stop = self._stop or why

    def _stopping(self) -> bool:
        return self._stop is not None or self.settings.kill_file.exists()

    def run(self, preflight: Callable[[], None] | None = None) -> RunSummary:
        """Run until stopped, killed, ``max_cycles`` or the end of a simulated clock.
        ``preflight`` runs once the account's run lock is held, before anything else (the CLI
        sends the start alert there, so a dead webhook stops the run before any order)."""
        self.alerts.sinks.append(self._log)
        try:
            with self._run_lock():
                if preflight is not None:
                    preflight()
                try:
                    return self._run()
                except Exception as exc:  # a bug or an error no cycle handles: alert, then end
                    self._died(exc)
                    raise
        finally:
            self.alerts.sinks.remove(self._log)
            self.store.close()

    def _run_lock(self) -> ExitStack:
        """The account's run lock, held (only a second ``fbr run`` holding it is refused here; the
        account lock of an execution in progress is the cycles' business)."""
        stack = ExitStack()
        try:
            stack.enter_context(account_lock(f"run-{self.account}"))
        except AccountBusyError as exc:
            raise RefusedError(f"another fbr run is running on account {self.account}"
                               f"{_pid_of(str(exc))}: two loops must not trade one account. Fix: "
                               f"stop it first (systemctl stop, or kill -TERM its pid)") from None
        return stack

    def _died(self, exc: Exception) -> None:
        """The CRITICAL alert of a loop ending on ``exc`` (its delivery failing is only logged)."""
        died = f"{type(exc).__name__}: {redact(str(exc))}"
        try:
            self._error(died)
            self.alerts.emit(AlertKind.FAILURE, Severity.CRITICAL, "fbr run died",
                             f"{died}. The loop has stopped; "
                             f"nothing more is sent until it is started again", self._now())
            self._health("died", self._now())
        except Exception:  # the original error matters more
            log.exception("could not alert the loop's death")

    def _run(self) -> RunSummary:
        if not self._stopping():  # a kill file or stop at start: nothing is sent, not even a resume
            self._resume_in_flight(self._now())
        while True:
            now = self._now()
            if self._stopping() or self._book_edited(now):  # executor.run_book_watch
                break
            try:
                self._tick(now)
            except sqlite3.OperationalError as exc:
                if not journal_busy(exc):
                    raise
                self._busy(now, exc)
            self._health("running", now)
            if self._finished(now):
                break
            self.clock.sleep_until(self._next_wake(now), self._stopping)
        return self._end(self._now())

    def _busy(self, now: datetime, exc: sqlite3.OperationalError) -> None:
        """A wake-up cut short by a journal another process held past SQLite's 30 s wait (a
        stopped process, a sqlite3 shell): alerted (CRITICAL), and the loop goes on to its next
        wake-up, as after a failed read. Orders in flight are the executor's business: its own
        journal failures end their plan in doubt (exit 5), resumed like any other."""
        self.summary.failures += 1
        self._error(f"journal busy: {redact(str(exc))}")
        self.alerts.emit(AlertKind.FAILURE, Severity.CRITICAL, "journal busy",
                         f"journal {self.venue.journal_path} is held by another process "
                         f"({redact(str(exc))}): this wake-up stopped there. The loop retries at "
                         f"the next wake-up; stop the process holding it", now)

    def _finished(self, now: datetime) -> bool:
        cap = self.settings.max_cycles
        end = getattr(self.clock, "end", None)
        return (self.settings.once or (cap is not None and self.summary.cycles >= cap)
                or (end is not None and now >= end))

    def _end(self, now: datetime) -> RunSummary:
        killed = self._stop == "kill" or self.settings.kill_file.exists()
        status = "killed" if killed else ("stopped" if self._stop == "stop" else self._stop or "finished")
        kind = AlertKind.KILL if killed else AlertKind.STOP
        why = (f"kill switch ({self.settings.kill_file} or SIGUSR1): no further order"
               if killed else f"the loop ended ({status})")
        self.alerts.emit(kind, Severity.CRITICAL if killed else Severity.INFO,
                         f"fbr run {status}", why, now)
        self.summary.status = status
        self.summary.alerts = len(self.alerts.sent)
        self._health(status, now)
        return self.summary

    def _now(self) -> datetime:
        return self.clock.now()

    # --- one wake-up ----------------------------------------------------------------------------
    def _tick(self, now: datetime) -> None:
        view = self._read(now)
        if view is None:
            return
        self._day(now, view)
        self._watch(now, view)
        reason = self._reason(now, view)
        if reason is not None:
            self._cycle(now, view, reason)

    def _read(self, now: datetime) -> View | None:
        """The account now, or None after recording and (once per outage) alerting a failure."""
        try:
            with silence_kept(self.venue.journal, self.account,
                              lambda: int(self._now().timestamp() * 1000)):
                if self._instruments_day != now.date():
                    self._instruments = self.venue.gateway.instruments(self.book)
                    self._instruments_day = now.date()
                view = read_view(self.venue.gateway, self.book, self.venue.fallback(now), now,
                                 self._risk(now), self._instruments)
        except FbrError as exc:
            msg = redact(str(exc))
            self.summary.failures += 1
            self.store.record(CycleRecord(now, READ, "failed", message=msg))
            if self.store.get(OUTAGE) is None:  # once per outage, across restarts (cron)
                self.alerts.emit(AlertKind.FAILURE, Severity.CRITICAL, "account read failed",
                                 f"{msg}. The loop retries at the next wake-up", now)
                self.store.put(OUTAGE, msg)
            self._outage = msg
            self._error(msg, read=True)
            return None
        was = self.store.get(OUTAGE)
        if was is not None:
            self.alerts.emit(AlertKind.FAILURE, Severity.INFO, "exchange answers again",
                             f"after: {was}", now)
            self.store.put(OUTAGE, None)
        if self._read_error():
            self._error(None)  # the read's own error: over once the exchange answers
        self._outage = None
        return view

    def _watch(self, now: datetime, view: View) -> None:
        """Margin and funding alerts, once per episode (an episode ends when the figure is back):
        above the warning ratio and funding beyond its threshold, strictly, as the README says
        and as the de-risk and drift triggers compare."""
        t = self.settings.triggers
        if t.margin_warn is not None:
            self._episode("margin", view.margin_ratio > t.margin_warn, now,
                          AlertKind.MARGIN, "margin ratio high",
                          f"margin ratio {view.margin_ratio:.1%} (warning at {t.margin_warn:.0%})",
                          margin_ratio=view.margin_ratio)
        if t.funding_alert is not None:
            for sym in self.book.contract_symbols:
                r = view.market.funding_rate(sym)
                self._episode(f"funding:{sym}", abs(r) > t.funding_alert, now, AlertKind.FUNDING,
                              f"funding spike on {sym}",
                              f"rate {r:.4%} per settlement (alert at {t.funding_alert:.3%})",
                              symbol=sym, rate=r)

    def _episode(self, key: str, on: bool, now: datetime, kind: AlertKind, title: str, text: str,
                 **fields: float | str) -> None:
        """Alert when ``key``'s condition starts; the episode is kept in the run state, so a
        loop woken by cron (``--once``) does not alert it again at every wake-up."""
        state = f"episode:{key}"
        active = self.store.get(state) is not None
        if on and not active:
            self.store.put(state, now.isoformat())
            self.alerts.emit(kind, Severity.WARNING, title, text, now, **fields)
        elif not on and active:
            self.store.put(state, None)

    def _reason(self, now: datetime, view: View) -> str | None:
        """Why a cycle runs now (None: no cycle)."""
        t = self.settings.triggers
        last = self.store.get("last_cycle")
        if t.margin_ratio is not None and view.margin_ratio > t.margin_ratio:
            return "margin"
        if last is None:
            return "start"
        if self._rerun:
            self._rerun = False
            return "restart"
        if self.store.get(RETRY) is not None:  # a failed execution, in this process or the last
            self.store.put(RETRY, None)
            return "retry"
        due = self.settings.schedule.next_after(datetime.fromisoformat(last))
        if due is not None and now >= due:
            return "schedule"
        if t.drift_band is not None and view.max_drift > t.drift_band:
            return "drift"
        return self._funding_reason(now)

    def _funding_reason(self, now: datetime) -> str | None:
        """``funding`` once per settlement, ``funding_ahead`` before it, when carry matters."""
        ahead = self.settings.triggers.funding_ahead
        if ahead is None or self.gamma_fund <= 0:
            return None
        nxt = self._next_settlement(now)
        if nxt is None or nxt - now > ahead or self.store.get("funding_cycle") == nxt.isoformat():
            return None
        self.store.put("funding_cycle", nxt.isoformat())
        return "funding"

    def _next_settlement(self, now: datetime) -> datetime | None:
        exchange = {s: i.contract for s, i in self._instruments.items()}  # once read
        return next_settlement(self.book, exchange, now)

    def _next_wake(self, now: datetime) -> datetime:
        t = self.settings.triggers
        wake = now + t.check_every
        last = self.store.get("last_cycle")
        due = self.settings.schedule.next_after(datetime.fromisoformat(last) if last else now)
        if last is None:  # the first cycle has not run (the account could not be read)
            wake = min(wake, now + t.retry_every)
        elif due is not None:  # a cycle overdue (the account could not be read): retry soon
            wake = min(wake, due if due > now else now + t.retry_every)
        ahead = t.funding_ahead if self.gamma_fund > 0 else None  # the first T with T - ahead > now
        if ahead and (nxt := self._next_settlement(now + ahead)) is not None:
            wake = min(wake, nxt - ahead)
        if ahead and self._outage is not None and self._funding_missed(now, ahead):
            wake = min(wake, now + t.retry_every)  # before the settlement the read failed for
        until = self.venue.journal.silence_until(self.account) if self.venue.journal else None
        if until is not None:  # no wake-up inside a silence the exchange asked for
            wake = max(wake, datetime.fromtimestamp(until / 1000, tz=UTC))
        return wake

    def _funding_missed(self, now: datetime, ahead: timedelta) -> bool:
        """The next settlement is within ``ahead`` and its cycle has not run (the read failed)."""
        nxt = self._next_settlement(now)
        return (nxt is not None and nxt - now <= ahead
                and self.store.get("funding_cycle") != nxt.isoformat())

    # --- the day ------------------------------------------------------------------------------
    def _day(self, now: datetime, view: View) -> None:
        """On a new UTC day: the summaries of the days since the last one read (a day between with
        no read: no opening NAV), then the new day's opening NAV. A clock stepped back (NTP across
        midnight) starts no day: the later day's halt, opening NAV and summary stand."""
        today = now.date().isoformat()
        day = self.store.get("day")
        if day is not None and today <= day:
            return
        rows = self.store.cycles()  # read once for every due day
        for past in days_to_close(rows, day, today):
            opening = self.store.get("day_nav") if past == day else None
            # the journal's turnover: the run tables' rows miss legs settled after their cycle
            turnover = self._turnover_on(datetime.fromisoformat(past).replace(tzinfo=UTC), view)
            send_daily_summary(self.alerts, rows, now, past, view, turnover,
                               float(opening) if opening else None)
        self.store.put("day", today)
        self.store.put("day_nav", repr(view.nav))
        self.store.put("halted", None)

    # --- health -------------------------------------------------------------------------------
    def _health(self, status: str, now: datetime) -> None:
        last = self.store.get("last_cycle")
        due = self.settings.schedule.next_after(datetime.fromisoformat(last) if last else now)
        write_health(self.settings.health_file, {
            "status": status, "pid": os.getpid(), "account": self.account, "mode": self.settings.mode,
            "updated": now.isoformat(), "wall_time": datetime.now(UTC).isoformat(),
            "last_cycle": last, "next_cycle": due.isoformat() if due else None,
            "cycles": self.summary.cycles, "trades": self.summary.trades,
            "failures": self.summary.failures, "last_error": self._last_error(),
            "alerts_undelivered": self.alerts.undelivered})


#: the run-state key of an account-read outage (its first message), kept across restarts
OUTAGE = "outage"


def _pid_of(message: str) -> str:
    """`` (pid N)`` when the lock message names the holder."""
    import re

    m = re.search(r"\(pid \d+\)", message)
    return f" {m.group(0)}" if m else ""
