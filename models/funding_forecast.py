"""Funding-rate forecasts for perpetual swaps: the expected funding a position pays over a horizon.

Units and conventions
---------------------
- A funding rate ``r_k`` is a fraction of notional per settlement ``k`` (Binance USD-M: every 8 h for
  most of the history; some symbols settled every 2-4 h for a while). ``r_k > 0``: longs pay shorts.
- Horizons are counted in settlements, never in days: a horizon of ``H`` settlements is the next
  ``H`` settlements after the forecast time, whatever their spacing (three a day for an 8 h contract).
- A position is a signed USD notional ``n`` (long > 0). The funding it pays over the next ``H``
  settlements is ``sum_{k=1..H} n r_{t+k} = n H rbar`` where ``rbar`` is the mean rate over the
  horizon. Positive: paid; negative: received. This is the design's carry term ``horizon_j r_j x_j``.

The forecaster (``EwmaShrinkForecaster``)
------------------------------------------
Realised settlements ``r_1 .. r_t`` at or before the forecast time ``t`` (nothing later is read).

1. Level estimate: an exponentially weighted mean with half-life ``L`` settlements,
   ``lam = 2^(-1/L)`` and weights normalised over the history available (no start-up bias)::

       m_t = sum_{i=0..t-1} lam^i r_{t-i} / sum_{i=0..t-1} lam^i

   (recursively ``num_t = r_t + lam num_{t-1}``, ``den_t = 1 + lam den_{t-1}``, ``m_t = num_t/den_t``;
   pandas ``ewm(halflife=L, adjust=True).mean()`` computes the same).
2. Mean reversion: the deviation of the funding premium from its long-run level ``mu`` (a
   fraction per settlement of the series read; default 0.01 %, Binance's interest component of
   0.03 %/day at an 8 h interval) decays continuously,
   ``E[premium(t+s)] - mu = (m_t - mu) phi^s`` for ``s >= 0`` settlements ahead, ``phi = 2^(-1/T)``
   with a reversion half-life ``T`` settlements (``T = inf``: no reversion, ``phi = 1``).
3. Settlement ``t+k`` pays the premium averaged over its interval ``(t+k-1, t+k]`` (that is how the
   exchange computes it), so the next ``H`` settlements pay on average the mean over ``[0, H]``::

       rbar_t(H) = mu + (m_t - mu) w(H),   w(H) = (1/H) int_0^H phi^s ds = (1 - phi^H) / (H ln(1/phi))

   ``w(0) = 1`` (the limit ``H -> 0`` gives the EWMA), ``w`` falls with ``H`` and ``w(H) -> 0`` as
   ``H -> inf`` (long horizons give the long-run level); ``w = 1`` for every ``H`` when ``phi = 1``.
   ``H`` may be any real number >= 0 (a fraction of a settlement too).

With no settlement at or before ``t`` the forecast is ``mu`` (``w`` taken as 0).

Intervals: a book's long-run level (``[costs] funding_long_run_rate``, ``mu_8``) is quoted per
8 h settlement (``LONG_RUN_RATE_HOURS``), a daily level of ``3 mu_8``; a contract settling every
``h`` hours has ``mu = mu_8 h / 8`` per settlement (:func:`long_run_rate_per_settlement`; 1.25e-5
at 1 h for the default 1e-4), so its ``24 / h`` settlements a day pay the same ``3 mu_8`` at the
long-run level. ``EwmaShrinkForecaster.long_run_rate`` is per settlement of the series it reads:
callers scale the book's level. The half-lives ``L`` and ``T`` stay counted in settlements.

Baselines (same interface): ``LastRateForecaster`` (``rbar = r_t``, the latest settlement) and
``ZeroForecaster`` (``rbar = 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, overload

import numpy as np

from models.errors import ValidationError

if TYPE_CHECKING:  # pandas is imported where it runs: off a plain solve's start-up path
    import pandas as pd

#: Binance's interest component of the funding rate: 0.03 %/day = 0.01 % per 8 h settlement.
DEFAULT_LONG_RUN_RATE = 1e-4
#: Settlements per year at the standard 8 h interval (365-day year).
SETTLEMENTS_PER_YEAR_8H = 3 * 365
#: Hours of the settlement a book's long-run level (``funding_long_run_rate``) is quoted per.
LONG_RUN_RATE_HOURS = 8.0


# ---------------------------------------------------------------------------------------------
# Small formulas
# ---------------------------------------------------------------------------------------------


def decay_from_half_life(half_life: float) -> float:
    """Per-settlement decay factor ``2^(-1/half_life)`` (in (0, 1]; ``inf`` gives 1).

    ``half_life`` is in settlements and must be > 0.
    """
    if not half_life > 0:  # also rejects NaN
        raise ValidationError("half_life", f"is {half_life!r}", "give a half-life > 0 in settlements")
    if math.isinf(half_life):
        return 1.0
    return float(2.0 ** (-1.0 / half_life))


def horizon_weight(phi: float, horizon: float) -> float:
    """Weight ``w(H)`` of the current deviation in the mean forecast over ``H`` settlements.

    ``w(H) = (1/H) int_0^H phi^s ds = (1 - phi^H) / (H ln(1/phi))`` for ``0 < phi < 1``, ``w(0) = 1``,
    ``w = 1`` for ``phi = 1``. Dimensionless, in (0, 1], decreasing in ``H``, ``-> 0`` as ``H -> inf``.
    Computed as ``-expm1(-x) / x`` with ``x = H ln(1/phi)`` (accurate for small ``x``).
    """
    if not 0.0 < phi <= 1.0:
        raise ValidationError("phi", f"is {phi!r}", "give a decay factor in (0, 1]")
    if not horizon >= 0 or math.isinf(horizon):
        raise ValidationError("horizon", f"is {horizon!r}", "give a finite horizon >= 0 in settlements")
    x = horizon * -math.log(phi)
    if x == 0.0:
        return 1.0
    return -math.expm1(-x) / x


def horizon_weights(phi: float, horizons: np.ndarray) -> np.ndarray:
    """:func:`horizon_weight` element by element: ``w(H) = (1 - phi^H) / (H ln(1/phi))`` for each
    ``H`` of ``horizons`` (settlements, finite, >= 0; ``w(0) = 1``; ``w = 1`` when ``phi = 1``)."""
    if not 0.0 < phi <= 1.0:
        raise ValidationError("phi", f"is {phi!r}", "give a decay factor in (0, 1]")
    h = np.asarray(horizons, dtype=float)
    if not (np.isfinite(h) & (h >= 0)).all():
        raise ValidationError("horizon", "has values that are not finite or are < 0",
                              "give finite horizons >= 0 in settlements")
    x = h * -math.log(phi)
    safe = np.where(x > 0, x, 1.0)
    return np.asarray(np.where(x > 0, -np.expm1(-safe) / safe, 1.0), dtype=float)


@overload
def long_run_rate_per_settlement(rate_8h: float, hours: float) -> float: ...


@overload
def long_run_rate_per_settlement(rate_8h: float, hours: np.ndarray) -> np.ndarray: ...


def long_run_rate_per_settlement(rate_8h: float, hours: float | np.ndarray) -> float | np.ndarray:
    """The long-run level per settlement of a contract settling every ``hours`` hours:
    ``mu = mu_8 x hours / 8`` (``rate_8h`` = ``mu_8``, fraction per 8 h settlement,
    ``LONG_RUN_RATE_HOURS``): the same daily level ``3 mu_8`` whatever the interval (1e-4 at 8 h
    is 5e-5 at 4 h, 1.25e-5 at 1 h). Fraction per settlement, a float or an array as ``hours``."""
    if isinstance(hours, np.ndarray):
        return np.asarray(float(rate_8h) * hours.astype(float) / LONG_RUN_RATE_HOURS)
    return float(rate_8h) * float(hours) / LONG_RUN_RATE_HOURS


def ewma_path(rates: np.ndarray, half_life: float) -> np.ndarray:
    """Bias-free EWMA ``m_t`` of ``rates`` at every index (fraction per settlement).

    ``m_t = sum_{i<t} lam^i r_{t-i} / sum_{i<t} lam^i`` with ``lam = 2^(-1/half_life)``; element ``t``
    reads only ``rates[:t+1]``. ``rates`` must be finite (drop missing settlements first).
    """
    r = np.asarray(rates, dtype=float)
    if r.ndim != 1:
        raise ValidationError("rates", f"has shape {r.shape}", "give a 1-d series of rates")
    if r.size == 0:
        return np.empty(0)
    if not np.isfinite(r).all():
        raise ValidationError("rates", "has NaN or infinite values", "drop missing settlements first")
    from scipy.signal import lfilter  # here, not at import: scipy.signal costs ~0.5 s to load

    lam = decay_from_half_life(half_life)
    num = lfilter([1.0], [1.0, -lam], r)
    den = lfilter([1.0], [1.0, -lam], np.ones_like(r))
    return np.asarray(num / den, dtype=float)


def expected_funding_paid(notional: float, mean_rate: float, horizon: float) -> float:
    """USD of funding a position pays over ``horizon`` settlements: ``n * H * rbar``.

    ``notional`` signed USD (long > 0), ``mean_rate`` the expected mean rate per settlement. Positive:
    paid (a long when rates are positive); negative: received (a short when rates are positive).
    """
    return float(notional) * float(horizon) * float(mean_rate)


def _check_horizon(horizon: float) -> float:
    if not horizon > 0 or math.isinf(horizon):
        raise ValidationError("horizon", f"is {horizon!r}",
                              "give a finite horizon > 0 in settlements (e.g. 3 for a day at 8 h)")
    return float(horizon)


def _clean_series(rates: pd.Series) -> pd.Series:
    """Sorted, finite settlements with a DatetimeIndex (NaN: no settlement, dropped)."""
    import pandas as pd
    if not isinstance(rates.index, pd.DatetimeIndex):
        raise ValidationError("rates", "is not indexed by time",
                              "give a pandas Series indexed by settlement time (DatetimeIndex)")
    s = rates.dropna().astype(float).sort_index()
    if not np.isfinite(s.to_numpy()).all():
        raise ValidationError("rates", "has infinite values", "give finite funding rates")
    return s


# ---------------------------------------------------------------------------------------------
# Forecasters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FundingForecast:
    """One forecast, made at ``at`` from the ``n_obs`` settlements at or before it.

    ``mean_rate``: expected mean funding rate per settlement over the next ``horizon`` settlements
    (fraction; > 0: longs pay). ``level``: the forecaster's current level estimate (the EWMA for the
    shrunk forecaster; NaN when it has none).
    """

    at: pd.Timestamp
    horizon: float
    mean_rate: float
    level: float
    n_obs: int

    @property
    def carry_rate(self) -> float:
        """Expected funding over the whole horizon per USD of long notional: ``H * rbar``."""
        return self.horizon * self.mean_rate

    def funding_paid(self, notional: float) -> float:
        """Expected USD paid over the horizon by signed notional ``notional`` (long > 0).

        ``n H rbar``: > 0 paid, < 0 received (longs pay when ``rbar > 0``, shorts receive).
        """
        return expected_funding_paid(notional, self.mean_rate, self.horizon)


class FundingForecaster(Protocol):
    """Anything that turns realised settlements into a mean-rate forecast over ``H`` settlements."""

    @property
    def name(self) -> str:
        """A short label for tables."""
        ...

    def mean_rate_path(self, rates: np.ndarray, horizon: float) -> np.ndarray:
        """Forecast at every index ``t`` of ``rates`` from ``rates[:t+1]`` only (fraction/settlement)."""
        ...

    def level_path(self, rates: np.ndarray) -> np.ndarray:
        """The current level estimate at every index (NaN where the forecaster has none)."""
        ...


def forecast_at(forecaster: FundingForecaster, rates: pd.Series, at: pd.Timestamp | str,
                horizon: float, *, empty_rate: float = 0.0) -> FundingForecast:
    """The forecast of ``forecaster`` made at time ``at`` over the next ``horizon`` settlements.

    Only settlements with timestamp ``<= at`` are read (strictly causal). With none, the forecast is
    ``empty_rate`` (the long-run level for the shrunk forecaster).
    """
    import pandas as pd
    h = _check_horizon(horizon)
    stamp = pd.Timestamp(at)
    s = _clean_series(rates)
    tz = pd.DatetimeIndex(s.index).tz
    if tz is not None and stamp.tz is None:
        stamp = stamp.tz_localize(tz)
    past = s.loc[s.index <= stamp].to_numpy(dtype=float)
    if past.size == 0:
        return FundingForecast(at=stamp, horizon=h, mean_rate=float(empty_rate), level=float("nan"),
                               n_obs=0)
    mean = forecaster.mean_rate_path(past, h)
    level = forecaster.level_path(past)
    return FundingForecast(at=stamp, horizon=h, mean_rate=float(mean[-1]), level=float(level[-1]),
                           n_obs=int(past.size))


@dataclass(frozen=True)
class EwmaShrinkForecaster:
    """EWMA of realised funding shrunk towards a long-run level as the horizon grows.

    ``half_life``: EWMA half-life ``L`` (settlements); ``reversion_half_life``: half-life ``T`` of a
    deviation from the long-run level (settlements; ``inf``: no shrinkage); ``long_run_rate``: ``mu``
    (fraction per settlement of the series read, default 1e-4 = 0.01 % for an 8 h series; scale a
    book's 8 h level for another interval, :func:`long_run_rate_per_settlement`). Forecast over
    ``H`` settlements:
    ``rbar = mu + (m_t - mu) (1 - phi^H) / (H ln(1/phi))``, ``phi = 2^(-1/T)`` (module docstring).
    """

    half_life: float = 21.0
    reversion_half_life: float = 90.0
    long_run_rate: float = DEFAULT_LONG_RUN_RATE
    name: ClassVar[str] = "ewma_shrunk"

    def __post_init__(self) -> None:
        decay_from_half_life(self.half_life)
        decay_from_half_life(self.reversion_half_life)
        if not math.isfinite(self.long_run_rate) or abs(self.long_run_rate) >= 1:
            raise ValidationError("long_run_rate", f"is {self.long_run_rate!r}",
                                  "give a finite fraction per settlement, e.g. 1e-4 (0.01 %/8 h)")

    @property
    def phi(self) -> float:
        """Per-settlement decay of a deviation from the long-run level, ``2^(-1/T)``."""
        return decay_from_half_life(self.reversion_half_life)

    def shrink_weight(self, horizon: float) -> float:
        """``w(H)``: the share of the current deviation ``m_t - mu`` kept in the mean over ``H``."""
        return horizon_weight(self.phi, horizon)

    def level_path(self, rates: np.ndarray) -> np.ndarray:
        """The EWMA ``m_t`` at every index (see ``ewma_path``)."""
        return ewma_path(rates, self.half_life)

    def mean_rate_path(self, rates: np.ndarray, horizon: float) -> np.ndarray:
        """``mu + (m_t - mu) w(H)`` at every index ``t``, from ``rates[:t+1]`` only."""
        w = self.shrink_weight(_check_horizon(horizon))
        m = self.level_path(rates)
        return self.long_run_rate + (m - self.long_run_rate) * w

    def forecast(self, rates: pd.Series, at: pd.Timestamp | str, horizon: float) -> FundingForecast:
        """The forecast at ``at`` over ``horizon`` settlements (``mu`` when nothing settled yet)."""
        return forecast_at(self, rates, at, horizon, empty_rate=self.long_run_rate)


@dataclass(frozen=True)
class LastRateForecaster:
    """Baseline: the latest realised settlement persists, ``rbar = r_t`` for every horizon."""

    name: ClassVar[str] = "last_rate"

    def level_path(self, rates: np.ndarray) -> np.ndarray:
        """``r_t`` itself."""
        return np.asarray(rates, dtype=float).copy()

    def mean_rate_path(self, rates: np.ndarray, horizon: float) -> np.ndarray:
        """``r_t`` at every index."""
        _check_horizon(horizon)
        return self.level_path(rates)

    def forecast(self, rates: pd.Series, at: pd.Timestamp | str, horizon: float) -> FundingForecast:
        """The latest settlement at or before ``at`` (0 when none)."""
        return forecast_at(self, rates, at, horizon)


@dataclass(frozen=True)
class ZeroForecaster:
    """Baseline: no funding, ``rbar = 0`` (what an optimiser without a carry term assumes)."""

    name: ClassVar[str] = "zero"

    def level_path(self, rates: np.ndarray) -> np.ndarray:
        """NaN: the baseline estimates no level."""
        return np.full(np.asarray(rates).shape, np.nan)

    def mean_rate_path(self, rates: np.ndarray, horizon: float) -> np.ndarray:
        """0 at every index."""
        _check_horizon(horizon)
        return np.zeros(np.asarray(rates).shape)

    def forecast(self, rates: pd.Series, at: pd.Timestamp | str, horizon: float) -> FundingForecast:
        """0."""
        return forecast_at(self, rates, at, horizon)


# ---------------------------------------------------------------------------------------------
# Evaluation helper (used by benchmarks/funding_forecast.py)
# ---------------------------------------------------------------------------------------------


def realised_mean_path(rates: np.ndarray, horizon: int) -> np.ndarray:
    """Realised mean rate over the next ``horizon`` settlements after each index ``t``.

    ``out[t] = mean(rates[t+1 : t+1+H])``; NaN where fewer than ``H`` settlements follow ``t``.
    This is the target a forecast made at ``t`` is judged against (it reads the future on purpose).
    """
    if horizon < 1 or int(horizon) != horizon:
        raise ValidationError("horizon", f"is {horizon!r}", "give a whole number of settlements >= 1")
    r = np.asarray(rates, dtype=float)
    out = np.full(r.shape, np.nan)
    h = int(horizon)
    if r.size <= h:
        return out
    c = np.concatenate([[0.0], np.cumsum(r)])
    t = np.arange(r.size - h)
    out[: r.size - h] = (c[t + 1 + h] - c[t + 1]) / h
    return out
