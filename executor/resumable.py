"""What ``fbr execute --resume`` may do with a journalled plan: a resume trades the account toward
the plan's target from its positions now, so a plan whose target is not this account's current
intent is never traded again. One sent on another account, or superseded by a newer plan, is
refused; one that finished at its target is reported, sending nothing (so a second resume is
harmless, and one days later cannot trade the account back to an old target)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from executor.base import ExecutionReport, LegReport, Outcome
from executor.journal import Journal, JournalOrder
from executor.plan import OrderPlan
from models.errors import RefusedError


def check_resumable(journal: Journal, plan_id: str, account: str) -> None:
    """Raise :class:`RefusedError` (exit code 6) when plan ``plan_id`` was sent on another account
    than ``account``, or is superseded by a newer plan of its account."""
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
