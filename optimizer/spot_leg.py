"""The spot leg's variables in the compiled problem: spot buys b and sells q (weights, N each).

:class:`SpotContext` is the shared :class:`~optimizer.context.Context` plus b and q; its effective
exposure is e = s + b - q + B z, so every term and constraint written on ``ctx.effective()`` or
``ctx.deviation()`` (gross leverage, cluster bands) sees the spot trades. Its base rows are
b >= 0, 0 <= q <= holdings (no short spot) and the financing row sum(b) - sum(q) <= cash
(rows, not variable attributes: the lean PIQP path passes no variable bounds).

**The targets follow the base.** With ``targets_base = "invested"`` the base V is the spot value,
so the net spot trade sigma = 1'(b - q) moves it to V (1 + sigma) and the targets to
w* (1 + sigma) in units of today's V (``optimizer.spot_data.target_shift``: k = w*; k = 0 for a
NAV base). The deviation is e - w* - k sigma: selling spot into the wallet lowers every target,
and on an invested base the spot leg sells no spot into the wallet on balance: its sales pay for
its buys (plus the wallet cash it may use), -room <= 1'(b - q) <= cash with room = 0
(``optimizer.spot_data.net_sale_room``). A net sale would move spot into the reserve and shrink
the base the targets apply to, a choice that is the user's (or the collateral sweeps'), not the
rebalance's. On a NAV base the stablecoin stays in the base and room is all the spot held.
The Parameter ``shift`` holds k (Parameter times an affine expression: DPP); terms that multiply
the deviation by a Parameter of their own take k premultiplied (``TrackingVariance``,
``CostToGo``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace

import cvxpy as cp
import numpy as np

from optimizer.context import Context
from optimizer.cvxpy_adapter import assign
from optimizer.data import ProblemData, Structure
from optimizer.spot_data import net_sale_room, target_shift


class SpotContext(Context):
    """A :class:`Context` with the spot trades b (buys) and q (sells), weights."""

    buy: cp.Variable
    sell: cp.Variable
    hold: cp.Parameter
    cash: cp.Parameter
    room: cp.Parameter
    shift: cp.Parameter
    #: the sales the tax term prices (``sell`` alone; a plan's first step: every step's sales,
    #: optimizer.planner)
    taxed_sell: cp.Expression
    #: with the spot impact priced (``Structure.spot_impact``): iota >= b^{3/2} + q^{3/2} per asset
    #: (weights^{3/2}), read by the impact term and the margin rows alike; else None
    impact: cp.Variable | None
    impact_rows: list[cp.Constraint]

    @staticmethod
    def create_spot(structure: Structure) -> SpotContext:
        """The common variables and parameters plus the spot leg's."""
        base = Context.create(structure)
        ctx = SpotContext(**{f.name: getattr(base, f.name) for f in fields(Context)})
        ctx._add_spot(structure)
        return ctx

    def _add_spot(self, structure: Structure) -> None:
        """b, q, the impact's epigraph (when priced) and the spot rows' Parameters."""
        n = structure.n_assets
        self.buy = cp.Variable(n, name="spot_buy")
        self.sell = cp.Variable(n, name="spot_sell")
        self.taxed_sell = self.sell
        self.impact, self.impact_rows = None, []
        if structure.spot_impact:
            self.impact = cp.Variable(n, name="spot_impact")
            self.impact_rows = [self.impact >= cp.power(self.buy, 1.5, approx=False)
                                + cp.power(self.sell, 1.5, approx=False)]
        self.hold = self.param("spot_holdings", n, nonneg=True)
        self.cash = self.param("spot_cash", nonneg=True)
        self.room = self.param("spot_net_sale_room", nonneg=True)
        self.shift = self.param("spot_target_shift", n)

    def spot_trade(self) -> cp.Expression:
        """b - q (N), the net spot trade in weights."""
        return self.buy - self.sell

    def spot_gross(self) -> cp.Expression:
        """b + q (N), the spot traded in weights (what the fees are paid on)."""
        return self.buy + self.sell

    def spot_sold(self) -> cp.Expression:
        """q (N), the spot sold (weights)."""
        return self.sell

    def impact_paid(self) -> cp.Expression:
        """iota (N): the 3/2-power impact's b^{3/2} + q^{3/2} per asset (its epigraph; times
        c_i it is the USD / V the trades' impact costs); a programming error without one."""
        if self.impact is None:
            raise TypeError("the spot impact is not priced in this problem")
        return self.impact

    def impact_total(self) -> cp.Expression:
        """The impact paid through this step (N): :meth:`impact_paid` (a plan's later step adds
        the earlier steps': :class:`PlannedSpotContext`)."""
        return self.impact_paid()

    def deviation(self) -> cp.Expression:
        """e - w* (1 + sigma) = s + b - q + B z - w* - k 1'(b - q) (N; module docstring)."""
        spot = self.spot_trade()
        return self.s_minus_w + self.B @ self.z + spot - self.shift * cp.sum(spot)

    def effective(self) -> cp.Expression:
        """e = s + B z + b - q (N)."""
        return self.s + self.B @ self.z + self.spot_trade()

    def spot_constraints(self) -> list[cp.Constraint]:
        """b >= 0, q >= 0, q <= holdings, -room <= sum(b) - sum(q) <= cash (module docstring; for
        a plan's later step q and b - q are the totals through it: :class:`PlannedSpotContext`),
        and the impact's epigraph when priced."""
        net = cp.sum(self.spot_trade())
        return [self.buy >= 0, self.sell >= 0, self.spot_sold() <= self.hold,
                net <= self.cash, net >= -self.room, *self.impact_rows]

    def set_spot(self, d: ProblemData) -> None:
        """Values of the spot leg's base parameters."""
        assert d.spot is not None
        assign(self.hold, d.spot.holdings)
        assign(self.cash, d.spot.cash)
        assign(self.room, net_sale_room(d.spot))
        assign(self.shift, target_shift(d.w, d.spot))


