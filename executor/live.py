"""The journaled executor: moves an account to a plan's target positions, each order exactly once.

Under the account's lock (:mod:`executor.lock`: one run per account; a crashed holder releases it):

1. open plans of the account that this plan supersedes get their in-doubt legs reconciled
   (:mod:`executor.reconcile`) before anything new is sent;
2. every leg still ``sending``/``unknown``/``open`` in this plan is reconciled against the account;
   a leg that stays in doubt stops the plan (outcome UNKNOWN, the leg named), as does an fbr order
   open on a plan contract that another journal sent (:mod:`executor.open_elsewhere`); the
   account's legs journalled not placed are looked up once more (:mod:`executor.late_fills`);
3. rounds (at most ``RetryPolicy.max_rounds``): the account's positions are read and the legs that
   move each contract from where it is now to the plan's target are sent (the plan's own legs in the
   first round when the account is where the plan started, re-planned legs otherwise, with fresh
   client ids; an exact run stops instead when the account is not where the plan's own orders put
   it, :func:`executor.resumable.moved_by_others`). Per leg the journal records ``sending``, the
   contract's position just before and the send time *before* the order goes out; then:
   - accepted -> the exchange's state is journalled (one not yet final, e.g. NEW, is then
     reconciled as an order that exists: never ``not_placed``);
   - a definite rejection (min notional, margin, bad parameters) -> journalled; that contract is
     not tried again, unless the refusal was of a limit price outside the exchange's band at a
     mark that moved since (:mod:`executor.band_refusal`: re-planned next round at the contract's
     mark now, its limit held to the refused one);
   - an ambiguous answer (timeout, 5xx, 429, Binance -1000/-1001/-1006/-1007, -4116) -> reconcile:
     placed -> journalled as filled; provably not placed (nothing seen up to ``settle_s``
     after the send) -> ``not_placed`` (the next round re-plans it); in doubt -> ``unknown``,
     the plan stops; a long silence asked for -> journalled, the plan stops;
4. the final positions are read from the account and compared with the plan's target: COMPLETE
   when every contract is within one lot step, else INCOMPLETE with each gap named
   (:mod:`executor.final_report`).

The target is the plan's ``reachable`` positions: the lot-rounded target less the parts the plan
showed it could not send (each with the tracking error it leaves)."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from executor.band_refusal import SKIPPED_NOTE, BandRefusals, held_to_refused, marks_now
from executor.base import (
    IN_DOUBT,
    AmbiguousOrderError,
    ExchangeBannedError,
    ExchangeGateway,
    ExecutionReport,
    ExecutionUnknownError,
    OrderRejectedError,
    OrderState,
    OrderStatus,
    PriceBandRefusedError,
    ReadFailedError,
)
from executor.final_report import final_report
from executor.journal import Journal, JournalOrder
from executor.late_fills import find_late_fills
from executor.leg_limits import at_marks, check_leg_limits
from executor.legs import legs_toward, within_lot
from executor.lock import account_lock
from executor.open_elsewhere import open_fbr_orders, open_orders_message
from executor.order_fees import with_traded_fee
from executor.plan import (
    Instrument,
    OrderLeg,
    OrderPlan,
    PlanOptions,
    plan_options,
)
from executor.reconcile import DEFAULT_DELAYS_S, SETTLE_S, Finding, Reconciler, SentLeg, Verdict
from executor.resumable import (
    check_resumable,
    finished_report,
    in_doubt_message,
    journal_failed,
    journalled_leg,
    moved_by_others,
    moved_error,
    unreconcilable,
)
from executor.safety import SafetyError, redact
from executor.silence import record_silence, silence_kept
from models.book import Book
from models.market import MarketSnapshot
from models.risk import RiskModel

log = logging.getLogger("executor.live")

@dataclass(frozen=True)
class RetryPolicy:
    """Reads: ``attempts`` tries with backoff ``base_delay_s`` x 2^k (seconds). Orders: at most
    ``max_rounds`` rounds of sends per plan; a reconcile checks the account over
    ``reconcile_delays_s`` (seconds between checks) and proves a send not placed no earlier than
    ``settle_s`` after it (executor.reconcile.SETTLE_S; 0 for the paper exchange, which answers
    at once and consistently)."""

    attempts: int = 4
    base_delay_s: float = 0.5
    max_rounds: int = 3
    reconcile_delays_s: tuple[float, ...] = DEFAULT_DELAYS_S
    settle_s: float = SETTLE_S


@dataclass(frozen=True)
class PlanBasis:
    """What the runner needs beside the gateway: the book (exchange units) and market the plan was
    made for, the risk model for the residual TE, and the instruments."""

    book: Book
    market: MarketSnapshot
    instruments: Mapping[str, Instrument]
    risk: RiskModel | None = None


class Sent(Enum):
    """How a send ended: OK (sent or settled), REJECTED (for good), BAND (at the price band)."""

    OK = "ok"
    REJECTED = "rejected"
    BAND = "band"


class PlanStoppedError(Exception):
    """A leg's fate is unknown: nothing more is sent (internal signal)."""


