"""The one margin engine: initial and tiered maintenance margin, collateral under stress.

The optimiser's margin constraints, the backtester's liquidation check and the what-if distance to
liquidation all use this module.

Units: notionals, margins and collateral in USD; rates are fractions; returns are simple returns
(each > -1).

- IM_j(n) = |n| / L_j (L_j: the leverage set on the exchange)
- MM_j(n) = max_k (mmr_jk |n| - cum_jk), convex piecewise linear (tier brackets)
- stress surplus for asset returns r: collateral(r) + (B' r)' x - sum_j MM_j(|x_j| (1 + (B' r)_j))
- liquidation (every engine): a position open and collateral <= sum_j MM_j (equality liquidates, as
  on Binance); margin ratio MM / collateral, inf when collateral <= 0 with a position open
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.instruments import FuturesContract


def tier_maintenance(mmr: np.ndarray, cum: np.ndarray, notional: npt.ArrayLike) -> np.ndarray:
    """MM_j(n_j) = max(max_k (mmr_jk |n_j| - cum_jk), 0) for tier arrays (M x K) and notionals (M,
    any array-like).

    Units follow the inputs: USD with ``cum`` in USD, weight units with ``cum`` divided by V.
    """
    n = np.abs(np.asarray(notional, dtype=float))[:, None]
    result: np.ndarray = np.maximum((mmr * n - cum).max(axis=1), 0.0)
    return result


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
        result: np.ndarray = np.abs(notional) / self.leverage
        return result

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
    """Margin use of a book at mark (USD): collateral C (the margin balance), initial IM and
    maintenance MM requirements.

    The liquidation rule (the exchanges', e.g. Binance: "liquidated when margin balance <=
    maintenance margin") is ``has_positions and C <= MM``: equality liquidates.
    """

    collateral: float
    initial: float
    maintenance: float
    has_positions: bool = False

    @property
    def liquidated(self) -> bool:
        """The liquidation rule every engine applies (replay, what-if, Monte Carlo, the optimiser's
        pre-solve check): a position is open and C <= MM (equality liquidates)."""
        return self.has_positions and self.collateral <= self.maintenance

    @property
    def at_risk(self) -> bool:
        """True when there is something to margin: an open position or a maintenance need > 0."""
        return self.has_positions or self.maintenance > 0

    @property
    def initial_utilisation(self) -> float:
        """IM / C (a fraction; > 1: the positions need more initial margin than there is).

        C <= 0: inf when a position is open or IM > 0 (no collateral backs it), else 0."""
        if self.collateral > 0:
            return self.initial / self.collateral
        return math.inf if self.has_positions or self.initial > 0 else 0.0

    @property
    def margin_ratio(self) -> float:
        """MM / C (a fraction): the book is liquidated exactly when the ratio is >= 1 with a
        position open.

        C > 0: MM / C. C <= 0 (no collateral, or a wallet in debt): ``inf`` when a position is open
        or MM > 0 (liquidated: no finite ratio says how far past the edge the book is; see
        :func:`liquidation_gap` for the USD figures), 0 when nothing is open (nothing to liquidate).
        """
        if self.collateral > 0:
            return self.maintenance / self.collateral
        return math.inf if self.at_risk else 0.0


def margin_state(model: MarginModel, notional: np.ndarray, collateral: float) -> MarginState:
    """Margin use of positions ``notional`` (USD, signed) against ``collateral`` (USD)."""
    return MarginState(collateral=collateral,
                       initial=float(model.initial(notional).sum()),
                       maintenance=float(model.maintenance(notional).sum()),
                       has_positions=bool(np.any(np.asarray(notional) != 0)))


def max_notional_within(mmr: np.ndarray, cum: np.ndarray, budget: float) -> float:
    """The largest |n| (USD) whose tiered maintenance stays within ``budget`` (USD), exactly.

    MM(n) = max(max_k (mmr_k n - cum_k), 0) <= b  <=>  mmr_k n - cum_k <= b for every k (b >= 0),
    so n_max = min over k with mmr_k > 0 of (b + cum_k) / mmr_k (inf when every mmr_k is 0).
    ``budget`` < 0: no notional fits (returns -inf).
    """
    if budget < 0:
        return -math.inf
    mmr = np.asarray(mmr, dtype=float)
    pos = mmr > 0
    if not pos.any():
        return math.inf
    return float(np.min((budget + np.asarray(cum, dtype=float)[pos]) / mmr[pos]))


@dataclass(frozen=True)
class LiquidationGap:
    """How far a liquidatable book (C <= MM at current marks) is from safety (USD).

    ``shortfall`` = MM - C >= 0: collateral must rise by *more* than this (C > MM is safe).
    ``max_notional[j]``: |n_j| must fall *below* this, every other position unchanged, to get
    back above maintenance (MM_j(|n_j|) < C - sum_{k != j} MM_k); -inf when reducing j alone
    cannot do it (C - sum_{k != j} MM_k <= 0, or a cap of 0). ``reduce_notional[j]`` = |n_j| - max_notional[j]
    (USD, inf when impossible); 0 for contracts with no position.
    """

    collateral: float
    maintenance: float
    shortfall: float
    max_notional: np.ndarray
    reduce_notional: np.ndarray


def liquidation_gap(model: MarginModel, notional: np.ndarray, collateral: float) -> LiquidationGap:
    """The :class:`LiquidationGap` of positions ``notional`` (USD, signed) at ``collateral`` (USD).

    Reducing a position at mark moves its unrealised PnL into cash, so C is unchanged; what changes
    is MM_j. With b_j = C - sum_{k != j} MM_k(|n_k|), the tiered inverse gives the largest |n_j| whose
    MM_j <= b_j (:func:`max_notional_within`); the position must end strictly below it.
    """
    n = np.abs(np.asarray(notional, dtype=float))
    per = model.maintenance(n)
    total = float(per.sum())
    cap = np.array([max_notional_within(model.mmr[j], model.cum[j], collateral - (total - per[j]))
                    for j in range(len(n))])
    cap = np.where(cap > 0, cap, -math.inf)
    with np.errstate(invalid="ignore"):
        reduce = np.where(n > 0, np.where(cap > 0, np.maximum(n - cap, 0.0), math.inf), 0.0)
    return LiquidationGap(collateral=collateral, maintenance=total,
                          shortfall=max(total - collateral, 0.0), max_notional=cap,
                          reduce_notional=reduce)


#: Penalty charged when positions are liquidated, as a fraction of the |notional| closed (the
#: default of the replay, the what-if and Monte Carlo).
LIQUIDATION_PENALTY = 0.01


def insurance_fund_cover(account: float) -> float:
    """USD the exchange's insurance fund absorbs after a liquidation: max(-account, 0), with
    ``account`` the futures account's value once every position is closed, the penalty paid and
    any pledged collateral sold (USD). An account never owes the exchange more than it holds
    (cross margin, USD-M): a loss past its bankruptcy price is the insurance fund's, so the
    holder's loss in a liquidation is at most the account."""
    return max(-float(account), 0.0)
