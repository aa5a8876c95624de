"""What ``fbr execute --resume`` may do with a journalled plan: a resume trades the account toward
the plan's target from its positions now, so a plan whose target is not this account's current
intent is never traded again. One sent on another account, or superseded by a newer plan, is
refused; one that finished at its target is reported, sending nothing (so a second resume is
harmless, and one days later cannot trade the account back to an old target)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from executor.base import (
    AccountMovedError,
    ExecutionReport,
    ExecutionUnknownError,
    LegReport,
    OrderStatus,
    Outcome,
    PlanFinishedError,
)
from executor.journal import Journal, JournalOrder
from executor.plan import Instrument, OrderLeg, OrderPlan, OrderType, Side
from executor.safety import redact
from models.errors import RefusedError
from models.market import MarketSnapshot

#: the journal status of a plan an exact run refused because its account moved (nothing sent)
REFUSED = "refused"


def journal_failed(path: Path, plan_id: str, exc: BaseException) -> ExecutionUnknownError:
    """The error of a run whose journal file ``path`` failed (``exc``) while plan ``plan_id`` ran:
    a leg may be in flight (its row says "sending" at most), so nothing more is sent, and the fix
    is a resume once the journal is writable."""
    return ExecutionUnknownError(
        f"the journal {path} failed ({redact(str(exc))}): an order of plan {plan_id} may have "
        f"been sent and not journalled; nothing more was sent. Fix: free disk space, make the "
        f"journal writable or stop another process holding it, then `fbr execute --resume "
        f"{plan_id}`")


def check_resumable(journal: Journal, plan_id: str, account: str, open_only: bool = False) -> None:
    """Raise :class:`RefusedError` (exit code 6) when plan ``plan_id`` was sent on another account
    than ``account``, is superseded by a newer plan of its account, or was refused because its
    account moved before the send (what was confirmed is not what a resume would send); with
    ``open_only``, :class:`PlanFinishedError` when it is finished ('done': by another run, since
    the caller saw it open)."""
    status = journal.plan_status(plan_id)
    if open_only and status == "done":
        raise PlanFinishedError(f"plan {plan_id} was finished by another run while this one "
                                f"waited for the account; nothing was sent")
    if status == REFUSED:
        raise RefusedError(f"plan {plan_id} was refused before any order: its account moved since "
                           f"it was made, so it is not the plan that was confirmed. Fix: run `fbr "
                           f"execute` (or the dashboard) for a fresh plan")
    owner = journal.plan_account(plan_id)
    if owner and owner != account:
        raise RefusedError(f"plan {plan_id} was sent on another account than the one these "
                           f"keys open; reconciling it here would read the wrong positions and "
                           f"trade this account. Fix: resume it with the keys it was executed with")
    newer = journal.successor(plan_id)
    if newer is not None:
        raise RefusedError(f"plan {plan_id} is superseded by the newer plan {newer} for the same "
                           f"account; resuming it would trade toward a stale target. Fix: `fbr "
                           f"execute --resume {newer}`, or run `fbr execute` again for a fresh plan")


def moved_error(plan: OrderPlan, positions: Mapping[str, float],
                journal: Journal) -> AccountMovedError:
    """The refusal of an exact run whose account is no longer where ``plan`` started (contracts by
    symbol now, ``positions``): the plan's planned legs are journalled skipped and the plan
    closed (nothing of it is ever sent, by a resume either), nothing is sent."""
    for row in journal.orders(plan.plan_id):
        if row.status == OrderStatus.PLANNED:
            journal.set_status(plan.plan_id, row.leg, OrderStatus.SKIPPED,
                               "the account moved before the send: nothing sent")
    journal.close_plan(plan.plan_id, REFUSED)
    moved = "; ".join(f"{s} {positions.get(s, 0.0):g} (planned from {q:g})"
                      for s, q in plan.start.items() if positions.get(s, 0.0) != q)
    return AccountMovedError(f"plan {plan.plan_id} was not sent: the account moved since it was "
                             f"made (another process traded it: {moved}). Fix: look at the new "
                             f"plan and send that one")


def in_doubt_message(plan_id: str, leg: OrderLeg, reason: str, venue: str) -> str:
    """The message of a plan stopped on a leg whose state is unknown (``reason``: the
    reconcile's), naming the leg and what to check before the resume."""
    return (f"leg {leg.index} ({leg.symbol} {leg.side.value} {leg.contracts:g}, client id "
            f"{leg.client_id}): state unknown: {reason}. The plan stopped; nothing more was sent. "
            f"Check the order and the {leg.symbol} position on {venue}, then `fbr execute "
            f"--resume {plan_id}`")


def moved_by_others(plan: OrderPlan, positions: Mapping[str, float], rows: Sequence[JournalOrder],
                    instruments: Mapping[str, Instrument]) -> str | None:
    """Why an exact run stops after its first round (None: it goes on): a contract whose position
    (signed contracts, ``positions``) is not the plan's start plus this plan's own journalled
    fills, beyond a lot step (or 1e-9 relative): another process traded it between the plan's
    orders, so a re-planned order would be one nobody confirmed (an exact run sends the plan as
    made, and tops up only its own orders' shortfall)."""
    own: dict[str, float] = {}
    for r in rows:
        own[r.symbol] = own.get(r.symbol, 0.0) + (r.filled if r.side == Side.BUY.value else -r.filled)
    off = []
    for s, q0 in plan.start.items():
        want, now = q0 + own.get(s, 0.0), positions.get(s, 0.0)
        tol = max(instruments[s].contract.lot_step * (1 - 1e-9), 1e-9 * max(1.0, abs(want)))
        if abs(now - want) >= tol:
            off.append(f"{s} {now:g} (the plan's own fills put it at {want:g})")
    if not off:
        return None
    return (f"the account moved between the plan's orders (another process traded it: "
            f"{'; '.join(off)}), so nothing more was sent: this run sends the plan as made. Fix: "
            f"look at the account, then run `fbr execute` (or the dashboard) for a fresh plan")


def unreconcilable(plan: OrderPlan, row: JournalOrder,
                   instruments: Mapping[str, Instrument]) -> str | None:
    """Why the in-doubt journal ``row`` of ``plan`` cannot be reconciled with the book's
    ``instruments`` (None: it can): its contract is not in the book, or the book now maps it to
    another exchange instrument than the leg was sent on (a quarterly rolled under the same name:
    the reconcile would read the wrong instrument's trades and position)."""
    where = f"plan {plan.plan_id} leg {row.leg} ({row.symbol}, client id {row.client_id}) is in doubt"
    fix = "Fix: resume that plan with the book it was made from"
    if row.symbol not in instruments:
        return f"{where} and {row.symbol} is not in this book. {fix}"
    sent_on = next((leg.exchange_symbol for leg in plan.legs if leg.index == row.leg), None)
    now = instruments[row.symbol].exchange_symbol
    if sent_on is not None and sent_on != now:
        return f"{where} on {sent_on}, which this book now maps to {now}. {fix}"
    return None


def leg_reports(rows: Sequence[JournalOrder]) -> tuple[LegReport, ...]:
    """Planned vs filled per journalled leg."""
    return tuple(LegReport(index=r.leg, client_id=r.client_id, symbol=r.symbol, side=r.side,
                           planned=r.contracts, filled=r.filled, average=r.average, fee=r.fee,
                           status=r.status.value, attempts=r.attempts, message=r.message)
                 for r in rows)


def finished_report(plan: OrderPlan, journal: Journal, mode: str,
                    positions: Mapping[str, float]) -> ExecutionReport:
    """The report of a resume of plan ``plan``, which finished at its target ('done'): nothing is
    sent; ``positions`` (contracts now, read from the account) are shown, and where the account
    has moved since, the message says so and points to a fresh plan."""
    moved = {s: q for s, q in positions.items()
             if s in plan.reachable and abs(q - plan.reachable[s]) > 1e-9 * max(1.0, abs(q))}
    note = (f"plan {plan.plan_id} finished at its target earlier; nothing was sent (a finished "
            f"plan is never traded again)")
    if moved:
        now = ", ".join(f"{s} {q:g} (its target {plan.reachable[s]:g})" for s, q in moved.items())
        note += f". The account has moved since: {now}. Fix: `fbr execute` for a fresh plan"
    return ExecutionReport(plan_id=plan.plan_id, venue=plan.venue, mode=mode,
                           legs=leg_reports(journal.orders(plan.plan_id)),
                           positions=dict(positions), target=dict(plan.reachable),
                           tracking_error_residual=None, messages=(note,), gaps={},
                           outcome=Outcome.COMPLETE)


def unread_report(plan: OrderPlan, legs: tuple[LegReport, ...], mode: str,
                  messages: Sequence[str]) -> ExecutionReport:
    """The report of a run whose final positions could not be read: outcome unknown."""
    return ExecutionReport(plan_id=plan.plan_id, venue=plan.venue, mode=mode, legs=legs,
                           positions={}, target=dict(plan.reachable), tracking_error_residual=None,
                           messages=tuple(messages), gaps={}, outcome=Outcome.UNKNOWN)


def journalled_leg(row: JournalOrder, inst: Instrument, market: MarketSnapshot) -> OrderLeg:
    """A re-planned leg read back from its journal row (such legs are only in the orders table):
    a market order, its notional (USD, signed) at ``market``'s mark."""
    side = Side(row.side)
    mark = market.mark_price(row.symbol)
    sign = 1.0 if side == Side.BUY else -1.0
    return OrderLeg(index=row.leg, client_id=row.client_id, symbol=row.symbol,
                    exchange_symbol=inst.exchange_symbol, side=side, contracts=row.contracts,
                    notional=sign * row.contracts * inst.contract.notional_per_contract(mark),
                    price=mark, reduce_only=row.reduce_only, order_type=OrderType.MARKET)
