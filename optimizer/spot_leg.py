"""The spot leg's variables in the compiled problem: spot buys b and sells q (weights, N each).

:class:`SpotContext` is the shared :class:`~optimizer.context.Context` plus b and q; its effective
exposure is e = s + b - q + B z, so every term and constraint written on ``ctx.effective()`` or
``ctx.deviation()`` (gross leverage, cluster bands) sees the spot trades. Its base rows are
b >= 0, 0 <= q <= holdings (no short spot) and the financing row sum(b) - sum(q) <= cash
(rows, not variable attributes: the lean PIQP path passes no variable bounds).
"""

from __future__ import annotations

from dataclasses import fields

import cvxpy as cp

from optimizer.context import Context
from optimizer.cvxpy_adapter import assign
from optimizer.data import ProblemData, Structure


class SpotContext(Context):
    """A :class:`Context` with the spot trades b (buys) and q (sells), weights."""

    buy: cp.Variable
    sell: cp.Variable
    hold: cp.Parameter
    cash: cp.Parameter

    @staticmethod
    def create_spot(structure: Structure) -> SpotContext:
        """The common variables and parameters plus the spot leg's."""
        base = Context.create(structure)
        ctx = SpotContext(**{f.name: getattr(base, f.name) for f in fields(Context)})
        n = structure.n_assets
        ctx.buy = cp.Variable(n, name="spot_buy")
        ctx.sell = cp.Variable(n, name="spot_sell")
        ctx.hold = ctx.param("spot_holdings", n, nonneg=True)
        ctx.cash = ctx.param("spot_cash", nonneg=True)
        return ctx

    def spot_trade(self) -> cp.Expression:
        """b - q (N), the net spot trade in weights."""
        return self.buy - self.sell

    def deviation(self) -> cp.Expression:
        """e - w* = s + b - q + B z - w* (N)."""
        return self.s_minus_w + self.B @ self.z + self.spot_trade()

    def effective(self) -> cp.Expression:
        """e = s + b - q + B z (N)."""
        return self.s + self.B @ self.z + self.spot_trade()

    def spot_constraints(self) -> list[cp.Constraint]:
        """b >= 0, q >= 0, q <= holdings, sum(b) - sum(q) <= cash."""
        return [self.buy >= 0, self.sell >= 0, self.sell <= self.hold,
                cp.sum(self.buy) - cp.sum(self.sell) <= self.cash]

    def set_spot(self, d: ProblemData) -> None:
        """Values of the spot leg's base parameters."""
        assert d.spot is not None
        assign(self.hold, d.spot.holdings)
        assign(self.cash, d.spot.cash)


class CarriedSpotContext(Context):
    """A later step of a multi-period plan with the spot leg on (optimizer.planner): no spot trades
    of its own, but its exposure carries the plan's spot trade, made at step 1:
    e_h = s + (b - q) + B z_h, so every term and constraint of step h sees the spot held then."""

    carried: cp.Expression

    @staticmethod
    def create_carried(structure: Structure, prev: cp.Expression,
                       carried: cp.Expression) -> CarriedSpotContext:
        """A plan step after the first: trades from ``prev``, exposure with ``carried`` (b - q)."""
        base = Context.create(structure, prev=prev)
        ctx = CarriedSpotContext(**{f.name: getattr(base, f.name) for f in fields(Context)})
        ctx.carried = carried
        return ctx

    def spot_trade(self) -> cp.Expression:
        """b - q of the plan's first step (N, weights)."""
        return self.carried

    def deviation(self) -> cp.Expression:
        """e - w* = s + b - q + B z - w* (N)."""
        return self.s_minus_w + self.B @ self.z + self.carried

    def effective(self) -> cp.Expression:
        """e = s + b - q + B z (N)."""
        return self.s + self.B @ self.z + self.carried


def make_context(structure: Structure) -> Context:
    """A :class:`SpotContext` when the spot leg is on, else the plain :class:`Context`."""
    return SpotContext.create_spot(structure) if structure.spot_leg else Context.create(structure)


def spot_trade(ctx: Context) -> cp.Expression | None:
    """b - q when ``ctx`` has the spot leg (its own trades, or a plan step's carried ones), else
    None."""
    return ctx.spot_trade() if isinstance(ctx, SpotContext | CarriedSpotContext) else None
