"""Round optimal notionals to each contract's lot step and minimum notional, then repair.

x_j (USD) -> q_j = x_j / notional_per_contract_j, rounded to the lot step. A trade whose notional is
below the contract's minimum is dropped (the position stays), unless it closes the position. After
rounding every enabled constraint is re-checked with numpy; while any is broken, the single one-lot
move toward the current position (or toward flat) that most reduces the total violation is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.instruments import FuturesContract
from optimizer.constraints import Constraint
from optimizer.data import ProblemData

TOL = 1e-9


@dataclass(frozen=True)
class Rounded:
    """Rounded positions: contracts (signed), z (weight units), repair moves made, rows still broken."""

    contracts: np.ndarray
    z: np.ndarray
    repairs: int
    broken: tuple[str, ...]


def total_violation(z: np.ndarray, d: ProblemData, constraints: Sequence[Constraint]) -> float:
    """Sum of every row's violation (weight units)."""
    return float(sum(c.violation(z, d).sum() for c in constraints))


def broken_rows(z: np.ndarray, d: ProblemData, constraints: Sequence[Constraint],
                tol: float = TOL) -> list[str]:
    """Labels of the rows that ``z`` breaks by more than ``tol``."""
    out: list[str] = []
    for c in constraints:
        v = c.violation(z, d)
        out += [lab for lab, x in zip(c.rows(d), v, strict=False) if x > tol]
    return out


def round_positions(z: np.ndarray, d: ProblemData, contracts: Sequence[FuturesContract],
                    q0: np.ndarray, constraints: Sequence[Constraint]) -> Rounded:
    """Round ``z`` to tradeable contract quantities and repair constraint breaks (see module doc)."""
    npc = np.array([c.notional_per_contract(p) for c, p in zip(contracts, d.prices, strict=True)])
    lot = np.array([c.lot_step for c in contracts])
    min_notional = np.array([c.min_notional for c in contracts])
    q_raw = z * d.V / npc
    q = np.where(lot > 0, np.round(q_raw / np.where(lot > 0, lot, 1.0)) * lot, q_raw)
    for j in range(len(q)):
        trade = abs(q[j] - q0[j]) * npc[j]
        closes = q[j] == 0
        if 0 < trade < min_notional[j] and not closes:
            q[j] = q0[j]
    zq = q * npc / d.V
    repairs = 0
    viol = total_violation(zq, d, constraints)
    while viol > TOL and repairs < 10 * len(q):
        best: tuple[float, int, float] | None = None
        for j in range(len(q)):
            step = lot[j] if lot[j] > 0 else abs(q[j]) * 1e-3
            for target in (q0[j], 0.0):
                if q[j] == target:
                    continue
                cand = q[j] - np.sign(q[j] - target) * step
                ztry = zq.copy()
                ztry[j] = cand * npc[j] / d.V
                v = total_violation(ztry, d, constraints)
                if v < viol - 1e-15 and (best is None or v < best[0]):
                    best = (v, j, cand)
        if best is None:
            break
        viol, j, cand = best
        q[j] = cand
        zq[j] = cand * npc[j] / d.V
        repairs += 1
    return Rounded(contracts=q, z=zq, repairs=repairs,
                   broken=tuple(broken_rows(zq, d, constraints)))
