"""The journaled executor: sends a plan's legs through an :class:`ExchangeGateway`, exactly once.

Per leg (journal first, then the exchange):

1. the journal marks the leg ``sending`` (one transaction) *before* the order goes out;
2. ``create_order`` with the leg's client id; success -> the exchange's state is journalled;
3. an ambiguous failure (timeout, 5xx, 429) -> ``find_order`` by client id (reads retry on network
   errors with backoff); found -> journalled, no resend; not found -> resend with the same client id,
   at most ``max_sends`` times in all; a failed lookup leaves the leg ``unknown`` for ``resume``;
4. a definite rejection (min notional, insufficient margin, bad parameters) is journalled and the
   next leg goes on.

``resume(plan_id)`` runs the same loop over a journalled plan: final legs are skipped, ``sending``
and ``unknown`` ones are reconciled by client id before anything is sent, so a crash between two
legs (or in the middle of one) never sends a leg twice.

At the end the positions are read back, journalled, and the residual tracking error (annualised)
at those positions is reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from executor.base import (
    AmbiguousOrderError,
    ExchangeGateway,
    ExecutionReport,
    LegReport,
    OrderRejectedError,
    OrderState,
    OrderStatus,
    ReadFailedError,
)
from executor.journal import Journal
from executor.plan import Instrument, OrderLeg, OrderPlan, round_to_step, tracking_error_of
from executor.safety import redact
from models.book import Book
from models.market import MarketSnapshot
from models.risk import RiskModel

log = logging.getLogger("executor.live")


@dataclass(frozen=True)
class RetryPolicy:
    """Reads: ``attempts`` tries with exponential backoff ``base_delay_s`` x 2^k (seconds);
    orders: at most ``max_sends`` sends of one leg (each after a reconcile found nothing)."""

    attempts: int = 4
    base_delay_s: float = 0.5
    max_sends: int = 3


@dataclass(frozen=True)
class Context:
    """What the runner needs beside the gateway: the book (exchange units) and market the plan was
    made for, the risk model for the residual TE, and the instruments."""

    book: Book
    market: MarketSnapshot
    instruments: Mapping[str, Instrument]
    risk: RiskModel | None = None


class JournaledExecutor:
    """Executes plans through ``gateway`` with every state change journalled (see module doc)."""

    def __init__(self, gateway: ExchangeGateway, journal: Journal, context: Context, *,
                 retry: RetryPolicy | None = None, mode: str = "live",
                 sleep: Callable[[float], None] = time.sleep,
                 on_leg: Callable[[OrderLeg], None] | None = None) -> None:
        self.gateway = gateway
        self._on_leg = on_leg
        self.journal = journal
        self.ctx = context
        self.retry = retry or RetryPolicy()
        self.mode = mode
        self._sleep = sleep

    # --- public -------------------------------------------------------------------------------
    def execute(self, plan: OrderPlan, book_path: str = "") -> ExecutionReport:
        """Journal the plan (and the book file it came from), then run it."""
        self.journal.record_plan(plan, book_path)
        return self._run(plan)

    def resume(self, plan_id: str) -> ExecutionReport:
        """Finish a journalled plan (no leg is sent twice)."""
        return self._run(self.journal.plan(plan_id))

    # --- the loop -----------------------------------------------------------------------------
    def _run(self, plan: OrderPlan) -> ExecutionReport:
        messages: list[str] = []
        if any(not o.status.final for o in self.journal.orders(plan.plan_id)):
            self.gateway.prepare({leg.symbol: self.ctx.instruments[leg.symbol] for leg in plan.legs})
        for leg in plan.legs:
            if self._on_leg is not None:
                self._on_leg(leg)
            row = self.journal.order(plan.plan_id, leg.index)
            if row.status.final:
                continue
            if row.status in (OrderStatus.SENDING, OrderStatus.UNKNOWN, OrderStatus.OPEN):
                if self._reconcile(plan.plan_id, leg) is not None:
                    continue
                if self._lookup_failed(plan.plan_id, leg):
                    continue  # the exchange still cannot say: leave it for the next resume
            self._send(plan.plan_id, leg, messages)
        return self._report(plan, messages)

    def _send(self, plan_id: str, leg: OrderLeg, messages: list[str]) -> None:
        sends = 0
        while sends < self.retry.max_sends:
            sends += 1
            self.journal.mark_sending(plan_id, leg.index)
            try:
                state = self.gateway.create_order(leg)
            except OrderRejectedError as exc:
                msg = redact(str(exc))
                self.journal.set_status(plan_id, leg.index, OrderStatus.REJECTED, msg)
                messages.append(f"leg {leg.index} ({leg.symbol}) rejected: {msg}")
                log.warning("leg %s rejected: %s", leg.client_id, msg)
                return
            except AmbiguousOrderError as exc:
                log.warning("leg %s: ambiguous failure (%s); reconciling by client id",
                            leg.client_id, redact(str(exc)))
                found = self._reconcile(plan_id, leg)
                if found is not None:
                    return
                if self._lookup_failed(plan_id, leg):
                    messages.append(f"leg {leg.index} ({leg.symbol}): state unknown after a failed "
                                    f"lookup; run `fbr execute --resume {plan_id}`")
                    return
                self._sleep(self.retry.base_delay_s * 2 ** (sends - 1))
                continue
            self._record(plan_id, leg, self._settle(leg, state))
            return
        self.journal.set_status(plan_id, leg.index, OrderStatus.UNKNOWN,
                                f"not placed after {sends} sends")
        messages.append(f"leg {leg.index} ({leg.symbol}): not placed after {sends} sends; "
                        f"run `fbr execute --resume {plan_id}` later")

    def _settle(self, leg: OrderLeg, state: OrderState) -> OrderState:
        """An accepted market order not reported filled yet: look it up once more."""
        if state.status == OrderStatus.OPEN and leg.limit_price is None:
            again = self._lookup(leg)
            if again is not None:
                return again
        return state

    def _lookup_failed(self, plan_id: str, leg: OrderLeg) -> bool:
        row = self.journal.order(plan_id, leg.index)
        return row.status == OrderStatus.UNKNOWN and row.message.startswith("lookup failed")

    def _reconcile(self, plan_id: str, leg: OrderLeg) -> OrderState | None:
        """Find the leg's order by client id; journal what was found (or ``unknown`` on failure)."""
        try:
            found = self._lookup(leg)
        except ReadFailedError as exc:
            self.journal.set_status(plan_id, leg.index, OrderStatus.UNKNOWN,
                                    f"lookup failed: {exc}")
            return None
        if found is not None:
            self._record(plan_id, leg, found)
        return found

    def _lookup(self, leg: OrderLeg) -> OrderState | None:
        """``find_order`` with the read retry policy (network errors only)."""
        last: Exception | None = None
        for k in range(self.retry.attempts):
            try:
                return self.gateway.find_order(leg)
            except ReadFailedError as exc:
                last = exc
                self._sleep(self.retry.base_delay_s * 2 ** k)
        raise ReadFailedError(f"order {leg.client_id} lookup failed {self.retry.attempts} times: "
                              f"{redact(str(last))}")

    def _record(self, plan_id: str, leg: OrderLeg, state: OrderState) -> None:
        self.journal.record_state(plan_id, leg.index, state)
        log.info("leg %s %s: %s filled %.10g", leg.client_id, leg.symbol, state.status.value,
                 state.filled)

    # --- the report ---------------------------------------------------------------------------
    def _report(self, plan: OrderPlan, messages: list[str]) -> ExecutionReport:
        rows = {o.leg: o for o in self.journal.orders(plan.plan_id)}
        legs = tuple(LegReport(index=leg.index, client_id=leg.client_id, symbol=leg.symbol,
                               side=leg.side.value, planned=leg.contracts,
                               filled=rows[leg.index].filled, average=rows[leg.index].average,
                               fee=rows[leg.index].fee, status=rows[leg.index].status.value,
                               attempts=rows[leg.index].attempts, message=rows[leg.index].message)
                     for leg in plan.legs)
        after = self.gateway.account(self.ctx.book, self.ctx.market)
        positions = {c.symbol: round_to_step(after.futures[c.symbol].contracts, c.lot_step)
                     if c.symbol in after.futures else 0.0 for c in after.contracts}
        self.journal.record_positions(
            plan.plan_id, plan.venue, plan.book_name,
            {s: (p.contracts, p.entry_price) for s, p in after.futures.items()}, after.cash)
        if all(OrderStatus(row.status).final for row in rows.values()):
            self.journal.close_plan(plan.plan_id)
        te = (None if self.ctx.risk is None else
              tracking_error_of(self.ctx.book, self.ctx.market, self.ctx.risk, positions))
        return ExecutionReport(plan_id=plan.plan_id, venue=plan.venue, mode=self.mode, legs=legs,
                               positions=positions, target=dict(plan.target),
                               tracking_error_residual=te, messages=tuple(messages))
