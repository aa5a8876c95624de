"""Band-to-edge futures overlays: per-asset no-trade bands, traded only back to the band's edge.

Notation (one call at time t; every weight is a fraction of the target base V = ``book.base``, USD):

- s_i   spot value of asset i (USD), w*_i its target weight;
- x_j   futures notional of contract j (signed USD at mark), X_i = sum_{j on i} x_j the asset's
        futures exposure (USD);
- e_i = (s_i + X_i) / V   effective weight (``Book.effective_weights``);
- d_i = e_i - w*_i        deviation (a weight);
- b_i >= 0                the asset's band half-width (a weight), ``inner`` = f in [0, 1].

Rule (each asset on its own; spot is never traded): if |d_i| > b_i the asset's futures exposure
moves to

    X_i' = (w*_i + sign(d_i) f b_i) V - s_i  =  X_i - (d_i - sign(d_i) f b_i) V        (USD)

so its deviation afterwards is exactly d_i' = sign(d_i) f b_i: f = 1 clips it to the band's edge
(the smallest trade that brings it back inside), f = 0 trades back to target (w*_i V - s_i, the
seed rule ``naive_futures_notional`` of that asset). An asset with |d_i| <= b_i is not traded.
X_i' is routed like the seed rule: all of it through the asset's first contract (book order),
its other contracts closed; an asset without a contract stays unhedged (never traded).

Per asset vs all assets: :class:`optimizer.policies.NaiveFutures` (band b) triggers on
max_i |d_i| > b and then trades *every* asset back to target; ``EdgeBandFutures(b, inner=0)``
triggers on the same condition but trades only the assets outside their band (those inside keep
their futures). On the assets it trades the two agree exactly.

- :class:`EdgeBandFutures`: uniform widths b_i = b.
- :class:`VolScaledEdgeBandFutures`: b_i = b sigma_i / mean_k sigma_k (realised volatility).
- :func:`edge_band_policy`: either one by ``scaling`` (the config files' and benchmarks' factory).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import numpy as np
import pandas as pd

from models.book import Book
from models.errors import ValidationError, check_finite_positive, check_fraction
from models.market import MarketSnapshot
from optimizer.baselines import PriceHistory
from optimizer.policies import Policy, TargetHoldings, breached, current_holdings, hedge_contracts

#: Trailing returns of the vol-scaled widths by default.
DEFAULT_WINDOW = 30


class EdgeScaling(StrEnum):
    """How the band widths b_i are set: ``uniform`` (b_i = b) or ``vol`` (b sigma_i / mean sigma)."""

    UNIFORM = "uniform"
    VOL = "vol"


# --- the pure rule -------------------------------------------------------------------------------


def deviations(book: Book, market: MarketSnapshot) -> np.ndarray:
    """d (N): e_i - w*_i, effective weights (spot + futures) less targets, in asset order."""
    return np.asarray(book.effective_weights(market) - book.target_vector(), dtype=float)


def edge_band_exposure(book: Book, market: MarketSnapshot, widths: np.ndarray,
                       inner: float = 1.0) -> dict[str, float]:
    """X_i' (USD) of the assets outside their band, by asset symbol (see the module docstring):
    (w*_i + sign(d_i) inner b_i) V - s_i for |d_i| > b_i. Assets inside are left out."""
    V = book.base(market)
    if not V > 0:
        return {}
    d = deviations(book, market)
    b = np.asarray(widths, dtype=float)
    w = book.target_vector()
    s = book.spot_values(market)
    out: dict[str, float] = {}
    for i, a in enumerate(book.asset_symbols):
        if breached(abs(float(d[i])), float(b[i])):
            out[a] = float((w[i] + np.sign(d[i]) * inner * b[i]) * V - s[i])
    return out


def edge_band_notional(book: Book, market: MarketSnapshot, widths: np.ndarray,
                       inner: float = 1.0) -> dict[str, float]:
    """Futures notional (USD) by contract after the band-to-edge rule: the held notional x0,
    except that each asset outside its band gets X_i' (:func:`edge_band_exposure`) on its first
    contract and 0 on its others. ``widths``: b_i per asset (weights, book order); ``inner`` in
    [0, 1] (1: to the edge, 0: to target)."""
    return route_exposure(book, market, edge_band_exposure(book, market, widths, inner))


def route_exposure(book: Book, market: MarketSnapshot, moved: Mapping[str, float]) -> dict[str, float]:
    """Futures notional (USD) by contract: the held notional x0, except that each asset in
    ``moved`` (by symbol, its new futures exposure X_i' in USD) gets X_i' on its hedge contract
    (:func:`optimizer.policies.hedge_contracts`: the first in book order not near expiry) and 0
    on its others; an asset without a contract is left as it is."""
    fut = dict(current_holdings(book, market).futures)
    route = hedge_contracts(book, market)
    for c in book.contracts:
        if c.underlying in moved:
            fut[c.symbol] = moved[c.underlying] if route.get(c.underlying) == c.symbol else 0.0
    return fut


# --- realised volatility per asset ---------------------------------------------------------------


def realised_asset_vols(prices: np.ndarray, periods_per_year: float) -> np.ndarray:
    """Annualised realised volatility of each asset over a price window.

    ``prices`` (T x N, USD, T >= 3): r_{k,i} = p_{k,i} / p_{k-1,i} - 1 (simple returns per period),
    sigma_i = std_k(r_{k,i}, ddof=1) sqrt(periods_per_year)  (fractions per year, 0.6 = 60%);
    ``optimizer.baselines.realised_portfolio_vol`` with the unit weight of asset i.
    """
    P = np.asarray(prices, dtype=float)
    R = P[1:] / P[:-1] - 1.0
    return np.asarray(np.std(R, axis=0, ddof=1) * np.sqrt(periods_per_year), dtype=float)


def vol_scaled_widths(band: float, sigma: np.ndarray) -> np.ndarray:
    """b_i = band sigma_i / mean_k sigma_k (weights); the mean of b_i is ``band``. Uniform ``band``
    when the mean volatility is not > 0 (e.g. flat prices) or not finite."""
    sig = np.asarray(sigma, dtype=float)
    mean = float(sig.mean()) if sig.size else 0.0
    if not (np.isfinite(mean) and mean > 0):
        return np.full(sig.shape, band)
    return np.asarray(band * sig / mean, dtype=float)


# --- the policies --------------------------------------------------------------------------------


class EdgeBandFutures(Policy):
    """Band-to-edge futures overlay with uniform widths b_i = ``band`` (a weight, fraction of V).

    At every call each asset with |d_i| > b_i is traded, through futures only, to deviation
    sign(d_i) ``inner`` b_i (module docstring: X_i' = (w*_i + sign(d_i) inner b_i) V - s_i USD);
    the others keep their futures. ``inner`` = 1 (default) is band-to-edge, 0 band-to-target per
    asset. ``last_widths`` holds the b_i of the latest call (book order).
    """

    def __init__(self, band: float, inner: float = 1.0) -> None:
        self.band = check_finite_positive("policy.band", band)
        self.inner = check_fraction("policy.inner", inner)
        self.last_widths: np.ndarray = np.zeros(0)
        self.name = f"edge_band_futures_{self.band:g}" + _inner_suffix(self.inner)

    def widths(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> np.ndarray:
        """b_i per asset (weights, book order): ``band`` for every asset."""
        return np.full(len(book.asset_symbols), self.band)

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        self.last_widths = self.widths(book, market, t)
        held = current_holdings(book, market)
        return TargetHoldings(spot=held.spot,
                              futures=edge_band_notional(book, market, self.last_widths, self.inner))


class VolScaledEdgeBandFutures(EdgeBandFutures):
    """Band-to-edge futures overlay with widths scaled by each asset's realised volatility.

    Each call records the book's spot prices p_t (USD). With the last ``window`` + 1 of them
    (``window`` simple returns r_{k,i} = p_{k,i} / p_{k-1,i} - 1, fractions per period)

        sigma_i = std_k(r_{k,i}, ddof=1) sqrt(P)                        (fraction per year)
        b_i     = band sigma_i / mean_k sigma_k                         (weight, fraction of V)

    P = ``periods_per_year`` (default 365 days / the median spacing of the window's timestamps).
    The widths average ``band``: an asset twice as volatile as the average gets twice the band; a
    constant factor on every sigma leaves them unchanged. Before ``window`` returns are recorded,
    sigma_i comes from ``vols`` (annualised, by asset symbol; every book asset must be given) when
    given, else b_i = ``band``. A mean sigma of 0 (flat prices) also gives b_i = ``band``.
    ``last_sigma`` (None when not from history) shows the realised sigma of the latest call.
    """

    def __init__(self, band: float, inner: float = 1.0, window: int = DEFAULT_WINDOW,
                 vols: Mapping[str, float] | None = None, *,
                 periods_per_year: float | None = None) -> None:
        super().__init__(band, inner)
        if isinstance(window, bool) or int(window) != window or window < 2:
            raise ValidationError("policy.window", f"is {window}",
                                  "give an integer number of returns >= 2")
        self.window = int(window)
        self.vols = ({a: check_finite_positive(f"policy.vols.{a}", v, allow_zero=True)
                      for a, v in vols.items()} if vols is not None else None)
        self.periods_per_year = (check_finite_positive("policy.periods_per_year", periods_per_year)
                                 if periods_per_year is not None else None)
        self.history = PriceHistory(self.window)
        self.last_sigma: np.ndarray | None = None
        self.name = f"vol_edge_band_futures_{self.band:g}_w{self.window}" + _inner_suffix(self.inner)

    def _given_vols(self, book: Book) -> np.ndarray | None:
        """sigma_i from ``vols`` in asset order (None without ``vols``)."""
        if self.vols is None:
            return None
        missing = [a for a in book.asset_symbols if a not in self.vols]
        if missing:
            raise ValidationError("policy.vols", f"has no volatility for {missing}",
                                  f"give an annualised vol for every asset of the book "
                                  f"{book.asset_symbols}")
        return np.array([self.vols[a] for a in book.asset_symbols], dtype=float)

    def sigmas(self, book: Book) -> np.ndarray | None:
        """sigma_i (annualised) from the recorded history, else from ``vols``, else None."""
        if self.history.full:
            ppy = self.periods_per_year or self.history.periods_per_year()
            self.last_sigma = realised_asset_vols(self.history.matrix(), ppy)
            return self.last_sigma
        self.last_sigma = None
        return self._given_vols(book)

    def widths(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> np.ndarray:
        """b_i per asset (weights, book order) after recording the prices at ``t``."""
        self.history.observe(book, market, t)
        sigma = self.sigmas(book)
        if sigma is None:
            return np.full(len(book.asset_symbols), self.band)
        return vol_scaled_widths(self.band, sigma)


def _inner_suffix(inner: float) -> str:
    return "" if inner == 1.0 else f"_inner{inner:g}"


def edge_band_policy(band: float, inner: float = 1.0, scaling: str | EdgeScaling = EdgeScaling.UNIFORM,
                     window: int | None = None, vols: Mapping[str, float] | None = None, *,
                     periods_per_year: float | None = None) -> EdgeBandFutures:
    """A band-to-edge policy by ``scaling``: :class:`EdgeBandFutures` (``uniform``) or
    :class:`VolScaledEdgeBandFutures` (``vol``; ``window`` default ``DEFAULT_WINDOW``).
    ``window``, ``vols`` and ``periods_per_year`` belong to the vol scaling only."""
    options = [s.value for s in EdgeScaling]
    if str(scaling).lower() not in options:
        raise ValidationError("policy.scaling", f"is {scaling!r}", f"use one of {options}")
    if EdgeScaling(str(scaling).lower()) == EdgeScaling.VOL:
        return VolScaledEdgeBandFutures(band, inner, DEFAULT_WINDOW if window is None else window,
                                        vols, periods_per_year=periods_per_year)
    extra = [k for k, v in (("window", window), ("vols", vols),
                            ("periods_per_year", periods_per_year)) if v is not None]
    if extra:
        raise ValidationError(f"policy.{extra[0]}", "is set, but scaling is 'uniform'",
                              "remove it, or set scaling = 'vol'")
    return EdgeBandFutures(band, inner)


__all__ = ["DEFAULT_WINDOW", "EdgeBandFutures", "EdgeScaling", "PriceHistory",
           "VolScaledEdgeBandFutures", "deviations", "edge_band_exposure", "edge_band_notional",
           "edge_band_policy", "realised_asset_vols", "route_exposure", "vol_scaled_widths"]
