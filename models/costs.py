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


def impact_coefficient(impact_k: float, daily_vol: np.ndarray | float,
                       adv: np.ndarray | float) -> np.ndarray:
    """The square-root law's coefficient c = k sigma / sqrt(ADV) (USD^-1/2) per market: a trade
    of t USD costs c |t|^{3/2} USD (sigma the daily vol, a fraction; ADV in USD a day, > 0 or
    inf). 0 where ADV is unknown (inf) or sigma is not finite: no impact is priced there."""
    vol = np.asarray(daily_vol, dtype=float)
    volume = np.asarray(adv, dtype=float)
    known = np.isfinite(volume) & np.isfinite(vol)
    return np.where(known, impact_k * np.where(known, vol, 0.0)
                    / np.sqrt(np.where(known, volume, 1.0)), 0.0)


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
        return CostModel(linear=fee + hs, impact=impact_coefficient(impact_k, daily_vol, adv),
                         fee=fee, half_spread=hs)

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
