"""Policies: one interface for the backtester, the scenarios and the CLI alike.

``policy(book, market, t) -> TargetHoldings``: spot quantities (base units) and futures notional
(signed USD) per contract. An overlay policy leaves spot as it is; a spot policy keeps futures flat.

- :class:`NoRebalance` (buy and hold)
- :class:`CalendarSpotRebalance`, :class:`BandSpotRebalance` (sell/buy spot back to target)
- :class:`NaiveFutures` (the seed rule: per asset, futures notional w*_i V - spot_i, i.e. short the
  overweight dollars and long the underweight, on a calendar or when a band is breached)
- :class:`OptimizedFutures` (the convex optimiser)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from models.book import Book, TargetsBase
from models.errors import InfeasibleError, ValidationError
from models.instruments import MIN_DAYS_TO_EXPIRY
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.tax import TaxLot
from optimizer.checks import blocked_message, order_blockers
from optimizer.rebalance import Decision, Rebalancer
from optimizer.settings import OptimizerSettings
from optimizer.solution import Solution


@dataclass(frozen=True)
class TargetHoldings:
    """What a policy wants held: spot quantities by asset and futures notional (USD) by contract.

    An optimising policy also says how long its solver took (``solve_time_ms``) and how many
    solvers failed before one served (``solver_fallbacks``), and may attach the full ``solution``.

    ``spot_gross``: per asset whose target comes from selling *and* buying in one decision (a loss
    harvest: sell loss lots, buy back), the gross (units sold, units bought), both > 0, with
    ``spot[a] = q_a - sold + bought`` (q_a held now, units). The replay then fills the two legs:
    the sale first (lots by the book's lot method, its tax realised), then the buy (a new lot at the
    buy's price and date), a fee on each. Empty (the default): only the net change is traded.
    """

    spot: dict[str, float]
    futures: dict[str, float]
    solution: Solution | None = field(default=None, compare=False)
    solve_time_ms: float | None = field(default=None, compare=False)
    solver_fallbacks: int = field(default=0, compare=False)
    spot_gross: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.solution is not None and self.solve_time_ms is None:  # stats from the solution
            object.__setattr__(self, "solve_time_ms", float(self.solution.solve_time_ms))
            object.__setattr__(self, "solver_fallbacks", self.solution.fallbacks)


def current_holdings(book: Book, market: MarketSnapshot) -> TargetHoldings:
    """The book as it is, as target holdings (futures as their USD exposure x0,
    ``Book.futures_exposure``, the unit of every policy's futures targets)."""
    x0 = book.futures_exposure(market)
    return TargetHoldings(spot={a: float(book.spot.get(a, 0.0)) for a in book.asset_symbols},
                          futures=dict(zip(book.contract_symbols, map(float, x0), strict=True)))


#: Slack (weight units) of every drift-vs-band test: a drift on the band in decimal (0.52 - 0.5 =
#: 0.020000000000000018 against 0.02) is not a breach; a drift past it by more than 1e-12 is.
BAND_TOL = 1e-12
#: Slack of the targets' sum (1 - sum w* beyond this is cash left out of the targets).
TARGET_SUM_TOL = 1e-9


def breached(drift: float, band: float) -> bool:
    """True when ``drift`` exceeds ``band`` (both weights) by more than ``BAND_TOL``: |d| > b as the
    rules state it, float noise of the weights not counted."""
    return drift > band + BAND_TOL


def max_drift(book: Book, market: MarketSnapshot) -> float:
    """Largest |e_i - w*_i| over assets (effective weights incl. futures)."""
    return float(np.max(np.abs(book.effective_weights(market) - book.target_vector()), initial=0.0))


class Policy(ABC):
    """A rebalancing rule. ``name`` labels it in reports."""

    name: str = "policy"

    @abstractmethod
    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        """Target holdings at time ``t``."""

    def optimiser(self) -> OptimizedFutures | None:
        """The optimising policy that decides this policy's targets: itself, or the one a wrapper
        drives (``scenarios.rolls.RollingPolicy``). A replay reads its settings (the
        funding-forecast rule, the spot leg, the tax) through it. None for a plain rule."""
        return None


class NoRebalance(Policy):
    """Buy and hold: never trades."""

    name = "no_rebalance"

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        return current_holdings(book, market)


@dataclass
class _Trigger:
    """When to act: every ``period`` (calendar) and/or when max drift exceeds ``band`` (by more than
    ``BAND_TOL``: :func:`breached`)."""

    period: pd.Timedelta | None = None
    band: float | None = None
    last: pd.Timestamp | None = None

    def due(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> bool:
        if self.period is not None and (self.last is None or t - self.last >= self.period):
            return True
        return self.band is not None and breached(max_drift(book, market), self.band)


def check_spot_targets(book: Book) -> None:
    """Refuse a spot rebalance (spot traded to w*_i V) on an invested base whose targets sum to
    S < 1: V is then the spot value itself, so each trade sells 1 - S of the spot into the
    wallet and the next one sells 1 - S of what is left (constant prices: 90,000 x 0.9^k)."""
    total = float(book.target_vector().sum())
    if book.targets_base == TargetsBase.INVESTED and total < 1.0 - TARGET_SUM_TOL:
        raise ValidationError(
            "targets", f"sum to {total:.6g} < 1 with targets_base = \"invested\" (V = the spot "
            f"value): a spot rebalance to w*_i V would sell {1.0 - total:.4g} of the spot into the "
            "wallet at every trade, shrinking V each time",
            'set targets_base = "nav" in [book] (the remainder then stays in the wallet), or make '
            "the targets sum to 1")


def _spot_to_target(book: Book, market: MarketSnapshot) -> TargetHoldings:
    """Spot quantities w*_i V / p_i (futures flat); the targets checked by
    :func:`check_spot_targets`."""
    V = book.base(market)
    spot = {a: float(book.targets.get(a, 0.0)) * V / market.spot_price(a) for a in book.asset_symbols}
    return TargetHoldings(spot=spot, futures={c: 0.0 for c in book.contract_symbols})


class CalendarSpotRebalance(Policy):
    """Trade spot back to target every ``period``. Every call refuses targets that sum below 1 on
    an invested base (:func:`check_spot_targets`), before any trade."""

    def __init__(self, period: str | pd.Timedelta = "30D") -> None:
        self.trigger = _Trigger(period=pd.Timedelta(period))
        self.name = f"calendar_spot_{period}"

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        check_spot_targets(book)
        if not self.trigger.due(book, market, t):
            return current_holdings(book, market)
        self.trigger.last = t
        return _spot_to_target(book, market)


class BandSpotRebalance(Policy):
    """Trade spot back to target when any weight drifts more than ``band`` from its target (by more
    than ``BAND_TOL``). Every call refuses targets that sum below 1 on an invested base
    (:func:`check_spot_targets`), before any trade."""

    def __init__(self, band: float = 0.05) -> None:
        self.trigger = _Trigger(band=band)
        self.name = f"band_spot_{band:g}"

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        check_spot_targets(book)
        if not self.trigger.due(book, market, t):
            return current_holdings(book, market)
        return _spot_to_target(book, market)


def hedge_contracts(book: Book, market: MarketSnapshot,
                    min_days: float = MIN_DAYS_TO_EXPIRY) -> dict[str, str]:
    """The contract each asset's naive hedge goes through at ``market.time``: its first contract
    (book order) that is not within ``min_days`` of expiry, so a dated one rolls into the next
    when it nears expiry (where no position may grow); else its first one not yet expired (only
    reduced there); none when every one has expired (the asset stays unhedged)."""
    out: dict[str, str] = {}
    for c in book.contracts:
        if c.underlying not in out and not c.near_expiry(market.time, min_days):
            out[c.underlying] = c.symbol
    for c in book.contracts:
        if c.underlying not in out and not c.near_expiry(market.time, 0.0):
            out[c.underlying] = c.symbol
    return out


def naive_futures_notional(book: Book, market: MarketSnapshot) -> dict[str, float]:
    """The seed rule: B x = w* V - spot, through each asset's hedge contract
    (:func:`hedge_contracts`; the others flat).

    Returns futures notional (USD) by contract. Assets without a contract stay unhedged.
    """
    V = book.base(market)
    spot = book.spot_values(market)
    gap = dict(zip(book.asset_symbols, book.target_vector() * V - spot, strict=True))
    route = hedge_contracts(book, market)
    return {c.symbol: gap[c.underlying] if route.get(c.underlying) == c.symbol else 0.0
            for c in book.contracts}


class NaiveFutures(Policy):
    """The seed article's overlay: short the overweight dollars, long the underweight, on a calendar
    (``period``) and/or when drift exceeds ``band``; spot is never traded.
    """

    def __init__(self, period: str | pd.Timedelta | None = None, band: float | None = None) -> None:
        self.trigger = _Trigger(period=pd.Timedelta(period) if period is not None else None, band=band)
        self.name = "naive_futures" + (f"_{period}" if period else "") + (f"_band{band:g}" if band else "")

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        if not self.trigger.due(book, market, t):
            return held
        self.trigger.last = t
        return TargetHoldings(spot=held.spot, futures=naive_futures_notional(book, market))


Lots = Mapping[str, Sequence[TaxLot]]
"""Tax lots by asset symbol (models.tax.TaxLot), as ``SpotLegSettings.lots`` holds them."""


def gross_spot(assets: Sequence[str], prices: Sequence[float],
               buys_usd: Sequence[float], sells_usd: Sequence[float]) -> dict[str, tuple[float, float]]:
    """The assets both bought and sold (a loss harvest), as (units sold, units bought):
    sold_i = s_i / S_i and bought_i = b_i / S_i for gross sells s_i and buys b_i (USD) at the
    price S_i (USD/unit). Assets traded one way only are left out (their net is the trade)."""
    out: dict[str, tuple[float, float]] = {}
    for a, px, b, s in zip(assets, prices, buys_usd, sells_usd, strict=True):
        if b > 0 and s > 0:
            out[a] = (float(s) / float(px), float(b) / float(px))
    return out


def spot_after_decision(book: Book, dec: Decision) -> dict[str, float]:
    """Spot quantities after the spot leg's trades of ``dec``: q_i + (b_i - q_i^sold) V / S_i
    (units; clipped at 0 against rounding when an asset is sold out). The held quantities when
    the spot leg is off or traded nothing."""
    held = {a: float(book.spot.get(a, 0.0)) for a in book.asset_symbols}
    sd = dec.data.spot
    if dec.spot is None or sd is None:
        return held
    buy, sell = dec.spot
    V = dec.data.V
    for i, a in enumerate(book.asset_symbols):
        if buy[i] == 0 and sell[i] == 0:
            continue
        held[a] = max(held[a] + float(buy[i] - sell[i]) * V / float(sd.prices[i]), 0.0)
    return held


class OptimizedFutures(Policy):
    """The convex optimiser as an overlay policy (spot untouched) or, with the spot leg on
    (``settings.spot.enabled``), as a hybrid: the spot trades of the solution join the target
    spot quantities. The risk model may be fixed or a function of time (re-estimated by the
    caller). Compiled problems are re-used across calls.

    ``lots`` (a call keyword): the tax lots as they stand now (a replay tracks them as spot
    trades). They replace ``settings.spot.lots`` for this call only (a per-call copy of the
    settings; the compiled problem is re-used: only its Parameter values change).
    ``futures_gains`` likewise replaces ``settings.spot.futures_gains`` (USD of unrealised futures
    PnL against the tax entries, by contract; a replay passes its average-cost entries' PnL).

    ``report=True`` attaches the full :class:`Solution` (risk, costs, margin, effective weights;
    with ``explain`` also the binding constraints) to every decision; a replay, which records only
    the positions, leaves it off. The positions are the same either way; without the report, a
    decision no execution path would send (infeasible, or positions that break a hard margin row:
    ``optimizer.checks.order_blockers``, the rule of ``executor.workflow.require_tradeable``)
    raises :class:`~models.errors.InfeasibleError` instead (a replay holds the book there).
    """

    name = "optimized_futures"

    def __init__(self, risk: RiskModel | Callable[[pd.Timestamp], RiskModel],
                 settings: OptimizerSettings | None = None, *, report: bool = False,
                 explain: bool = False) -> None:
        self.risk = risk
        self.settings = settings or OptimizerSettings()
        self.rebalancer = Rebalancer()
        self.report = report
        self.explain = explain

    @property
    def trades_spot(self) -> bool:
        """True when the spot leg is on (the policy may trade spot)."""
        return self.settings.spot.enabled

    def optimiser(self) -> OptimizedFutures:
        """Itself (see :meth:`Policy.optimiser`)."""
        return self

    def settings_for(self, lots: Lots | None,
                     futures_gains: Mapping[str, float] | None = None) -> OptimizerSettings:
        """The settings of one call: ``settings`` with ``spot.lots`` replaced by ``lots`` and
        ``spot.futures_gains`` by ``futures_gains`` (each when given)."""
        spot = self.settings.spot
        if lots is not None:
            spot = replace(spot, lots={a: tuple(ls) for a, ls in lots.items()})
        if futures_gains is not None:
            spot = replace(spot, futures_gains=dict(futures_gains))
        return self.settings if spot is self.settings.spot else replace(self.settings, spot=spot)

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp, *,
                 lots: Lots | None = None,
                 futures_gains: Mapping[str, float] | None = None) -> TargetHoldings:
        risk = self.risk(t) if callable(self.risk) else self.risk
        held = current_holdings(book, market)
        settings = self.settings_for(lots, futures_gains)
        if self.report:
            sol = self.rebalancer.solve(book, market, risk, settings, explain=self.explain)
            fut = {p.symbol: p.notional for p in sol.target_positions}
            spot = dict(held.spot)
            for tr in sol.spot_trades:
                spot[tr.asset] = max(spot[tr.asset] + tr.units, 0.0)
            trades = sol.spot_trades
            legs = gross_spot([t.asset for t in trades], [t.price for t in trades],
                               [t.bought for t in trades], [t.sold for t in trades])
            return TargetHoldings(spot=spot, futures=fut, solution=sol, spot_gross=legs)
        dec = self.rebalancer.decide(book, market, risk, settings)
        x = dec.rounded.z * dec.data.V
        blockers = order_blockers(dec.status, dec.conflicts, dec.post, x, dec.opposing)
        if blockers:  # what every execution path refuses to send (executor.workflow)
            raise InfeasibleError(blocked_message(blockers))
        fut = dict(zip(book.contract_symbols, map(float, x), strict=True))
        spot = spot_after_decision(book, dec) if dec.spot is not None else held.spot
        gross: dict[str, tuple[float, float]] = {}
        if dec.spot is not None and dec.data.spot is not None:
            V = dec.data.V
            gross = gross_spot(book.asset_symbols, [float(p) for p in dec.data.spot.prices],
                               [float(b) * V for b in dec.spot[0]],
                               [float(s) * V for s in dec.spot[1]])
        return TargetHoldings(spot=spot, futures=fut, solve_time_ms=1e3 * dec.solve_s,
                              solver_fallbacks=dec.fallbacks, spot_gross=gross)
