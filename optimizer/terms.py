"""Objective terms, one small class each. All in weight units; values are annualised variances
(tracking error) or fractions of the base V (costs).

Each term builds its cvxpy expression once (with Parameters, DPP), sets the Parameter values for a
rebalance, and evaluates itself with numpy on a candidate z (independent of cvxpy).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace

import cvxpy as cp
import numpy as np

from optimizer.context import Context
from optimizer.cvxpy_adapter import assign
from optimizer.data import ProblemData, Structure
from optimizer.reserve_term import pledged_now, pledged_stressed, reserve_rate, reserve_weight
from optimizer.spot_leg import SpotContext, shift_of, spot_trade
from optimizer.tax_term import TaxTerm


class Term(ABC):
    """An objective term: build (once), update (each solve), value (numpy re-check)."""

    name: str = "term"

    @abstractmethod
    def build(self, ctx: Context) -> cp.Expression:
        """The term as a cvxpy expression of ctx's variables and this term's Parameters."""

    @abstractmethod
    def update(self, d: ProblemData) -> None:
        """Set this term's Parameter values from ``d``."""

    @abstractmethod
    def value(self, z: np.ndarray, d: ProblemData) -> float:
        """The term at ``z`` computed with numpy (the same units as the expression)."""


class TrackingVariance(Term):
    """The tracking variance (the objective's risk term; its square root is the tracking error):
    TE^2 = (e - w*)' Sigma (e - w*), Sigma = F F' + diag(d), as a sum of squares:
    ||F' B z + F'(s - w*)||^2 + ||sqrt(d) * (B z + s - w*)||^2 (annualised variance, weight units).
    With the spot leg, e - w* = s + b - q + B z - w* - k sigma (sigma = 1'(b - q), k the targets'
    shift, optimizer.spot_leg): F' (b - q) - (F' k) sigma and sqrt(d) * (b - q) - (sqrt(d) * k)
    sigma join the squares (the products with k precomputed: DPP).
    """

    name = "tracking_error"
    #: F' k (None without the spot leg) and sqrt(d) (None without idio)
    Ftk: cp.Parameter | None = None
    sd: cp.Parameter | None = None

    def build(self, ctx: Context) -> cp.Expression:
        st = ctx.structure
        spot = spot_trade(ctx)
        # F' B z (+ F' (b - q)): the context's, shared with the vol cap (optimizer.context)
        moved_f = ctx.factor_trade(spot)
        self.c = ctx.param("Ft_s_minus_w", st.n_factors)
        if spot is not None:
            self.Ftk = ctx.param("Ft_shift", st.n_factors)
            moved_f = moved_f - self.Ftk * cp.sum(spot)
        expr = cp.sum_squares(moved_f + self.c)
        if st.idio:  # sqrt(d) * (B z) + sqrt(d) * (s - w*), the second precomputed (DPP)
            self.sd = ctx.param("sqrt_idio", st.n_assets, nonneg=True)
            self.sd_dev0 = ctx.param("sqrt_idio_s_minus_w", st.n_assets)
            if spot is None:
                moved = cp.multiply(self.sd, ctx.B @ ctx.z)
            else:
                self.sdk = ctx.param("sqrt_idio_shift", st.n_assets)
                moved = cp.multiply(self.sd, ctx.B @ ctx.z + spot) - self.sdk * cp.sum(spot)
            expr = expr + cp.sum_squares(moved + self.sd_dev0)
        return expr

    def update(self, d: ProblemData) -> None:
        assign(self.c, d.F.T @ (d.s - d.w))
        if self.sd is not None:
            assign(self.sd, d.sqrt_idio)
            assign(self.sd_dev0, d.sqrt_idio * (d.s - d.w))
        if self.Ftk is not None:
            k = shift_of(d)
            assign(self.Ftk, d.F.T @ k)
            if self.sd is not None:
                assign(self.sdk, d.sqrt_idio * k)

    def value(self, z: np.ndarray, d: ProblemData) -> float:
        dev = d.s + d.B @ z - d.w
        return float(np.sum((d.F.T @ dev) ** 2) + np.sum((d.sqrt_idio * dev) ** 2))


class BasisRisk(Term):
    """(x/V)' Sigma_basis (x/V) = ||Gb' z||^2: the part of TE that futures add through basis moves."""

    name = "basis_risk"

    def build(self, ctx: Context) -> cp.Expression:
        st = ctx.structure
        self.GbT = ctx.param("GbT", (st.n_basis_factors, st.n_contracts))
        return cp.sum_squares(self.GbT @ ctx.z)

    def update(self, d: ProblemData) -> None:
        assign(self.GbT, d.Gb.T)

    def value(self, z: np.ndarray, d: ProblemData) -> float:
        return float(np.sum((d.Gb.T @ z) ** 2))