class PlannedSpotContext(SpotContext):
    """A later step h of a multi-period plan with the spot leg on (optimizer.planner): its own
    spot trades b_h, q_h on top of the earlier steps' (made at their steps). Every term and
    row that reads the spot trade sees the totals through step h: the exposure
    e_h = s + sum_{k<=h} (b_k - q_k) + B z_h, the fees paid sum_{k<=h} (b_k + q_k) (margin rows),
    the spot sold sum_{k<=h} q_k (no short spot) and the financing row on the net total; the
    step's own trading cost and impact are on b_h, q_h alone (its terms read ``buy``/``sell``).
    Buys at earlier steps are not counted as holdings a later step may sell (conservative)."""

    carried: cp.Expression
    carried_gross: cp.Expression
    carried_sold: cp.Expression
    carried_impact: cp.Expression | None

    @staticmethod
    def create_planned(structure: Structure, prev: cp.Expression,
                       before: SpotContext) -> PlannedSpotContext:
        """Step h's context after step h - 1's ``before``: trades from ``prev`` (z_{h-1})."""
        base = Context.create(structure, prev=prev)
        ctx = PlannedSpotContext(**{f.name: getattr(base, f.name) for f in fields(Context)})
        ctx._add_spot(structure)
        ctx.carried = before.spot_trade()
        ctx.carried_gross = before.spot_gross()
        ctx.carried_sold = before.spot_sold()
        ctx.carried_impact = before.impact_total() if before.impact is not None else None
        return ctx

    def spot_trade(self) -> cp.Expression:
        """sum_{k<=h} (b_k - q_k) (N, weights)."""
        return self.carried + self.buy - self.sell

    def spot_gross(self) -> cp.Expression:
        """sum_{k<=h} (b_k + q_k) (N, weights)."""
        return self.carried_gross + self.buy + self.sell

    def spot_sold(self) -> cp.Expression:
        """sum_{k<=h} q_k (N, weights)."""
        return self.carried_sold + self.sell

    def impact_total(self) -> cp.Expression:
        """sum_{k<=h} iota_k (N): the impact paid through step h (the margin rows read it)."""
        own = self.impact_paid()
        return own if self.carried_impact is None else self.carried_impact + own


