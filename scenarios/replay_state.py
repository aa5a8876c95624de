"""Accounting state of a backtest replay and its valuation at a market.

:class:`ReplayState` holds what the replay mutates (spot quantities, open futures positions, the
signed wallet cash, USD; a negative cash is a stablecoin debt). :func:`value_state` values it in
one pass (:class:`StepValuation`: spot values, signed notionals, effective weights
``e = (spot + B x) / V``, wallet, NAV, collateral, base V); :func:`rebalance_futures` moves
positions through ``Book.with_futures`` (the exchange's fill rule, ``models.fill_rule``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from models.book import Book, FuturesPosition, TargetsBase
from models.errors import ValidationError
from models.market import MarketSnapshot
from models.tax import TaxLot


@dataclass
class FuturesTaxBasis:
    """The futures positions as the tax sees them: per contract (contracts, average entry price
    USD) and their unrealised PnL ``u`` (USD) at the last step's end (scenarios.replay_tax)."""

    entries: dict[str, tuple[float, float]]
    u: float


@dataclass
class ReplayState:
    """Mutable accounting state: spot quantities, open positions and the signed wallet cash; with
    taxes on (``scenarios.replay_tax``), the tax lots of every asset (None: not tracked)."""

    spot: dict[str, float]
    futures: dict[str, FuturesPosition]
    cash: float
    lots: dict[str, tuple[TaxLot, ...]] | None = field(default=None)
    #: the futures positions as the tax sees them (scenarios.replay_tax; None: not tracked)
    futures_basis: FuturesTaxBasis | None = field(default=None)
    #: units sold this step by a policy that sold and bought one asset (a loss harvest), by asset:
    #: the lots book this sale before the step's net change (scenarios.replay_tax.book_lots)
    sold_first: dict[str, float] = field(default_factory=dict)


def state_view(book: Book, state: ReplayState) -> Book:
    """The book as it stands: its spot, positions and signed wallet cash."""
    if not math.isfinite(state.cash):  # holdings are checked where they change; cash sums inputs
        raise ValidationError("market_path", f"drove the wallet cash to {state.cash}",
                              "check the path's prices and funding rates for NaN or inf")
    return book.evolve(spot=state.spot, futures=state.futures, cash=state.cash, validate=False)


@dataclass(frozen=True)
class StepValuation:
    """The book valued at one market (USD)."""

    spot_values: np.ndarray
    notional: np.ndarray
    weights: np.ndarray
    upnl: float
    wallet: float
    nav: float
    collateral: float
    base: float
    nav_base: bool = False

    def with_cash(self, delta: float) -> StepValuation:
        """The same valuation after ``delta`` USD of cash moved into the wallet (funding): wallet,
        NAV and collateral move by ``delta``; so does the base V when targets apply to the NAV."""
        if delta == 0:
            return self
        base = self.base + delta if self.nav_base else self.base
        exposure = self.weights * self.base
        weights = exposure / base if base != 0 else np.full(len(self.spot_values), np.nan)
        return replace(self, weights=weights, wallet=self.wallet + delta, nav=self.nav + delta,
                       collateral=self.collateral + delta, base=base)


def value_state(book: Book, state: ReplayState, market: MarketSnapshot) -> StepValuation:
    """Valuation in one pass (``Book.valuation``: each price read once) plus the effective
    weights ``e = (spot + B x) / V`` (NaN when the base V is 0), x the futures USD exposure
    (``Book.futures_exposure``: q x size x mark / entry for an inverse position); ``notional``
    stays the exchange's notional (face value for inverse: margin, funding, liquidation)."""
    view = state_view(book, state)
    v = view.valuation(market)
    exposure = v.spot_values + view.exposure_matrix() @ v.exposure  # inverse: face x mark / entry
    weights = exposure / v.base if v.base != 0 else np.full(len(v.spot_values), np.nan)
    return StepValuation(spot_values=v.spot_values, notional=v.notional, weights=weights, upnl=v.upnl,
                      wallet=v.wallet, nav=v.nav, collateral=v.collateral, base=v.base,
                      nav_base=book.targets_base == TargetsBase.NAV)


def rebalance_futures(book: Book, state: ReplayState, market: MarketSnapshot,
                      contracts: Mapping[str, float]) -> None:
    """Move positions to ``contracts`` through ``Book.with_futures`` (linear positions re-struck at
    mark, their PnL realised into cash; inverse ones by the exchange's fill rule)."""
    moved = state_view(book, state).with_futures(contracts, market)
    state.cash = moved.cash
    state.futures = dict(moved.futures)

