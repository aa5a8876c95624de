"""models.trailing_risk against numpy: a re-estimate on a path with a missing bar leaves out the
return across the gap (it spans two steps) instead of counting it as one step's return."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.risk import RiskModel
from models.trailing_risk import TrailingRisk, one_step_returns


def _path(step: str, n: int, drop: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    idx = pd.date_range("2024-01-01", periods=n, freq=step, tz="UTC")
    walk = np.exp(np.cumsum(rng.normal(0.0, 0.02, (n, 2)), axis=0)) * [60_000.0, 3_000.0]
    prices = pd.DataFrame(walk, index=idx, columns=["BTC", "ETH"])
    return pd.DataFrame(prices.drop(prices.index[drop]))


def _by_hand(prices: pd.DataFrame, step: pd.Timedelta, t: pd.Timestamp, rows: int) -> np.ndarray:
    """Returns over exactly one step (p_t / p_{t - step} - 1 where both exist), up to t, the last
    ``rows``: their sample covariance (ddof 1)."""
    p = prices.loc[prices.index <= t]
    prev = p.reindex(pd.DatetimeIndex(p.index) - step).to_numpy()
    r = (p.to_numpy() / prev - 1.0)[~np.isnan(prev).any(axis=1)]
    return np.asarray(np.cov(r[-rows:], rowvar=False, ddof=1))


def test_one_step_returns_leave_out_the_return_across_a_missing_bar() -> None:
    prices = _path("1D", 10, 4)
    r = one_step_returns(prices)
    assert len(r) == 7  # 9 prices, 8 returns, the one over two days (01-04 to 01-06) out
    assert prices.index[4] == pd.Timestamp("2024-01-06T00:00Z") and prices.index[4] not in r.index
    assert prices.index[5] in r.index
    np.testing.assert_allclose(r.loc[prices.index[6]].to_numpy(),
                               prices.iloc[6].to_numpy() / prices.iloc[5].to_numpy() - 1.0)


def test_a_trailing_sample_estimate_on_an_8h_path_with_a_gap_is_numpys() -> None:
    prices = _path("8h", 400, 300)
    fallback = RiskModel.from_covariance(("BTC", "ETH"), np.eye(2) * 0.5)
    risk = TrailingRisk(fallback, prices, ["BTC", "ETH"], lookback_days=60, method="sample")
    t = prices.index[-1]
    rows = 180  # 60 days of 8 h steps
    expected = _by_hand(prices, pd.Timedelta(hours=8), t, rows) * 3 * 365
    np.testing.assert_allclose(risk(t).covariance, expected, rtol=1e-10)
