"""The EWMA funding forecast's long-run level is quoted per 8 h settlement (`[costs]
funding_long_run_rate`, default 1e-4: Binance's interest component, 0.03 %/day): a perpetual
settling every h hours is shrunk towards mu h / 8 per settlement, the same level a day, in the
replay's forecast (scenarios.replay_inputs.forecast_matrix) and in the planner's decay
(optimizer.carry.carry_path). The half-lives stay counted in settlements. The default "last" rule
reads no long-run level: nothing it does moves. Expected values by hand (numpy)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.funding_forecast import (
    LONG_RUN_RATE_HOURS,
    horizon_weight,
    horizon_weights,
    long_run_rate_per_settlement,
)
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from optimizer.carry import _carry_per_horizon, carry_path
from optimizer.settings import CostSettings, FundingForecastRule
from scenarios.market_path import MarketPath
from scenarios.replay_inputs import market_at, read_inputs


def test_the_long_run_level_per_settlement_scales_with_the_interval() -> None:
    assert LONG_RUN_RATE_HOURS == 8.0
    assert long_run_rate_per_settlement(1e-4, 8.0) == 1e-4
    assert long_run_rate_per_settlement(1e-4, 4.0) == pytest.approx(5e-5, rel=1e-15)
    assert long_run_rate_per_settlement(1e-4, 1.0) == pytest.approx(1.25e-5, rel=1e-15)
    got = long_run_rate_per_settlement(-2e-4, np.array([1.0, 2.0, 8.0]))
    np.testing.assert_allclose(got, [-2.5e-5, -5e-5, -2e-4], rtol=1e-15)
    # the same level a day whatever the interval: 24 / h settlements of mu h / 8
    for h in (1.0, 2.0, 4.0, 8.0):
        assert 24.0 / h * long_run_rate_per_settlement(1e-4, h) == pytest.approx(3e-4, rel=1e-15)


def test_horizon_weights_are_the_scalar_weights_element_by_element() -> None:
    phi = 2.0 ** (-1.0 / 90.0)
    hs = np.array([0.0, 1e-9, 0.5, 3.0, 12.0, 24.0, 1e6])
    np.testing.assert_allclose(horizon_weights(phi, hs), [horizon_weight(phi, h) for h in hs],
                               rtol=1e-14)
    by_hand = (1.0 - phi ** 12.0) / (12.0 * math.log(1.0 / phi))
    assert horizon_weights(phi, np.array([12.0]))[0] == pytest.approx(by_hand, rel=1e-12)
    np.testing.assert_array_equal(horizon_weights(1.0, hs), np.ones_like(hs))


def _interest_only_path() -> tuple[Book, MarketPath]:
    """BTC-PERP (8 h) and SOL-PERP (1 h, funding_interval_h = 1) that both pay exactly the
    interest component, 0.03 %/day, constantly: 1e-4 every 8 h and 1.25e-5 every hour."""
    cons = (FuturesContract("BTC-PERP", "BTC"),
            FuturesContract("SOL-PERP", "SOL", funding_interval_h=1.0))
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("SOL")), contracts=cons,
                spot={"BTC": 1.0, "SOL": 100.0}, targets={"BTC": 0.5, "SOL": 0.5}, cash=0.0,
                name="b")
    days = pd.date_range("2024-01-01", periods=40, freq="1D", tz="UTC")
    spot = pd.DataFrame({"BTC": 50_000.0, "SOL": 100.0}, index=days)
    hourly = pd.date_range(pd.Timestamp("2024-01-01 01:00", tz="UTC"), days[-1], freq="1h")
    btc = pd.Series(1e-4, index=hourly[hourly.hour % 8 == 0])
    sol = pd.Series(1.25e-5, index=hourly)
    funding = pd.DataFrame({"BTC-PERP": btc, "SOL-PERP": sol}).fillna(0.0)
    settled = pd.DataFrame({"BTC-PERP": funding.index.isin(btc.index),
                            "SOL-PERP": funding.index.isin(sol.index)}, index=funding.index)
    return book, MarketPath(spot=spot, funding=funding, funding_settled=settled)


def test_a_constant_interest_level_is_forecast_as_itself_at_any_interval() -> None:
    """A forecast of a series constant at the long-run level is that constant: 3e-4 of carry a
    day for both (the 1 h one was shrunk towards 1e-4 per hour: 24 x (1e-4 + (1.25e-5 - 1e-4)
    w(24)) = 4.83e-4 a day, w(24) = 0.913 with the default T = 90)."""
    book, path = _interest_only_path()
    costs = CostSettings(funding_forecast=FundingForecastRule.EWMA, horizon_days=1.0)
    inp = read_inputs(book, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01,
                      costs=costs)
    assert inp.interval_notes == ()  # both settle at their own funding_interval_h
    for k in (1, 10, 30, 39):
        snap = market_at(inp, k)
        assert snap.funding_forecast["BTC-PERP"] == pytest.approx(1e-4, rel=1e-9)
        assert snap.funding_forecast["SOL-PERP"] == pytest.approx(1.25e-5, rel=1e-9)
        np.testing.assert_allclose(_carry_per_horizon(book, snap, 1.0), [3e-4, 3e-4], rtol=1e-9)


def test_the_last_rule_reads_no_long_run_level() -> None:
    """The default "last" rule: no forecast, the carry is 24 / h x the last rate whatever
    funding_long_run_rate says, and the planner keeps it at every step."""
    book, path = _interest_only_path()
    for mu in (1e-4, 5e-3):
        costs = CostSettings(funding_long_run_rate=mu, horizon_days=1.0)
        assert costs.funding_forecast == FundingForecastRule.LAST
        inp = read_inputs(book, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01,
                          costs=costs)
        assert inp.forecast is None
        snap = market_at(inp, 30)
        assert snap.funding_forecast == {}
        first = _carry_per_horizon(book, snap, 1.0)
        np.testing.assert_allclose(first, [3e-4, 3e-4], rtol=1e-12)
        np.testing.assert_array_equal(carry_path(book, snap, costs, first, 5), np.tile(first, (5, 1)))


@pytest.mark.parametrize("hours", [1.0, 2.0, 8.0])
def test_the_planner_decays_towards_the_scaled_level(hours: float) -> None:
    """A perpetual settling every h hours, forecast 3 bp per settlement, mu = 1e-4 per 8 h,
    reversion half-life 90 settlements, 1-day steps: n = 24 / h settlements a step and step s
    (0-based) carries n (mu_h + (3e-4 - mu_h) phi^(n s)), mu_h = 1e-4 h / 8, phi = 2^(-1/90);
    the interval is the contract's own (``hours`` as funding_interval_h) or, the same, the
    market's measured spacing (MarketSnapshot.funding_interval_h) on an 8 h contract."""
    n, mu_h, phi = 24.0 / hours, 1e-4 * hours / 8.0, 2.0 ** (-1.0 / 90.0)
    hand = np.array([n * (mu_h + (3e-4 - mu_h) * phi ** (n * s)) for s in range(6)])
    costs = CostSettings(funding_forecast=FundingForecastRule.EWMA, funding_long_run_rate=1e-4,
                         funding_reversion_half_life=90.0, horizon_days=1.0)
    t = pd.Timestamp("2024-01-10", tz="UTC")
    own = FuturesContract("SOL-PERP", "SOL", funding_interval_h=hours)
    measured = FuturesContract("SOL-PERP", "SOL")
    for contract, spacing in ((own, {}), (measured, {"SOL-PERP": hours} if hours != 8.0 else {})):
        book = Book((SpotAsset("SOL"),), (contract,), spot={"SOL": 1.0}, targets={"SOL": 1.0},
                    cash=0.0)
        snap = MarketSnapshot(time=t, spot={"SOL": 100.0}, mark={"SOL-PERP": 100.0},
                              funding={"SOL-PERP": 9e-4}, funding_forecast={"SOL-PERP": 3e-4},
                              funding_interval_h=spacing)
        first = _carry_per_horizon(book, snap, 1.0)
        assert first[0] == pytest.approx(n * 3e-4, rel=1e-12)
        np.testing.assert_allclose(carry_path(book, snap, costs, first, 6)[:, 0], hand, rtol=1e-12)
    # far out every interval pays the same 3 mu a day
    assert hand[-1] == pytest.approx(3e-4 + (hand[0] - 3e-4) * phi ** (5 * n), rel=1e-12)
