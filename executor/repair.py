"""A rebalance due for safety: the positions held break one of the book's hard margin rows and the
plan repairs it, whatever it does to tracking error.

The hard rows are the optimiser's (``optimizer.checks.hard_row_gaps``): maintenance, the initial
margin row and every stress scenario. The shortfall of positions x is

    S(x) = max(0, max_r gap_r(x))    (USD),

gap_r the USD by which x breaks row r. Those rows count the collateral before a trade's own fees,
spread and impact (DESIGN.md's rows), so a breach no larger than the trading cost C (USD) of the
plan that would repair it is within the rows' own accuracy, and a repair would leave the book
about C short again. A repair is therefore due when

    S(now) - S(after) > C,

``after`` the positions the plan reaches (lot-rounded, after dropped orders). That band keeps a
daily loop from trading at a row's edge each time the market crosses it, and makes a plan that
does not mend the breach (a naive policy's, or one its lots cannot reach) not due on this ground.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from models.book import Book
from models.market import MarketSnapshot
from optimizer.checks import hard_row_gaps, positions_vector
from optimizer.data import ProblemData


@dataclass(frozen=True)
class Repair:
    """The hard rows the positions now break (``broken``: one line per row with its USD), the
    shortfall now and after the plan (USD, >= 0), and the plan's trading cost (USD)."""

    broken: tuple[str, ...]
    shortfall_now: float
    shortfall_after: float
    trading_cost_usd: float

    @property
    def due(self) -> bool:
        """True when the plan mends more shortfall than it costs (module docstring)."""
        return self.shortfall_now - self.shortfall_after > self.trading_cost_usd


def shortfall(gaps: Mapping[str, float]) -> float:
    """S = max(0, the largest gap) (USD)."""
    return max([0.0, *gaps.values()])


def exposures(book: Book, market: MarketSnapshot, contracts: Mapping[str, float],
              d: ProblemData) -> np.ndarray:
    """The USD exposure per contract (``d.contracts`` order) of ``book`` holding ``contracts``
    (by symbol; contracts it does not name are held as they are)."""
    held = book.with_futures(contracts, market)
    x = dict(zip(held.contract_symbols, map(float, held.futures_exposure(market)), strict=True))
    return positions_vector(d, x)


def repair_of(d: ProblemData, book: Book, market: MarketSnapshot, start: Mapping[str, float],
              reachable: Mapping[str, float], trading_cost_usd: float) -> Repair:
    """The repair a plan from ``start`` to ``reachable`` (contracts by symbol) makes, ``d`` the
    problem data of ``book`` at ``market`` (the rows' collateral and scenarios)."""
    now = hard_row_gaps(d, exposures(book, market, start, d))
    after = hard_row_gaps(d, exposures(book, market, reachable, d))
    broken = tuple(f"{row} broken by {gap:,.2f} USD" for row, gap in now.items() if gap > 0)
    return Repair(broken, shortfall(now), shortfall(after), trading_cost_usd)
