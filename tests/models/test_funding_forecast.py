"""Funding forecasts: hand-computed EWMA, shrinkage limits, causality, carry sign (synthetic data only)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.errors import ValidationError
from models.funding_forecast import (
    DEFAULT_LONG_RUN_RATE,
    EwmaShrinkForecaster,
    LastRateForecaster,
    ZeroForecaster,
    decay_from_half_life,
    ewma_path,
    expected_funding_paid,
    horizon_weight,
    realised_mean_path,
)


def _rates(n: int = 400, seed: int = 7) -> pd.Series:
    """An AR(1) funding series around 1e-4 per 8 h settlement (fraction), seeded."""
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = 3e-4
    for k in range(1, n):
        x[k] = 1e-4 + 0.9 * (x[k - 1] - 1e-4) + 1e-4 * rng.standard_normal()
    index = pd.date_range("2024-01-01", periods=n, freq="8h", tz="UTC")
    return pd.Series(x, index=index, name="BTC")


def test_ewma_matches_hand_computation() -> None:
    # half-life 1 settlement: lam = 1/2; weights normalised over the available history
    r = np.array([4e-4, 0.0, 2e-4])
    lam = 0.5
    hand = [4e-4,
            (0.0 + lam * 4e-4) / (1 + lam),                        # 2e-4 / 1.5
            (2e-4 + lam * 0.0 + lam**2 * 4e-4) / (1 + lam + lam**2)]  # 3e-4 / 1.75
    np.testing.assert_allclose(ewma_path(r, 1.0), hand, rtol=0, atol=1e-15)
    np.testing.assert_allclose(hand, [4e-4, 2e-4 / 1.5, 3e-4 / 1.75], rtol=1e-12)


def test_ewma_equals_pandas_adjusted_ewm() -> None:
    s = _rates(200)
    ref = s.ewm(halflife=5.0, adjust=True).mean().to_numpy()
    np.testing.assert_allclose(ewma_path(s.to_numpy(), 5.0), ref, rtol=1e-12, atol=1e-18)


def test_decay_and_weight_formulas() -> None:
    assert decay_from_half_life(1.0) == pytest.approx(0.5)
    assert decay_from_half_life(math.inf) == 1.0
    # w(H) = (1 - phi^H) / (H ln(1/phi)), by hand for phi = 0.5, H = 3: 0.875 / (3 ln 2) = 0.420776...
    assert horizon_weight(0.5, 3) == pytest.approx(0.875 / (3 * 0.6931471805599453), rel=1e-12)
    assert horizon_weight(0.5, 3) == pytest.approx(0.4207861, abs=1e-7)
    assert horizon_weight(0.5, 0) == 1.0
    assert horizon_weight(1.0, 90) == 1.0
    with pytest.raises(ValidationError):
        decay_from_half_life(0.0)
    with pytest.raises(ValidationError):
        horizon_weight(0.5, -1)


def test_shrinkage_limits() -> None:
    s = _rates()
    f = EwmaShrinkForecaster(half_life=10, reversion_half_life=30, long_run_rate=DEFAULT_LONG_RUN_RATE)
    m = ewma_path(s.to_numpy(), 10)[-1]
    mu = DEFAULT_LONG_RUN_RATE
    assert abs(m - mu) > 1e-6  # the test is not vacuous
    at = s.index[-1]
    # h -> 0 gives the EWMA
    assert f.forecast(s, at, 1e-12).mean_rate == pytest.approx(m, rel=1e-10)
    assert f.shrink_weight(1e-12) == pytest.approx(1.0, abs=1e-12)
    # one settlement: w(1) = (1 - phi) / ln(1/phi) = 0.98851... for T = 30
    phi = 2 ** (-1 / 30)
    assert f.forecast(s, at, 1).mean_rate == pytest.approx(mu + (m - mu) * (1 - phi) / -math.log(phi),
                                                           rel=1e-12)
    # as h -> inf the forecast tends to the long-run level
    assert f.forecast(s, at, 1e12).mean_rate == pytest.approx(mu, abs=1e-10 * abs(m - mu))
    # in between it lies between them, monotone in the horizon
    fc = [f.forecast(s, at, h).mean_rate for h in (1e-6, 1, 3, 21, 90, 1000)]
    dev = np.abs(np.array(fc) - mu)
    assert np.all(np.diff(dev) < 0)
    assert np.all(dev <= abs(m - mu) + 1e-18)
    # no reversion: the EWMA at every horizon
    g = EwmaShrinkForecaster(half_life=10, reversion_half_life=math.inf)
    assert g.forecast(s, at, 90).mean_rate == pytest.approx(m, rel=1e-12)


def test_forecast_is_causal() -> None:
    s = _rates()
    t = s.index[250]
    changed = s.copy()
    rng = np.random.default_rng(99)
    changed.iloc[251:] = rng.normal(0.0, 5e-3, size=len(s) - 251)  # rewrite everything after t
    for model in (EwmaShrinkForecaster(), LastRateForecaster(), ZeroForecaster()):
        for h in (1, 3, 21, 90):
            a, b = model.forecast(s, t, h), model.forecast(changed, t, h)
            assert a.mean_rate == b.mean_rate
            assert a.n_obs == b.n_obs == 251
        # the vectorised path too: every element up to t is unchanged
        pa = model.mean_rate_path(s.to_numpy(), 21)
        pb = model.mean_rate_path(changed.to_numpy(), 21)
        np.testing.assert_array_equal(pa[:251], pb[:251])
        assert not np.array_equal(pa[251:], pb[251:]) or model.name == "zero"
    # and a settlement *at* t is used (at or before t)
    bumped = s.copy()
    bumped.iloc[250] += 1e-3
    assert EwmaShrinkForecaster().forecast(bumped, t, 3).mean_rate != EwmaShrinkForecaster().forecast(
        s, t, 3).mean_rate


def test_forecast_between_settlements_and_before_any() -> None:
    s = _rates(50)
    f = EwmaShrinkForecaster()
    mid = s.index[10] + pd.Timedelta(hours=3)
    assert f.forecast(s, mid, 3).mean_rate == f.forecast(s, s.index[10], 3).mean_rate
    early = f.forecast(s, s.index[0] - pd.Timedelta(hours=1), 3)
    assert early.n_obs == 0 and early.mean_rate == f.long_run_rate
    # missing settlements (NaN) are skipped, not treated as zero
    holes = s.copy()
    holes.iloc[5] = np.nan
    assert f.forecast(holes, s.index[10], 3).n_obs == 10


def test_carry_sign_long_and_short() -> None:
    s = pd.Series([3e-4] * 30, index=pd.date_range("2024-01-01", periods=30, freq="8h", tz="UTC"))
    fc = LastRateForecaster().forecast(s, s.index[-1], 21)
    # positive rates: a long pays n H r, a short receives it
    assert fc.funding_paid(1_000_000.0) == pytest.approx(1e6 * 21 * 3e-4)  # 6,300 USD paid
    assert fc.funding_paid(-1_000_000.0) == pytest.approx(-6300.0)
    assert fc.carry_rate == pytest.approx(21 * 3e-4)
    # negative rates: shorts pay, longs receive
    neg = LastRateForecaster().forecast(-s, s.index[-1], 3)
    assert neg.funding_paid(50_000.0) < 0 < neg.funding_paid(-50_000.0)
    assert expected_funding_paid(-2.0, -1e-4, 3) == pytest.approx(6e-4)
    assert ZeroForecaster().forecast(s, s.index[-1], 90).funding_paid(1e6) == 0.0


def test_realised_mean_path() -> None:
    r = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out = realised_mean_path(r, 2)
    np.testing.assert_allclose(out[:3], [2.5, 3.5, 4.5])
    assert np.isnan(out[3:]).all()


def test_bad_input() -> None:
    s = _rates(10)
    with pytest.raises(ValidationError):
        EwmaShrinkForecaster().forecast(s, s.index[-1], 0)
    with pytest.raises(ValidationError):
        EwmaShrinkForecaster(half_life=-1.0)
    with pytest.raises(ValidationError):
        EwmaShrinkForecaster().forecast(pd.Series([1e-4, 2e-4]), "2024-01-01", 3)
    with pytest.raises(ValidationError):
        ewma_path(np.array([1e-4, np.nan]), 3)
