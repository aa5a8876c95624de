"""Constraints, one small class each, in weight units (USD / V).

Each builds its cvxpy constraints once with Parameters (DPP), optionally with a scalar elastic slack
added to its right-hand side (for the infeasibility diagnosis), sets its Parameter values per
rebalance, and re-checks itself with numpy: ``violation(z, d)`` is the largest amount (weight units)
by which z breaks it, 0 when satisfied. ``rows`` name each scalar row for the dual report, and
``per_unit`` converts a dual (objective per weight unit of right-hand side) to the user unit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import cvxpy as cp
import numpy as np

from models.margin import tier_maintenance
from optimizer.context import Context, assign
from optimizer.data import ProblemData, Structure
from optimizer.spot_leg import spot_trade


class Constraint(ABC):
    """A named, switchable constraint."""

    name: str = "constraint"
    unit: str = "USD"
    #: how many user units one weight unit of right-hand side is (V for USD limits)
    cons: list[cp.Constraint]

    @abstractmethod
    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        """cvxpy constraints (right-hand side relaxed by ``slack`` >= 0 when given)."""

    @abstractmethod
    def update(self, d: ProblemData) -> None:
        """Set the Parameter values from ``d``."""

    @abstractmethod
    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        """Per-row violation at ``z`` (weight units, >= 0 means broken by that much)."""

    def rows(self, d: ProblemData) -> list[str]:
        """A label per row of :meth:`violation`."""
        return [self.name]

    def per_unit(self, d: ProblemData) -> float:
        """Weight units of right-hand side per user unit (1/V for USD limits)."""
        return 1.0 / d.V

    def dual_rows(self) -> np.ndarray:
        """The dual value per row from the last cvxpy solve (>= 0), aligned with :meth:`rows`."""
        return np.atleast_1d(np.asarray(self.cons[0].dual_value, dtype=float))

    def explain(self, row: str, dual_user: float) -> str:
        """One line saying what the dual means for the user."""
        return (f"{row}: loosening it by 1,000 {self.unit} would lower the objective by "
                f"{1000 * dual_user:.3g}")


def _s(slack: cp.Variable | None) -> cp.Expression | float:
    return slack if slack is not None else 0.0


class InitialMargin(Constraint):
    """sum_j |x_j| / L_j <= budget, i.e. inv_lev' a <= im_budget (weight units).

    The budget is collateral - buffer by default; with a relative buffer f and hysteresis it is
    the current positions' margin clipped into [(1 - f) collateral - buffer, collateral - buffer]
    (optimizer.data.MarginBudget): a Parameter value, so the row's form never changes.
    """

    name = "margin"
    holding: bool = False
    per_collateral: float = 1.0

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self.inv_lev = ctx.param("inv_lev", ctx.structure.n_contracts, nonneg=True)
        self.budget = ctx.param("im_budget")
        self.cons = [self.inv_lev @ ctx.a <= self.budget + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        assign(self.inv_lev, d.inv_lev)
        assign(self.budget, d.im_budget)
        mb = d.margin_budget
        self.holding = mb is not None and mb.holding
        #: budget gained per unit of collateral (1 - f at the relative buffer's target)
        self.per_collateral = mb.per_collateral if mb is not None else 1.0

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(float(d.inv_lev @ np.abs(z)) - d.im_budget, 0.0)])

    def explain(self, row: str, dual_user: float) -> str:
        if self.holding:
            return (f"initial margin binds at the margin the current positions hold (hysteresis: "
                    f"above the relative buffer's target, below the hard limit): 1,000 USD more "
                    f"budget would lower the objective by {1000 * dual_user:.3g}")
        return (f"initial margin binds: one more 1,000 USD of collateral would lower the objective "
                f"by {1000 * dual_user * self.per_collateral:.3g}")


class StressMargin(Constraint):
    """No liquidation in scenario s: C_s + g_s' z - sum_j MM_j(|z_j| (1 + g_sj)) >= 0, with
    MM_j(n) = max_k (mmr_jk n - cum_jk / V) >= 0, g_s = B' r_s, C_s = collateral(r_s) / V.
    The per-contract coefficients mmr_jk (1 + g_sj) are precomputed into one Parameter (DPP).
    """

    unit = "USD of collateral"

    def __init__(self, index: int, scenario: str) -> None:
        self.index = index
        self.name = f"stress[{scenario}]"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        st = ctx.structure
        M, K = st.n_contracts, st.n_tiers
        self.coef = ctx.param(f"stress_coef_{self.index}", (M, K), nonneg=True)
        self.cum = ctx.param(f"stress_cum_{self.index}", (M, K))
        self.g = ctx.param(f"stress_g_{self.index}", M)
        self.coll = ctx.param(f"stress_coll_{self.index}")
        m = cp.Variable(M, name=f"mm_{self.index}")
        a_mat = cp.reshape(ctx.a, (M, 1), order="F") @ np.ones((1, K))
        self.cons = [self.coll + self.g @ ctx.z - cp.sum(m) + _s(slack) >= 0,
                     cp.reshape(m, (M, 1), order="F") @ np.ones((1, K))
                     >= cp.multiply(self.coef, a_mat) - self.cum]
        if st.mm_floor:
            # MM >= 0 is implied when every first bracket has cum <= 0 (then m >= mmr_0 |z| >= 0);
            # a row, not a variable attribute: the lean PIQP path passes no variable bounds
            self.cons.append(m >= 0)
        return self.cons

    def update(self, d: ProblemData) -> None:
        g = d.stress_g[self.index]
        assign(self.coef, d.mmr * (1.0 + g)[:, None])
        assign(self.cum, d.cum)
        assign(self.g, g)
        assign(self.coll, float(d.stress_coll[self.index]))

    def surplus(self, z: np.ndarray, d: ProblemData) -> float:
        """Margin surplus after the shock (weight units); negative = liquidation."""
        g = d.stress_g[self.index]
        mm = tier_maintenance(d.mmr, d.cum, np.abs(z) * (1.0 + g))
        return float(d.stress_coll[self.index] + g @ z - mm.sum())

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(-self.surplus(z, d), 0.0)])

    def explain(self, row: str, dual_user: float) -> str:
        return (f"{row} binds (the book would sit at its liquidation edge): one more 1,000 USD of "
                f"collateral would lower the objective by {1000 * dual_user:.3g}")


class GrossLeverage(Constraint):
    """sum_i |s_i + (B z)_i| <= L_max (gross effective exposure as a multiple of V; with the spot
    leg, e = s + b - q + B z through ``ctx.effective()``)."""

    name = "gross_leverage"
    unit = "x of leverage"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self.lmax = ctx.param("max_gross", nonneg=True)
        self.cons = [cp.sum(cp.abs(ctx.effective())) <= self.lmax + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        assign(self.lmax, d.max_gross)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(float(np.abs(d.s + d.B @ z).sum()) - d.max_gross, 0.0)])

    def per_unit(self, d: ProblemData) -> float:
        return 1.0

    def explain(self, row: str, dual_user: float) -> str:
        return (f"gross leverage binds: allowing 0.1x more would lower the objective by "
                f"{0.1 * dual_user:.3g}")


class PositionLimit(Constraint):
    """|x_j| <= cap_j for the capped contracts: a_j <= cap_j / V. The cap of each contract is the
    smallest of the user's cap, the tier limit at the chosen leverage and the proxy-correlation rule.
    """

    name = "position_limit"

    def __init__(self, capped: tuple[int, ...]) -> None:
        self.idx = list(capped)

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self.cap = ctx.param("caps", len(self.idx), nonneg=True)
        self.cons = [ctx.a[self.idx] <= self.cap + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        assign(self.cap, d.caps[self.idx])

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.maximum(np.abs(z[self.idx]) - d.caps[self.idx], 0.0)

    def rows(self, d: ProblemData) -> list[str]:
        return [f"{d.cap_source[j]}[{d.contracts[j]}]" for j in self.idx]


class ClusterBands(Constraint):
    """For each cluster G: |sum_{i in G} (e_i - w*_i)| <= band_G (weights)."""

    name = "cluster_band"
    unit = "pp of band"

    def __init__(self, members: tuple[tuple[int, ...], ...], n_assets: int) -> None:
        self.S = np.zeros((len(members), n_assets))
        for g, mem in enumerate(members):
            self.S[g, list(mem)] = 1.0

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self.band = ctx.param("cluster_band", self.S.shape[0], nonneg=True)
        dev = self.S @ ctx.deviation()
        self.cons = [dev <= self.band + _s(slack), -dev <= self.band + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        assign(self.band, d.cluster_bands)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        dev = self.S @ (d.s + d.B @ z - d.w)
        return np.maximum(np.abs(dev) - d.cluster_bands, 0.0)

    def rows(self, d: ProblemData) -> list[str]:
        return [f"cluster_band[{n}]" for n in d.cluster_names]

    def dual_rows(self) -> np.ndarray:
        up = np.atleast_1d(np.asarray(self.cons[0].dual_value, dtype=float))
        dn = np.atleast_1d(np.asarray(self.cons[1].dual_value, dtype=float))
        return up + dn

    def per_unit(self, d: ProblemData) -> float:
        return 0.01

    def explain(self, row: str, dual_user: float) -> str:
        return f"{row} binds: widening it by 1 pp would lower the objective by {dual_user:.3g}"


class VolatilityCap(Constraint):
    """sqrt(e' Sigma e) <= vol_max (annualised): ||[F' e; sqrt(d) * e]||_2 <= vol_max. Conic (SOC)."""

    name = "vol_cap"
    unit = "pp of volatility"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        st = ctx.structure
        self.FtB = ctx.param("vol_FtB", (st.n_factors, st.n_contracts))
        self.Fts = ctx.param("vol_Fts", st.n_factors)
        self.vmax = ctx.param("vol_max", nonneg=True)
        spot = spot_trade(ctx)  # the spot leg: e = s + b - q + B z
        if spot is None:
            parts = [self.FtB @ ctx.z + self.Fts]
        else:
            self.Ft = ctx.param("vol_Ft", (st.n_factors, st.n_assets))
            parts = [self.FtB @ ctx.z + self.Ft @ spot + self.Fts]
        if st.idio:
            self.sd = ctx.param("vol_sqrt_idio", st.n_assets, nonneg=True)
            self.sd_s = ctx.param("vol_sqrt_idio_s", st.n_assets)
            moved = ctx.B @ ctx.z if spot is None else ctx.B @ ctx.z + spot
            parts.append(cp.multiply(self.sd, moved) + self.sd_s)
        self.cons = [cp.norm(cp.hstack(parts), 2) <= self.vmax + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        assign(self.FtB, d.FtB)
        assign(self.Fts, d.F.T @ d.s)
        assign(self.vmax, d.vol_cap)
        if hasattr(self, "Ft"):
            assign(self.Ft, d.F.T)
        if hasattr(self, "sd"):
            assign(self.sd, d.sqrt_idio)
            assign(self.sd_s, d.sqrt_idio * d.s)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        e = d.s + d.B @ z
        vol = np.sqrt(np.sum((d.F.T @ e) ** 2) + np.sum((d.sqrt_idio * e) ** 2))
        return np.array([max(float(vol) - d.vol_cap, 0.0)])

    def per_unit(self, d: ProblemData) -> float:
        return 0.01

    def explain(self, row: str, dual_user: float) -> str:
        return f"vol cap binds: 1 pp more volatility allowed would lower the objective by {dual_user:.3g}"


class FundingBudget(Constraint):
    """sum_j horizon_j r_j z_j <= budget / V: carry paid over the horizon stays within budget."""

    name = "funding_budget"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self.carry = ctx.param("budget_carry", ctx.structure.n_contracts)
        self.budget = ctx.param("funding_budget")
        self.cons = [self.carry @ ctx.z <= self.budget + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        assign(self.carry, d.carry)
        assign(self.budget, d.funding_budget)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(float(d.carry @ z) - d.funding_budget, 0.0)])


class TradeLimit(Constraint):
    """|t_j| <= tau_j (USD, e.g. a fraction of ADV): u_j <= tau_j / V on the limited contracts."""

    name = "trade_limit"

    def __init__(self, limited: tuple[int, ...]) -> None:
        self.idx = list(limited)

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self.tau = ctx.param("trade_limit", len(self.idx), nonneg=True)
        self.cons = [ctx.u[self.idx] <= self.tau + _s(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        assign(self.tau, d.trade_limits[self.idx])

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.maximum(np.abs(z - d.z0)[self.idx] - d.trade_limits[self.idx], 0.0)

    def rows(self, d: ProblemData) -> list[str]:
        return [f"trade_limit[{d.contracts[j]}]" for j in self.idx]


class ExpiryGuard(Constraint):
    """A dated contract within ``min_days_to_expiry`` of its expiry is only reduced or closed:
    ``0 <= z_j / z0_j <= 1`` (``z_j = 0`` when ``z0_j = 0``), i.e. ``|x_j| <= |x0_j|`` with the
    same sign. On the dated contracts G (fixed per book), with ``m_j`` = 1 when j is near expiry
    and 0 otherwise (a Parameter, so the row's form never changes as contracts come near expiry):

        m_j z_j <= m_j max(z0_j, 0)   and   -m_j z_j <= m_j max(-z0_j, 0)    (weight units)

    For m_j = 0 both rows read 0 <= 0. ``m_j z_j`` is a Parameter times the variable (DPP).
    """

    name = "min_days_to_expiry"
    unit = "USD of position"

    def __init__(self, guarded: tuple[int, ...]) -> None:
        self.idx = list(guarded)

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        G = len(self.idx)
        self.m = ctx.param("expiry_near", G, nonneg=True)
        self.hi = ctx.param("expiry_hi", G, nonneg=True)
        self.lo = ctx.param("expiry_lo", G, nonneg=True)
        mz = cp.multiply(self.m, ctx.z[self.idx])
        self.cons = [mz <= self.hi + _s(slack), -mz <= self.lo + _s(slack)]
        return self.cons

    def _bounds(self, d: ProblemData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        near = d.near_expiry if d.near_expiry is not None else np.zeros(len(d.contracts))
        m = near[self.idx]
        z0 = d.z0[self.idx]
        return m, m * np.maximum(z0, 0.0), m * np.maximum(-z0, 0.0)

    def update(self, d: ProblemData) -> None:
        m, hi, lo = self._bounds(d)
        assign(self.m, m)
        assign(self.hi, hi)
        assign(self.lo, lo)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        m, hi, lo = self._bounds(d)
        mz = m * z[self.idx]
        return np.maximum(np.maximum(mz - hi, -mz - lo), 0.0)

    def rows(self, d: ProblemData) -> list[str]:
        return [f"min_days_to_expiry[{d.contracts[j]}]" for j in self.idx]

    def dual_rows(self) -> np.ndarray:
        up = np.atleast_1d(np.asarray(self.cons[0].dual_value, dtype=float))
        dn = np.atleast_1d(np.asarray(self.cons[1].dual_value, dtype=float))
        return up + dn

    def explain(self, row: str, dual_user: float) -> str:
        return (f"{row} binds: the contract is within min_days_to_expiry of its expiry, so it may "
                f"only be reduced or closed; 1,000 USD more of it would lower the objective by "
                f"{1000 * dual_user:.3g}")


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
    return out
