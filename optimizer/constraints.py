"""The position, risk, funding, trade and expiry rows, one small class each, in weight units
(USD / V), and :func:`constraints_for`, the set a problem's settings switch on (with the margin
rows of optimizer.margin_constraints and the halted contracts' row of optimizer.halted).
optimizer.constraint_base says what every row does.
"""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np

from optimizer.constraint_base import Constraint, elastic, fmt_step
from optimizer.context import Context
from optimizer.cvxpy_adapter import assign
from optimizer.data import ProblemData, Structure
from optimizer.halted import Halted
from optimizer.margin_constraints import InitialMargin, StressMargin
from optimizer.spot_leg import spot_trade

__all__ = ["ClusterBands", "ExpiryGuard", "FundingBudget", "GrossLeverage", "PositionLimit",
           "TradeLimit", "VolatilityCap", "constraints_for"]


class GrossLeverage(Constraint):
    """sum_i |s_i + (B z)_i| <= L_max (gross effective exposure as a multiple of V; with the spot
    leg, e = s + b - q + B z through ``ctx.effective()``)."""

    name = "gross_leverage"
    unit = "x of leverage"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.lmax = ctx.param("max_gross", nonneg=True)
        self.cons = [cp.sum(cp.abs(ctx.effective())) <= self.lmax + elastic(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.lmax, d.max_gross)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(float(np.abs(d.s + d.B @ z).sum()) - d.max_gross, 0.0)])

    def per_unit(self, d: ProblemData) -> float:
        return 1.0

    def nominal_step(self, d: ProblemData) -> float:
        return 0.1

    def bound(self, row: str, d: ProblemData) -> float:
        return d.max_gross

    def step_phrase(self, row: str, step: float) -> str:
        lmax = self._data.max_gross if self._data is not None else math.nan
        return f"allowing {step:g}x more gross leverage ({lmax:.6g}x -> {lmax + step:.6g}x)"


