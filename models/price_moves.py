"""Prices after a move of the book's assets (:func:`move_prices`): spot times (1 + r_i), each
contract's mark times its factor (default: its underlying's 1 + r, the basis kept).

Units: returns and factors are fractions; prices USD. Used by the what-if shocks
(``scenarios.applied_shocks``) and by the distance to liquidation (``models.liquidation_distance``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from models.book import Book
from models.market import MarketSnapshot


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