def shift_of(d: ProblemData) -> np.ndarray:
    """k (N): the targets' shift per unit of net spot trade (``target_shift``; 0 without the spot
    leg)."""
    return target_shift(d.w, d.spot) if d.spot is not None else np.zeros(len(d.w))


def spot_gain(d: ProblemData) -> np.ndarray:
    """kappa (N): margin collateral per unit of each asset's spot sold (weights per weight;
    ``optimizer.spot_data.collateral_gains``), 0 when not prepared."""
    sd = d.spot
    if sd is None or sd.collateral_gain is None:
        return np.zeros(len(d.w))
    return sd.collateral_gain


def stress_spot_gain(d: ProblemData, k: int) -> np.ndarray:
    """kappa_s (N) of stress scenario ``k``, 0 when not prepared."""
    sd = d.spot
    if sd is None or sd.stress_collateral_gain is None:
        return np.zeros(len(d.w))
    return np.asarray(sd.stress_collateral_gain[k], dtype=float)


def after_spot_trade(d: ProblemData, trade: np.ndarray,
                     gross: np.ndarray | None = None) -> ProblemData:
    """``d`` after a net spot trade b - q (N, weights): s' = s + b - q and the targets the base
    then gives, w' = w* + k 1'(b - q), both in units of today's V (module docstring); the
    collateral (USD), the margin budget and each stress row's collateral (weights) moved by the
    trade's cash and pledged value (optimizer.margin_constraints): -kappa'(b - q) each, plus the
    exact change of the kinked pledges' value (optimizer.pledge_pieces), less the fees, half
    spread and impact paid on the spot traded (``gross`` b + q, weights; |b - q| when not given:
    b and q are (gross +- (b - q)) / 2), the budget through its slope per unit of collateral."""
    trade = np.asarray(trade, dtype=float)
    traded = np.abs(trade) if gross is None else np.asarray(gross, dtype=float)
    buy, sell = np.maximum((traded + trade) / 2, 0.0), np.maximum((traded - trade) / 2, 0.0)
    fees = float(spot_fee_rate(d) @ traded + spot_impact_rate(d) @ (buy**1.5 + sell**1.5))
    pledge = d.spot.pledge if d.spot is not None else None
    gain = float(spot_gain(d) @ trade) + fees - (pledge.change(0, trade) if pledge is not None
                                                 else 0.0)
    mb = d.margin_budget
    per = mb.per_collateral if mb is not None else 1.0
    if mb is not None:  # the hard bound moves with the collateral, the target by (1 - f) of it
        mb = replace(mb, hard=mb.hard - gain, target=mb.target - (1.0 - mb.fraction) * gain)
    stress = np.array([stress_spot_gain(d, k) @ trade + fees
                       - (pledge.change(1 + k, trade) if pledge is not None else 0.0)
                       for k in range(len(d.stress_coll))])
    return replace(after_spot_weights(d, trade), collateral=d.collateral - gain * d.V,
                   im_budget=d.im_budget - per * gain, margin_budget=mb,
                   stress_coll=d.stress_coll - stress.reshape(d.stress_coll.shape))


def spot_trade_weights(d: ProblemData, spot_usd: Mapping[str, float]) -> np.ndarray:
    """A solution's net spot trades (USD by asset, ``Solution.spot_trades``' notionals) as
    weights b - q in ``d.assets`` order (0 where absent)."""
    return np.array([float(spot_usd.get(a, 0.0)) for a in d.assets]) / d.V


def after_spot_weights(d: ProblemData, trade: np.ndarray) -> ProblemData:
    """``d`` with only the weights moved by a net spot trade: s' = s + b - q, w' = w* + k 1'(b - q)
    (what the tracking error reads; :func:`after_spot_trade` moves the collateral too)."""
    trade = np.asarray(trade, dtype=float)
    return replace(d, s=d.s + trade, w=d.w + shift_of(d) * float(trade.sum()))


