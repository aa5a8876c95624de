"""The one margin engine: initial and tiered maintenance margin, collateral under stress.

The optimiser's margin constraints, the backtester's liquidation check and the what-if distance to
liquidation all use this module.

Units: notionals, margins and collateral in USD; rates are fractions; returns are simple returns
(each > -1).

- IM_j(n) = |n| / L_j (L_j: the leverage set on the exchange)
- MM_j(n) = max_k (mmr_jk |n| - cum_jk), convex piecewise linear (tier brackets)
- stress surplus for asset returns r: collateral(r) + (B' r)' x - sum_j MM_j(|x_j| (1 + (B' r)_j))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.instruments import FuturesContract


def tier_maintenance(mmr: np.ndarray, cum: np.ndarray, notional: np.ndarray) -> np.ndarray:
    """MM_j(n_j) = max(max_k (mmr_jk |n_j| - cum_jk), 0) for tier arrays (M x K) and notionals (M).

    Units follow the inputs: USD with ``cum`` in USD, weight units with ``cum`` divided by V.
    """
    n = np.abs(np.asarray(notional, dtype=float))[:, None]
    return np.maximum((mmr * n - cum).max(axis=1), 0.0)


@dataclass(frozen=True)
class MarginModel:
    """Margin arrays for contracts j = 1..M, tiers padded to a common K by repeating the last one.

    ``mmr`` and ``cum`` are (M x K); ``lo`` (M x K) each bracket's lower notional bound (USD, inf for
    padding); ``leverage`` (M).
    """

    leverage: np.ndarray
    mmr: np.ndarray
    cum: np.ndarray
    lo: np.ndarray

    @staticmethod
    def from_contracts(contracts: Sequence[FuturesContract]) -> MarginModel:
        """Stack each contract's tiers (padding with its last bracket, which leaves max_k unchanged)."""
        M = len(contracts)
        K = max((len(c.tiers.brackets) for c in contracts), default=1)
        mmr = np.zeros((M, K))
        cum = np.zeros((M, K))
        lo = np.full((M, K), np.inf)
        for j, c in enumerate(contracts):
            b = c.tiers.brackets
            m, cm = c.tiers.mmr, c.tiers.cum
            mmr[j, : len(m)], cum[j, : len(cm)] = m, cm
            mmr[j, len(m):], cum[j, len(cm):] = m[-1], cm[-1]
            lo[j, : len(b)] = [x.min_notional for x in b]
        lev = np.array([c.leverage for c in contracts], dtype=float)
        return MarginModel(leverage=lev, mmr=mmr, cum=cum, lo=lo)

    def initial(self, notional: np.ndarray) -> np.ndarray:
        """IM_j = |n_j| / L_j (USD)."""
        return np.abs(notional) / self.leverage

    def maintenance(self, notional: np.ndarray) -> np.ndarray:
        """MM_j = max(max_k (mmr_jk |n_j| - cum_jk), 0) (USD)."""
        return tier_maintenance(self.mmr, self.cum, notional)

    def stress_surplus(self, x: np.ndarray, collateral_r: float, g: np.ndarray) -> float:
        """Margin surplus (USD) after contract returns g = B' r; collateral re-priced to ``collateral_r``.

        collateral(r) + g' x - sum_j MM_j(|x_j| (1 + g_j)); negative means liquidation.
        """
        return float(collateral_r + g @ x - self.maintenance(np.abs(x) * (1.0 + g)).sum())


@dataclass(frozen=True)
class MarginState:
    """Margin use of a book at mark (USD): collateral, initial and maintenance requirements."""

    collateral: float
    initial: float
    maintenance: float
    has_positions: bool = False

    @property
    def liquidated(self) -> bool:
        """The liquidation rule every engine applies (replay, what-if, Monte Carlo): a position is
        open and collateral < maintenance margin."""
        return self.has_positions and self.collateral < self.maintenance

    @property
    def initial_utilisation(self) -> float:
        """IM / collateral (0 when there is no collateral and no position)."""
        return self.initial / self.collateral if self.collateral > 0 else float(self.initial > 0)

    @property
    def margin_ratio(self) -> float:
        """MM / collateral: liquidation when it reaches 1."""
        return self.maintenance / self.collateral if self.collateral > 0 else float(self.maintenance > 0)


def margin_state(model: MarginModel, notional: np.ndarray, collateral: float) -> MarginState:
    """Margin use of positions ``notional`` (USD, signed) against ``collateral`` (USD)."""
    return MarginState(collateral=collateral,
                       initial=float(model.initial(notional).sum()),
                       maintenance=float(model.maintenance(notional).sum()),
                       has_positions=bool(np.any(np.asarray(notional) != 0)))


#: Penalty charged when positions are liquidated, as a fraction of the |notional| closed (the
#: default of the replay, the what-if and Monte Carlo).
LIQUIDATION_PENALTY = 0.01