class JournaledExecutor:
    """Executes plans through ``gateway`` with every state change journalled (see module doc).

    ``sleep`` waits (seconds) and ``clock`` gives the time (ms, UTC); both are injected so tests
    run the reconcile windows on a simulated clock."""

    def __init__(self, gateway: ExchangeGateway, journal: Journal, context: PlanBasis, *,
                 retry: RetryPolicy | None = None, mode: str = "live",
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], int] | None = None,
                 on_leg: Callable[[OrderLeg], None] | None = None, lock_dir: Path | None = None) -> None:
        self.gateway = gateway
        self._on_leg = on_leg
        self.journal = journal
        self.ctx = context
        self.retry = retry or RetryPolicy()
        self.mode = mode
        self._sleep = sleep
        self._clock = clock or (lambda: int(time.time() * 1000))
        self._lock_dir = lock_dir
        self._reconciler = Reconciler(gateway, delays_s=self.retry.reconcile_delays_s, sleep=sleep,
                                      settle_s=self.retry.settle_s, clock_ms=self._clock)
        self._messages: list[str] = []
        self._open_elsewhere, self._exact, self._band = False, False, BandRefusals()

    # --- public -------------------------------------------------------------------------------
    def execute(self, plan: OrderPlan, book_path: str = "", *, exact: bool = False
                ) -> ExecutionReport:
        """Journal the plan (superseding the account's open plans), then run it. ``exact``: send
        the plan's own legs or nothing (what a user confirmed, what a loop checked against its
        limits): an account moved since the plan raises :class:`AccountMovedError` before any send."""
        self._exact = exact
        account = self.gateway.account_key()
        with account_lock(account, self._lock_dir), \
                silence_kept(self.journal, account, self._clock):
            self._messages, self._open_elsewhere, self._band = [], False, BandRefusals()
            for old in self.journal.open_plans(account):
                try:
                    self._settle_in_doubt(self.journal.plan(old))
                except PlanStoppedError:
                    raise ExecutionUnknownError(
                        f"an earlier plan {old} on this account has an order in doubt, so plan "
                        f"{plan.plan_id} was not sent. " + " ".join(self._messages)) from None
            self.journal.record_plan(plan, book_path, account)
            return self._run(plan)

    def resume(self, plan_id: str, *, open_only: bool = False, exact: bool = False) -> ExecutionReport:
        """Finish a journalled plan from the account's positions now (nothing is replayed); ``open_only``:
        one finished meanwhile raises (:func:`check_resumable`); ``exact``: as :meth:`execute`'s."""
        account = self.gateway.account_key()
        with account_lock(account, self._lock_dir), \
                silence_kept(self.journal, account, self._clock):
            self._messages, self._open_elsewhere, self._exact, self._band = [], False, exact, BandRefusals()
            plan = self.journal.plan(plan_id)
            check_resumable(self.journal, plan_id, account, open_only)
            if self.journal.plan_status(plan_id) == "done":
                return finished_report(plan, self.journal, self.mode,
                                       self.gateway.positions(self._instruments(plan)))
            return self._run(plan)

    # --- the loop -----------------------------------------------------------------------------
    def _run(self, plan: OrderPlan) -> ExecutionReport:
        """Reconcile, then send rounds. The account is set up for trading first (position mode
        checked, margin mode and leverage set), a resumed plan included: a round may send."""
        self.gateway.prepare(self._instruments(plan))
        late: list[str] = []
        try:
            self._settle_in_doubt(plan)
            late = find_late_fills(self.gateway, self.journal, self.gateway.account_key(),
                                   self._clock(), int(1000 * self.retry.settle_s),
                                   self.ctx.instruments, self.ctx.market)
            self._messages += late
            self._check_open_orders(plan)
            self._rounds(plan)
        except PlanStoppedError:
            pass
        except ExchangeBannedError as exc:  # an order so refused stays in doubt in the journal
            record_silence(self.journal, self.gateway.account_key(), self._clock(), exc)
            self._messages.append(f"{redact(str(exc))}; nothing more was sent. Fix: `fbr execute "
                                  f"--resume {plan.plan_id}` after that time")
        except sqlite3.Error as exc:  # a leg may be in flight: its row says "sending" at most
            raise journal_failed(self.journal.path, plan.plan_id, exc) from None
        except ReadFailedError as exc:  # nothing is in flight: the leg had not been sent
            self._messages.append(f"the account could not be read ({redact(str(exc))}); nothing "
                                  f"more was sent. Fix: `fbr execute --resume {plan.plan_id}` "
                                  f"when the exchange answers again")
        report = final_report(self.gateway, self.journal, plan, self._instruments(plan),
                              (self.ctx.book, self.ctx.market, self.ctx.risk), self.mode,
                              self._messages, open_elsewhere=self._open_elsewhere, clock=self._clock)
        return dataclasses.replace(report, late_fills=tuple(late))

    def _check_open_orders(self, plan: OrderPlan) -> None:
        """Stop before any send while an fbr order of another journal rests open on a contract
        the plan trades (:mod:`executor.open_elsewhere`); the plan stays open (unknown, exit 5)."""
        rows = open_fbr_orders(self.gateway, self._instruments(plan))
        if rows:
            self._open_elsewhere = True
            self._messages.append(open_orders_message(rows, self.gateway.venue, plan.plan_id))
            raise PlanStoppedError

    def _instruments(self, plan: OrderPlan) -> dict[str, Instrument]:
        return {s: self.ctx.instruments[s] for s in plan.reachable}

    def _settle_in_doubt(self, plan: OrderPlan) -> None:
        """Reconcile every in-doubt leg of ``plan``; raise PlanStoppedError when one stays in doubt."""
        for row in self.journal.orders(plan.plan_id):
            if row.status not in IN_DOUBT:
                continue
            why = unreconcilable(plan, row, self.ctx.instruments)
            if why is not None:
                self._messages.append(why)
                raise PlanStoppedError
            finding = self._reconcile_row(plan, row)
            if finding.verdict == Verdict.UNKNOWN:
                self._stop(plan.plan_id, self._leg_of(plan, row), finding)

    def _reconcile_row(self, plan: OrderPlan, row: JournalOrder) -> Finding:
        leg = self._leg_of(plan, row)
        sent = SentLeg(leg, self.ctx.instruments[leg.symbol], row.position_before,
                       row.sent_ms if row.sent_ms is not None else self._clock(),
                       self._known_orders(plan.plan_id, leg.index))
        finding = self._reconciler.reconcile(sent, exists=row.exchange_id is not None)
        self._apply(plan.plan_id, sent, finding)
        return finding

    def _known_orders(self, plan_id: str, leg: int) -> frozenset[str]:
        """Exchange ids of the plan's other journalled orders (their trades are explained)."""
        return frozenset(r.exchange_id for r in self.journal.orders(plan_id)
                         if r.leg != leg and r.exchange_id)

    def _leg_of(self, plan: OrderPlan, row: JournalOrder) -> OrderLeg:
        """The leg of a journal row (re-planned legs are only in the orders table)."""
        for leg in plan.legs:
            if leg.index == row.leg:
                return leg
        return journalled_leg(row, self.ctx.instruments[row.symbol], self.ctx.market)

    def _rounds(self, plan: OrderPlan) -> None:
        blocked: set[str] = set()
        options = plan_options(plan)
        for k in range(self.retry.max_rounds):
            self._read_stale_marks()
            instruments = self._instruments(plan)
            positions = self.gateway.positions(instruments)
            legs = self._round_legs(plan, positions, options, blocked, first=k == 0)
            if not legs:
                return
            later: set[str] = set()  # refused at the price band: re-planned next round
            for leg in legs:
                if self._on_leg is not None:
                    self._on_leg(leg)
                if leg.symbol in blocked or leg.symbol in later:
                    self.journal.set_status(plan.plan_id, leg.index, OrderStatus.SKIPPED,
                                            SKIPPED_NOTE if leg.symbol in later else
                                            "an earlier leg on this contract was rejected")
                    continue
                sent = self._send(plan, leg)
                if sent is not Sent.OK:
                    (later if sent is Sent.BAND else blocked).add(leg.symbol)

    def _read_stale_marks(self) -> None:
        """The marks of the contracts refused at the price band, read again (executor.band_refusal)."""
        if self._band.stale:
            market = marks_now(self.gateway, self.ctx.book, self.ctx.market, self._band.stale)
            self.ctx = dataclasses.replace(self.ctx, market=market)
            self._band.stale.clear()

    def _round_legs(self, plan: OrderPlan, positions: Mapping[str, float], options: PlanOptions,
                    blocked: set[str], *, first: bool) -> list[OrderLeg]:
        """The plan's own legs when nothing was sent yet and the account is where the plan
        started; else legs re-planned from ``positions`` (journalled as new legs)."""
        rows = self.journal.orders(plan.plan_id)
        untouched = all(r.attempts == 0 and r.status == OrderStatus.PLANNED for r in rows)
        if first and untouched and self._at_start(plan, positions):
            legs = at_marks(plan.legs, self.ctx.instruments, self.ctx.market, options.slippage_guard)
            self._check_limits(plan, rows, legs, options, "the plan's orders at today's marks")
            return legs
        if first and untouched and self._exact:
            raise moved_error(plan, positions, self.journal)
        if self._exact and (why := moved_by_others(plan, positions, rows, self.ctx.instruments)):
            self._messages.append(why)
            raise PlanStoppedError
        for r in rows:
            if r.status == OrderStatus.PLANNED:
                self.journal.set_status(plan.plan_id, r.leg, OrderStatus.SKIPPED,
                                        "re-planned from the account's positions")
        target = {s: t for s, t in plan.reachable.items() if s not in blocked}
        nxt = max((r.leg for r in rows), default=-1) + 1
        remaining = legs_toward(positions, target, self.ctx.instruments, self.ctx.market, options,
                                plan.plan_id, nxt)
        legs = held_to_refused(remaining.legs, self._band.refused)
        self._check_limits(plan, rows, legs, options, "the orders re-planned from the account's positions")
        if legs:
            self.journal.add_legs(plan.plan_id, legs)
        return legs

    def _check_limits(self, plan: OrderPlan, rows: Sequence[JournalOrder],
                      legs: Sequence[OrderLeg], options: PlanOptions, what: str) -> None:
        """The USD limits on the legs about to be sent, at today's marks, the plan's fills so far
        counted against the per-plan one (executor.leg_limits); a breach stops the plan."""
        try:
            check_leg_limits(options.limits, rows, legs, self.ctx.instruments, self.ctx.market)
        except SafetyError as exc:
            self._messages.append(f"{what} break a limit, so nothing more was sent: {exc}")
            raise PlanStoppedError from None

    def _at_start(self, plan: OrderPlan, positions: Mapping[str, float]) -> bool:
        return all(within_lot(positions.get(s, 0.0), q, self.ctx.instruments[s].contract.lot_step)
                   for s, q in plan.start.items())

    def _send(self, plan: OrderPlan, leg: OrderLeg) -> Sent:
        """One send: OK (sent or settled), REJECTED (refused for good: the contract is not tried
        again), BAND (a limit refused at the exchange's price band). Raises PlanStoppedError."""
        inst = self.ctx.instruments[leg.symbol]
        before = self.gateway.positions({leg.symbol: inst}).get(leg.symbol, 0.0)
        sent_ms = self._clock()
        self.journal.mark_sending(plan.plan_id, leg.index, before, sent_ms)
        sent = SentLeg(leg, inst, before, sent_ms, self._known_orders(plan.plan_id, leg.index))
        try:
            state = self.gateway.create_order(leg)
        except OrderRejectedError as exc:
            msg = redact(str(exc))
            self.journal.set_status(plan.plan_id, leg.index, OrderStatus.REJECTED, msg)
            log.warning("leg %s rejected: %s", leg.client_id, msg)
            band = isinstance(exc, PriceBandRefusedError)
            self._messages.append(f"leg {leg.index} ({leg.symbol}) rejected: {msg}" + (
                "; the mark moved since it was priced: re-planned at the mark read again, rounds "
                "permitting" if band else ""))
            if band:
                self._band.add(leg)
            return Sent.BAND if band else Sent.REJECTED
        except AmbiguousOrderError as exc:
            log.warning("leg %s: ambiguous answer (%s); reconciling against the account",
                        leg.client_id, redact(str(exc)))
            self._settle_sent(plan.plan_id, sent, exc.exists, exc.wait_s)
            return Sent.OK
        if not state.status.final:  # accepted, not done: journalled, and never "not placed"
            self.journal.record_state(plan.plan_id, leg.index, state, "accepted; reconciling")
            self._settle_sent(plan.plan_id, sent, True, 0.0)
            return Sent.OK
        self._record(plan.plan_id, sent, state, "")
        log.info("leg %s %s: %s filled %.10g", leg.client_id, leg.symbol, state.status.value,
                 state.filled)
        return Sent.OK

    def _settle_sent(self, plan_id: str, sent: SentLeg, exists: bool, wait_s: float) -> None:
        """Reconcile a sent leg whose answer was not final, journal it; stop when still in doubt."""
        finding = self._reconciler.reconcile(sent, exists=exists, wait_s=wait_s)
        self._apply(plan_id, sent, finding)
        if finding.verdict == Verdict.UNKNOWN:
            self._stop(plan_id, sent.leg, finding)

    def _apply(self, plan_id: str, sent: SentLeg, finding: Finding) -> None:
        """Journal a reconcile's finding."""
        if finding.verdict == Verdict.PLACED and finding.state is not None:
            self._record(plan_id, sent, finding.state, finding.reason)
            return
        status = OrderStatus.NOT_PLACED if finding.verdict == Verdict.NOT_PLACED else OrderStatus.UNKNOWN
        self.journal.set_status(plan_id, sent.leg.index, status, finding.reason)

    def _record(self, plan_id: str, sent: SentLeg, state: OrderState, reason: str) -> None:
        """Journal an order's state, its fee from the account's trades when the answer had none."""
        state, note = with_traded_fee(self.gateway, sent.instrument, state,
                                      sent.sent_ms - self._reconciler.skew_ms)
        self.journal.record_state(plan_id, sent.leg.index, state,
                                  "; ".join(x for x in (reason, note) if x))

    def _stop(self, plan_id: str, leg: OrderLeg, finding: Finding) -> None:
        self._messages.append(in_doubt_message(plan_id, leg, finding.reason, self.gateway.venue))
        raise PlanStoppedError