def net_trades(buy: np.ndarray, sell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Buys and sells of one asset netted: b' = max(b - q, 0), q' = max(q - b, 0) (weights).

    Without loss harvesting a simultaneous buy and sale of an asset never helps: the net trade
    b - q is what the exposure and the margin rows read, and the fees, impact and tax (a
    non-decreasing curve when losses are not credited) only fall with the gross. When costs are
    off the solver's split is arbitrary (a wash trade with fees and a tax credit nobody priced);
    netting gives the one answer a user would trade."""
    net = np.asarray(buy, dtype=float) - np.asarray(sell, dtype=float)
    return np.maximum(net, 0.0), np.maximum(-net, 0.0)


def base_ratio_after(d: ProblemData, trade: np.ndarray) -> float:
    """V' / V: 1 + 1'(b - q) when the invested base follows the net spot trade ``trade``
    (weights; module docstring), 1 for a NAV base or without the spot leg. Weights and tracking
    error after the trade are fractions of V', what the book shows then."""
    if d.spot is None or not d.spot.base_follows:
        return 1.0
    return 1.0 + float(np.sum(trade))


def make_context(structure: Structure) -> Context:
    """A :class:`SpotContext` when the spot leg is on, else the plain :class:`Context`."""
    return SpotContext.create_spot(structure) if structure.spot_leg else Context.create(structure)


def spot_trade(ctx: Context) -> cp.Expression | None:
    """b - q when ``ctx`` has the spot leg (a plan's later step: the total through it), else
    None."""
    return ctx.spot_trade() if isinstance(ctx, SpotContext) else None


def spot_gross(ctx: Context) -> cp.Expression | None:
    """b + q when ``ctx`` has the spot leg (as :func:`spot_trade`), else None."""
    return ctx.spot_gross() if isinstance(ctx, SpotContext) else None


def spot_fee_rate(d: ProblemData) -> np.ndarray:
    """f (N): fee + half spread per unit of spot traded (fractions), what the wallet pays on a
    spot trade besides its price (0 without the spot leg); the impact is paid besides
    (:func:`spot_impact_rate`)."""
    return d.spot.lin_cost if d.spot is not None else np.zeros(len(d.w))


def spot_impact_rate(d: ProblemData) -> np.ndarray:
    """c (N): the wallet pays c_i (b_i^{3/2} + q_i^{3/2}) of V for a spot trade's 3/2-power
    impact (weights; 0 without the spot leg), as the replay charges it from cash."""
    return d.spot.impact_cost if d.spot is not None else np.zeros(len(d.w))


def spot_impact_paid(ctx: Context) -> cp.Expression | None:
    """The impact's b^{3/2} + q^{3/2} through this step (N; :meth:`SpotContext.impact_total`)
    when ``ctx`` prices the spot impact, else None."""
    return ctx.impact_total() if isinstance(ctx, SpotContext) and ctx.impact is not None else None


def spot_objective_size(ctx: Context, d: ProblemData) -> float:
    """The spot leg's objective terms at the solved trades b, q (weights; 0 without the spot leg
    or before a solve): gamma_trade (fee + half spread)'(b + q), gamma_trade c'(b^{3/2} + q^{3/2})
    when impact is priced, and gamma_tax sum_i T_i(q_i) with tax lots. The numpy terms count these
    as 0 (their ``value`` re-checks futures positions at fixed spot trades); an explanation's
    sense of the objective's size needs them."""
    if not isinstance(ctx, SpotContext) or d.spot is None or ctx.buy.value is None:
        return 0.0
    b = np.maximum(np.asarray(ctx.buy.value, dtype=float), 0.0)
    q = np.maximum(np.asarray(ctx.sell.value, dtype=float), 0.0)
    st, sd = d.structure, d.spot
    size = 0.0
    if st.trading:
        size += d.gamma_trade * float(sd.lin_cost @ (b + q))
    if st.spot_impact:
        size += d.gamma_trade * float(sd.impact_cost @ (b ** 1.5 + q ** 1.5))
    if st.tax_pieces and sd.curves is not None:
        size += sd.settings.gamma_tax * sum(abs(c.value(min(float(q[i]), c.holdings)))
                                            for i, c in enumerate(sd.curves))
    return size
