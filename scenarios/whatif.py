"""What-if: apply a scenario (``scenarios.shocks``) to a book and report what happens.

Units: USD for money, fractions for weights, returns and rates; tracking error annualised.

Applying a scenario (book with spot q_i, positions x_j (signed USD at mark), cash, market):

- prices: spot'_i = spot_i (1 + r_i), r_i = the asset's own move, else ``common``, else 0; marks
  mark'_j = mark_j (1 + r_u(j)) (1 + b_j) with b_j the basis shock of contract j;
- PnL split: spot = sum_i q_i (spot'_i - spot_i); futures = uPnL' - uPnL (``Book.unrealized_pnl``,
  linear and inverse); funding = - sum_j n_j (f_j + df_j) x'_j over the scenario's n_j settlements
  (perpetuals; longs pay when the rate is > 0), paid from the wallet's cash;
- NAV' = NAV + spot + futures + funding; effective weights e' = (spot' + B x') / V';
- margin: the backtester's check (``models.margin.margin_state``, the one margin engine):
  liquidated when a position is open and collateral' < sum_j MM_j(|x'_j|); then every position is
  closed at mark and ``liquidation_penalty`` x |x'| is paid (as ``scenarios.replay.run_backtest``);
- pledged spot (``Book.pledged``) is re-priced through its rule: collateral' = W' + sum_i
  C_i(u_i (1 + r_i)) (W' = cash + uPnL', u_i the pledged USD value before the shock, C_i the
  asset's rule, ``models.collateral``). A Portfolio Margin holding pushed across a tier edge by an
  up move gains collateral at the next tier's lower rate only: tiers [0, 1M, 0.95], [1M, 5M, 0.9]
  and u = 900k USD with r = +30% give C = 0.95 x 1M + 0.9 x 0.17M = 1,103,000 USD (not
  0.95 x 1.17M = 1,111,500). ``pledged_before`` / ``pledged_after`` report sum_i C_i (USD);
- funding until liquidation: the price shock is instantaneous, then contract j settles every h_j
  hours (its ``funding_interval_h``), n_j times, paying a_j = (f_j + df_j) x'_j each time (marks
  stay at the shocked level, so x'_j and MM are fixed). The surplus after the settlements up to
  time tau is S(tau) = S_0 - sum_j a_j floor(min(tau / h_j, n_j)), S_0 = collateral' - MM' before
  any funding. The book is checked after every settlement time (the shared rule
  ``MarginState.liquidated``): at the first tau with S(tau) < 0 it is liquidated and no later
  settlement is paid (no position is left to pay on). So a funding shock over any horizon loses
  at most S_0 plus one settlement time's payments and the penalty: funding stops where the wallet
  is liquidated (``liquidated_after_h``), as the replay would stop it. The penalty is capped at
  the NAV left after closing (the account cannot lose more than it holds), so NAV' >= 0;
- risk: vol multipliers m_i and a correlation blend give Sigma' = D' C' D' (D' = diag(m_i sigma_i),
  C' = (1 - lam) C + lam (rho 11' + (1 - rho) I)); spread and liquidity multiply the half spreads and
  ADV the re-solve's cost model sees;
- next move: ``optimizer.rebalance.Rebalancer.solve`` on the shocked book, market and risk.

Distance to liquidation (``liquidation_move``): the margin surplus S(r) = collateral(r) - sum_j
MM_j(|x_j(r)|) when the prices of a set of assets (one contract's underlying, or every asset: the
common move) move by r, marks with them (basis kept), nothing traded. x_j(r) = x_j (1 + r) for linear
contracts (fixed for inverse ones) and uPnL, pledged spot are affine in r, MM_j is convex, so S is
concave and piecewise linear on r > -1: {S >= 0} is an interval, with at most one root below 0 (the
down move that liquidates) and one above (the up move). Each is found by Brent's method on the exact
S (evaluated through ``Book.valuation`` and ``margin_state``, as the backtester does); beyond the last
tier break (of the maintenance tiers and of the pledged collateral tiers) S is linear, which decides
whether an up move liquidates at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import brentq

from models.book import Book
from models.errors import FbrError, ValidationError
from models.instruments import ContractKind
from models.margin import LIQUIDATION_PENALTY, MarginModel, MarginState, margin_state
from models.market import MarketSnapshot
from models.risk import RiskModel, tracking_error
from optimizer.rebalance import Rebalancer
from optimizer.settings import OptimizerSettings
from optimizer.solution import Solution
from scenarios.shocks import Scenario, Shock, ShockKind

#: Smallest price factor searched for a down move: r = -1 + this.
DOWN_LIMIT = 1e-9
#: Root tolerance of the liquidation move (absolute, in return units).
MOVE_XTOL = 1e-12
#: Half spreads are capped below the market snapshot's limit of 0.5.
MAX_HALF_SPREAD = 0.4999


# ---------------------------------------------------------------------------------------------
# resolving shocks against a book


@dataclass(frozen=True)
class AppliedShocks:
    """A scenario resolved against a book: per asset (N, book order) and per contract (M).

    ``returns`` r_i; ``mark_factor`` (1 + r_u(j)) (1 + b_j); ``funding_add`` df_j (per interval);
    ``settlements`` n_j (0 for dated futures); ``vol_mult`` m_i; ``corr`` (rho, lam) or None;
    ``spread_mult`` (contracts) and ``spot_spread_mult`` (assets); ``adv_mult`` (contracts).
    """

    returns: np.ndarray
    mark_factor: np.ndarray
    funding_add: np.ndarray
    settlements: np.ndarray
    vol_mult: np.ndarray
    corr: tuple[float, float] | None
    spread_mult: np.ndarray
    spot_spread_mult: np.ndarray
    adv_mult: np.ndarray


def _unknown(scenario: Scenario, shock: Shock, what: str, known: Sequence[str]) -> ValidationError:
    return ValidationError(f"scenario {scenario.name!r}: shock {shock.text or shock.key!r}",
                           f"names {shock.target!r}, not {what} of the book",
                           f"use one of {list(known)}")


def _contract_targets(scenario: Scenario, shock: Shock, book: Book) -> list[int]:
    """Contract indices a (possibly targeted) shock applies to: all, one contract, or every
    contract on one asset (none for an unknown symbol of a non-strict scenario)."""
    cons = book.contract_symbols
    if shock.target is None:
        return list(range(len(cons)))
    if shock.target in cons:
        return [cons.index(shock.target)]
    if shock.target in book.asset_symbols:
        return [j for j, c in enumerate(book.contracts) if c.underlying == shock.target]
    if not scenario.strict:
        return []
    raise _unknown(scenario, shock, "a contract or asset", cons + book.asset_symbols)


def _ordered(shocks: list[Shock]) -> list[Shock]:
    """Global shocks first, then targeted ones (the more specific one wins)."""
    return [s for s in shocks if s.target is None] + [s for s in shocks if s.target is not None]


def resolve_shocks(scenario: Scenario, book: Book) -> AppliedShocks:
    """Resolve ``scenario`` against ``book``: unknown symbols are a clear error."""
    assets = book.asset_symbols
    N, M = len(assets), len(book.contracts)
    common = scenario.of_kind(ShockKind.COMMON)
    returns = np.full(N, common[0].value if common else 0.0)
    for s in scenario.of_kind(ShockKind.PRICE):
        if s.target not in assets:
            if not scenario.strict:
                continue
            raise _unknown(scenario, s, "an asset", assets)
        returns[assets.index(str(s.target))] = s.value
    basis = np.zeros(M)
    for s in _ordered(scenario.of_kind(ShockKind.BASIS)):
        basis[_contract_targets(scenario, s, book)] = s.value
    under = np.array([assets.index(c.underlying) for c in book.contracts], dtype=int)
    mark_factor = (1.0 + returns[under]) * (1.0 + basis) if M else np.zeros(0)

    funding = np.zeros(M)
    fshocks = scenario.of_kind(ShockKind.FUNDING)
    for s in _ordered(fshocks):
        funding[_contract_targets(scenario, s, book)] = s.value
    perp = np.array([c.kind == ContractKind.PERPETUAL for c in book.contracts], dtype=bool)
    horizon = scenario.of_kind(ShockKind.HORIZON)
    if horizon and horizon[0].hours is not None:
        hours = float(horizon[0].hours)
        n = np.array([math.floor(hours / c.funding_interval_h + 1e-9) for c in book.contracts],
                     dtype=float)
    else:
        count = horizon[0].value if horizon else (1.0 if fshocks else 0.0)
        n = np.full(M, count)
    settlements = np.where(perp, n, 0.0)

    vol = np.ones(N)
    for s in _ordered(scenario.of_kind(ShockKind.VOL)):
        if s.target is None:
            vol[:] = s.value
        elif s.target in assets:
            vol[assets.index(s.target)] = s.value
        elif scenario.strict:
            raise _unknown(scenario, s, "an asset", assets)
    corr_shocks = scenario.of_kind(ShockKind.CORR)
    corr = (corr_shocks[0].value, corr_shocks[0].weight) if corr_shocks else None

    spread = np.ones(M)
    spot_spread = np.ones(N)
    for s in _ordered(scenario.of_kind(ShockKind.SPREAD)):
        spread[_contract_targets(scenario, s, book)] = s.value
        if s.target is None:
            spot_spread[:] = s.value
        elif s.target in assets:
            spot_spread[assets.index(s.target)] = s.value
    adv = np.ones(M)
    for s in _ordered(scenario.of_kind(ShockKind.LIQUIDITY)):
        adv[_contract_targets(scenario, s, book)] = s.value
    return AppliedShocks(returns=returns, mark_factor=mark_factor, funding_add=funding,
                         settlements=settlements, vol_mult=vol, corr=corr, spread_mult=spread,
                         spot_spread_mult=spot_spread, adv_mult=adv)


# ---------------------------------------------------------------------------------------------
# shocked market and risk


def move_prices(book: Book, market: MarketSnapshot, returns: np.ndarray,
                mark_factor: np.ndarray | None = None) -> MarketSnapshot:
    """``market`` with book asset i's spot times (1 + r_i) and contract j's mark times
    ``mark_factor_j`` (default: its underlying's 1 + r, so the basis is kept)."""
    assets = book.asset_symbols
    if mark_factor is None:
        idx = {a: i for i, a in enumerate(assets)}
        mark_factor = np.array([1.0 + returns[idx[c.underlying]] for c in book.contracts])
    spot = dict(market.spot)
    for i, a in enumerate(assets):
        spot[a] = market.spot_price(a) * (1.0 + float(returns[i]))
    mark = dict(market.mark)
    for j, c in enumerate(book.contracts):
        mark[c.symbol] = market.mark_price(c.symbol) * float(mark_factor[j])
    return replace(market, spot=spot, mark=mark)


def shock_market(book: Book, market: MarketSnapshot, applied: AppliedShocks) -> MarketSnapshot:
    """The market after the shocks: prices, marks, funding rates, half spreads and ADV."""
    moved = move_prices(book, market, applied.returns, applied.mark_factor)
    funding = dict(market.funding)
    half = dict(market.half_spread)
    adv = dict(market.adv)
    for j, c in enumerate(book.contracts):
        rate = market.funding_rate(c.symbol) + float(applied.funding_add[j])
        if not abs(rate) < 1.0:
            raise ValidationError(f"funding.{c.symbol}", f"becomes {rate:g} per interval",
                                  "give a funding shock that keeps the rate in (-1, 1)")
        if applied.funding_add[j] != 0.0 or c.symbol in funding:
            funding[c.symbol] = rate
        if applied.spread_mult[j] != 1.0:
            half[c.symbol] = min(market.contract_half_spread(c.symbol) * float(applied.spread_mult[j]),
                                 MAX_HALF_SPREAD)
        a = market.contract_adv(c.symbol)
        if applied.adv_mult[j] != 1.0 and math.isfinite(a):
            adv[c.symbol] = a * float(applied.adv_mult[j])
    spot_half = dict(market.spot_half_spread)
    for i, s in enumerate(book.asset_symbols):
        if s in spot_half:
            spot_half[s] = min(float(spot_half[s]) * float(applied.spot_spread_mult[i]), MAX_HALF_SPREAD)
    return replace(moved, funding=funding, half_spread=half, adv=adv, spot_half_spread=spot_half)


def shock_risk(risk: RiskModel, book: Book, applied: AppliedShocks) -> RiskModel:
    """Sigma' = D' C' D' (see the module docstring); ``risk`` itself when no vol/corr shock."""
    if applied.corr is None and np.all(applied.vol_mult == 1.0):
        return risk
    cov = risk.covariance
    vol = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    safe = np.where(vol > 0, vol, 1.0)
    C = cov / np.outer(safe, safe)
    if applied.corr is not None:
        rho, lam = applied.corr
        n = len(vol)
        C = (1.0 - lam) * C + lam * (rho * np.ones((n, n)) + (1.0 - rho) * np.eye(n))
    mult = np.ones(len(vol))
    pos = {s: k for k, s in enumerate(risk.symbols)}
    for i, a in enumerate(book.asset_symbols):
        if a in pos:
            mult[pos[a]] = applied.vol_mult[i]
    v2 = vol * mult
    shocked = RiskModel.from_covariance(risk.symbols, C * np.outer(v2, v2),
                                        method=f"{risk.method} (shocked)")
    return replace(shocked, basis_cov=risk.basis_cov)


# ---------------------------------------------------------------------------------------------
# margin and distance to liquidation


def is_liquidated(book: Book, market: MarketSnapshot) -> bool:
    """The backtester's rule: a position is open and collateral < maintenance."""
    v = book.valuation(market)
    return margin_state(MarginModel.from_contracts(book.contracts), v.notional, v.collateral).liquidated


@dataclass(frozen=True)
class LiquidationMove:
    """The price moves (simple returns) of ``assets`` that liquidate the cross-margined book.

    ``scope``: "book" (every asset moves: the common move) or a contract symbol (its underlying
    moves alone). ``down`` in (-1, 0) / ``up`` > 0: the smallest such moves, None when no move in
    that direction liquidates (down: none above -100%; up: none at all). ``surplus`` is the margin
    surplus now (USD); when it is already < 0 both moves are 0. ``has_positions``: False when no
    position is open (nothing to liquidate).
    """

    scope: str
    assets: tuple[str, ...]
    down: float | None
    up: float | None
    surplus: float
    has_positions: bool = True

    @property
    def nearest(self) -> float | None:
        """The liquidating move of smallest size, None when none liquidates."""
        moves = [m for m in (self.down, self.up) if m is not None]
        return min(moves, key=abs) if moves else None


def _surplus_fn(book: Book, market: MarketSnapshot, assets: Sequence[str]
                ) -> Callable[[float], float]:
    mm = MarginModel.from_contracts(book.contracts)
    mask = np.array([a in set(assets) for a in book.asset_symbols], dtype=float)

    def surplus(r: float) -> float:
        v = book.valuation(move_prices(book, market, mask * r))
        return v.collateral - margin_state(mm, v.notional, v.collateral).maintenance

    return surplus


def _linear_from(book: Book, market: MarketSnapshot, assets: Sequence[str]) -> float:
    """A move beyond which S(r) is linear: every moving linear position is past its last tier
    break, and every moving pledged holding past its collateral rule's last tier edge (a holding of
    pledged value u_i crosses edge M_k at r = M_k / u_i - 1; beyond the last, C_i is linear: the
    open tier's rate, or 0 above a capped last tier)."""
    mm = MarginModel.from_contracts(book.contracts)
    x = np.abs(book.futures_notional(market))
    out = 1.0
    for j, c in enumerate(book.contracts):
        if c.underlying not in assets or x[j] == 0:
            continue
        lo = mm.lo[j][np.isfinite(mm.lo[j])]
        if lo.size:
            out = max(out, float(lo.max()) / x[j] - 1.0)
    if book.pledged:
        u = book.pledged_usd(book.spot_values(market))
        for i, rule in enumerate(book.pledge_rules()):
            edges = rule.edges() if rule is not None else ()
            if book.asset_symbols[i] in assets and u[i] > 0 and edges:
                out = max(out, max(edges) / float(u[i]) - 1.0)
    return out


def liquidation_move(book: Book, market: MarketSnapshot, assets: Sequence[str] | None = None,
                     *, scope: str = "book") -> LiquidationMove:
    """The moves of ``assets`` (default: every asset) that liquidate ``book`` (see the module
    docstring: Brent's method on the concave, piecewise linear margin surplus)."""
    moving = tuple(book.asset_symbols if assets is None else assets)
    f = _surplus_fn(book, market, moving)
    s0 = f(0.0)
    if not np.any(book.futures_notional(market) != 0):
        return LiquidationMove(scope, moving, None, None, s0, has_positions=False)
    if s0 < 0:
        return LiquidationMove(scope, moving, 0.0, 0.0, s0)
    down: float | None = None
    lo = -1.0 + DOWN_LIMIT
    if f(lo) < 0:
        down = float(brentq(f, lo, 0.0, xtol=MOVE_XTOL))
    up: float | None = None
    R = 2.0 * _linear_from(book, market, moving) + 1.0
    fR = f(R)
    if fR < 0:
        up = float(brentq(f, 0.0, R, xtol=MOVE_XTOL))
    else:
        slope = f(2.0 * R) - fR  # per R of move, linear beyond R
        if slope < 0:
            hi = R + R * fR / -slope
            hi = hi * 1.01 + 1.0
            up = float(brentq(f, R, hi, xtol=MOVE_XTOL))
    return LiquidationMove(scope, moving, down, up, s0)


def liquidation_moves(book: Book, market: MarketSnapshot) -> tuple[LiquidationMove, ...]:
    """The common move of the whole book, then one per open contract (its underlying alone)."""
    x = book.futures_notional(market)
    out = [liquidation_move(book, market, None, scope="book")]
    cache: dict[str, LiquidationMove] = {}
    for j, c in enumerate(book.contracts):
        if x[j] == 0:
            continue
        if c.underlying not in cache:
            cache[c.underlying] = liquidation_move(book, market, [c.underlying], scope=c.symbol)
        out.append(replace(cache[c.underlying], scope=c.symbol))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# funding, settlement by settlement, until the wallet is liquidated

#: Settlement times examined per chunk (the search never holds more in memory).
FUNDING_CHUNK = 1_000_000


@dataclass(frozen=True)
class FundingRun:
    """Funding over the scenario's settlements, stopped by a liquidation.

    ``settled`` n'_j: settlements paid per contract (n_j, or those at or before the liquidation);
    ``paid`` = sum_j a_j n'_j (USD, + = paid); ``liquidated_after_h``: hours after the shock at
    which the surplus first went below 0 (0.0: the price move alone; None: never).
    """

    settled: np.ndarray
    paid: float
    liquidated_after_h: float | None


def _settlement_times(hours: np.ndarray, counts: np.ndarray, lo: float, hi: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Every settlement time in (lo, hi] (hours) and the contract that settles then."""
    times, who = [], []
    for j, (h, n) in enumerate(zip(hours, counts, strict=True)):
        k0, k1 = math.floor(lo / h + 1e-9) + 1, min(math.floor(hi / h + 1e-9), int(n))
        if k1 >= k0:
            times.append(h * np.arange(k0, k1 + 1, dtype=float))
            who.append(np.full(k1 - k0 + 1, j))
    if not times:
        return np.zeros(0), np.zeros(0, dtype=int)
    t, w = np.concatenate(times), np.concatenate(who)
    order = np.argsort(t, kind="stable")
    return t[order], w[order]


def funding_until_liquidation(payments: np.ndarray, counts: np.ndarray, hours: np.ndarray,
                              surplus0: float, has_positions: bool) -> FundingRun:
    """Pay settlement times in order until the surplus S(tau) (module docstring) is < 0.

    ``payments`` a_j (USD per settlement, + = paid), ``counts`` n_j, ``hours`` h_j; ``surplus0``
    S_0 = collateral - maintenance after the price shock. Exact for any horizon: settlement times
    are examined in chunks of about ``FUNDING_CHUNK``; when no payment is negative (S only falls)
    the end is checked first, and when none is positive S never falls, so those cost no search.
    """
    counts = np.asarray(counts, dtype=float)
    active = (counts > 0) & (payments != 0)
    if has_positions and surplus0 < 0:
        return FundingRun(np.zeros_like(counts), 0.0, 0.0)
    total = float(payments[active] @ counts[active]) if active.any() else 0.0
    if (not has_positions or not active.any() or np.all(payments[active] <= 0)
            or (np.all(payments[active] >= 0) and surplus0 - total >= 0)):
        return FundingRun(counts.copy(), total, None)
    h, n, a = hours[active], counts[active], payments[active]
    end = float((h * n).max())
    width = FUNDING_CHUNK / float(np.sum(1.0 / h))
    lo, cum = 0.0, 0.0
    while lo < end:
        hi = min(lo + width, end)
        t, who = _settlement_times(h, n, lo, hi)
        if len(t):
            uniq, first = np.unique(t, return_index=True)
            path = cum + np.cumsum(np.add.reduceat(a[who], first))
            below = np.flatnonzero(surplus0 - path < 0)
            if below.size:
                tau = float(uniq[below[0]])
                paid_n = np.minimum(np.floor(tau / h + 1e-9), n)
                settled = counts.copy()
                settled[active] = paid_n
                return FundingRun(settled, float(a @ paid_n), tau)
            cum = float(path[-1])
        lo = hi
    return FundingRun(counts.copy(), total, None)


# ---------------------------------------------------------------------------------------------
# the what-if


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
class WhatIfResult:
    """What a scenario does to a book (see the module docstring).

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
    ``has_pledged`` False when the book pledges nothing).
    """

    scenario: Scenario
    positions: str
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

    @property
    def drift(self) -> dict[str, float]:
        """Effective weight after the shock less the target, per asset."""
        return {a: self.weights_after[a] - self.targets.get(a, 0.0) for a in self.weights_after}

    @property
    def liquidation_penalty(self) -> float:
        """Penalty paid by the liquidation (USD; 0 without one): NAV' = NAV + PnL - penalty."""
        return sum(x.penalty for x in self.liquidations)

    @property
    def margin_surplus_after(self) -> float:
        """collateral - maintenance after the shock (USD); < 0 liquidates."""
        return self.margin_after.collateral - self.margin_after.maintenance

    def to_dict(self) -> dict[str, Any]:
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
                   "binding_constraints": [b.name for b in s.binding_constraints],
                   "messages": list(s.messages)}
        out: dict[str, Any] = {
            "scenario": self.scenario.name, "description": self.scenario.description,
            "source": self.scenario.source, "shocks": self.scenario.shock_texts,
            "positions": self.positions,
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
            "liquidations": [{"contract": x.contract, "notional": x.notional,
                              "maintenance": x.maintenance, "penalty": x.penalty}
                             for x in self.liquidations],
            "liquidation_move_before": moves(self.distance_before),
            "liquidation_move_after": moves(self.distance_after),
            "next": nxt, "next_error": self.next_error,
        }
        if self.has_pledged:
            out["pledged_collateral"] = {"before": self.pledged_before, "after": self.pledged_after}
        return _clean(out)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _weights(book: Book, market: MarketSnapshot) -> np.ndarray:
    v = book.valuation(market)
    if v.base == 0:
        return np.full(len(book.assets), math.nan)
    return np.asarray((v.spot_values + book.exposure_matrix() @ v.notional) / v.base, dtype=float)


