"""Legs from where the account is now to where the plan goes (re-planning for resume and for the
rounds after a leg was proven not placed).

For each contract j with position q_j now (signed contracts, read from the account) and the plan's
target t_j, the trade t_j - q_j is cut exactly as :func:`executor.plan.plan_orders` cuts it:
reduce-only first, a sign flip as a close plus an open, chunks of at most max_qty, and the parts
the planner would drop (under the min quantity or, opening, the min notional; opening within
``min_days_to_expiry`` of a dated contract's expiry) left out with the planner's reason. Client
ids continue the plan's numbering from ``first_index``, so no id is ever reused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from executor.plan import Instrument, OrderLeg, PlanOptions, order_legs
from executor.plan_ids import client_id_rule
from executor.plan_parts import TradePart, drop_reason, near_expiry, round_to_step, trade_parts
from models.market import MarketSnapshot


@dataclass(frozen=True)
class Remaining:
    """Legs still to send and the parts the exchange would refuse (symbol -> reason)."""

    legs: tuple[OrderLeg, ...]
    unsendable: dict[str, str]


def within_lot(position: float, target: float, lot_step: float) -> bool:
    """|position - target| below one lot step (contracts); exact equality when there is no step."""
    tol = lot_step * (1 - 1e-9) if lot_step > 0 else 1e-12
    return abs(position - target) < tol


def legs_toward(current: Mapping[str, float], target: Mapping[str, float],
                instruments: Mapping[str, Instrument], market: MarketSnapshot,
                options: PlanOptions, plan_id: str, first_index: int) -> Remaining:
    """The legs that move ``current`` to ``target`` (contracts per book contract) at ``market``'s
    marks; see the module doc."""
    kept: list[tuple[TradePart, float]] = []
    unsendable: dict[str, str] = {}
    for sym, t in target.items():
        c = instruments[sym].contract
        if within_lot(current.get(sym, 0.0), t, c.lot_step):
            continue
        q0 = round_to_step(current.get(sym, 0.0), c.lot_step)
        npc = c.notional_per_contract(market.mark_price(sym))
        near = near_expiry(c, market.time, options.min_days_to_expiry)
        for part in trade_parts(sym, q0, t, c.lot_step):
            reason = drop_reason(part, c, npc, options, near)
            if reason is None:
                kept.append((part, npc))
            else:
                unsendable[sym] = reason
    legs = order_legs(kept, instruments, market, options, client_id_rule(options.venue), plan_id,
                 first_index)
    return Remaining(tuple(legs), unsendable)
