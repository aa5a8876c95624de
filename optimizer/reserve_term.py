"""The stablecoin reserve as a decision: its numbers and the problem shape that prices it.

With ``costs.reserve_cost`` on (and some stress scenario), the objective also pays for the wallet
reserve the chosen hedge needs. In weight units (USD / V), for stress scenario s (asset returns r_s,
contract returns g_s = B' r_s) and futures positions z, the margin surplus at today's wallet W is

    surplus_s(z) = C_s + g_s' z - sum_j MM_j(|z_j| (1 + g_sj)),   C_s = W / V + P_s,

with P_s = sum_i C_i(u_i (1 + r_s,i)) / V the pledged spot's stressed collateral value (fixed per
scenario; the wallet W is held fixed, as in the stress rows). The surplus is affine in the wallet
with slope 1, so the wallet that brings scenario s to exactly 0 is

    R_s(z) = W / V - surplus_s(z) = -P_s - g_s' z + sum_j MM_j(|z_j| (1 + g_sj)),

convex in z (each MM_j = max_k (mmr_jk n - cum_jk / V), floored at 0, is convex and increasing in
n >= 0, and 1 + g_sj > 0). The exchange also needs the positions' initial margin to open them:
collateral W / V + P_0 >= sum_j |z_j| / L_j (P_0 the pledged spot's collateral value today), so the
wallet must be at least

    R_IM(z) = sum_j |z_j| / L_j - P_0,

convex too. The smallest reserve that opens the positions and keeps every scenario solvent until
the next sweep is R(z) = max(0, R_IM(z), max_s R_s(z)) (``optimizer.reserve.size_reserve`` in
USD), and the term is

    rho R(z),   rho = reserve_yield x horizon_days / 365,

the yield the reserve forgoes over the cost horizon as a fraction of V: the same horizon as the
carry term (``CostSettings.horizon_days``), a 365-day year (``models.risk.DAYS_PER_YEAR``). It is
the epigraph "min rho R s.t. R >= 0, R >= R_s(z) for every s" written as one cvxpy ``maximum``
(cvxpy adds the variable R): rho is folded into the per-scenario Parameters (rho P_s, rho g_s,
rho mmr (1 + g_s), rho cum / V), since rho times a Parameter expression would not be DPP.
The stress rows (optimizer.margin_constraints.StressMargin) stay constraints at today's wallet.

The switch is part of the problem's shape (``Structure.reserve_cost``, on with a stress scenario:
without one the reserve is 0 for any z and the term is left out), so a re-solve with other yields,
horizons or scenario values only changes Parameter values.
"""

from __future__ import annotations

import math

import numpy as np

from models.errors import ValidationError
from models.margin import tier_maintenance
from models.risk import DAYS_PER_YEAR
from optimizer.data import ProblemData


def reserve_rate(d: ProblemData) -> float:
    """rho = reserve_yield x horizon_days / 365: the yield forgone per unit of reserve over the cost
    horizon (dimensionless; the reserve is in weight units, so rho R is a fraction of V)."""
    cc = d.settings.costs
    if not (math.isfinite(cc.reserve_yield) and cc.reserve_yield >= 0):
        raise ValidationError("costs.reserve_yield", f"is {cc.reserve_yield}",
                              'give a yearly yield >= 0, e.g. 0.04 or "4%"')
    return cc.reserve_yield * cc.horizon_days / DAYS_PER_YEAR


def wallet_weight(d: ProblemData) -> float:
    """W / V: today's futures wallet (stablecoin cash + uPnL) in weights, NAV / V less the spot
    weights (NAV = spot value + wallet)."""
    return float(d.nav / d.V - d.s.sum())


def pledged_stressed(d: ProblemData) -> np.ndarray:
    """P_s (S): the pledged spot's collateral value in each scenario, weights (C_s - W / V)."""
    return np.asarray(d.stress_coll, dtype=float) - wallet_weight(d)


def pledged_now(d: ProblemData) -> float:
    """P_0: the pledged spot's collateral value today, weights (collateral / V - W / V)."""
    return float(d.collateral / d.V - wallet_weight(d))


def initial_reserve(z: np.ndarray, d: ProblemData, pledged: float | None = None) -> float:
    """R_IM(z) = sum_j |z_j| / L_j - P_0 (weights): the wallet the positions' initial margin needs.
    ``pledged``: P_0 when known (default :func:`pledged_now` of ``d``)."""
    p0 = pledged_now(d) if pledged is None else pledged
    return float(d.inv_lev @ np.abs(z)) - p0


def scenario_reserves(z: np.ndarray, d: ProblemData, pledged: np.ndarray | None = None) -> np.ndarray:
    """R_s(z) = -P_s - g_s' z + sum_j MM_j(|z_j| (1 + g_sj)) per scenario (S, weights): the wallet
    that leaves scenario s with exactly 0 surplus at positions z. ``pledged``: P_s when known
    (default :func:`pledged_stressed` of ``d``)."""
    p = pledged_stressed(d) if pledged is None else pledged
    out = np.empty(len(d.stress_names))
    for k in range(len(out)):
        g = d.stress_g[k]
        mm = tier_maintenance(d.mmr, d.cum, np.abs(z) * (1.0 + g)).sum()
        out[k] = -p[k] - float(g @ z) + float(mm)
    return out


def reserve_weight(z: np.ndarray, d: ProblemData, pledged: np.ndarray | None = None,
                   pledged0: float | None = None) -> float:
    """R(z) = max(0, R_IM(z), max_s R_s(z)) (weights): the smallest reserve that opens the
    positions and keeps every scenario solvent (``pledged`` / ``pledged0``: P_s / P_0 when known)."""
    return max(0.0, initial_reserve(z, d, pledged0),
               float(scenario_reserves(z, d, pledged).max(initial=0.0)))