class LinearTradingCost(Term):
    """gamma_trade * sum_j (fee_j + half_spread_j) |t_j| / V = gamma * lin' u, u = |z - z0|."""

    name = "trading_cost"

    def build(self, ctx: Context) -> cp.Expression:
        self.lin = ctx.param("lin_cost", ctx.structure.n_contracts, nonneg=True)
        return self.lin @ ctx.u

    def update(self, d: ProblemData) -> None:
        assign(self.lin, d.gamma_trade * d.lin_cost)

    def value(self, z: np.ndarray, d: ProblemData) -> float:
        return float(d.gamma_trade * d.lin_cost @ np.abs(z - d.z0))


class ImpactCost(Term):
    """gamma_trade * sum_j k_j sigma_j |t_j|^{3/2} / (V sqrt(ADV_j)) = gamma * sum_j c_j |z_j - z0_j|^{3/2},
    with c_j = k_j sigma_j sqrt(V / ADV_j) (sigma daily). Conic (power cone / SOC)."""

    name = "impact_cost"

    def build(self, ctx: Context) -> cp.Expression:
        self.coef = ctx.param("impact_coef", ctx.structure.n_contracts, nonneg=True)
        # exact power cones: Clarabel solves these reliably where the SOC form stalls at N >= 200
        return self.coef @ cp.power(ctx.u, 1.5, approx=False)

    def update(self, d: ProblemData) -> None:
        assign(self.coef, d.gamma_trade * d.impact_cost)

    def value(self, z: np.ndarray, d: ProblemData) -> float:
        return float(d.gamma_trade * d.impact_cost @ np.abs(z - d.z0) ** 1.5)


class CarryCost(Term):
    """gamma_fund * sum_j horizon_j r_j z_j: funding (perps, longs pay when r > 0) or basis carry
    (dated futures) over the horizon, as a fraction of V."""

    name = "carry_cost"

    def build(self, ctx: Context) -> cp.Expression:
        self.carry = ctx.param("carry", ctx.structure.n_contracts)
        return self.carry @ ctx.z

    def update(self, d: ProblemData) -> None:
        assign(self.carry, d.gamma_fund * d.carry)

    def value(self, z: np.ndarray, d: ProblemData) -> float:
        return float(d.gamma_fund * d.carry @ z)


class SpotTerm(Term):
    """A spot-leg term. Its ``value`` is 0: it does not depend on z, and the numpy re-checks
    (snapping, lot rounding) compare futures positions with the spot trades fixed; the spot leg's
    costs and tax are reported from the solved trades (optimizer.solution_report)."""

    def value(self, z: np.ndarray, d: ProblemData) -> float:
        return 0.0

    @staticmethod
    def spot_ctx(ctx: Context) -> SpotContext:
        """``ctx`` as the spot leg's context (a programming error otherwise)."""
        if not isinstance(ctx, SpotContext):  # pragma: no cover - terms_for pairs them
            raise TypeError("a spot-leg term needs the spot leg's context")
        return ctx


class SpotTradingCost(SpotTerm):
    """gamma_trade * sum_i (fee_i + half_spread_i) (b_i + q_i): spot buys and sells each pay."""

    name = "spot_trading_cost"

    def build(self, ctx: Context) -> cp.Expression:
        sc = self.spot_ctx(ctx)
        self.lin = ctx.param("spot_lin_cost", ctx.structure.n_assets, nonneg=True)
        return self.lin @ (sc.buy + sc.sell)

    def update(self, d: ProblemData) -> None:
        assert d.spot is not None
        assign(self.lin, d.gamma_trade * d.spot.lin_cost)


class SpotImpactCost(SpotTerm):
    """gamma_trade * sum_i c_i (b_i^{3/2} + q_i^{3/2}), c_i = k sigma_i sqrt(V / ADV_i). Conic: on
    the context's epigraph iota >= b^{3/2} + q^{3/2}, which the margin rows read too."""

    name = "spot_impact_cost"

    def build(self, ctx: Context) -> cp.Expression:
        sc = self.spot_ctx(ctx)
        self.coef = ctx.param("spot_impact_coef", ctx.structure.n_assets, nonneg=True)
        return self.coef @ sc.impact_paid()  # iota >= b^{3/2} + q^{3/2} (SpotContext.impact)

    def update(self, d: ProblemData) -> None:
        assert d.spot is not None
        assign(self.coef, d.gamma_trade * d.spot.impact_cost)


