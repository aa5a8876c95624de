"""The book a solution's spot trades leave: what its reserve is sized on and what a what-if of the
solution tests.

A spot trade of u_i USD (buy > 0) at price S_i moves asset i by u_i / S_i units and the futures
wallet's stablecoin by -u_i; the trading costs (fees, half spread, impact) are paid in stablecoin
too. So, in USD,

    q_i' = max(q_i + u_i / S_i, 0),   cash' = cash - sum_i u_i - (fees + spread + impact).

Pledged spot follows its quantity through the book's pledge rules, so the collateral after the
trade is exact (not the linearised change the optimiser's rows use). The tax the sales realise is
not a wallet flow here (it is paid later, outside the futures account).
"""

from __future__ import annotations

import math

from models.book import Book
from optimizer.solution import Solution


def book_after_spot(book: Book, solution: Solution) -> Book:
    """``book`` after ``solution``'s spot trades (module docstring); ``book`` itself when the
    solution trades no spot."""
    if not solution.spot_trades:
        return book
    spot = {a: float(book.spot.get(a, 0.0)) for a in book.asset_symbols}
    for t in solution.spot_trades:
        spot[t.asset] = max(spot[t.asset] + t.units, 0.0)
    paid = math.fsum(t.notional for t in solution.spot_trades)
    costs = solution.spot_costs.trading if solution.spot_costs is not None else 0.0
    return book.evolve(spot=spot, cash=book.cash - paid - costs)
