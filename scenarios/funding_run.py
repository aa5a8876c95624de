"""Funding of a shocked book settlement by settlement, stopped when the wallet is liquidated
(:func:`funding_until_liquidation`, :class:`FundingRun`).

Units: payments USD (+ = paid), hours for settlement times, counts of settlements.

The price shock is instantaneous, then contract j settles every h_j
hours (its ``funding_interval_h``), n_j times, paying a_j = (f_j + df_j) x'_j each time (marks
stay at the shocked level, so x'_j and MM are fixed). The surplus after the settlements up to
time tau is S(tau) = S_0 - sum_j a_j floor(min(tau / h_j, n_j)), S_0 = collateral' - MM' before
any funding. The book is checked after every settlement time (the shared rule
``MarginState.liquidated``, C <= MM with a position open): at the first tau with S(tau) <= 0 it
is liquidated (equality liquidates) and no later settlement is paid (no position is left to pay
on); a book with S_0 <= 0 is liquidated by the price move, before any funding. So a funding shock
over any horizon loses at most S_0 plus one settlement time's payments and the penalty: funding
stops where the wallet is liquidated (``liquidated_after_h``), as the replay would stop it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Settlement times examined per chunk (the search never holds more in memory).
FUNDING_CHUNK = 1_000_000


@dataclass(frozen=True)
class FundingRun:
    """Funding over the scenario's settlements, stopped by a liquidation.

    ``settled`` n'_j: settlements paid per contract (n_j, or for every contract, with or without
    a position, min(n_j, those at or before the liquidation));
    ``paid`` = sum_j a_j n'_j (USD, + = paid); ``liquidated_after_h``: hours after the shock at
    which the surplus first reached 0 or less (0.0: the price move alone; None: never).
    """

    settled: np.ndarray
    paid: float
    liquidated_after_h: float | None


def _settlement_times(hours: np.ndarray, counts: np.ndarray, lo: float, hi: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Every settlement time in (lo, hi] (hours) and the contract that settles then."""
    times, who = [], []
    for j, (h, n) in enumerate(zip(hours, counts, strict=True)):
        k0, k1 = math.floor(lo / h + 1e-9) + 1, min(math.floor(hi / h + 1e-9), int(n))
        if k1 >= k0:
            times.append(h * np.arange(k0, k1 + 1, dtype=float))
            who.append(np.full(k1 - k0 + 1, j))
    if not times:
        return np.zeros(0), np.zeros(0, dtype=int)
    t, w = np.concatenate(times), np.concatenate(who)
    order = np.argsort(t, kind="stable")
    return t[order], w[order]


def _settled_by(tau: float, hours: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """n'_j = min(floor(tau / h_j), n_j): settlements of every contract at or before ``tau``
    hours, whether it pays anything or not (a contract with no position settles on the same
    clock, and no contract settles after the liquidation)."""
    h = np.asarray(hours, dtype=float)
    safe = np.where(h > 0, h, 1.0)
    return np.where(counts > 0, np.minimum(np.floor(tau / safe + 1e-9), counts), 0.0)


def funding_until_liquidation(payments: np.ndarray, counts: np.ndarray, hours: np.ndarray,
                              surplus0: float, has_positions: bool) -> FundingRun:
    """Pay settlement times in order until the surplus S(tau) (module docstring) is <= 0.

    ``payments`` a_j (USD per settlement, + = paid), ``counts`` n_j, ``hours`` h_j; ``surplus0``
    S_0 = collateral - maintenance after the price shock. Exact for any horizon: settlement times
    are examined in chunks of about ``FUNDING_CHUNK``; when no payment is negative (S only falls)
    the end is checked first, and when none is positive S never falls, so those cost no search.
    """
    counts = np.asarray(counts, dtype=float)
    active = (counts > 0) & (payments != 0)
    if has_positions and surplus0 <= 0:
        return FundingRun(np.zeros_like(counts), 0.0, 0.0)
    total = float(payments[active] @ counts[active]) if active.any() else 0.0
    if (not has_positions or not active.any() or np.all(payments[active] <= 0)
            or (np.all(payments[active] >= 0) and surplus0 - total > 0)):
        return FundingRun(counts.copy(), total, None)
    h, n, a = hours[active], counts[active], payments[active]
    end = float((h * n).max())
    width = FUNDING_CHUNK / float(np.sum(1.0 / h))
    lo, cum = 0.0, 0.0
    while lo < end:
        hi = min(lo + width, end)
        t, who = _settlement_times(h, n, lo, hi)
        if len(t):
            uniq, first = np.unique(t, return_index=True)
            path = cum + np.cumsum(np.add.reduceat(a[who], first))
            below = np.flatnonzero(surplus0 - path <= 0)
            if below.size:
                tau = float(uniq[below[0]])
                paid_n = np.minimum(np.floor(tau / h + 1e-9), n)
                return FundingRun(_settled_by(tau, hours, counts), float(a @ paid_n), tau)
            cum = float(path[-1])
        lo = hi
    return FundingRun(counts.copy(), total, None)