def _te(book: Book, weights: np.ndarray, risk: RiskModel) -> float:
    return tracking_error(weights - book.target_vector(), risk.subset(book.asset_symbols).covariance)


def apply_solution(book: Book, market: MarketSnapshot, solution: Solution) -> Book:
    """``book`` holding the positions ``solution`` proposes (re-struck at mark, no fees): the hedge
    to test before it is traded."""
    return book.with_futures({p.symbol: p.contracts for p in solution.target_positions}, market)


def _liquidations(book: Book, mm: MarginModel, notional: np.ndarray, penalty_rate: float,
                  nav_closed: float) -> tuple[Liquidation, ...]:
    """The positions closed, each charged ``penalty_rate`` x |x'_j| (the replay's rule), scaled
    down pro rata when the total exceeds max(NAV after closing, 0): an account cannot lose more
    than it holds (the exchange's insurance fund takes the rest), so NAV' >= 0."""
    per_mm = mm.maintenance(notional)
    raw = penalty_rate * np.abs(np.asarray(notional, dtype=float))
    total = float(raw.sum())
    scale = min(1.0, max(nav_closed, 0.0) / total) if total > 0 else 1.0
    return tuple(Liquidation(c, float(notional[j]), float(per_mm[j]), float(raw[j] * scale))
                 for j, c in enumerate(book.contract_symbols) if notional[j] != 0)


