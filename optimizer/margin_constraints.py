"""The margin rows, in weight units (USD / V): the initial-margin budget and one stress-safe
maintenance row per stress scenario (optimizer.constraint_base has what every row shares).

With the spot leg on, both rows see its trades: a net spot trade b - q (weights) changes the
margin collateral by -kappa'(b - q) (its cash leaves or joins the wallet, net of the pledged value
bought or sold: ``optimizer.spot_data.collateral_gains``), and each stress row by
-kappa_s'(b - q) (the pledged value re-priced in the scenario); the fee and half spread paid on
the spot traded, f'(b + q), leave the wallet in both (``optimizer.spot_leg.spot_fee_rate``), and
with the spot impact priced so does its c'(b^{3/2} + q^{3/2}) (on the context's epigraph iota,
the impact term's own; ``optimizer.spot_leg.spot_impact_rate``), as the replay charges it from
cash. An asset pledged by a rule with kinks (tiers, a pledged quantity) moves its pledged value
exactly instead (:class:`PledgedValue`, optimizer.pledge_pieces): kappa is then its cash alone,
and the row adds G(after) - G(today). A plan's later steps see the spot traded through them.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from models.margin import tier_maintenance
from optimizer.constraint_base import Constraint, elastic, fmt_step
from optimizer.context import Context
from optimizer.cvxpy_adapter import assign
from optimizer.data import ProblemData
from optimizer.spot_leg import (
    spot_fee_rate,
    spot_gain,
    spot_gross,
    spot_impact_paid,
    spot_impact_rate,
    spot_trade,
    stress_spot_gain,
)

__all__ = ["InitialMargin", "PledgedValue", "StressMargin"]


class PledgedValue:
    """The kinked pledges' collateral value after the spot trade t at one row of
    optimizer.pledge_pieces (0: today, 1 + s: stress scenario s), weights: y_i <= alpha_ip +
    beta_ip t_i for every piece p and y_i >= 0, so y_i <= G_i(after) / V (concave), with equality
    wherever the row needs it. ``now`` holds sum_i G_i(today) / V times the row's scale."""

    def __init__(self, ctx: Context, trade: cp.Expression, tag: str) -> None:
        st = ctx.structure
        n, P = len(st.pledge_assets), st.pledge_pieces
        self.alpha = ctx.param(f"pledge_alpha_{tag}", (n, P))
        self.beta = ctx.param(f"pledge_beta_{tag}", (n, P))
        self.now = ctx.param(f"pledge_now_{tag}")
        self.y = cp.Variable(n, name=f"pledged_{tag}")
        ones = np.ones((1, P))
        t = cp.reshape(trade[list(st.pledge_assets)], (n, 1), order="F") @ ones
        self.cons: list[cp.Constraint] = [
            cp.reshape(self.y, (n, 1), order="F") @ ones <= self.alpha + cp.multiply(self.beta, t),
            self.y >= 0]

    def update(self, d: ProblemData, row: int, scale: float = 1.0) -> None:
        """Values of row ``row`` of ``d``'s pieces (``scale``: the row's budget per unit)."""
        assert d.spot is not None and d.spot.pledge is not None
        pieces = d.spot.pledge
        assign(self.alpha, pieces.alpha[row])
        assign(self.beta, pieces.beta[row])
        assign(self.now, scale * float(pieces.now[row].sum()))


def pledged_value(ctx: Context, tag: str) -> PledgedValue | None:
    """A :class:`PledgedValue` of ``ctx``'s spot trade when the book has kinked pledges, else None."""
    spot = spot_trade(ctx)
    if spot is None or not ctx.structure.pledge_assets:
        return None
    return PledgedValue(ctx, spot, tag)


