"""Trading cost models (USD), used by the optimiser's objective and by the backtester's fills.

- linear: (fee_j + half_spread_j) |t_j|, fee the taker fee, half spread from the market (fractions)
- impact (square-root law, 3/2 power): k_j sigma_j |t_j|^{3/2} / sqrt(ADV_j), with sigma_j the daily
  volatility of the underlying (fraction), ADV_j in USD/day, t_j the trade in USD.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.instruments import FuturesContract
from models.market import MarketSnapshot


@dataclass(frozen=True)
class CostModel:
    """Per-contract cost coefficients: ``linear`` (fraction of notional) and ``impact`` (USD^-1/2).

    cost(t) = sum_j linear_j |t_j| + impact_j |t_j|^{3/2}, t in USD.
    """

    linear: np.ndarray
    impact: np.ndarray
    fee: np.ndarray
    half_spread: np.ndarray

    @staticmethod
    def build(contracts: Sequence[FuturesContract], market: MarketSnapshot,
              daily_vol: np.ndarray, impact_k: float = 1.0) -> CostModel:
        """Coefficients from contract fees, market spreads/ADV and each underlying's daily vol."""
        fee = np.array([c.taker_fee for c in contracts], dtype=float)
        hs = np.array([market.contract_half_spread(c.symbol) for c in contracts], dtype=float)
        adv = np.array([market.contract_adv(c.symbol) for c in contracts], dtype=float)
        impact = impact_k * np.asarray(daily_vol, dtype=float) / np.sqrt(adv)
        return CostModel(linear=fee + hs, impact=np.nan_to_num(impact, nan=0.0), fee=fee,
                         half_spread=hs)

    def fees(self, t: np.ndarray) -> float:
        """Exchange fees (USD) of trades ``t`` (USD)."""
        return float(self.fee @ np.abs(t))

    def spread(self, t: np.ndarray) -> float:
        """Half-spread cost (USD) of trades ``t`` (USD)."""
        return float(self.half_spread @ np.abs(t))

    def impact_cost(self, t: np.ndarray) -> float:
        """Market impact (USD) of trades ``t`` (USD): sum_j impact_j |t_j|^{3/2}."""
        return float(self.impact @ np.abs(t) ** 1.5)

    def total(self, t: np.ndarray, with_impact: bool = True) -> float:
        """Fees + spread (+ impact) in USD."""
        return self.fees(t) + self.spread(t) + (self.impact_cost(t) if with_impact else 0.0)
