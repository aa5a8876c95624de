"""The daily loop's start-up after a crash (:class:`RestartHandler`, a part of
:class:`executor.run_loop.Runner`): what becomes of the plan the last run left in flight.

The loop calls it only when no kill file or stop request is present (a kill sends nothing). Then:

1. a plan no longer open (done, or superseded by a newer plan) is not resumed: its fills, read
   back from the journal, are recorded as a ``recovered`` cycle and the interrupted cycle runs
   again at once; so is a plan another run closes between this look and the account's lock (a
   manual ``fbr execute --resume`` that finished it: its fills are not reported as this loop's
   trade);
2. the account is read (a failed read: the plan stays in flight and the loop goes on; the next
   plan sent supersedes it, the executor settling its legs in doubt first) and the day's state is
   brought up to date (a new UTC day: the summary and the new opening NAV);
3. the plan is **not** resumed, and a ``refused`` cycle is recorded, when
   - the day is halted by the daily loss limit (or NAV is now past it): nothing is sent for the
     rest of the day;
   - it is older than ``triggers.check_every``: between two wake-ups of a running loop at most
     ``check_every`` passes before the account is read again and the target decided afresh, so a
     plan older than that aims at a target the loop itself would no longer trade toward. The
     interrupted cycle runs again at once on the account as it is now; that cycle's execution
     settles the old plan's legs in doubt against the account before it sends anything (the
     journaled executor does so for every open plan of the account) and supersedes it;
4. otherwise the plan is resumed: its legs in doubt reconciled, only what is missing of its own
   orders sent (exactly: an account another process traded since stops it, naming the contract,
   as a loop's plan is sent as made or not at all); a retry
   the failed cycle left pending (a cycle whose plan was journalled and then failed, e.g. setting
   the account up) is done with it.

Fills of a plan not resumed count toward the turnover of the day they were sent on (the limit
reads the journal: :mod:`executor.run_turnover`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from executor.alerts import AlertKind, Severity
from executor.base import ExecutionUnknownError, PlanFinishedError
from executor.live import PlanBasis
from executor.lock import AccountBusyError
from executor.plan import OrderPlan
from executor.run_cycle import View
from executor.run_store import CycleRecord
from executor.run_summary import RESUME
from executor.run_trade import RETRY, CycleTrader, filled_notional
from executor.safety import redact
from models.errors import FbrError, RefusedError


class RestartHandler(CycleTrader):
    """The start-up of the loop (see the module docstring); the loop's state is the Runner's."""

    _rerun: bool

    if TYPE_CHECKING:  # the Runner's
        def _read(self, now: datetime) -> View | None: ...
        def _day(self, now: datetime, view: View) -> None: ...

    def _resume_in_flight(self, now: datetime) -> None:
        """Finish, or leave, the plan a crash left in flight (see the module docstring)."""
        plan_id = self.store.get("plan_in_flight")
        journal = self.venue.journal
        if plan_id is None or journal is None or self.venue.executor is None:
            return
        try:
            still_open = journal.plan_status(plan_id) == "open"
        except FbrError:  # not in this journal (another file): nothing to resume
            still_open = False
        if not still_open:  # done or superseded meanwhile: the interrupted cycle runs again
            self.store.put("plan_in_flight", None)
            self._record_finished(plan_id, now)
            self._rerun = True
            return
        view = self._read(now)
        if view is None:
            return
        self._day(now, view)
        plan = journal.plan(plan_id)
        if self._not_resumed(now, view, plan):
            return
        self._resume(now, view, plan_id)

    def _not_resumed(self, now: datetime, view: View, plan: OrderPlan) -> bool:
        """Leave the plan (True) when the day is halted or the plan is stale: a ``refused`` cycle
        with its fills so far, a restart alert, and after a stale plan a fresh cycle at once."""
        halt = self._loss_halt(now, view)
        age = now - _created(plan, now)
        bound = self.settings.triggers.check_every
        if halt is None and age <= bound:
            return False
        why = (f"{halt}: plan {plan.plan_id} is not resumed" if halt is not None else
               f"plan {plan.plan_id} was made at {plan.created}, {age} ago, more than check_every "
               f"({bound}): it is not resumed toward that target; the account is planned afresh "
               f"and the plan's legs in doubt are settled before the next plan is sent")
        self.store.put("plan_in_flight", None)
        self._rerun = halt is None
        self.store.record(CycleRecord(now, RESUME, "refused", plan.plan_id, view.nav,
                                      view.tracking_error, message=why,
                                      turnover_usd=self._fills_usd(plan.plan_id, view)))
        self.alerts.emit(AlertKind.RESTART, Severity.WARNING, "restart: plan not resumed", why,
                         now, plan_id=plan.plan_id)
        return True

    def _resume(self, now: datetime, view: View, plan_id: str) -> None:
        """Resume the plan through the journaled executor and record the cycle."""
        assert self.venue.executor is not None
        self.alerts.emit(AlertKind.RESTART, Severity.WARNING, "restart: resuming a plan",
                         f"plan {plan_id} was left open by the last run; its legs are reconciled "
                         f"against the account and only what is missing is sent", now,
                         plan_id=plan_id)
        executor = self.venue.executor(PlanBasis(view.book, view.market, view.instruments,
                                                 self._risk(now)))
        try:
            report = executor.resume(plan_id, open_only=True, exact=True)
        except PlanFinishedError as exc:  # another run (a manual --resume) finished it meanwhile
            self._not_ours(plan_id, now, str(exc))
            return
        except ExecutionUnknownError as exc:
            self.alerts.emit(AlertKind.UNKNOWN_LEG, Severity.CRITICAL, "order in doubt",
                             redact(str(exc)), now)
            return
        except AccountBusyError as exc:  # another run executes now: the next cycle settles it
            self.alerts.emit(AlertKind.RESTART, Severity.WARNING, "restart: account busy",
                             redact(str(exc)), now, plan_id=plan_id)
            return
        except RefusedError as exc:  # a newer plan superseded it (e.g. a manual fbr execute)
            self._not_ours(plan_id, now, str(exc))
            return
        self.store.put("plan_in_flight", None)
        self.store.put(RETRY, None)  # the failed cycle's plan is finished: nothing to retry
        self.store.record(self._reported(now, view, RESUME, report))

    def _not_ours(self, plan_id: str, now: datetime, why: str) -> None:
        """The plan was closed by another run between the loop's look at it and the account's
        lock (finished by a manual ``--resume``, superseded by a manual ``fbr execute``): as when
        it was closed before the restart, its fills are recorded as ``recovered`` (they count
        toward the day's turnover; no trade of this loop's is reported) and the interrupted cycle
        runs again at once."""
        self.store.put("plan_in_flight", None)
        self._record_finished(plan_id, now)
        self._rerun = True
        self.alerts.emit(AlertKind.RESTART, Severity.WARNING, "restart: plan not resumed",
                         redact(why), now, plan_id=plan_id)

    def _record_finished(self, plan_id: str, now: datetime) -> None:
        """A cycle row for a plan the crash left unrecorded (done or superseded after its legs
        were sent), with its fills read back from the journal, dated at its last send, else now."""
        journal = self.venue.journal
        view = self._read(now)
        if journal is None or view is None:
            return
        sent = [o.sent_ms for o in journal.orders(plan_id) if o.filled > 0 and o.sent_ms is not None]
        when = datetime.fromtimestamp(max(sent) / 1000.0, tz=UTC) if sent else now
        self.store.record(CycleRecord(when, RESUME, "recovered", plan_id, view.nav,
                                      message=f"plan {plan_id} finished before the last run "
                                      "recorded it: its fills count toward the day's turnover",
                                      turnover_usd=self._fills_usd(plan_id, view)))

    def _fills_usd(self, plan_id: str, view: View) -> float:
        """|USD notional| of the plan's journalled fills."""
        journal = self.venue.journal
        if journal is None:
            return 0.0
        return float(sum(filled_notional(view, o.symbol, o.filled, o.average)
                         for o in journal.orders(plan_id) if o.filled > 0))


def _created(plan: OrderPlan, default: datetime) -> datetime:
    """When the plan was made (its ``created``, UTC; ``default`` when unreadable)."""
    try:
        t = datetime.fromisoformat(plan.created)
    except ValueError:
        return default
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