class InitialMargin(Constraint):
    """sum_j |x_j| / L_j <= budget, i.e. inv_lev' a <= im_budget (weight units).

    The budget is collateral - buffer by default; with a relative buffer f and hysteresis it is
    the current positions' margin clipped into [(1 - f) collateral - buffer, collateral - buffer]
    (optimizer.data.MarginBudget): a Parameter value, so the row's form never changes.
    """

    name = "margin"
    holding: bool = False
    per_collateral: float = 1.0

    #: the budget gained per unit of each asset's spot sold (per_collateral x kappa; None
    #: without the spot leg)
    gain: cp.Parameter | None = None
    #: per_collateral x c, the spot impact's coefficients (None unless the spot impact is priced)
    impact: cp.Parameter | None = None
    #: the kinked pledges' value after the trade (None without them)
    pledged: PledgedValue | None = None

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.inv_lev = ctx.param("inv_lev", ctx.structure.n_contracts, nonneg=True)
        self.budget = ctx.param("im_budget")
        spot = spot_trade(ctx)
        rhs = self.budget + elastic(slack)
        if spot is not None:  # a net buy pays from the wallet: the budget falls by kappa'(b - q)
            self.gain = ctx.param("im_spot_gain", ctx.structure.n_assets)
            self.fee = ctx.param("im_spot_fee", ctx.structure.n_assets, nonneg=True)
            rhs = rhs - self.gain @ spot - self.fee @ spot_gross(ctx)  # and the fees f'(b + q)
            paid = spot_impact_paid(ctx)
            if paid is not None:  # and the impact c'(b^1.5 + q^1.5)
                self.impact = ctx.param("im_spot_impact", ctx.structure.n_assets, nonneg=True)
                rhs = rhs - self.impact @ paid
        self.pledged = pledged_value(ctx, "im")
        extra: list[cp.Constraint] = []
        if self.pledged is not None:  # per (sum_i y_i - G(today) / V), per a Parameter (DPP)
            self.per = ctx.param("im_pledge_per", nonneg=True)
            rhs = rhs + self.per * cp.sum(self.pledged.y) - self.pledged.now
            extra = self.pledged.cons
        self.cons = [self.inv_lev @ ctx.a <= rhs]
        return [*self.cons, *extra]

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.inv_lev, d.inv_lev)
        assign(self.budget, d.im_budget)
        mb = d.margin_budget
        self.holding = mb is not None and mb.holding
        #: budget gained per unit of collateral (1 - f at the relative buffer's target)
        self.per_collateral = mb.per_collateral if mb is not None else 1.0
        if self.gain is not None:
            assign(self.gain, self.per_collateral * spot_gain(d))
            assign(self.fee, self.per_collateral * spot_fee_rate(d))
        if self.impact is not None:
            assign(self.impact, self.per_collateral * spot_impact_rate(d))
        if self.pledged is not None:
            assign(self.per, self.per_collateral)
            self.pledged.update(d, 0, self.per_collateral)

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(float(d.inv_lev @ np.abs(z)) - d.im_budget, 0.0)])

    def bound(self, row: str, d: ProblemData) -> float:
        return d.im_budget * d.V

    def collateral_factor(self) -> float:
        """Budget per USD of collateral: 1 - f at a relative buffer's target, 1 otherwise; 1 while
        holding (the explained change is then 1 USD of budget)."""
        return 1.0 if self.holding else self.per_collateral

    def step_phrase(self, row: str, step: float) -> str:
        if self.holding:
            return f"{fmt_step(step)} USD more margin budget"
        return f"{fmt_step(step)} USD more collateral"

    def note(self, row: str) -> str:
        if self.holding:
            return ("at the margin the current positions hold (hysteresis: above the relative "
                    "buffer's target, below the hard limit)")
        return ""


#: The surplus a stress row keeps (weight units): the exchange liquidates at collateral <=
#: maintenance (models.margin), so a row held at exactly 0 within the solver's tolerance would
#: leave a book that ``fbr whatif`` calls liquidated in its own scenario. Twice the tolerance the
#: lot rounding's re-check accepts (optimizer.rounding.TOL, 1e-9), so an accepted row still
#: leaves a surplus above 0 (2e-9 of V: 0.2 cent per million USD).
STRESS_CUSHION = 2e-9