class PositionLimit(Constraint):
    """|x_j| <= cap_j for the capped contracts: a_j <= cap_j / V. The cap of each contract is the
    smallest of the user's cap, the tier limit at the chosen leverage and the proxy-correlation rule.
    """

    name = "position_limit"

    def __init__(self, capped: tuple[int, ...]) -> None:
        self.idx = list(capped)

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.cap = ctx.param("caps", len(self.idx), nonneg=True)
        self.cons = [ctx.a[self.idx] <= self.cap + elastic(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.cap, d.caps[self.idx])

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        result: np.ndarray = np.maximum(np.abs(z[self.idx]) - d.caps[self.idx], 0.0)
        return result

    def rows(self, d: ProblemData) -> list[str]:
        return [f"{d.cap_source[j]}[{d.contracts[j]}]" for j in self.idx]

    def bound(self, row: str, d: ProblemData) -> float:
        return float(d.caps[self.idx[self.rows(d).index(row)]]) * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"raising the cap by {fmt_step(step)} USD"


class ClusterBands(Constraint):
    """For each cluster G: |sum_{i in G} (e_i - w*_i)| <= band_G (weights)."""

    name = "cluster_band"
    unit = "pp of band"

    def __init__(self, members: tuple[tuple[int, ...], ...], n_assets: int) -> None:
        self.S = np.zeros((len(members), n_assets))
        for g, mem in enumerate(members):
            self.S[g, list(mem)] = 1.0

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.band = ctx.param("cluster_band", self.S.shape[0], nonneg=True)
        dev = self.S @ ctx.deviation()
        self.cons = [dev <= self.band + elastic(slack), -dev <= self.band + elastic(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.band, d.cluster_bands)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        dev = self.S @ (d.s + d.B @ z - d.w)
        result: np.ndarray = np.maximum(np.abs(dev) - d.cluster_bands, 0.0)
        return result

    def rows(self, d: ProblemData) -> list[str]:
        return [f"cluster_band[{n}]" for n in d.cluster_names]

    def dual_rows(self) -> np.ndarray:
        """|y_up - y_dn| per band: the objective's rate per unit of band (both sides widened). One
        side binds when the band is > 0 (the other's dual is then 0, so this is their sum); at
        band 0 both bind and only their difference is determined (an interior-point solver may
        return any y_up = y_dn + c), the smallest sum being the difference."""
        up = np.atleast_1d(np.asarray(self.cons[0].dual_value, dtype=float))
        dn = np.atleast_1d(np.asarray(self.cons[1].dual_value, dtype=float))
        result: np.ndarray = np.abs(up - dn)
        return result

    def per_unit(self, d: ProblemData) -> float:
        return 0.01

    def nominal_step(self, d: ProblemData) -> float:
        return 1.0

    def bound(self, row: str, d: ProblemData) -> float:
        return 100.0 * float(d.cluster_bands[self.rows(d).index(row)])

    def step_phrase(self, row: str, step: float) -> str:
        return f"widening the band by {step:g} pp"


class VolatilityCap(Constraint):
    """sqrt(e' Sigma e) <= vol_max (annualised): ||[F' e; sqrt(d) * e]||_2 <= vol_max. Conic (SOC)."""

    name = "vol_cap"
    unit = "pp of volatility"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        st = ctx.structure
        self.Fts = ctx.param("vol_Fts", st.n_factors)
        self.vmax = ctx.param("vol_max", nonneg=True)
        spot = spot_trade(ctx)  # the spot leg: e = s + b - q + B z
        # F' e = F' B z (+ F' (b - q)) + F' s: the trade's part is the context's shared factor
        # exposure (optimizer.context.FactorTrade), so the cone holds K plain entries
        parts = [ctx.factor_trade(spot) + self.Fts]
        if st.idio:
            self.sd = ctx.param("vol_sqrt_idio", st.n_assets, nonneg=True)
            self.sd_s = ctx.param("vol_sqrt_idio_s", st.n_assets)
            moved = ctx.B @ ctx.z if spot is None else ctx.B @ ctx.z + spot
            parts.append(cp.multiply(self.sd, moved) + self.sd_s)
        self.cons = [cp.norm(cp.hstack(parts), 2) <= self.vmax + elastic(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.Fts, d.F.T @ d.s)
        assign(self.vmax, d.vol_cap)
        if hasattr(self, "sd"):
            assign(self.sd, d.sqrt_idio)
            assign(self.sd_s, d.sqrt_idio * d.s)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        e = d.s + d.B @ z
        vol = np.sqrt(np.sum((d.F.T @ e) ** 2) + np.sum((d.sqrt_idio * e) ** 2))
        return np.array([max(float(vol) - d.vol_cap, 0.0)])

    def per_unit(self, d: ProblemData) -> float:
        return 0.01

    def nominal_step(self, d: ProblemData) -> float:
        return 1.0

    def bound(self, row: str, d: ProblemData) -> float:
        return 100.0 * d.vol_cap

    def step_phrase(self, row: str, step: float) -> str:
        return f"allowing {step:g} pp more volatility"


class FundingBudget(Constraint):
    """sum_j horizon_j r_j z_j <= budget / V: carry paid over the horizon stays within budget."""

    name = "funding_budget"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.carry = ctx.param("budget_carry", ctx.structure.n_contracts)
        self.budget = ctx.param("funding_budget")
        self.cons = [self.carry @ ctx.z <= self.budget + elastic(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.carry, d.carry)
        assign(self.budget, d.funding_budget)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(float(d.carry @ z) - d.funding_budget, 0.0)])

    def bound(self, row: str, d: ProblemData) -> float:
        return d.funding_budget * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"{fmt_step(step)} USD more funding budget"


class TradeLimit(Constraint):
    """|t_j| <= tau_j (USD, e.g. a fraction of ADV): u_j <= tau_j / V on the limited contracts."""

    name = "trade_limit"

    def __init__(self, limited: tuple[int, ...]) -> None:
        self.idx = list(limited)

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.tau = ctx.param("trade_limit", len(self.idx), nonneg=True)
        self.cons = [ctx.u[self.idx] <= self.tau + elastic(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.tau, d.trade_limits[self.idx])

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        result: np.ndarray = np.maximum(np.abs(z - d.z0)[self.idx] - d.trade_limits[self.idx], 0.0)
        return result

    def rows(self, d: ProblemData) -> list[str]:
        return [f"trade_limit[{d.contracts[j]}]" for j in self.idx]

    def bound(self, row: str, d: ProblemData) -> float:
        return float(d.trade_limits[self.idx[self.rows(d).index(row)]]) * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"allowing {fmt_step(step)} USD more trade"


class ExpiryGuard(Constraint):
    """A dated contract within ``min_days_to_expiry`` of its expiry is only reduced or closed:
    ``0 <= z_j / z0_j <= 1`` (``z_j = 0`` when ``z0_j = 0``), i.e. ``|x_j| <= |x0_j|`` with the
    same sign. On the dated contracts G (fixed per book), with ``m_j`` = 1 when j is near expiry
    and 0 otherwise (a Parameter, so the row's form never changes as contracts come near expiry):

        m_j z_j <= m_j max(z0_j, 0)   and   -m_j z_j <= m_j max(-z0_j, 0)    (weight units)

    For m_j = 0 both rows read 0 <= 0. ``m_j z_j`` is a Parameter times the variable (DPP).

    In a plan's later step h (``ctx.prev`` = z_{h-1}, optimizer.plan_expiry) a contract near
    expiry at step h - 1 as well (``d.expiry_chained``) is bounded by z_{h-1} instead, with the
    sign of today's z0 (p_j = 1 for a long today, n_j = 1 for a short, else 0):

        m_j z_jh - p_j z_j,h-1 <= hi_j   and   -m_j z_jh + n_j z_j,h-1 <= lo_j

    with hi = lo = 0 on those rows: 0 <= z_jh <= z_j,h-1 for a long, z_j,h-1 <= z_jh <= 0 for a
    short, z_jh = 0 for none.
    """

    name = "min_days_to_expiry"
    unit = "USD of position"

    def __init__(self, guarded: tuple[int, ...]) -> None:
        self.idx = list(guarded)
        self.chain: tuple[cp.Parameter, cp.Parameter] | None = None

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        G = len(self.idx)
        self.m = ctx.param("expiry_near", G, nonneg=True)
        self.hi = ctx.param("expiry_hi", G, nonneg=True)
        self.lo = ctx.param("expiry_lo", G, nonneg=True)
        mz = cp.multiply(self.m, ctx.z[self.idx])
        up, dn = mz, -mz
        if ctx.prev is not None:
            self.chain = (ctx.param("expiry_chain_long", G, nonneg=True),
                          ctx.param("expiry_chain_short", G, nonneg=True))
            before = ctx.prev[self.idx]
            up = up - cp.multiply(self.chain[0], before)
            dn = dn + cp.multiply(self.chain[1], before)
        self.cons = [up <= self.hi + elastic(slack), dn <= self.lo + elastic(slack)]
        return self.cons

    def _bounds(self, d: ProblemData) -> tuple[np.ndarray, ...]:
        """(m, hi, lo, p, n); a contract settled before a plan's later step (``d.expired``) has
        m = 1 and hi = lo = 0: it is not held in that step (optimizer.plan_expiry); one chained
        to the step before (``d.expiry_chained``) has hi = lo = 0 and p or n = 1 by today's sign."""
        zeros = np.zeros(len(d.contracts))
        near = (d.near_expiry if d.near_expiry is not None else zeros)[self.idx]
        gone = (d.expired if d.expired is not None else zeros)[self.idx]
        chained = (d.expiry_chained if d.expiry_chained is not None else zeros)[self.idx]
        m = np.maximum(near, gone)
        live = m * (1.0 - gone)
        keep = live * (1.0 - chained)
        z0 = d.z0[self.idx]
        link = live * chained
        return (m, keep * np.maximum(z0, 0.0), keep * np.maximum(-z0, 0.0),
                link * (z0 > 0), link * (z0 < 0))

    def update(self, d: ProblemData) -> None:
        self._data = d
        m, hi, lo, p, n = self._bounds(d)
        if self.chain is None and (p.any() or n.any()):
            raise ValueError("expiry rows chained to a previous step in a problem without one")
        assign(self.m, m)
        assign(self.hi, hi)
        assign(self.lo, lo)
        if self.chain is not None:
            assign(self.chain[0], p)
            assign(self.chain[1], n)

    def violation(self, z: np.ndarray, d: ProblemData,
                  prev: np.ndarray | None = None) -> np.ndarray:
        """Per guarded contract, how far ``z`` breaks the rows (weight units); ``prev`` is the
        previous step's positions z_{h-1} (M) the chained rows read (None: today's z0)."""
        m, hi, lo, p, n = self._bounds(d)
        before = (d.z0 if prev is None else prev)[self.idx]
        mz = m * z[self.idx]
        result: np.ndarray = np.maximum(np.maximum(mz - p * before - hi, -mz + n * before - lo), 0.0)
        return result

    def rows(self, d: ProblemData) -> list[str]:
        return [f"min_days_to_expiry[{d.contracts[j]}]" for j in self.idx]

    def dual_rows(self) -> np.ndarray:
        """m_j |y_up - y_dn| per guarded contract: 0 off the near-expiry ones (their rows read
        0 <= 0 and carry arbitrary duals), and the difference of the pair where both bind (z0_j = 0
        near expiry pins z_j = 0: only the difference is determined, see ClusterBands.dual_rows)."""
        up = np.atleast_1d(np.asarray(self.cons[0].dual_value, dtype=float))
        dn = np.atleast_1d(np.asarray(self.cons[1].dual_value, dtype=float))
        near = np.asarray(self.m.value, dtype=float) > 0
        return np.where(near, np.abs(up - dn), 0.0)

    def bound(self, row: str, d: ProblemData) -> float:
        return float(abs(d.z0[self.idx[self.rows(d).index(row)]])) * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"{fmt_step(step)} USD more of the contract"

    def note(self, row: str) -> str:
        return "within min_days_to_expiry of its expiry it may only be reduced or closed"


def constraints_for(st: Structure) -> list[Constraint]:
    """The constraints this problem's settings switch on, in a fixed order."""
    out: list[Constraint] = []
    if st.margin:
        out.append(InitialMargin())
    out.extend(StressMargin(k, n) for k, n in enumerate(st.stress_names))
    if st.leverage:
        out.append(GrossLeverage())
    if st.capped:
        out.append(PositionLimit(st.capped))
    if st.cluster_members:
        out.append(ClusterBands(st.cluster_members, st.n_assets))
    if st.vol_cap:
        out.append(VolatilityCap())
    if st.funding_budget:
        out.append(FundingBudget())
    if st.trade_limited:
        out.append(TradeLimit(st.trade_limited))
    if st.expiry_guarded:
        out.append(ExpiryGuard(st.expiry_guarded))
    if st.halted:
        out.append(Halted(st.halted))
    return out
