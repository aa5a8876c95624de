"""Round optimal notionals to each contract's lot step and minimum notional, then repair.

x_j (USD exposure) -> q_j = x_j / notional_per_contract_j, rounded to the lot step; an inverse
position held away from its entry (``ProblemData.exposure_offset`` delta0_j != 0: exposure q0 x size x
mark / entry, not q0 x size) whose target is its exposure stays q0 (:func:`contracts_of`,
:func:`exposure_of`; a traded position is re-struck at the mark, so its exposure is q npc).
A trade whose notional is below the contract's minimum is dropped (the position stays), unless it
closes the position. After rounding every enabled constraint is re-checked with numpy; while any is
broken, the single one-lot move toward the current position (or toward flat) that most reduces the
total violation is applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.instruments import FuturesContract, contract_arrays
from optimizer.constraint_base import Constraint
from optimizer.data import ProblemData
from optimizer.terms import Term

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


def objective_value(z: np.ndarray, d: ProblemData, terms: Sequence[Term]) -> float:
    """The unscaled objective at ``z`` (numpy)."""
    return float(sum(t.value(z, d) for t in terms))


def snap_small_trades(z: np.ndarray, d: ProblemData, constraints: Sequence[Constraint],
                      terms: Sequence[Term], threshold: float, objective_tol: float) -> np.ndarray:
    """Cancel trades that are solver noise: set z_j = z0_j where |z_j - z0_j| < ``threshold`` (weight
    units) when that neither raises the objective (numpy, by more than ``objective_tol``, in TE^2
    units: 1e-9 is 0.005 bp of TE at a 1% TE) nor breaks a constraint more.

    Solvers stop at a tolerance, so re-solving from a solution would otherwise trade dust; with
    linear costs the exact optimum of such a re-solve is z0 itself, which this recovers. All the
    small trades are tried together first, then (for up to 50 of them) one at a time, smallest first.
    """
    dz = np.abs(z - d.z0)
    small = np.flatnonzero((dz < threshold) & (dz > 0))
    if small.size == 0:
        return z
    best_obj = objective_value(z, d, terms)
    cand = z.copy()
    cand[small] = d.z0[small]
    obj = objective_value(cand, d, terms)
    obj_ok = obj <= best_obj + objective_tol
    if not obj_ok and small.size > 50:
        return z
    viol = total_violation(cand, d, constraints) if obj_ok else math.inf
    if viol <= TOL:  # breaks nothing, so never worse than z on the constraints
        return cand
    best_viol = total_violation(z, d, constraints)
    if obj_ok and viol <= best_viol + TOL:
        return cand
    if small.size > 50:
        return z
    best = z
    for j in small[np.argsort(dz[small])]:
        cand = best.copy()
        cand[j] = d.z0[j]
        obj = objective_value(cand, d, terms)
        if obj > best_obj + objective_tol:
            continue
        viol = total_violation(cand, d, constraints)
        if viol <= best_viol + TOL:
            best, best_obj, best_viol = cand, obj, viol
    return best


def contracts_of(z: np.ndarray, d: ProblemData, npc: np.ndarray, q0: np.ndarray) -> np.ndarray:
    """Contracts q (signed) of target exposures ``z`` (weight units): z V / npc, npc the USD
    notional per contract at the mark, except that an inverse position held away from its entry
    (delta0 != 0) whose target is its exposure (z = z0) stays q0.

    Why: a position that trades is re-struck at the mark with its PnL realised into USD cash
    (``Book.with_futures``, the replay's fills), so after the trade its exposure is its notional
    q npc = z V; one that does not trade keeps the exposure q0 x size x mark / entry = z0 V, which
    is not q0 npc (the plain conversion would trade q0 (mark/entry - 1) contracts for nothing).
    Linear contracts (delta0 = 0): bit-for-bit z V / npc."""
    off = d.exposure_offset
    if off is None or not np.any(off):
        result: np.ndarray = z * d.V / npc
        return result
    out: np.ndarray = np.where((off != 0) & (z == d.z0), q0, z * d.V / npc)
    return out


def exposure_of(q: np.ndarray, d: ProblemData, npc: np.ndarray, q0: np.ndarray) -> np.ndarray:
    """Exposure z (weight units) of holding q contracts after the rebalance: q npc / V (a traded
    position is re-struck at the mark), or z0 for a position kept at q0 (see :func:`contracts_of`)."""
    off = d.exposure_offset
    if off is None or not np.any(off):
        result: np.ndarray = q * npc / d.V
        return result
    out: np.ndarray = np.where((off != 0) & (q == q0), d.z0, q * npc / d.V)
    return out


def _exposure_at(q_j: float, j: int, d: ProblemData, npc: np.ndarray, q0: np.ndarray) -> float:
    """:func:`exposure_of` for contract j alone."""
    o = d.exposure_offset
    if o is None or o[j] == 0 or q_j != q0[j]:
        return float(q_j * npc[j] / d.V)
    return float(d.z0[j])


def round_positions(z: np.ndarray, d: ProblemData, contracts: Sequence[FuturesContract],
                    q0: np.ndarray, constraints: Sequence[Constraint]) -> Rounded:
    """Round ``z`` to tradeable contract quantities and repair constraint breaks (see module doc)."""
    arrays = contract_arrays(tuple(contracts))
    npc, lot, min_notional = arrays.notional_per_contract(d.prices), arrays.lot, arrays.min_notional
    q_raw = contracts_of(z, d, npc, q0)
    has_lot = lot > 0
    q = np.where(has_lot, np.round(q_raw / np.where(has_lot, lot, 1.0)) * lot, q_raw)
    trade = np.abs(q - q0) * npc
    dropped = (trade > 0) & (trade < min_notional) & (q != 0)  # closing a position is always allowed
    q = np.where(dropped, q0, q)
    zq = exposure_of(q, d, npc, q0)
    repairs = 0
    viol = total_violation(zq, d, constraints)
    if viol <= TOL:  # nothing broken: no row can exceed TOL when their sum does not
        return Rounded(contracts=q, z=zq, repairs=0, broken=())
    while viol > TOL and repairs < 10 * len(q):
        best: tuple[float, int, float] | None = None
        for j in range(len(q)):
            step = lot[j] if lot[j] > 0 else abs(q[j]) * 1e-3
            for target in (q0[j], 0.0):
                if q[j] == target:
                    continue
                cand = q[j] - np.sign(q[j] - target) * step
                ztry = zq.copy()
                ztry[j] = _exposure_at(cand, j, d, npc, q0)
                v = total_violation(ztry, d, constraints)
                if v < viol - 1e-15 and (best is None or v < best[0]):
                    best = (v, j, cand)
        if best is None:
            break
        viol, j, cand = best
        q[j] = cand
        zq[j] = _exposure_at(q[j], j, d, npc, q0)
        repairs += 1
    return Rounded(contracts=q, z=zq, repairs=repairs,
                   broken=tuple(broken_rows(zq, d, constraints)))
