"""More baseline overlays from the seed article, beside :class:`optimizer.policies.NaiveFutures`.

Both are futures overlays (spot is never traded) built on the seed rule
``naive_futures_notional`` (per asset, futures notional w*_i V - spot_i, USD) and both are
deterministic: the same sequence of calls gives the same targets.

- :class:`VolScaledBandFutures`: the naive hedge, triggered when the max drift of the effective
  weights exceeds a band that scales with the portfolio's realised volatility.
- :class:`DcaFutures`: the naive hedge, reached in ``steps`` equal slices after each trigger.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd

from models.book import Book
from models.errors import ValidationError, check_finite_positive
from models.market import MarketSnapshot
from models.risk import DAYS_PER_YEAR
from optimizer.policies import (
    Policy,
    TargetHoldings,
    _Trigger,
    breached,
    current_holdings,
    naive_futures_notional,
)

_DAY = pd.Timedelta("1D")


def realised_portfolio_vol(prices: np.ndarray, weights: np.ndarray, periods_per_year: float) -> float:
    """Annualised realised volatility of a fixed-weight portfolio over a price window.

    ``prices`` (T x N, USD, T >= 3), ``weights`` (N, fractions summing to 1):
    r_k = p_k / p_{k-1} - 1 (simple returns per period, k = 1..T-1), r^p_k = sum_i w_i r_{k,i},
    sigma = std(r^p, ddof=1) * sqrt(periods_per_year)  (a fraction per year, e.g. 0.6 = 60%).
    """
    P = np.asarray(prices, dtype=float)
    R = P[1:] / P[:-1] - 1.0
    rp = R @ np.asarray(weights, dtype=float)
    return float(np.std(rp, ddof=1) * np.sqrt(periods_per_year))


class PriceHistory:
    """The last ``window`` + 1 spot prices (USD) seen by a policy, one column per asset, with their
    timestamps (the convention of ``VolScaledBandFutures``): a call at the timestamp of the
    previous one replaces it (no double count); an earlier timestamp, or other assets, starts a
    new history (a new run)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.assets: tuple[str, ...] = ()
        self.times: deque[pd.Timestamp] = deque(maxlen=window + 1)
        self.prices: deque[np.ndarray] = deque(maxlen=window + 1)

    def observe(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> None:
        """Record the book's spot prices at ``t``."""
        assets = tuple(book.asset_symbols)
        if assets != self.assets or (self.times and t < self.times[-1]):
            self.assets = assets
            self.times.clear()
            self.prices.clear()
        if self.times and t == self.times[-1]:
            self.times.pop()
            self.prices.pop()
        self.times.append(t)
        self.prices.append(np.array([market.spot_price(a) for a in assets], dtype=float))

    @property
    def full(self) -> bool:
        """True once ``window`` returns (``window`` + 1 prices) are recorded."""
        return len(self.prices) == self.window + 1

    def matrix(self) -> np.ndarray:
        """The recorded prices ((window + 1) x N, USD), oldest first."""
        return np.vstack(list(self.prices))

    def periods_per_year(self) -> float:
        """365 days / the median spacing of the recorded timestamps (daily 365, hourly 8760)."""
        steps = np.diff(np.array([ts.value for ts in self.times], dtype=float))  # ns
        step_days = float(np.median(steps)) / _DAY.value if steps.size else 0.0
        return DAYS_PER_YEAR / step_days if step_days > 0 else DAYS_PER_YEAR


class VolScaledBandFutures(Policy):
    """The naive futures overlay behind a volatility-scaled band.

    At each call ``t`` the policy records the book's spot prices p_t (USD per unit, one column per
    asset). With the last ``window`` + 1 recorded prices (i.e. ``window`` simple returns r_k =
    p_k / p_{k-1} - 1, fractions per period) and the book's current spot-value weights
    w_i = spot_i / sum_j spot_j (target weights if the book holds no spot, equal weights if it has
    no targets either), the portfolio's realised volatility is

        sigma_t = std_k(sum_i w_i r_{k,i}, ddof=1) * sqrt(P)          (fraction per year)

    where P is ``periods_per_year`` (default: inferred as 365 days / median spacing of the window's
    timestamps, so daily data gives 365, hourly 8760). The band (a weight, fraction of the target
    base V) is

        band_t = clip(base_band * sigma_t / ref_vol, min_band, max_band)

    so doubling realised volatility doubles the band (inside the clip). Until ``window`` returns
    have been seen, band_t = clip(base_band, min_band, max_band). When
    max_i |e_i - w*_i| > band_t (``max_drift``: effective weights incl. futures vs targets) the
    policy targets futures = ``naive_futures_notional`` (USD); otherwise it keeps the book as is
    (a drift on the band, within ``optimizer.policies.BAND_TOL``, is not past it).
    Spot is never traded.

    Price history: a call at the timestamp of the previous call replaces that observation (no
    double count); a call at an earlier timestamp, or with a book of other assets, starts a new
    history (a new run). ``last_sigma`` (None before enough history) and ``last_band`` report the
    values used at the latest call.
    """

    def __init__(self, base_band: float, ref_vol: float = 0.6, window: int = 30,
                 min_band: float | None = None, max_band: float | None = None, *,
                 periods_per_year: float | None = None) -> None:
        self.base_band = check_finite_positive("policy.base_band", base_band)
        self.ref_vol = check_finite_positive("policy.ref_vol", ref_vol)
        if int(window) != window or window < 2:
            raise ValidationError("policy.window", f"is {window}",
                                  "give an integer number of returns >= 2")
        self.window = int(window)
        self.min_band = (check_finite_positive("policy.min_band", min_band, allow_zero=True)
                         if min_band is not None else None)
        self.max_band = (check_finite_positive("policy.max_band", max_band)
                         if max_band is not None else None)
        if self.min_band is not None and self.max_band is not None and self.min_band > self.max_band:
            raise ValidationError("policy.min_band", f"is {min_band} > max_band {max_band}",
                                  "give min_band <= max_band")
        self.periods_per_year = (check_finite_positive("policy.periods_per_year", periods_per_year)
                                 if periods_per_year is not None else None)
        self.trigger = _Trigger(band=self.base_band)
        self.history = PriceHistory(self.window)
        self.last_sigma: float | None = None
        self.last_band: float = self._clip(self.base_band)
        self.name = f"vol_band_futures_{base_band:g}_ref{ref_vol:g}_w{self.window}"

    def _clip(self, band: float) -> float:
        if self.min_band is not None:
            band = max(band, self.min_band)
        if self.max_band is not None:
            band = min(band, self.max_band)
        return band

    def _weights(self, book: Book, market: MarketSnapshot) -> np.ndarray:
        for w in (book.spot_values(market), book.target_vector()):
            total = float(w.sum())
            if total > 0:
                return np.asarray(w / total, dtype=float)
        n = len(book.asset_symbols)
        return np.full(n, 1.0 / n)

    def _periods_per_year(self) -> float:
        if self.periods_per_year is not None:
            return self.periods_per_year
        return self.history.periods_per_year()

    def band(self, book: Book, market: MarketSnapshot) -> tuple[float, float | None]:
        """(band_t, sigma_t) from the recorded history (sigma_t None before ``window`` returns)."""
        if not self.history.full or not self.history.assets:
            return self._clip(self.base_band), None
        sigma = realised_portfolio_vol(self.history.matrix(), self._weights(book, market),
                                       self._periods_per_year())
        return self._clip(self.base_band * sigma / self.ref_vol), sigma

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        self.history.observe(book, market, t)
        self.last_band, self.last_sigma = self.band(book, market)
        self.trigger.band = self.last_band
        held = current_holdings(book, market)
        if not self.trigger.due(book, market, t):
            return held
        return TargetHoldings(spot=held.spot, futures=naive_futures_notional(book, market))


class DcaFutures(Policy):
    """The naive futures overlay spread evenly over ``steps`` calls (dollar-cost averaging).

    Triggers like :class:`~optimizer.policies.NaiveFutures`: every ``period`` and/or when
    ``max_drift`` exceeds ``band``. At a trigger the policy fixes x0 (the book's futures notional,
    USD at mark, per contract) and x* = ``naive_futures_notional`` (USD); call i = 1..k of the
    schedule (the triggering call is i = 1) targets

        x_i = x0 + (i / k) (x* - x0)                                   (USD notional)

    so call k lands exactly on x*; afterwards the policy keeps the book as is until the next
    trigger. Spot is never traded.

    A new trigger mid-way restarts the schedule from the book's current position with a fresh x*.
    Mid-way, the band asks whether the *plan* is stale (max |e_i - w*_i| with x* in place of the
    current futures, at today's prices, exceeds ``band`` by more than
    ``optimizer.policies.BAND_TOL``), not whether the half-built hedge is
    still off target, which it is by design. The calendar restarts every ``period`` as usual.
    ``step`` (0 when idle) and ``target`` (x*, empty when idle) show the schedule.
    """

    def __init__(self, steps: int, band: float | None = None,
                 period: str | pd.Timedelta | None = None) -> None:
        if int(steps) != steps or steps < 1:
            raise ValidationError("policy.steps", f"is {steps}", "give an integer number of steps >= 1")
        if band is None and period is None:
            raise ValidationError("policy", "has neither a band nor a period",
                                  "give band (max drift, a weight) and/or period (e.g. '7D')")
        self.steps = int(steps)
        self.trigger = _Trigger(period=pd.Timedelta(period) if period is not None else None,
                                band=check_finite_positive("policy.band", band) if band is not None else None)
        self.step = 0
        self.start: dict[str, float] = {}
        self.target: dict[str, float] = {}
        self.name = (f"dca_futures_{self.steps}" + (f"_{period}" if period else "")
                     + (f"_band{band:g}" if band else ""))

    def _plan_drift(self, book: Book, market: MarketSnapshot) -> float:
        """max_i |e_i - w*_i| if the futures were at x* (the committed target)."""
        x = np.array([self.target.get(c, 0.0) for c in book.contract_symbols])
        e = (book.spot_values(market) + book.exposure_matrix() @ x) / book.base(market)
        return float(np.max(np.abs(e - book.target_vector()), initial=0.0))

    def _due(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> bool:
        if self.step == 0:
            return self.trigger.due(book, market, t)
        p = self.trigger.period
        if p is not None and (self.trigger.last is None or t - self.trigger.last >= p):
            return True
        return self.trigger.band is not None and breached(self._plan_drift(book, market),
                                                          self.trigger.band)

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        if self._due(book, market, t):
            self.trigger.last = t
            self.start = dict(held.futures)
            self.target = naive_futures_notional(book, market)
            self.step = 0
        elif self.step == 0:
            return held
        self.step += 1
        if self.step >= self.steps:
            fut = dict(self.target)
            self.step, self.start, self.target = 0, {}, {}
        else:
            f = self.step / self.steps
            fut = {c: x0 + f * (self.target[c] - x0) for c, x0 in self.start.items()}
        return TargetHoldings(spot=held.spot, futures=fut)
