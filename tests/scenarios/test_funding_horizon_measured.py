"""A replay with `[costs] funding_forecast = "ewma"`: the forecast's horizon counts the settlements
the carry counts. Where a perpetual's measured spacing h (the median of its last five gaps,
scenarios.funding_run.settlement_hours) differs from its `funding_interval_h`, the snapshot
carries h (MarketSnapshot.funding_interval_h) and the carry is n rbar(n), n = horizon_days x 24 / h;
the forecast's mean rate must be taken over the same n settlements (it was taken over
horizon_days x 24 / funding_interval_h), with the long-run level mu per 8 h scaled to mu h / 8.

By hand (models/funding_forecast.py's formula in plain numpy): rbar(n) = mu_h + (m - mu_h) w(n),
w(n) = (1 - phi^n) / (n ln(1/phi)), phi = 2^(-1/T), m the EWMA of the settlements so far."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from optimizer.carry import _carry_per_horizon
from optimizer.settings import CostSettings, FundingForecastRule
from scenarios.market_path import MarketPath
from scenarios.replay_inputs import market_at, read_inputs


def _w(phi: float, n: float) -> float:
    return float((1.0 - phi ** n) / (n * math.log(1.0 / phi)))


def _constant_2h() -> tuple[Book, MarketPath]:
    """SOL-PERP (funding_interval_h 8) paying 5e-4 every 2 h (SOL, November 2022)."""
    book = Book(assets=(SpotAsset("SOL"),), contracts=(FuturesContract("SOL-PERP", "SOL"),),
                spot={"SOL": 10.0}, targets={"SOL": 1.0}, cash=0.0, name="b")
    days = pd.date_range("2022-11-01", periods=20, freq="1D", tz="UTC")
    spot = pd.DataFrame({"SOL": 20.0}, index=days)
    settle = pd.date_range(pd.Timestamp("2022-11-01 02:00", tz="UTC"), days[-1], freq="2h")
    return book, MarketPath(spot=spot, funding=pd.DataFrame({"SOL-PERP": 5e-4}, index=settle))


@pytest.mark.parametrize("mu", [1e-4, 0.0])
def test_the_forecast_horizon_is_the_measured_settlements(mu: float) -> None:
    """1 day at 2 h: n = 12 (not 3). mu = 0 isolates the horizon (carry = 12 m w(12)); the
    default mu = 1e-4 per 8 h is 2.5e-5 per 2 h settlement."""
    book, path = _constant_2h()
    costs = CostSettings(funding_forecast=FundingForecastRule.EWMA, horizon_days=1.0,
                         funding_long_run_rate=mu)
    with pytest.warns(UserWarning, match="SOL-PERP settled every 2 h"):
        inp = read_inputs(book, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01,
                          costs=costs)
    snap = market_at(inp, 10)
    assert snap.funding_hours("SOL-PERP", 8.0) == 2.0
    carry = float(_carry_per_horizon(book, snap, 1.0)[0])
    m, phi, n, mu_h = 5e-4, 2.0 ** (-1.0 / 90.0), 12.0, mu * 2.0 / 8.0
    assert carry == pytest.approx(n * (mu_h + (m - mu_h) * _w(phi, n)), rel=1e-9)


def _switching_path() -> tuple[Book, MarketPath, pd.Series]:
    """BTC-PERP every 8 h throughout; SOL-PERP (funding_interval_h 8) every 8 h to 2022-11-10
    16:00, every 2 h from 20:00 (the 16:00 -> 20:00 gap is 4 h) to 2022-11-15 00:00, then every
    8 h again. Rates: seeded noise around 1e-4 (BTC) and -3e-4 (SOL)."""
    rng = np.random.default_rng(7)
    utc = "UTC"
    days = pd.date_range("2022-11-01", periods=24, freq="1D", tz=utc)
    slow1 = pd.date_range(pd.Timestamp("2022-11-01 08:00", tz=utc),
                          pd.Timestamp("2022-11-10 16:00", tz=utc), freq="8h")
    fast = pd.date_range(pd.Timestamp("2022-11-10 20:00", tz=utc),
                         pd.Timestamp("2022-11-15 00:00", tz=utc), freq="2h")
    slow2 = pd.date_range(pd.Timestamp("2022-11-15 08:00", tz=utc), days[-1], freq="8h")
    sol_t = slow1.append(fast).append(slow2)
    btc_t = pd.date_range(pd.Timestamp("2022-11-01 08:00", tz=utc), days[-1], freq="8h")
    sol = pd.Series(-3e-4 + 2e-4 * rng.standard_normal(len(sol_t)), index=sol_t)
    btc = pd.Series(1e-4 + 1e-4 * rng.standard_normal(len(btc_t)), index=btc_t)
    funding = pd.DataFrame({"BTC-PERP": btc, "SOL-PERP": sol})
    settled = funding.notna()
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("SOL")),
                contracts=(FuturesContract("BTC-PERP", "BTC"), FuturesContract("SOL-PERP", "SOL")),
                spot={"BTC": 0.1, "SOL": 10.0}, targets={"BTC": 0.5, "SOL": 0.5}, cash=0.0, name="b")
    spot = pd.DataFrame({"BTC": 20_000.0, "SOL": 20.0}, index=days)
    return book, MarketPath(spot=spot, funding=funding.fillna(0.0), funding_settled=settled), sol


def _ewma(rates: np.ndarray, half_life: float) -> float:
    lam, num, den = 2.0 ** (-1.0 / half_life), 0.0, 0.0
    for r in rates:
        num, den = r + lam * num, 1.0 + lam * den
    return num / den


def test_every_step_forecasts_over_the_spacing_its_carry_counts() -> None:
    """Step by step, SOL's h is the median of its last five gaps at the step (8, then 4 on
    2022-11-11, 2, then back to 8 once five 8 h gaps have passed), n = 1.5 x 24 / h, and the
    carry is n (mu_h + (m - mu_h) w(n)) with half-lives 5 and 30 settlements; BTC stays at 8 h."""
    book, path, sol = _switching_path()
    costs = CostSettings(funding_forecast=FundingForecastRule.EWMA, horizon_days=1.5,
                         funding_half_life=5.0, funding_reversion_half_life=30.0,
                         funding_long_run_rate=1e-4)
    with pytest.warns(UserWarning, match="SOL-PERP settled every"):
        inp = read_inputs(book, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01,
                          costs=costs)
    phi = 2.0 ** (-1.0 / 30.0)
    seen: list[float] = []
    for k, t in enumerate(inp.times):
        past = sol.loc[sol.index <= t]
        if len(past) < 2:
            continue
        h = float(past.index.to_series().diff().dt.total_seconds().div(3600.0).iloc[-5:].median())
        snap = market_at(inp, k)
        assert snap.funding_hours("SOL-PERP", 8.0) == h, t
        assert "BTC-PERP" not in snap.funding_interval_h
        n, mu_h = 36.0 / h, 1e-4 * h / 8.0
        hand = n * (mu_h + (_ewma(past.to_numpy(), 5.0) - mu_h) * _w(phi, n))
        assert float(_carry_per_horizon(book, snap, 1.5)[1]) == pytest.approx(hand, rel=1e-9), t
        seen.append(h)
    assert sorted(set(seen)) == [2.0, 4.0, 8.0]
