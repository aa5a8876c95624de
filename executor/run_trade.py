"""The cycle of the daily loop that may trade (:class:`CycleTrader`, a part of
:class:`executor.run_loop.Runner`): the policy's targets (checked as every execution path checks
an optimiser's solution), the de-risk, the plan, the cost gate, the day's limits, the execution
through the journaled executor (or the dry run) and the alerts on its outcome. Every cycle ends as
one row of the run tables (:class:`executor.run_store.CycleRecord`). A cycle whose execution raises
an :class:`models.errors.FbrError` (the account lock held by a manual ``fbr execute``, a failed
read while setting up the account, a silence the exchange asked for ...) is recorded as
``failed``, alerted (CRITICAL) and run again at the next wake-up (reason ``retry``); the loop goes
on. The pending retry is kept in the run state (key :data:`RETRY`), so a loop woken by cron
(``--once``) retries it too; it is only a reason to run a cycle: the kill file, a stop and the
day's loss halt still apply. A cycle that runs through (neither ``failed`` nor ``unknown``) clears
it, and clears the loop's last error (the health file's ``last_error``).

The day's turnover (the limit's "already today") is what the journal says the account sent
since 00:00 UTC (:mod:`executor.run_turnover`), legs in doubt counted at their whole size.

Units: USD for notionals, turnover and NAV; fractions for tracking error and margin ratios.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from executor.alerts import AlertHub, AlertKind, Severity
from executor.base import ExecutionReport, ExecutionUnknownError, Outcome
from executor.dryrun import DryRunExecutor
from executor.live import PlanBasis
from executor.plan import OrderPlan, PlanOptions, plan_orders
from executor.run_cycle import (
    View,
    check_orderable,
    derisk,
    gate,
    margin_ratio,
    notional_after,
    plan_turnover,
    repair_check,
)
from executor.run_settings import RunSettings
from executor.run_store import CycleRecord, RunStore
from executor.run_turnover import traded_notional
from executor.safety import redact
from models.errors import FbrError
from models.risk import RiskModel
from optimizer.policies import Policy
from optimizer.te_band import RiskInput

log = logging.getLogger("executor.run_trade")

if TYPE_CHECKING:
    from executor.run_loop import RunSummary, Venue


class CycleTrader:
    """The trading cycle (see the module docstring); the loop's state is the Runner's."""

    venue: Venue
    #: a fixed model (live: the book's), or one per cycle time, ``risk(t)`` (a simulation's
    #: trailing estimate on returns up to t: no look-ahead; models.trailing_risk)
    risk: RiskInput
    policy: Policy
    settings: RunSettings
    options: PlanOptions
    alerts: AlertHub
    store: RunStore
    summary: RunSummary
    book_path: str
    account: str
    #: this process's latest error and whether it is an account read's (None: none set here)
    _err: tuple[str | None, bool] | None = None

    def _error(self, msg: str | None, *, read: bool = False) -> None:
        """Record the latest error not yet over, the health file's ``last_error`` (None: over):
        set by a failed read or cycle, a busy journal, the loop's death; cleared by a cycle that
        runs through, or (``read``: an account read's own error) once the exchange answers. Kept
        in the run state too, so a cron wake-up's health file still names it (best effort: a
        journal another process holds keeps it in this process only)."""
        self._err = (msg, read and msg is not None)
        try:
            self.store.put(LAST_ERROR, msg)
            self.store.put(LAST_ERROR_READ, "1" if read and msg is not None else None)
        except sqlite3.Error:
            log.warning("the last error is not in the run state (journal busy): %s", msg)

    def _last_error(self) -> str | None:
        """The latest error not yet over: this process's, else the run state's."""
        return self._err[0] if self._err is not None else self.store.get(LAST_ERROR)

    def _read_error(self) -> bool:
        """Whether the latest error is an account read's (over once the exchange answers)."""
        return self._err[1] if self._err is not None else self.store.get(LAST_ERROR_READ) is not None

    def _risk(self, now: datetime) -> RiskModel:
        """The risk model (annualised covariance) at the cycle time ``now`` (UTC): the fixed
        model, or the per-time one read at ``now`` (the time the policy is asked at)."""
        return self.risk(pd.Timestamp(now)) if callable(self.risk) else self.risk

    def _cycle(self, now: datetime, view: View, reason: str) -> None:
        force = reason == "margin"
        self.summary.cycles += 1
        self.store.put("last_cycle", now.isoformat())
        try:
            plan = self._plan(now, view, force)
        except FbrError as exc:
            self._failed(now, reason, view, f"no plan: {redact(str(exc))}")
            return
        if plan is None:
            record = CycleRecord(now, reason, "refused", None, view.nav, view.tracking_error,
                                 message="halted for the day: daily loss limit")
        else:
            sent = self._gated(now, view, reason, plan, force)
            if sent is None:
                sent = self._send(now, view, reason, plan)
            record = with_fields(sent, margin_ratio=view.margin_ratio, max_drift=view.max_drift)
        self.store.record(record)
        if record.action not in ("failed", "unknown"):  # ran through: nothing left to retry
            self.store.put(RETRY, None)
            self.store.put(FAILING, None)
            self._error(None)

    def _plan(self, now: datetime, view: View, force: bool) -> OrderPlan | None:
        """The policy's targets, de-risked, as an order plan (None: halted for the day)."""
        if self.store.get("halted") and not force:
            return None
        targets = self._targets(now, view, force)
        threshold = self.settings.triggers.margin_ratio
        if threshold is not None:
            asked = targets
            targets, s = derisk(view.book, view.market, asked, threshold,
                                self.venue.daily_vol, self.settings.costs.impact_k)
            if s < 1.0:
                self._derisk_alert(now, view, asked, threshold, s)
        return plan_orders(targets, view.book, view.market, view.instruments, self.options,
                           risk=self._risk(now), now=now)

    def _derisk_alert(self, now: datetime, view: View, asked: dict[str, float], threshold: float,
                      s: float) -> None:
        """The de-risk's alert: the targets' margin ratio passed the threshold (the book's ratio
        now may not have: a start cycle opens from nothing)."""
        held = view.book.futures_exposure(view.market)
        x = np.array([float(asked.get(c, held[j]))
                      for j, c in enumerate(view.book.contract_symbols)])
        # the targets are exposure; their margin is on the exchange's notional after the trade
        r = margin_ratio(view.book, view.market, notional_after(view.book, view.market, x))
        self.alerts.emit(AlertKind.MARGIN, Severity.WARNING, "de-risking",
                         f"the targets' margin ratio {r:.1%} is above {threshold:.0%} (now "
                         f"{view.margin_ratio:.1%}): target positions scaled by {s:.3f}", now,
                         scale=s, margin_ratio=view.margin_ratio, target_margin_ratio=r)

    def _targets(self, now: datetime, view: View, force: bool) -> dict[str, float]:
        """The policy's target notionals (USD); a de-risk whose policy fails starts from the
        positions held (then scaled down), any other failure propagates."""
        try:
            target = self.policy(view.book, view.market, pd.Timestamp(now))
            check_orderable(self.policy, target, view.book, view.market)
        except FbrError as exc:
            if not force:
                raise
            self.alerts.emit(AlertKind.FAILURE, Severity.WARNING, "policy failed while de-risking",
                             f"{redact(str(exc))}; scaling down the positions held instead", now)
            held = view.book.futures_exposure(view.market)  # targets are USD exposure
            return dict(zip(view.book.contract_symbols, map(float, held), strict=True))
        return {s: float(v) for s, v in target.futures.items()}

    def _gated(self, now: datetime, view: View, reason: str, plan: OrderPlan,
               force: bool) -> CycleRecord | None:
        """A record when the plan is not sent (nothing to do, the gate, a daily limit)."""
        base = CycleRecord(now, reason, "no_trade", plan.plan_id, view.nav, view.tracking_error,
                           view.tracking_error)
        if not plan.legs:
            return base
        if self.settings.gate and not force:
            g = gate(view, plan, self._risk(now), self.settings.costs, self.venue.daily_vol)
            repair = None if g.open else repair_check(self.policy, view.book, view.market, plan,
                                                      g.cost_usd)
            if not g.open and (repair is None or not repair.due):
                return with_fields(base, action="held", te_after=g.te_after,
                             message=f"TE^2 fall {g.benefit:.3g} <= cost {g.cost:.3g}")
            if repair is not None:
                self.alerts.emit(AlertKind.MARGIN, Severity.WARNING, "repairing a hard margin row",
                                 f"{'; '.join(repair.broken)}: the plan mends it for "
                                 f"{repair.trading_cost_usd:,.2f} USD of trading cost, although "
                                 f"its TE^2 fall {g.benefit:.3g} <= cost {g.cost:.3g}", now)
        return None if force else self._limits(now, view, plan, base)

    def _limits(self, now: datetime, view: View, plan: OrderPlan,
                base: CycleRecord) -> CycleRecord | None:
        lim = self.settings.limits
        loss = self._loss_halt(now, view)
        if loss is not None:
            return with_fields(base, action="refused", message=loss)
        used = self._day_turnover(now, view)
        if used + plan_turnover(plan) > lim.turnover_usd:
            msg = (f"the plan trades {plan_turnover(plan):,.2f} USD; with {used:,.2f} already "
                   f"today that passes the daily turnover limit {lim.turnover_usd:,.2f} USD")
            self._limit_alert(now, "daily turnover limit", msg)
            return with_fields(base, action="refused", message=msg)
        return None

    def _loss_halt(self, now: datetime, view: View) -> str | None:
        """Why trading is halted for the rest of the day (None: it is not): the day is already
        halted, or NAV is more than ``limits.loss_usd`` below the day's opening (the day is then
        halted and the limit alerted)."""
        lim = self.settings.limits
        nav0 = float(self.store.get("day_nav") or view.nav)
        if nav0 - view.nav > lim.loss_usd:
            self.store.put("halted", "loss")
            msg = (f"NAV {view.nav:,.2f} USD is {nav0 - view.nav:,.2f} below the day's opening "
                   f"{nav0:,.2f} (limit {lim.loss_usd:,.2f}): no more trading today")
            self._limit_alert(now, "daily loss limit", msg)
            return msg
        if self.store.get("halted"):
            return "halted for the day: daily loss limit"
        return None

    def _day_turnover(self, now: datetime, view: View) -> float:
        """USD the account sent on ``now``'s UTC day (:meth:`_turnover_on`)."""
        return self._turnover_on(self._day_start(now), view)

    def _turnover_on(self, day: datetime, view: View) -> float:
        """USD the account sent on the UTC day starting at ``day``, from the journal's orders (see
        :mod:`executor.run_turnover`; in doubt legs priced at ``view``'s marks); the run tables'
        rows since ``day`` in a dry run (no journal, nothing sent)."""
        if self.venue.journal is None:
            return self.store.turnover_since(day)
        return traded_notional(self.venue.journal, self.account, day, day + timedelta(days=1), view)

    def _limit_alert(self, now: datetime, title: str, msg: str) -> None:
        """A daily limit's alert, once per limit and day (every refused cycle is still recorded,
        with the message): a drift check every hour sent it 18 times for one condition."""
        key = f"alerted:{title}:{self._day_start(now).date().isoformat()}"
        if self.store.get(key) is None:
            self.store.put(key, now.isoformat())
            self.alerts.emit(AlertKind.LIMIT, Severity.WARNING, title, msg, now)

    def _send(self, now: datetime, view: View, reason: str, plan: OrderPlan) -> CycleRecord:
        """Execute (or, in a dry run, show) the plan; alert on its outcome."""
        if self.venue.executor is None:
            report = DryRunExecutor().execute(plan)
            return CycleRecord(now, reason, "dry_run", plan.plan_id, view.nav, view.tracking_error,
                               plan.tracking_error_residual, 0.0, f"{len(plan.legs)} legs shown")
        executor = self.venue.executor(PlanBasis(view.book, view.market, view.instruments,
                                                 self._risk(now)))
        self.store.put("plan_in_flight", plan.plan_id)
        try:
            # as the gate and the limits saw it; a margin de-risk (which they skip) re-plans
            # from the account rather than wait for the next wake-up
            report = executor.execute(plan, self.book_path, exact=reason != "margin")
        except ExecutionUnknownError as exc:
            msg = redact(str(exc))
            self.alerts.emit(AlertKind.UNKNOWN_LEG, Severity.CRITICAL, "order in doubt", msg, now)
            return CycleRecord(now, reason, "unknown", plan.plan_id, view.nav, message=msg)
        except FbrError as exc:
            return self._not_executed(now, view, reason, plan, exc)
        self.store.put("plan_in_flight", None)
        return self._reported(now, view, reason, report)

    def _not_executed(self, now: datetime, view: View, reason: str, plan: OrderPlan,
                      exc: FbrError) -> CycleRecord:
        """The record of a cycle whose execution raised ``exc``: failed, alerted (CRITICAL), run
        again at the next wake-up. The plan stays in flight when the journal holds it (a crash
        now resumes it; the next plan supersedes it, its legs in doubt settled first), else it is
        forgotten."""
        msg = f"the plan was not executed: {redact(str(exc))}. The loop tries again at the next wake-up"
        journal = self.venue.journal
        try:
            journalled = journal is not None and journal.plan_status(plan.plan_id) == "open"
        except FbrError:  # record_plan never ran (the account lock, a silence, an older plan)
            journalled = False
        if not journalled:
            self.store.put("plan_in_flight", None)
        self.store.put(RETRY, reason)  # in the run state: a cron wake-up retries it too
        self._error(msg)
        self.summary.failures += 1
        self._failure_alert(now, msg, plan_id=plan.plan_id, error=type(exc).__name__)
        return CycleRecord(now, reason, "failed", plan.plan_id, view.nav, view.tracking_error,
                           message=msg)

    def _reported(self, now: datetime, view: View, reason: str,
                  report: ExecutionReport) -> CycleRecord:
        """Alert the outcome of an executed plan and make its cycle record."""
        turnover = float(sum(filled_notional(view, leg.symbol, leg.filled, leg.average)
                             for leg in report.legs))
        legs = ", ".join(f"{leg.side} {leg.filled:g} {leg.symbol}" for leg in report.legs
                         if leg.filled > 0)
        action = {Outcome.UNKNOWN: "unknown", Outcome.INCOMPLETE: "incomplete"}.get(
            report.outcome, "traded")
        for kind, severity, title, text in report_alerts(report):
            self.alerts.emit(kind, severity, title, text, now, plan_id=report.plan_id)
        if legs:
            self.summary.trades += 1
            self.alerts.emit(AlertKind.TRADE, Severity.INFO, f"rebalanced ({reason})",
                             f"{legs}; turnover {turnover:,.2f} USD", now, plan_id=report.plan_id,
                             turnover_usd=turnover)
        return CycleRecord(now, reason, action, report.plan_id, view.nav, view.tracking_error,
                           report.tracking_error_residual, turnover, " ".join(report.messages))

    def _failed(self, now: datetime, reason: str, view: View, msg: str) -> None:
        """A cycle that made no plan: recorded ``failed`` and alerted (CRITICAL)."""
        self.summary.failures += 1
        self._error(msg)
        self.store.record(CycleRecord(now, reason, "failed", None, view.nav, message=msg))
        self._failure_alert(now, msg)

    def _failure_alert(self, now: datetime, msg: str, **fields: str | None) -> None:
        """The CRITICAL "cycle failed" alert, once per UTC day for one failure that repeats (its
        text with ids and numbers masked, :func:`failure_shape`): a cycle failing the same way at
        every wake-up alerted at every one (24 a day at ``check_every`` = 1 h). Each failure is
        still a cycle row, counted in the health file and the daily summary, and logged; a
        different failure, a new day, or the first after a cycle that ran through alerts again, and
        so does the next failure after an alert the webhook did not take."""
        key = f"{now.date().isoformat()} {failure_shape(msg)}"
        if self.store.get(FAILING) == key:
            log.warning("cycle failed again (alerted earlier today): %s", msg)
            return
        lost = self.alerts.undelivered
        self.alerts.emit(AlertKind.FAILURE, Severity.CRITICAL, "cycle failed", msg, now, **fields)
        if self.alerts.undelivered == lost:  # a webhook that did not take it hears the next one
            self.store.put(FAILING, key)

    def _day_start(self, now: datetime) -> datetime:
        """00:00 UTC of ``now``'s day."""
        return datetime(now.year, now.month, now.day, tzinfo=UTC)


