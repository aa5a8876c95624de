"""A rebalance due for safety: the positions held break one of the book's hard margin rows and the
plan repairs it, whatever it does to tracking error.

The hard rows are the optimiser's (``optimizer.checks.hard_row_gaps``): maintenance, the initial
margin row and every stress scenario, on the exchange's notional of the positions (an inverse
position's face, as the liquidation check and ``fbr status``'s margin view count it). The
shortfall of positions x is

    S(x) = max(0, max_r gap_r(x))    (USD),

gap_r the USD by which x breaks row r. Those rows count the collateral before a trade's own fees
and spread (DESIGN.md's rows), so the optimiser's repair lands on a row's edge before its fees and
is short by about those fees after them; a breach that small is within the rows' accuracy. The
band is what trading the positions held costs, B = sum_j (fee_j + half_spread_j) |x_j| (USD): a
repair's own fees stay inside it (it trades less than it holds, or its next repair is a sliver of
it), so a loop does not repair again at an unchanged market, nor trade at a row's edge each time
the market crosses it. A repair is due when

    S(now) > B   and   S(now) - S(after) > C,

C the plan's trading cost (USD) and ``after`` the positions the plan reaches (lot-rounded, after
dropped orders): a plan that does not mend the breach by more than it costs (a naive policy's, or
one its lots cannot reach) is not due on this ground.
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
    shortfall now and after the plan (USD, >= 0), the plan's trading cost and the band (USD)."""

    broken: tuple[str, ...]
    shortfall_now: float
    shortfall_after: float
    trading_cost_usd: float
    band_usd: float = 0.0

    @property
    def due(self) -> bool:
        """True when the breach passes the band and the plan mends more of it than it costs
        (module docstring)."""
        return (self.shortfall_now > self.band_usd
                and self.shortfall_now - self.shortfall_after > self.trading_cost_usd)


def shortfall(gaps: Mapping[str, float]) -> float:
    """S = max(0, the largest gap) (USD)."""
    return max([0.0, *gaps.values()])


def notionals(book: Book, market: MarketSnapshot, contracts: Mapping[str, float],
              d: ProblemData) -> np.ndarray:
    """The exchange's signed notional per contract (USD, ``d.contracts`` order; inverse: the face)
    of ``book`` holding ``contracts`` (by symbol; contracts it does not name are held as they
    are), traded at the mark by the exchange's fill rule (``Book.with_futures``)."""
    held = book.with_futures(contracts, market)
    x = dict(zip(held.contract_symbols, map(float, held.futures_notional(market)), strict=True))
    return positions_vector(d, x)


def repair_of(d: ProblemData, book: Book, market: MarketSnapshot, start: Mapping[str, float],
              reachable: Mapping[str, float], trading_cost_usd: float) -> Repair:
    """The repair a plan from ``start`` to ``reachable`` (contracts by symbol) makes, ``d`` the
    problem data of ``book`` at ``market`` (the rows' collateral, scenarios and costs)."""
    x_now = notionals(book, market, start, d)
    now = hard_row_gaps(d, x_now)
    after = hard_row_gaps(d, notionals(book, market, reachable, d))
    band = d.costs.fees(x_now) + d.costs.spread(x_now)
    broken = tuple(f"{row} broken by {gap:,.2f} USD" for row, gap in now.items() if gap > 0)
    return Repair(broken, shortfall(now), shortfall(after), trading_cost_usd, band)
