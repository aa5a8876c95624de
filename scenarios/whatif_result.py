"""The result types of a what-if (``scenarios.whatif.run_whatif``, whose docstring states the
method): :class:`WhatIfResult`, with its :class:`PnLSplit` and the :class:`Liquidation` of each
closed position, and its JSON form (``WhatIfResult.to_dict``).

Units: USD for money, fractions for weights, returns and rates; tracking error annualised; hours
for ``liquidated_after_h``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

import numpy as np

from models.book import Book
from models.liquidation_distance import LiquidationMove
from models.margin import MarginState
from models.market import MarketSnapshot
from optimizer.solution import Solution
from scenarios.shocks import Scenario


@dataclass(frozen=True)
class PnLSplit:
    """PnL of the scenario (USD): spot, futures (mark to market) and funding (+ = received)."""

    spot: float
    futures: float
    funding: float

    @property
    def total(self) -> float:
        """spot + futures + funding."""
        return self.spot + self.futures + self.funding


@dataclass(frozen=True)
class Liquidation:
    """A position closed by the liquidation: notional at the shocked mark (USD, signed), its
    maintenance margin and the penalty (USD)."""

    contract: str
    notional: float
    maintenance: float
    penalty: float


@dataclass(frozen=True)
class Closeout:
    """What a what-if's liquidation did (the replay's rule): the positions closed, the penalty on
    pledged spot sold to cover the wallet (USD) and what the insurance fund absorbed (USD)."""

    liquidations: tuple[Liquidation, ...] = ()
    collateral_sale_penalty: float = 0.0
    insurance_fund: float = 0.0


@dataclass(frozen=True)
class WhatIfResult:
    """What a scenario does to a book (see ``scenarios.whatif``'s docstring).

    Weights are effective weights (spot + futures exposure) / base, before the shock and after it
    (after any liquidation); ``drift`` = after - target. ``tracking_error_*`` is the asset part
    sqrt((e - w*)' Sigma (e - w*)) (annualised; before: the book's risk model, after: the shocked
    one). ``margin_before`` / ``margin_after``: at the shocked prices, after funding, before any
    liquidation. ``distance_before`` / ``distance_after``: ``liquidation_moves`` of the book now and of
    the shocked book. ``settlements``: funding settlements paid per contract (fewer than
    ``settlements_asked`` when the book is liquidated first, ``liquidated_after_h`` hours after the
    shock; 0.0: by the price move alone). ``next_solution``: the optimiser's re-solve on the shocked
    book (None when not asked or when it failed: ``next_error`` says why). ``pledged_before`` /
    ``pledged_after``: sum_i C_i(u_i) (USD), the pledged spot's collateral value through its rules
    at the prices before / after the shock (part of the margin's collateral; 0 and
    ``has_pledged`` False when the book pledges nothing). ``collateral_sale_penalty``: the penalty
    on pledged spot sold after a liquidation; ``insurance_fund``: the wallet deficit the exchange's
    insurance fund absorbed (USD; both 0 without a liquidation).
    """

    scenario: Scenario
    positions_tested: str
    nav_before: float
    nav_after: float
    pnl: PnLSplit
    targets: dict[str, float]
    weights_before: dict[str, float]
    weights_after: dict[str, float]
    tracking_error_before: float
    tracking_error_after: float
    margin_before: MarginState
    margin_after: MarginState
    liquidated: bool
    liquidations: tuple[Liquidation, ...]
    distance_before: tuple[LiquidationMove, ...]
    distance_after: tuple[LiquidationMove, ...]
    settlements: dict[str, float]
    next_solution: Solution | None = None
    next_error: str | None = None
    shocked_book: Book | None = field(default=None, repr=False, compare=False)
    shocked_market: MarketSnapshot | None = field(default=None, repr=False, compare=False)
    settlements_asked: dict[str, float] = field(default_factory=dict)
    liquidated_after_h: float | None = None
    has_pledged: bool = False
    pledged_before: float = 0.0
    pledged_after: float = 0.0
    collateral_sale_penalty: float = 0.0
    insurance_fund: float = 0.0

    @property
    def drift(self) -> dict[str, float]:
        """Effective weight after the shock less the target, per asset."""
        return {a: self.weights_after[a] - self.targets.get(a, 0.0) for a in self.weights_after}

    @property
    def liquidation_penalty(self) -> float:
        """Penalty paid by the liquidation (USD; 0 without one): on the positions closed and on
        the pledged spot sold. NAV' = NAV + PnL - penalty + insurance_fund."""
        return sum(x.penalty for x in self.liquidations) + self.collateral_sale_penalty

    @property
    def margin_surplus_after(self) -> float:
        """collateral - maintenance after the shock (USD); <= 0 liquidates (with a position open)."""
        return self.margin_after.collateral - self.margin_after.maintenance

    def to_dict(self) -> WhatIfDoc:
        """JSON-ready (non-finite numbers become None)."""
        def ms(m: MarginState) -> dict[str, float]:
            return {"collateral": m.collateral, "initial": m.initial, "maintenance": m.maintenance,
                    "margin_ratio": m.margin_ratio, "surplus": m.collateral - m.maintenance}

        def moves(ds: tuple[LiquidationMove, ...]) -> list[dict[str, Any]]:
            return [{"scope": d.scope, "assets": list(d.assets), "down": d.down, "up": d.up,
                     "nearest": d.nearest, "surplus": d.surplus, "has_positions": d.has_positions}
                    for d in ds]

        nxt: dict[str, Any] | None = None
        if self.next_solution is not None:
            s = self.next_solution
            nxt = {"status": s.status, "tracking_error_before": s.tracking_error_before,
                   "tracking_error_after": s.tracking_error_after,
                   "trades": [{"symbol": t.symbol, "notional": t.notional, "contracts": t.contracts}
                              for t in s.trades],
                   "trading_cost": s.costs.trading, "maintenance_ratio": s.margin.maintenance_ratio,
                   "binding_constraints": [b.name for b in s.binding_constraints if b.holds_back],
                   "messages": list(s.messages)}
            if s.spot_costs is not None:  # the spot leg: its trades are part of the move
                nxt["spot_trades"] = [{"asset": t.asset, "notional": t.notional, "units": t.units}
                                      for t in s.spot_trades]
                nxt["spot_trading_cost"] = s.spot_costs.trading
                nxt["spot_tax"] = s.spot_costs.tax
        out: dict[str, Any] = {
            "scenario": self.scenario.name, "description": self.scenario.description,
            "source": self.scenario.source, "shocks": self.scenario.shock_texts,
            "positions_tested": self.positions_tested,
            "nav_before": self.nav_before, "nav_after": self.nav_after,
            "pnl": {"spot": self.pnl.spot, "futures": self.pnl.futures, "funding": self.pnl.funding,
                    "total": self.pnl.total},
            "settlements": self.settlements, "settlements_asked": self.settlements_asked,
            "liquidated_after_hours": self.liquidated_after_h,
            "targets": self.targets, "weights_before": self.weights_before,
            "weights_after": self.weights_after, "drift": self.drift,
            "tracking_error_before": self.tracking_error_before,
            "tracking_error_after": self.tracking_error_after,
            "margin_before": ms(self.margin_before), "margin_after": ms(self.margin_after),
            "liquidated": self.liquidated,
            "liquidation_penalty": self.liquidation_penalty,
            "insurance_fund": self.insurance_fund,
            "liquidations": [{"contract": x.contract, "notional": x.notional,
                              "maintenance": x.maintenance, "penalty": x.penalty}
                             for x in self.liquidations],
            "liquidation_move_before": moves(self.distance_before),
            "liquidation_move_after": moves(self.distance_after),
            "next": nxt, "next_error": self.next_error,
        }
        if self.has_pledged:
            out["pledged_collateral"] = {"before": self.pledged_before, "after": self.pledged_after}
        result: WhatIfDoc = _clean(out)
        return result


def _clean(obj: Any) -> Any:
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


# --- the JSON form (WhatIfResult.to_dict): non-finite numbers become None, tuples lists -------

class PnLDoc(TypedDict):
    """:class:`PnLSplit` and its total (USD)."""

    spot: float
    futures: float
    funding: float
    total: float


class MarginStateDoc(TypedDict):
    """Margin at the shocked prices (USD; ``margin_ratio`` None when infinite)."""

    collateral: float
    initial: float
    maintenance: float
    margin_ratio: float | None
    surplus: float


class LiquidationDoc(TypedDict):
    """A position closed by the liquidation (:class:`Liquidation`)."""

    contract: str
    notional: float
    maintenance: float
    penalty: float


class LiquidationMoveDoc(TypedDict):
    """A ``LiquidationMove`` (fractions; None: no such move liquidates)."""

    scope: str
    assets: list[str]
    down: float | None
    up: float | None
    nearest: float | None
    surplus: float
    has_positions: bool


class NextTradeDoc(TypedDict):
    """A trade of the re-solve (USD notional, contracts)."""

    symbol: str
    notional: float
    contracts: float


class NextSolutionDoc(TypedDict):
    """The optimiser's re-solve on the shocked book, in brief."""

    status: str
    tracking_error_before: float
    tracking_error_after: float
    trades: list[NextTradeDoc]
    trading_cost: float
    maintenance_ratio: float | None
    binding_constraints: list[str]
    messages: list[str]
    #: the spot leg's trades and their costs (USD), when the book enables it
    spot_trades: NotRequired[list[NextSpotTradeDoc]]
    spot_trading_cost: NotRequired[float]
    spot_tax: NotRequired[float]


class NextSpotTradeDoc(TypedDict):
    """One spot trade of the re-solve: signed USD (buy > 0) and units."""

    asset: str
    notional: float
    units: float


class PledgedDoc(TypedDict):
    """The pledged spot's collateral value before / after the shock (USD)."""

    before: float
    after: float


class WhatIfDoc(TypedDict):
    """``WhatIfResult.to_dict()``; ``pledged_collateral`` only when the book pledges spot."""

    scenario: str
    description: str
    source: str
    shocks: list[str]
    positions_tested: str
    nav_before: float
    nav_after: float
    pnl: PnLDoc
    settlements: dict[str, float]
    settlements_asked: dict[str, float]
    liquidated_after_hours: float | None
    targets: dict[str, float]
    weights_before: dict[str, float]
    weights_after: dict[str, float]
    drift: dict[str, float]
    tracking_error_before: float
    tracking_error_after: float
    margin_before: MarginStateDoc
    margin_after: MarginStateDoc
    liquidated: bool
    liquidation_penalty: float
    insurance_fund: float
    liquidations: list[LiquidationDoc]
    liquidation_move_before: list[LiquidationMoveDoc]
    liquidation_move_after: list[LiquidationMoveDoc]
    next: NextSolutionDoc | None
    next_error: str | None
    pledged_collateral: NotRequired[PledgedDoc]