class SpotTax(SpotTerm):
    """gamma_tax * sum_i T_i(q_i): the convex tax of each spot sale (optimizer.tax_term.TaxTerm;
    the asset's lots' curve, models.tax.breakpoints: for HIFO and specific lots ascending tax,
    for FIFO the FIFO order with running-maximum slopes; weights, tax USD / V per USD / V sold).
    In a plan, q_i is all steps' sales (``SpotContext.taxed_sell``): the steps' taxes on the
    running total telescope to T_i(Q_H), one convex term (lots bought in the plan not counted)."""

    name = "spot_tax"

    def build(self, ctx: Context) -> cp.Expression:
        sc = self.spot_ctx(ctx)
        st = ctx.structure
        self.term = TaxTerm.create(st.n_assets, st.tax_pieces)
        ctx.params.extend(self.term.parameters)
        return self.term.expression(sc.taxed_sell)

    def update(self, d: ProblemData) -> None:
        # gamma_tax scales the slopes (a Parameter times the term would not be DPP)
        assert d.spot is not None and d.spot.curves is not None
        g = d.spot.settings.gamma_tax
        self.term.update([replace(c, slopes=g * c.slopes) for c in d.spot.curves])


class FuturesTax(Term):
    """sum_j c_j max(0, s_j (z0_j - z_j)): the tax of realising futures gains by reducing positions
    (``spot.futures_tax``; c_j: optimizer.spot_data.futures_tax_coefficients, s_j = sign z0_j), a
    fraction of V; exact for a same-sign reduction, an over-estimate past a flip. Losses are not
    credited (c_j = 0): convex. DPP: pos(q - p * z), Parameters p = c s, q = c |z0|. A plan's step
    h >= 2 prices its own reduction, pos(p * (z_{h-1} - z_h)) with today's c, s (zero drift: any
    step realises today's gain per unit; the steps sum to c x the total cut of a plan that only
    cuts, and over-estimate one that cuts, adds and cuts again)."""

    name = "futures_tax"

    def build(self, ctx: Context) -> cp.Expression:
        m = ctx.structure.n_contracts
        self.p = ctx.param("futures_tax_p", m)
        self.q: cp.Parameter | None = None
        if ctx.prev is not None:
            return cp.sum(cp.pos(cp.multiply(self.p, ctx.prev - ctx.z)))
        self.q = ctx.param("futures_tax_q", m, nonneg=True)
        return cp.sum(cp.pos(self.q - cp.multiply(self.p, ctx.z)))

    @staticmethod
    def _coefficients(d: ProblemData) -> tuple[np.ndarray, np.ndarray]:
        c = d.futures_tax_coef
        assert c is not None
        return c * np.sign(d.z0), c * np.abs(d.z0)

    def update(self, d: ProblemData) -> None:
        p, q = self._coefficients(d)
        assign(self.p, p)
        if self.q is not None:
            assign(self.q, q)

    def value(self, z: np.ndarray, d: ProblemData) -> float:
        p, q = self._coefficients(d)
        return float(np.maximum(q - p * z, 0.0).sum())


class ReserveCost(Term):
    """rho max(0, R_IM(z), max_s R_s(z)), the yield the stablecoin reserve forgoes over the horizon
    as a fraction of V (optimizer.reserve_term): R_s(z) = -P_s - g_s' z + sum_j MM_j(|z_j| (1 +
    g_sj)) the wallet (weights) leaving scenario s with 0 surplus, R_IM(z) = sum_j a_j / L_j - P_0
    the wallet the initial margin needs, rho = reserve_yield x horizon_days / 365, folded into the
    Parameters (DPP: rho P_s, rho g_s, rho mmr (1 + g_s), rho cum, rho / L, rho P_0; MM_j on
    a >= |z|). P_s is today's pledged spot: unlike the stress rows, the term does not re-price the
    pledged value a spot-leg trade moves (a cost estimate, not a limit)."""

    name = "reserve_cost"
    #: P_s (weights, one per scenario) and P_0 (weights) at the last update; None before it
    pledged: np.ndarray | None = None
    pledged0: float | None = None

    def build(self, ctx: Context) -> cp.Expression:
        st = ctx.structure
        M, K = st.n_contracts, st.n_tiers
        a_mat = cp.reshape(ctx.a, (M, 1), order="F") @ np.ones((1, K))
        self.coef: list[cp.Parameter] = []
        self.g: list[cp.Parameter] = []
        self.pl: list[cp.Parameter] = []
        self.cum = ctx.param("reserve_cum", (M, K))
        self.im_coef = ctx.param("reserve_im_coef", M, nonneg=True)
        self.im_pledged = ctx.param("reserve_im_pledged")
        rows: list[cp.Expression] = [cp.Constant(0.0), self.im_coef @ ctx.a - self.im_pledged]
        for k in range(len(st.stress_names)):
            coef = ctx.param(f"reserve_coef_{k}", (M, K), nonneg=True)
            g = ctx.param(f"reserve_g_{k}", M)
            pl = ctx.param(f"reserve_pledged_{k}")
            mm = cp.max(cp.multiply(coef, a_mat) - self.cum, axis=1)
            if st.mm_floor:  # MM_j >= 0 is implied when every first bracket has cum <= 0
                mm = cp.pos(mm)
            rows.append(cp.sum(mm) - g @ ctx.z - pl)
            self.coef.append(coef)
            self.g.append(g)
            self.pl.append(pl)
        return cp.max(cp.hstack(rows))

    def update(self, d: ProblemData) -> None:
        rho = reserve_rate(d)
        # P_s at this update: ``value`` re-uses it, so a re-check on data whose spot weights moved
        # (the spot leg's trades) prices the same reserve as the solve
        self.pledged = pledged_stressed(d)
        self.pledged0 = pledged_now(d)
        assign(self.cum, rho * d.cum)
        assign(self.im_coef, rho * d.inv_lev)
        assign(self.im_pledged, rho * self.pledged0)
        for k, (coef, g, pl) in enumerate(zip(self.coef, self.g, self.pl, strict=True)):
            gs = d.stress_g[k]
            assign(coef, rho * d.mmr * (1.0 + gs)[:, None])
            assign(g, rho * gs)
            assign(pl, rho * float(self.pledged[k]))

    def value(self, z: np.ndarray, d: ProblemData) -> float:
        return reserve_rate(d) * reserve_weight(z, d, self.pledged, self.pledged0)


