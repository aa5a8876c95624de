"""Which lot-rounded moves an exchange takes as orders (the rounding's side of the order planner's
rules, ``executor.plan_parts``): a move q0 -> q (contracts) is sent as a reduce-only part (toward
flat) and an opening part (away from it); a flip is both, its close to flat first.

- every part is at least ``min_qty`` contracts (the exchange's LOT_SIZE minimum applies to every
  order);
- a part's notional |part| x npc (USD) is at least ``min_notional``, except a part that closes
  the position to flat (reduce-only to 0: always allowed). A reduction that leaves a position is
  held to the minimum too: not every venue waives it for reduce-only orders, so the solution
  never counts on it (the planner sends it where the venue does);
- no move is always placeable.

:func:`placeable_move` is one contract's test; :func:`fallback` the nearest placeable position when
the rounded one is not (a flip whose opening part is too small closes to flat; anything else holds
q0)."""

from __future__ import annotations

import numpy as np

TOL_QTY = 1e-12
TOL_USD = 1e-9


def _close_ok(contracts: float, min_qty: float) -> bool:
    """A reduce-only part that closes the position to flat: only the min quantity applies."""
    return abs(contracts) >= min_qty - TOL_QTY


def _part_ok(contracts: float, npc: float, min_notional: float, min_qty: float) -> bool:
    """Any other part of |``contracts``| at ``npc`` USD each: the min quantity and the min notional."""
    return _close_ok(contracts, min_qty) and abs(contracts) * npc >= min_notional - TOL_USD


def placeable_move(q0: float, q: float, npc: float, min_notional: float, min_qty: float) -> bool:
    """True when the move q0 -> q (contracts, ``npc`` USD per contract) is sent whole as orders."""
    if q == q0:
        return True
    if q == 0:  # closes to flat
        return _close_ok(q0, min_qty)
    if q0 == 0 or np.sign(q) == np.sign(q0):  # opens, grows, or shrinks leaving a position
        return _part_ok(q - q0, npc, min_notional, min_qty)
    return _close_ok(q0, min_qty) and _part_ok(q, npc, min_notional, min_qty)  # flips


def fallback(q0: float, q: float, min_qty: float) -> float:
    """The position kept when the move q0 -> q is not placeable: flat for a flip whose close is
    placeable (its opening part is what the exchange refuses), else q0."""
    flips = q0 != 0 and q != 0 and np.sign(q) != np.sign(q0)
    if flips and _close_ok(q0, min_qty):
        return 0.0
    return q0
