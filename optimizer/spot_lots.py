"""The spot leg's trades on each asset's quantity step (``[[assets]] lot_step``, base units; 0 =
none), as the exchange takes spot orders.

A buy of b (weights) is b V / p units; it becomes the nearest multiple of the step (half to even).
A sale likewise, but never more than the whole steps of the holding (floor(h / step) steps): a
holding that is not a whole number of steps cannot be sold whole. The rounded trades are what the
solution reports and prices (fees, spread, impact, tax) and what the futures rounding re-checks
the constraints after (``optimizer.rebalance``); with every step 0 the trades are returned as
they are."""

from __future__ import annotations

import numpy as np


def _on_steps(units: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``units`` to the nearest multiple of ``step`` (half to even) where step > 0."""
    has = step > 0
    safe = np.where(has, step, 1.0)
    out: np.ndarray = np.where(has, np.round(units / safe) * safe, units)
    return out


def round_spot_lots(buy: np.ndarray, sell: np.ndarray, prices: np.ndarray, holdings: np.ndarray,
                    step: np.ndarray, V: float) -> tuple[np.ndarray, np.ndarray]:
    """(buy, sell) (weights, >= 0) with their units on each asset's ``step`` (base units);
    ``prices`` USD per unit, ``holdings`` units held before the trade."""
    if not np.any(step > 0):
        return buy, sell
    bought = _on_steps(buy * V / prices, step)
    has = step > 0
    whole = np.where(has, np.floor(holdings / np.where(has, step, 1.0) + 1e-9) * step, holdings)
    sold = np.minimum(_on_steps(sell * V / prices, step), np.where(has, whole, np.inf))
    out_buy: np.ndarray = np.maximum(bought, 0.0) * prices / V
    out_sell: np.ndarray = np.maximum(sold, 0.0) * prices / V
    return out_buy, out_sell
