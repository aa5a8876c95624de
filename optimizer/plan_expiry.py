"""Dated contracts across the planner's steps (optimizer.planner): a contract settled before a step
starts is not held in that step, and its settlement is not a trade.

Step h (h = 1..H, each ``costs.horizon_days`` = dt days long) starts (h - 1) dt days from now, when
contract j has D_jh = D_j - (h - 1) dt days left (D_j today's days to expiry; +inf without one).
In a later step (h >= 2):

- D_jh <= 0 (settled before the step starts): z_jh = 0 (optimizer.constraints.ExpiryGuard with
  ``expired``), and the step's trade -z_j,h-1 is the settlement: no fee, spread or impact
  (lin_cost_j = impact_cost_j = 0) and no trade limit (tau_j raised to |z0_j| + (h - 1) tau_j, the
  most the earlier steps can have built up; a halted contract's no-trade row, optimizer.halted,
  allows that step's settlement of |z0_j| too);
- 0 < D_jh < ``min_days_to_expiry`` with ``constraints.expiry_row`` on: the near-expiry rule,
  only reduced or closed. Where the contract was near expiry at the step before too
  (``expiry_chained``), against that step's position: 0 <= z_jh / z_j,h-1 <= 1 with the sign of
  today's z0_j (so |z_jh| never grows once inside the window, step after step); at the first step
  it is near, within |x0_j| with the same sign (its previous position's sign is a variable, and
  "same sign as a variable" is not a convex row: today's sign stands in for it).

Without this, a plan holds a dated hedge past its expiry for free (its carry is 0 after expiry)
and never pays to replace it, which biases today's trade towards a contract about to settle. A
contract that expires inside a step is held for the whole of that step (its carry is prorated:
optimizer.carry.dated_carry_steps).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from models.book import Book
from models.instruments import ContractKind, FuturesContract
from models.market import MarketSnapshot
from optimizer.data import ProblemData


def _days_left(c: FuturesContract, market: MarketSnapshot) -> float:
    """Days from the market time to a dated contract's expiry; +inf for any other contract."""
    dte = c.days_to_expiry(market.time) if c.kind == ContractKind.DATED else None
    return math.inf if dte is None else dte


def expiry_days_path(book: Book, market: MarketSnapshot, step_days: float,
                     horizon: int, near_days: float = 0.0) -> np.ndarray | None:
    """H x M: days from the start of step h to each contract's expiry, D_j - (h - 1) dt (+inf for
    a perpetual); None when no dated contract settles before the plan's last step starts or is
    within ``near_days`` (``min_days_to_expiry`` with the expiry row on, else 0) of its expiry at
    a later step's start (then no step differs from the first in this respect)."""
    days = np.array([_days_left(c, market) for c in book.contracts], dtype=float)
    path: np.ndarray = days[None, :] - step_days * np.arange(horizon)[:, None]
    later = path[1:]
    if horizon < 2 or not (np.any(later <= 0) or np.any(later < near_days)):
        return None
    return path


def step_expiry(d: ProblemData, days: np.ndarray, earlier_steps: int,
                prev_days: np.ndarray) -> ProblemData:
    """Step data for a later step whose start is ``days`` (M) from each expiry, after
    ``earlier_steps`` steps (the step before started ``prev_days`` from them): the settled
    contracts ``expired`` (held at 0, settled free of cost and limit), the near-expiry mask of
    ``constraints.expiry_row`` (else zeros) and ``expiry_chained`` where the contract was near
    expiry at the step before as well; ``d`` itself when none applies."""
    dated = np.array(d.dated, dtype=bool) if d.dated else np.zeros(len(d.contracts), dtype=bool)
    gone = dated & (days <= 0)
    near, chained = _near_masks(d, dated & ~gone, days, prev_days)
    if not gone.any() and not near.any():
        return d
    settle_limit = np.abs(d.z0) + earlier_steps * d.trade_limits
    return replace(
        d, expired=gone.astype(float), near_expiry=near.astype(float),
        expiry_chained=chained.astype(float),
        lin_cost=np.where(gone, 0.0, d.lin_cost), impact_cost=np.where(gone, 0.0, d.impact_cost),
        trade_limits=np.where(gone & np.isfinite(d.trade_limits), settle_limit, d.trade_limits))


def _near_masks(d: ProblemData, live: np.ndarray, days: np.ndarray,
                prev_days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(near, chained) per contract for a step starting ``days`` from each expiry: near = a live
    dated contract within ``min_days_to_expiry`` (expiry row on; else none); chained = near here
    and at the step before (``prev_days``)."""
    cs = d.settings.constraints
    if not cs.expiry_row:
        return np.zeros_like(live), np.zeros_like(live)
    near = live & (days < cs.min_days_to_expiry)
    return near, near & (prev_days < cs.min_days_to_expiry)
