"""Distance to liquidation of a cross-margined book: the smallest price moves that liquidate it
(:func:`liquidation_move`, :func:`liquidation_moves`, :class:`LiquidationMove`), and the
backtester's liquidation rule (:func:`is_liquidated`). Shared by the what-if
and ``fbr status`` (``executor.status``).

Units: moves are simple returns (fractions); surpluses USD.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import brentq

from models.book import Book
from models.margin import MarginModel, margin_state
from models.market import MarketSnapshot
from models.price_moves import move_prices

#: Smallest price factor searched for a down move: r = -1 + this.
DOWN_LIMIT = 1e-9
#: Root tolerance of the liquidation move (absolute, in return units).
MOVE_XTOL = 1e-12


def is_liquidated(book: Book, market: MarketSnapshot) -> bool:
    """The backtester's rule (``MarginState.liquidated``): a position is open and collateral <=
    maintenance (equality liquidates)."""
    v = book.valuation(market)
    return margin_state(MarginModel.from_contracts(book.contracts), v.notional, v.collateral).liquidated


@dataclass(frozen=True)
class LiquidationMove:
    """The price moves (simple returns) of ``assets`` that liquidate the cross-margined book.

    ``scope``: "book" (every asset moves: the common move) or a contract symbol (its underlying
    moves alone). ``down`` in (-1, 0) / ``up`` > 0: the smallest such moves, None when no move in
    that direction liquidates (down: none above -100%; up: none at all). ``surplus`` is the margin
    surplus now (USD); when it is already <= 0 (liquidated now: equality liquidates) both moves
    are 0. ``has_positions``: False when no position is open (nothing to liquidate).
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
    if s0 <= 0:
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