class CostToGo(Term):
    """kappa (e - w*)' Q_p (e - w*), Q_p = Sigma^p trace(Sigma) / trace(Sigma^p): a quadratic
    cost-to-go of the deviation left after the trade (annualised variance, weight units, a
    dimensionless multiple kappa of a TE^2 of Sigma's trace; optimizer.cost_to_go.power_shape).

    Markowitz-van Dijk / Kritzman-Myrgren-Page: being away from target after this period's trade
    costs more than this period's TE^2, because the deviation persists and is paid for later (in
    risk or in trades); a quadratic of the post-trade deviation prices that future. p = 1 makes
    the term kappa TE^2: the solve is the one without it with every cost weight (gamma_trade,
    gamma_fund, ...) divided by 1 + kappa; p < 1 compresses Sigma's eigenvalues towards their mean,
    pricing deviations in low-variance directions (spreads between correlated legs) relatively
    more than Sigma does and common-factor ones relatively less.

    In the multi-period planner every step carries its own copy (as it does TE^2), so each
    step's post-trade deviation is priced; with H = 1 the plan is this single-period problem.

    DPP as a sum of squares with R = sqrt(kappa) Q_p^{1/2} (N x N Parameter) and its product
    R (s - w*) precomputed (a Parameter times a Parameter is not DPP):
    ||R (B z [+ b - q]) + R (s - w*)||^2.
    """

    name = "cost_to_go"
    #: R k, the targets' shift through R (None without the spot leg)
    Rk: cp.Parameter | None = None

    def build(self, ctx: Context) -> cp.Expression:
        n = ctx.structure.n_assets
        self.R = ctx.param("cost_to_go_root", (n, n))
        self.R_dev0 = ctx.param("cost_to_go_root_s_minus_w", n)
        spot = spot_trade(ctx)
        if spot is None:
            return cp.sum_squares(self.R @ (ctx.B @ ctx.z) + self.R_dev0)
        self.Rk = ctx.param("cost_to_go_root_shift", n)
        moved = self.R @ (ctx.B @ ctx.z + spot) - self.Rk * cp.sum(spot)
        return cp.sum_squares(moved + self.R_dev0)

    def update(self, d: ProblemData) -> None:
        assert d.cost_to_go_root is not None
        assign(self.R, d.cost_to_go_root)
        assign(self.R_dev0, d.cost_to_go_root @ (d.s - d.w))
        if self.Rk is not None:
            assign(self.Rk, d.cost_to_go_root @ shift_of(d))

    def value(self, z: np.ndarray, d: ProblemData) -> float:
        if d.cost_to_go_root is None:
            return 0.0
        dev = d.s + d.B @ z - d.w
        return float(np.sum((d.cost_to_go_root @ dev) ** 2))


def terms_for(st: Structure) -> list[Term]:
    """The objective terms this problem's settings switch on."""
    out: list[Term] = [TrackingVariance()]
    if st.n_basis_factors > 0:
        out.append(BasisRisk())
    if st.trading:
        out.append(LinearTradingCost())
    if st.impact:
        out.append(ImpactCost())
    if st.carry:
        out.append(CarryCost())
    if st.spot_leg:
        if st.trading:
            out.append(SpotTradingCost())
        if st.spot_impact:
            out.append(SpotImpactCost())
        if st.tax_pieces:
            out.append(SpotTax())
    if st.futures_tax:  # with or without the spot leg
        out.append(FuturesTax())
    if st.reserve_cost:  # costs.reserve_cost with a stress scenario
        out.append(ReserveCost())
    if st.cost_to_go:  # costs.cost_to_go > 0
        out.append(CostToGo())
    return out