def run_whatif(book: Book, market: MarketSnapshot, risk: RiskModel, scenario: Scenario,
               settings: OptimizerSettings | None = None, *, resolve: bool = True,
               positions: str = "current", rebalancer: Rebalancer | None = None,
               liquidation_penalty: float = LIQUIDATION_PENALTY,
               distances: bool = True) -> WhatIfResult:
    """Apply ``scenario`` to ``book`` at ``market`` (see the module docstring).

    ``resolve``: re-solve the shocked book with ``settings`` (a failure is reported in
    ``next_error``, not raised); ``positions`` labels the positions tested ("current" or
    "solution", see :func:`apply_solution`); ``distances``: compute the liquidation moves.
    """
    applied = resolve_shocks(scenario, book)
    mm = MarginModel.from_contracts(book.contracts)
    v0 = book.valuation(market)
    shocked = shock_market(book, market, applied)
    v1 = book.valuation(shocked)
    rates = np.array([shocked.funding_rate(c) for c in book.contract_symbols], dtype=float)
    m_shock = margin_state(mm, v1.notional, v1.collateral)
    run = funding_until_liquidation(
        rates * v1.notional, applied.settlements,
        np.array([c.funding_interval_h for c in book.contracts], dtype=float),
        m_shock.collateral - m_shock.maintenance, m_shock.has_positions)
    paid = run.paid
    book1 = book.evolve(cash=book.cash - paid)
    v1 = book1.valuation(shocked)
    m_before = margin_state(mm, v0.notional, v0.collateral)
    m_after = margin_state(mm, v1.notional, v1.collateral)
    liquidated = m_after.liquidated
    liqs: tuple[Liquidation, ...] = ()
    after = book1
    if liquidated:
        closed = book1.with_futures(dict.fromkeys(book.contract_symbols, 0.0), shocked)
        liqs = _liquidations(book, mm, v1.notional, liquidation_penalty,
                             closed.valuation(shocked).nav)
        after = closed.evolve(cash=closed.cash - sum(x.penalty for x in liqs))
    risk1 = shock_risk(risk, book, applied)
    w0, w1 = _weights(book, market), _weights(after, shocked)
    assets = book.asset_symbols
    nxt: Solution | None = None
    err: str | None = None
    if resolve:
        try:
            nxt = (rebalancer or Rebalancer()).solve(after, shocked, risk1,
                                                    settings or OptimizerSettings())
        except FbrError as exc:
            err = str(exc)
    return WhatIfResult(
        scenario=scenario, positions=positions, nav_before=v0.nav,
        nav_after=after.valuation(shocked).nav,
        pnl=PnLSplit(spot=float(v1.spot_values.sum() - v0.spot_values.sum()),
                     futures=v1.upnl - v0.upnl, funding=0.0 - paid),
        targets=dict(zip(assets, map(float, book.target_vector()), strict=True)),
        weights_before=dict(zip(assets, map(float, w0), strict=True)),
        weights_after=dict(zip(assets, map(float, w1), strict=True)),
        tracking_error_before=_te(book, w0, risk), tracking_error_after=_te(after, w1, risk1),
        margin_before=m_before, margin_after=m_after, liquidated=liquidated, liquidations=liqs,
        distance_before=liquidation_moves(book, market) if distances else (),
        distance_after=liquidation_moves(after, shocked) if distances else (),
        settlements={c: float(n) for c, n in zip(book.contract_symbols, run.settled,
                                                 strict=True) if n},
        next_solution=nxt, next_error=err, shocked_book=after, shocked_market=shocked,
        settlements_asked={c: float(n) for c, n in zip(book.contract_symbols, applied.settlements,
                                                       strict=True) if n},
        liquidated_after_h=run.liquidated_after_h if liquidated else None,
        has_pledged=bool(book.pledged),
        pledged_before=book.pledged_collateral(v0.spot_values) if book.pledged else 0.0,
        pledged_after=book.pledged_collateral(v1.spot_values) if book.pledged else 0.0,
    )
