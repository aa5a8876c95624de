"""The spot leg's trades on each asset's quantity step (``[[assets]] lot_step``, base units; 0 =
none), as the exchange takes spot orders.

A buy of b (weights) is b V / p units; it becomes the nearest multiple of the step (half to even).
A sale likewise, but never more than the whole steps of the holding (floor(h / step) steps): a
holding that is not a whole number of steps cannot be sold whole. The rounded trades are what the
solution reports and prices (fees, spread, impact, tax) and what the futures rounding re-checks
the constraints after (``optimizer.rebalance``); with every step 0 the trades are returned as
they are."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optimizer.constraint_base import Constraint
from optimizer.data import ProblemData
from optimizer.rounding import TOL, objective_value, total_violation
from optimizer.terms import Term


def _on_steps(units: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``units`` to the nearest multiple of ``step`` (half to even) where step > 0."""
    has = step > 0
    safe = np.where(has, step, 1.0)
    out: np.ndarray = np.where(has, np.round(units / safe) * safe, units)
    return out


def round_spot_lots(buy: np.ndarray, sell: np.ndarray, prices: np.ndarray, holdings: np.ndarray,
                    step: np.ndarray, V: float) -> tuple[np.ndarray, np.ndarray]:
    """(buy, sell) (weights, >= 0) with their units on each asset's ``step`` (base units);
    ``prices`` USD per unit, ``holdings`` units held before the trade."""
    if not np.any(step > 0):
        return buy, sell
    bought = _on_steps(buy * V / prices, step)
    has = step > 0
    whole = np.where(has, np.floor(holdings / np.where(has, step, 1.0) + 1e-9) * step, holdings)
    sold = np.minimum(_on_steps(sell * V / prices, step), np.where(has, whole, np.inf))
    out_buy: np.ndarray = np.maximum(bought, 0.0) * prices / V
    out_sell: np.ndarray = np.maximum(sold, 0.0) * prices / V
    return out_buy, out_sell


def absorb_spot_gap(z: np.ndarray, d: ProblemData, gap: np.ndarray,
                    constraints: Sequence[Constraint], terms: Sequence[Term],
                    noise: float) -> np.ndarray:
    """The futures ``z`` (weights) re-sized to the spot trades rounding kept.

    The solve chose spot and futures together; when the spot rounding (or the noise floor) takes
    ``gap`` (N, weights: the net spot trade solved less the one kept) off an asset, the futures
    were sized for exposure that is no longer bought or sold. The asset's first direct contract
    (its column of B holds 1 for it and 0 elsewhere) takes the gap up, z_j + gap_i, which
    restores the effective exposure e = s' + B z the solve chose. All the gaps are taken up
    together first; when that is not kept, asset by asset (passes until none is kept). A move is
    kept only when it lowers the objective at the rounded spot trades (``d`` is the problem after
    them; numpy) and breaks no row more than before (a cap, a margin row, a halted or expiring
    contract). A gap under ``noise`` (weights: ``noise_trade_weight``, the size of a trade the
    solve's tolerance can make) is left alone."""
    moves = [(j, float(gap[i])) for i, j in _direct_contracts(d, np.abs(gap) >= noise)]
    together = _moved(z, moves, d, constraints, terms)
    if together is not None or len(moves) < 2:
        return z if together is None else together
    out, left = z, list(moves)
    while True:
        step = next(((m, c) for m in left
                     if (c := _moved(out, [m], d, constraints, terms)) is not None), None)
        if step is None:
            return out
        left.remove(step[0])
        out = step[1]


def _direct_contracts(d: ProblemData, assets: np.ndarray) -> list[tuple[int, int]]:
    """(asset i, its first direct contract j) for each flagged asset that has one."""
    out: list[tuple[int, int]] = []
    for i in np.flatnonzero(assets):
        for j in range(d.B.shape[1]):
            if d.B[i, j] == 1.0 and np.count_nonzero(d.B[:, j]) == 1:
                out.append((int(i), j))
                break
    return out


def _moved(z: np.ndarray, moves: Sequence[tuple[int, float]], d: ProblemData,
           constraints: Sequence[Constraint], terms: Sequence[Term]) -> np.ndarray | None:
    """z with ``moves`` (contract, weight) added when that lowers the objective and breaks no row
    more; else None."""
    if not moves:
        return None
    cand = z.copy()
    for j, dz in moves:
        cand[j] += dz
    if (objective_value(cand, d, terms) < objective_value(z, d, terms)
            and total_violation(cand, d, constraints) <= total_violation(z, d, constraints) + TOL):
        return cand
    return None
