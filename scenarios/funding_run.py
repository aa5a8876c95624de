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

A replayed path's own settlement clock (:func:`settlement_hours`, :func:`interval_notes`): each
perpetual's spacing measured causally from the settlements it made (the median of its last
``SPACING_WINDOW`` gaps, hours), and a note for each one whose spacing differs from its
``funding_interval_h``: the replay pays every settlement of the path, while the optimiser's carry
counts horizon x 24 / funding_interval_h of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.instruments import ContractKind, FuturesContract

#: Settlement times examined per chunk (the search never holds more in memory).
FUNDING_CHUNK = 1_000_000
#: A perpetual's measured settlement spacing is the median of its last this many spacings.
SPACING_WINDOW = 5
#: Hours within which a measured spacing counts as the contract's ``funding_interval_h``.
SPACING_TOL_H = 1.0 / 60.0
#: Nanoseconds per hour.
NS_PER_HOUR = 3600e9


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


def settlement_hours(settle_t: np.ndarray, settles: np.ndarray) -> np.ndarray:
    """S x M: at settlement row i, contract j's measured spacing, hours: the median of the last
    ``SPACING_WINDOW`` gaps between its own consecutive settlements at or before row i (fewer
    while it has fewer; NaN until it has settled twice). Causal: row i reads rows 0..i only.

    ``settle_t`` settlement times, int64 ns (S, sorted); ``settles`` (S x M bool) where each
    contract settled (``scenarios.replay_inputs.settled_matrix``)."""
    out = np.full(settles.shape, np.nan)
    for j in range(settles.shape[1]):
        rows = np.flatnonzero(settles[:, j])
        if rows.size < 2:
            continue
        gaps = np.diff(settle_t[rows]).astype(float) / NS_PER_HOUR
        med = pd.Series(gaps).rolling(SPACING_WINDOW, min_periods=1).median().to_numpy(dtype=float)
        seen = np.cumsum(settles[:, j])  # settlements of j in rows 0..i
        two = seen >= 2
        out[two, j] = med[seen[two] - 2]
    return out


def measured_intervals(contracts: Sequence[FuturesContract], settled: np.ndarray,
                       spacing_h: np.ndarray) -> np.ndarray | None:
    """T x M: perpetual j's measured spacing (hours, :func:`settlement_hours` at each step's last
    settlement row) where it differs from its ``funding_interval_h`` by more than
    ``SPACING_TOL_H``, NaN elsewhere (the contract's own interval holds, or j has not settled twice
    yet); None when no step of any contract differs. ``settled`` (T): settlement rows at or before
    each step. Causal: step k reads rows up to its own."""
    n_steps = len(settled)
    if spacing_h.shape[0] == 0 or n_steps == 0 or not contracts:
        return None
    rows = np.asarray(settled, dtype=np.int64) - 1
    at = np.where((rows >= 0)[:, None], spacing_h[np.maximum(rows, 0)], np.nan)  # T x M
    own = np.array([c.funding_interval_h for c in contracts], dtype=float)
    perp = np.array([c.kind == ContractKind.PERPETUAL for c in contracts], dtype=bool)
    off = np.isfinite(at) & (np.abs(at - own) > SPACING_TOL_H) & perp
    if not off.any():
        return None
    out: np.ndarray = np.where(off, at, np.nan)
    return out


def interval_notes(contracts: Sequence[FuturesContract], measured: np.ndarray | None,
                   times: Sequence[pd.Timestamp]) -> tuple[str, ...]:
    """One note per perpetual j whose measured spacing (``measured``, :func:`measured_intervals`)
    differs from its ``funding_interval_h`` at some step: the spacings seen (hours), how many steps
    and when. There the replay pays 24 / spacing settlements a day, and the policy's carry counts
    the same (the snapshot's ``funding_interval_h``)."""
    if measured is None:
        return ()
    notes: list[str] = []
    for j, c in enumerate(contracts):
        off = np.flatnonzero(np.isfinite(measured[:, j]))
        if off.size == 0:
            continue
        seen = ", ".join(f"{v:g}" for v in np.unique(np.round(measured[off, j], 4)))
        notes.append(f"{c.symbol} settled every {seen} h (median of its last {SPACING_WINDOW} "
                     f"spacings) at {off.size} of {len(times)} steps ({times[off[0]]} .. "
                     f"{times[off[-1]]}), not every {c.funding_interval_h:g} h "
                     f"(funding_interval_h): the replay pays every settlement and the policy's "
                     f"carry counts the measured spacing there")
    return tuple(notes)
