"""Round optimal notionals to each contract's lot step and minimum notional, then repair.

x_j (USD exposure) -> q_j = x_j / notional_per_contract_j, rounded to the lot step; an inverse
position held away from its entry (``ProblemData.exposure_offset`` delta0_j != 0: exposure q0 x size x
mark / entry, not q0 x size) moves by the exchange's fill rule (``models.fill_rule``;
:func:`contracts_of`, :func:`exposure_of`): a target equal to its exposure stays q0.
A move the exchange would not take as orders (:mod:`optimizer.placeable`: a part under the
contract's min quantity or min notional, a close to flat excepted) is not made: the position
stays, or a flip whose opening part is too small closes to flat. After rounding every enabled
constraint is re-checked with numpy; while any is broken, the single placeable move that most
reduces the total violation is applied: one lot either way of one contract (a move the exchange
would not take becomes its fallback, as above).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.fill_rule import contracts_after, exposure_after
from models.instruments import FuturesContract, contract_arrays
from optimizer.constraint_base import Constraint
from optimizer.data import ProblemData
from optimizer.placeable import fallback, placeable_move
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
                      terms: Sequence[Term], threshold: float, objective_tol: float,
                      flat_tol: float = 0.0) -> np.ndarray:
    """Cancel trades that are solver noise: set z_j = z0_j where |z_j - z0_j| < ``threshold`` (weight
    units) when that neither raises the objective f (numpy) by more than its allowance
    (:func:`_allowance`: ``objective_tol``, TE^2 units, or ``flat_tol`` for a cancellation that
    moves no asset's exposure by more than ``NOISE_EXPOSURE`` of the base) nor breaks a constraint
    more.

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
    obj_ok = obj <= best_obj + _allowance(z, cand, d, objective_tol, flat_tol)
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
        if obj > best_obj + _allowance(best, cand, d, objective_tol, flat_tol):
            continue
        viol = total_violation(cand, d, constraints)
        if viol <= best_viol + TOL:
            best, best_obj, best_viol = cand, obj, viol
    return best


#: A cancellation that moves no asset's exposure by more than this (weight units: a fraction of
#: the base; the accuracy to which fbr's answers are checked against an independent reference)
#: changes nothing a user or a reference can see.
NOISE_EXPOSURE = 1e-5


def _allowance(z: np.ndarray, cand: np.ndarray, d: ProblemData, tol: float, flat: float) -> float:
    """How far cancelling ``z`` to ``cand`` may raise the objective (TE^2 units): ``flat`` when the
    cancellation moves no asset's exposure by more than :data:`NOISE_EXPOSURE` of the base,
    max_i |(B (z - cand))_i| (a shift between contracts on one asset, or dust: solvers leave such
    moves within their accuracy, about 1e-9 of f's units), else ``tol`` (a real hedge, whose worth
    sigma^2 dz^2 can be far below 1e-9 and is kept from about 2e-6 of the base at tol 1e-12)."""
    if flat <= tol:
        return tol
    moved = float(np.max(np.abs(d.B @ (z - cand)), initial=0.0))
    return flat if moved <= NOISE_EXPOSURE else tol


def contracts_of(z: np.ndarray, d: ProblemData, npc: np.ndarray, q0: np.ndarray) -> np.ndarray:
    """Contracts q (signed) of target exposures ``z`` (weight units): z V / npc, npc the USD
    notional per contract at the mark, except for an inverse position held away from its entry
    (delta0 != 0), whose exposure after the trade follows the exchange's fill rule
    (:func:`models.fill_rule.contracts_after`: a growth adds npc of exposure a contract, a
    reduction scales the held exposure z0, a flip re-opens at the mark), so a target equal to the
    held exposure is q0. Linear contracts (delta0 = 0): bit-for-bit z V / npc."""
    off = d.exposure_offset
    plain: np.ndarray = z * d.V / npc
    if off is None or not np.any(off):
        return plain
    out = plain.copy()
    for j in np.flatnonzero(off != 0):
        out[j] = contracts_after(float(z[j] * d.V), float(q0[j]), float(d.z0[j] * d.V),
                                 float(npc[j]))
    return out


def exposure_of(q: np.ndarray, d: ProblemData, npc: np.ndarray, q0: np.ndarray) -> np.ndarray:
    """Exposure z (weight units) of holding q contracts after the rebalance: q npc / V, or for an
    inverse position held away from its entry the exchange's fill rule (see :func:`contracts_of`)."""
    if d.exposure_offset is None or not np.any(d.exposure_offset):
        plain: np.ndarray = q * npc / d.V
        return plain
    return np.array([_exposure_at(float(q[j]), j, d, npc, q0) for j in range(len(q))])


def _exposure_at(q_j: float, j: int, d: ProblemData, npc: np.ndarray, q0: np.ndarray) -> float:
    """:func:`exposure_of` for contract j alone."""
    o = d.exposure_offset
    if o is None or o[j] == 0:
        return float(q_j * npc[j] / d.V)
    return exposure_after(q_j, float(q0[j]), float(d.z0[j] * d.V), float(npc[j])) / d.V


def round_positions(z: np.ndarray, d: ProblemData, contracts: Sequence[FuturesContract],
                    q0: np.ndarray, constraints: Sequence[Constraint],
                    terms: Sequence[Term] = ()) -> Rounded:
    """Round ``z`` to tradeable contract quantities and repair constraint breaks (see module doc;
    ``terms``, the objective's, choose between repair moves that leave the same violation)."""
    arrays = contract_arrays(tuple(contracts))
    npc, lot = arrays.notional_per_contract(d.prices), arrays.lot
    rules = _Rules(npc, arrays.min_notional, np.array([c.min_qty for c in contracts], dtype=float))
    q_raw = contracts_of(z, d, npc, q0)
    has_lot = lot > 0
    q = np.where(has_lot, np.round(q_raw / np.where(has_lot, lot, 1.0)) * lot, q_raw)
    for j in range(len(q)):
        if not rules.ok(j, q0[j], q[j]):
            q[j] = rules.fallback(j, q0[j], q[j])
    zq = exposure_of(q, d, npc, q0)
    viol = total_violation(zq, d, constraints)
    if viol <= TOL:  # nothing broken: no row can exceed TOL when their sum does not
        return Rounded(contracts=q, z=zq, repairs=0, broken=())
    repairs = 0
    while viol > TOL and repairs < 10 * len(q):
        best = _best_move(q, zq, viol, d, npc, q0, lot, rules, constraints, terms)
        if best is None:
            break
        viol, j, q[j] = best
        zq[j] = _exposure_at(q[j], j, d, npc, q0)
        repairs += 1
    return Rounded(contracts=q, z=zq, repairs=repairs,
                   broken=tuple(broken_rows(zq, d, constraints)))


@dataclass(frozen=True)
class _Rules:
    """Each contract's order minimums (:mod:`optimizer.placeable`): USD per contract, min notional
    (USD), min quantity (contracts)."""

    npc: np.ndarray
    min_notional: np.ndarray
    min_qty: np.ndarray

    def ok(self, j: int, q0: float, q: float) -> bool:
        return placeable_move(q0, q, self.npc[j], self.min_notional[j], self.min_qty[j])

    def fallback(self, j: int, q0: float, q: float) -> float:
        return fallback(q0, q, self.min_qty[j])


def _best_move(q: np.ndarray, zq: np.ndarray, viol: float, d: ProblemData, npc: np.ndarray,
               q0: np.ndarray, lot: np.ndarray, rules: _Rules, constraints: Sequence[Constraint],
               terms: Sequence[Term]) -> tuple[float, int, float] | None:
    """The single move that lowers the total violation most: one lot either way of one contract
    (where the exchange would not take that move, its :func:`~optimizer.placeable.fallback`);
    among moves within ``TOL`` of that violation, the one of lowest objective (``terms``; a tie
    goes to the first contract). (violation after, contract, position), or None when no move
    lowers it."""
    moves: list[tuple[float, int, float, np.ndarray]] = []
    for j in range(len(q)):
        step = lot[j] if lot[j] > 0 else abs(q[j]) * 1e-3
        for move in (q[j] - step, q[j] + step):
            cand = move if rules.ok(j, q0[j], move) else rules.fallback(j, q0[j], move)
            if cand == q[j]:
                continue
            ztry = zq.copy()
            ztry[j] = _exposure_at(cand, j, d, npc, q0)
            v = total_violation(ztry, d, constraints)
            if v < viol - 1e-15:
                moves.append((v, j, cand, ztry))
    if not moves:
        return None
    least = min(m[0] for m in moves)
    tied = [m for m in moves if m[0] <= least + TOL]
    v, j, cand, _ = (tied[0] if len(tied) == 1 or not terms else
                     min(tied, key=lambda m: objective_value(m[3], d, terms)))
    return v, j, cand