#: the run-state key of a cycle whose execution failed (its reason): the next wake-up runs a
#: ``retry`` cycle, whichever process it is in (the loop, or the next cron ``--once`` run)
RETRY = "retry"
#: the run-state key of the failure alerted last (its UTC day and shape): not alerted again that day
FAILING = "failing"
#: the run-state keys of the health file's ``last_error``, and whether it is an account read's
LAST_ERROR = "last_error"
LAST_ERROR_READ = "last_error_read"


def failure_shape(msg: str) -> str:
    """``msg`` with ids, times and numbers masked: every run of hex characters that holds a digit
    becomes ``#`` (``2026-12-07T10:00`` -> ``#-#-#T#:#``, ``-2019`` -> ``-#``, ``1000SHIBUSDT`` ->
    ``#SHIBUSDT``; a word without a digit stays): the same failure at two wake-ups has one
    shape."""
    return re.sub(r"[0-9a-f]*\d[0-9a-f]*", "#", msg)


def with_fields(rec: CycleRecord, **changes: object) -> CycleRecord:
    """``rec`` with ``changes``."""
    return replace(rec, **changes)  # type: ignore[arg-type]


def filled_notional(view: View, symbol: str, contracts: float, price: float | None) -> float:
    """|USD notional| of ``contracts`` filled at ``price`` (0 without a price)."""
    if price is None or price <= 0:
        return 0.0
    return abs(contracts) * view.instruments[symbol].contract.notional_per_contract(price)


def report_alerts(report: ExecutionReport) -> list[tuple[AlertKind, Severity, str, str]]:
    """The alerts (kind, severity, title, text) an executed plan's report raises besides its
    trade: an order in doubt (critical), a plan left short of its target (warning), and each leg
    of an earlier plan journalled not placed that the exchange executed after all (critical: a
    second order reached the account; :mod:`executor.late_fills`)."""
    out: list[tuple[AlertKind, Severity, str, str]] = []
    if report.outcome == Outcome.UNKNOWN:
        out.append((AlertKind.UNKNOWN_LEG, Severity.CRITICAL, "order in doubt",
                    " ".join(report.messages) or "an order's fate is unknown"))
    elif report.outcome == Outcome.INCOMPLETE:
        out.append((AlertKind.FAILURE, Severity.WARNING, "plan incomplete",
                    f"gaps (contracts): {report.gaps}"))
    out += [(AlertKind.UNKNOWN_LEG, Severity.CRITICAL, "order executed late", text)
            for text in report.late_fills]
    return out