class StressMargin(Constraint):
    """No liquidation in scenario s: C_s + g_s' z - sum_j MM_j(|z_j| (1 + g_sj)) >= c, with
    MM_j(n) = max_k (mmr_jk n - cum_jk / V) >= 0, g_s = B' r_s, C_s = collateral(r_s) / V and c
    = :data:`STRESS_CUSHION` (liquidation is at a surplus <= 0, so the row keeps it above).
    The per-contract coefficients mmr_jk (1 + g_sj) are precomputed into one Parameter (DPP).
    """

    unit = "USD of collateral"
    #: kappa_s (None without the spot leg)
    gain: cp.Parameter | None = None
    #: c, the spot impact's coefficients (None unless the spot impact is priced)
    impact: cp.Parameter | None = None
    #: the kinked pledges' value after the trade, re-priced in the scenario (None without them)
    pledged: PledgedValue | None = None

    def __init__(self, index: int, scenario: str) -> None:
        self.index = index
        self.name = f"stress[{scenario}]"

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        st = ctx.structure
        M, K = st.n_contracts, st.n_tiers
        self.coef = ctx.param(f"stress_coef_{self.index}", (M, K), nonneg=True)
        self.cum = ctx.param(f"stress_cum_{self.index}", (M, K))
        self.g = ctx.param(f"stress_g_{self.index}", M)
        self.coll = ctx.param(f"stress_coll_{self.index}")
        m = cp.Variable(M, name=f"mm_{self.index}")
        a_mat = cp.reshape(ctx.a, (M, 1), order="F") @ np.ones((1, K))
        coll = self.coll + elastic(slack)
        spot = spot_trade(ctx)
        if spot is not None:  # the spot trade's cash and pledged value, re-priced in scenario s
            self.gain = ctx.param(f"stress_spot_gain_{self.index}", st.n_assets)
            self.fee = ctx.param(f"stress_spot_fee_{self.index}", st.n_assets, nonneg=True)
            coll = coll - self.gain @ spot - self.fee @ spot_gross(ctx)  # the fees f'(b + q)
            paid = spot_impact_paid(ctx)
            if paid is not None:  # and the impact
                self.impact = ctx.param(f"stress_spot_impact_{self.index}", st.n_assets, nonneg=True)
                coll = coll - self.impact @ paid
        self.pledged = pledged_value(ctx, f"stress_{self.index}")
        if self.pledged is not None:
            coll = coll + cp.sum(self.pledged.y) - self.pledged.now
        self.cons = [coll + self.g @ ctx.z - cp.sum(m) >= 0,
                     cp.reshape(m, (M, 1), order="F") @ np.ones((1, K))
                     >= cp.multiply(self.coef, a_mat) - self.cum]
        if st.mm_floor:
            # MM >= 0 is implied when every first bracket has cum <= 0 (then m >= mmr_0 |z| >= 0);
            # a row, not a variable attribute: the lean PIQP path passes no variable bounds
            self.cons.append(m >= 0)
        return self.cons + (self.pledged.cons if self.pledged is not None else [])

    def update(self, d: ProblemData) -> None:
        self._data = d
        g = d.stress_g[self.index]
        assign(self.coef, d.mmr * (1.0 + g)[:, None])
        assign(self.cum, d.cum)
        assign(self.g, g)
        assign(self.coll, float(d.stress_coll[self.index]) - STRESS_CUSHION)
        if self.gain is not None:
            assign(self.gain, stress_spot_gain(d, self.index))
            assign(self.fee, spot_fee_rate(d))
        if self.impact is not None:
            assign(self.impact, spot_impact_rate(d))
        if self.pledged is not None:
            self.pledged.update(d, 1 + self.index)

    def surplus(self, z: np.ndarray, d: ProblemData) -> float:
        """Margin surplus after the shock (weight units); negative = liquidation."""
        g = d.stress_g[self.index]
        mm = tier_maintenance(d.mmr, d.cum, np.abs(z) * (1.0 + g))
        return float(d.stress_coll[self.index] + g @ z - mm.sum())

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        return np.array([max(STRESS_CUSHION - self.surplus(z, d), 0.0)])

    def bound(self, row: str, d: ProblemData) -> float:
        return float(d.stress_coll[self.index]) * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"{fmt_step(step)} USD more collateral"

    def note(self, row: str) -> str:
        return "the book would sit at its liquidation edge"
