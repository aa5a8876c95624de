"""A run's report: the final positions read from the account and compared with the plan's target.

Every contract of the plan within one lot step of its target (``reachable``) -> COMPLETE; else
INCOMPLETE with each gap named (contracts, signed); a leg still in doubt (or an fbr order open
elsewhere on a plan contract) -> UNKNOWN and the plan stays open. The positions and the wallet are
journalled; the residual tracking error is the risk model's at the run's marks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from executor.base import (
    IN_DOUBT,
    ExchangeBannedError,
    ExchangeGateway,
    ExecutionReport,
    Outcome,
    ReadFailedError,
)
from executor.journal import Journal
from executor.legs import within_lot
from executor.plan import Instrument, OrderPlan, tracking_error_of
from executor.plan_parts import round_to_step
from executor.resumable import leg_reports, unread_report
from executor.safety import redact
from executor.silence import record_silence
from models.book import Book
from models.market import MarketSnapshot
from models.risk import RiskModel


def final_report(gateway: ExchangeGateway, journal: Journal, plan: OrderPlan,
                 instruments: Mapping[str, Instrument], basis: tuple[Book, MarketSnapshot,
                                                                     RiskModel | None],
                 mode: str, messages: list[str], *, open_elsewhere: bool,
                 clock: Callable[[], int]) -> ExecutionReport:
    """The report of ``plan``'s run (see the module doc); ``basis``: the run's book, market and
    risk model; ``messages`` (the run's, gaps appended); ``clock``: ms, UTC (a silence asked for
    on the final read is journalled at that time)."""
    book, market, risk = basis
    rows = journal.orders(plan.plan_id)
    legs = leg_reports(rows)
    in_doubt = open_elsewhere or any(r.status in IN_DOUBT for r in rows)
    try:
        after = gateway.account(book, market)
    except ReadFailedError as exc:
        if isinstance(exc, ExchangeBannedError):
            record_silence(journal, gateway.account_key(), clock(), exc)
        messages.append(f"the final positions could not be read: {redact(str(exc))}")
        return unread_report(plan, legs, mode, messages)
    now = {s: (after.futures[s].contracts if s in after.futures else 0.0) for s in instruments}
    positions = {s: round_to_step(now[s], instruments[s].contract.lot_step) for s in plan.reachable}
    journal.record_positions(plan.plan_id, plan.venue, plan.book_name,
                             {s: (p.contracts, p.entry_price) for s, p in after.futures.items()},
                             after.cash)
    gaps = {s: positions[s] - t for s, t in plan.reachable.items()
            if not within_lot(now.get(s, 0.0), t, instruments[s].contract.lot_step)}
    outcome = Outcome.UNKNOWN if in_doubt else Outcome.INCOMPLETE if gaps else Outcome.COMPLETE
    for s, g in gaps.items():
        messages.append(f"{s}: {positions[s]:g} contracts, target {plan.reachable[s]:g} (gap {g:+g})")
    if outcome != Outcome.UNKNOWN:
        journal.close_plan(plan.plan_id, "done" if not gaps else "stopped")
    te = None if risk is None else tracking_error_of(book, market, risk, positions)
    return ExecutionReport(plan_id=plan.plan_id, venue=plan.venue, mode=mode, legs=legs,
                           positions=positions, target=dict(plan.reachable),
                           tracking_error_residual=te, messages=tuple(messages), gaps=gaps,
                           outcome=outcome)
