"""Legs from where the account is now to where the plan goes (re-planning for resume and for the
rounds after a leg was proven not placed).

For each contract j with position q_j now (signed contracts, read from the account) and the plan's
target t_j, the trade t_j - q_j is cut exactly as :func:`executor.plan.plan_orders` cuts it:
reduce-only first, a sign flip as a close plus an open, chunks of at most max_qty, parts under
the min quantity or (opening) min notional left out and named. Client ids continue the plan's
numbering from ``first_index``, so no id is ever reused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from executor.plan import (
    Instrument,
    OrderLeg,
    OrderType,
    PlanOptions,
    Side,
    _parts,
    _split,
    _tick_round,
    client_id_rule,
    round_to_step,
)


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
                instruments: Mapping[str, Instrument], marks: Mapping[str, float],
                options: PlanOptions, plan_id: str, first_index: int) -> Remaining:
    """The legs that move ``current`` to ``target`` (contracts per book contract); see module doc."""
    rule = client_id_rule(options.venue)
    parts: list[tuple[str, float, bool]] = []
    unsendable: dict[str, str] = {}
    for sym, t in target.items():
        c = instruments[sym].contract
        q0 = round_to_step(current.get(sym, 0.0), c.lot_step)
        if within_lot(current.get(sym, 0.0), t, c.lot_step):
            continue
        npc = c.notional_per_contract(marks[sym])
        for part in _parts(sym, q0, t, c.lot_step):
            notional = abs(part.contracts) * npc
            if abs(part.contracts) < c.min_qty - 1e-12:
                unsendable[sym] = f"{abs(part.contracts):g} contracts is below the min quantity"
            elif notional < c.min_notional - 1e-9 and not (part.reduce_only
                                                           and options.reduce_only_exempt):
                unsendable[sym] = f"{notional:,.2f} USD is below the min notional"
            else:
                parts.append((sym, part.contracts, part.reduce_only))
    parts.sort(key=lambda p: not p[2])
    legs: list[OrderLeg] = []
    for sym, q_all, reduce_only in parts:
        inst = instruments[sym]
        c = inst.contract
        mark = marks[sym]
        for q in _split(q_all, c):
            side = Side.BUY if q > 0 else Side.SELL
            limit = None
            if options.order_type == OrderType.LIMIT:
                g = options.slippage_guard
                limit = (_tick_round(mark * (1 + g), c.tick, up=False) if side == Side.BUY
                         else _tick_round(mark * (1 - g), c.tick, up=True))
            idx = first_index + len(legs)
            legs.append(OrderLeg(index=idx, client_id=rule.make(plan_id, idx), symbol=sym,
                                 exchange_symbol=inst.exchange_symbol, side=side,
                                 contracts=abs(q), notional=q * c.notional_per_contract(mark),
                                 price=mark, reduce_only=reduce_only,
                                 order_type=options.order_type, limit_price=limit))
    return Remaining(tuple(legs), unsendable)
