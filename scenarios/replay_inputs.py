"""A market path read as the per-contract inputs of a replay, in book order.

:func:`resolved_marks` (mark closes, USD; the underlying's spot where the path has none),
:func:`funding_matrix` (settlement times, int64 ns, and rates, fraction per settlement),
:func:`impact_vol` (trailing daily volatility of each contract's underlying for the impact term)
and :func:`median_step_days` (the path's typical step, days).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from models.book import Book
from models.errors import ValidationError
from scenarios.market_path import MarketPath

#: Trailing window (steps) of the underlying's volatility used by the impact term.
IMPACT_VOL_WINDOW = 30


def resolved_marks(book: Book, path: MarketPath) -> pd.DataFrame:
    """Mark closes per contract in book order (the underlying's spot where the path has none)."""
    cols: dict[str, pd.Series] = {}
    for c in book.contracts:
        if path.mark is not None and c.symbol in path.mark.columns:
            cols[c.symbol] = path.mark[c.symbol].astype(float)
        elif c.underlying in path.spot.columns:
            cols[c.symbol] = path.spot[c.underlying].astype(float)
        else:
            raise ValidationError(f"market_path.mark.{c.symbol}", "is missing and so is the "
                                  f"spot of {c.underlying}", "give a mark or a spot series")
    return pd.DataFrame(cols, index=path.spot.index, columns=book.contract_symbols, dtype=float)


def funding_matrix(book: Book, path: MarketPath) -> tuple[np.ndarray, np.ndarray]:
    """Settlement times (int64 ns) and rates (S x M, book contract order; 0 where none)."""
    if path.funding is None or len(path.funding.index) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(book.contracts)))
    f = path.funding
    rates = np.zeros((len(f.index), len(book.contracts)))
    for j, c in enumerate(book.contracts):
        if c.symbol in f.columns:
            rates[:, j] = f[c.symbol].to_numpy(dtype=float)
    times = pd.DatetimeIndex(f.index).tz_convert("UTC").as_unit("ns").asi8
    return times, rates


def impact_vol(book: Book, path: MarketPath) -> pd.DataFrame:
    """Daily vol per contract's underlying: trailing std of log returns over the last
    ``IMPACT_VOL_WINDOW`` steps (data up to and including t), scaled to one day by the median step."""
    logret = pd.DataFrame(np.log(path.spot.to_numpy(dtype=float)), index=path.spot.index,
                          columns=path.spot.columns).diff()
    vol = logret.rolling(IMPACT_VOL_WINDOW, min_periods=2).std()
    if len(path.spot.index) > 1:
        step_days = median_step_days(pd.DatetimeIndex(path.spot.index))
        vol = vol / math.sqrt(step_days)
    return pd.DataFrame({c.symbol: vol[c.underlying] for c in book.contracts},
                        index=path.spot.index, columns=book.contract_symbols, dtype=float)


def median_step_days(index: pd.DatetimeIndex) -> float:
    """Median spacing of ``index`` in days (whatever the index's time unit); needs two stamps."""
    ns = index.as_unit("ns").asi8
    return float(np.median(np.diff(ns))) / 86400e9

