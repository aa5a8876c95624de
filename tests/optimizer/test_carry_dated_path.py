"""The multi-period planner's carry of a dated contract stops at its expiry (hand-computed).

BTC spot 10,000, the dated mark 10,030: basis b = 0.3%, decaying linearly to 0 at expiry. With
1-day planner steps the carry is b / D a day: the full rate in each step before expiry, its share
in the step holding the expiry, 0 after (the old path repeated step 1's carry at all H steps).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.carry import _carry_per_horizon, carry_path, dated_carry_steps
from optimizer.prepare import prepare
from optimizer.settings import CostSettings, FundingForecastRule, OptimizerSettings

T0 = pd.Timestamp("2025-01-01", tz="UTC")


def _setup(expiry: datetime) -> tuple[Book, MarketSnapshot]:
    d = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED, expiry=expiry)
    book = Book((SpotAsset("BTC"),), (d,), spot={"BTC": 1.0}, targets={"BTC": 1.0}, cash=0.0)
    return book, MarketSnapshot(time=T0, spot={"BTC": 10_000.0}, mark={"BTC-Q": 10_030.0})


@pytest.mark.parametrize("rule", [FundingForecastRule.LAST, FundingForecastRule.EWMA])
def test_three_days_to_expiry_ten_steps(rule: FundingForecastRule) -> None:
    """D = 3 days, H = 10 one-day steps: 0.1% at steps 1-3, then 0; total 0.3% = b."""
    book, market = _setup(datetime(2025, 1, 4, tzinfo=UTC))
    costs = CostSettings(horizon_days=1.0, funding_forecast=rule)
    first = _carry_per_horizon(book, market, costs.horizon_days)
    assert first[0] == pytest.approx(0.001)
    path = carry_path(book, market, costs, first, 10)
    np.testing.assert_allclose(path[:, 0], [0.001] * 3 + [0.0] * 7, atol=1e-15)
    assert path[:, 0].sum() == pytest.approx(0.003)
    risk = RiskModel.from_covariance(["BTC"], np.array([[0.36]]))
    d = prepare(book, market, risk, OptimizerSettings(costs=costs, horizon=10))
    assert d.carry_steps is not None
    np.testing.assert_allclose(d.carry_steps[:, 0], [0.001] * 3 + [0.0] * 7, atol=1e-15)


def test_expiry_inside_a_step_is_prorated() -> None:
    """D = 2.5 days: b / D = 0.12% a day -> 0.12%, 0.12%, 0.06% (half a step), 0; total b."""
    book, market = _setup(datetime(2025, 1, 3, 12, tzinfo=UTC))
    costs = CostSettings(horizon_days=1.0)
    first = _carry_per_horizon(book, market, 1.0)
    path = carry_path(book, market, costs, first, 5)[:, 0]
    np.testing.assert_allclose(path, [0.0012, 0.0012, 0.0006, 0.0, 0.0], rtol=1e-12, atol=1e-15)
    assert path.sum() == pytest.approx(0.003)


def test_expiry_inside_the_first_step_and_long_steps() -> None:
    """D = 0.5 day with 1-day steps: step 1 carries the whole basis (today's single-period carry),
    later steps 0. D = 10 days with 4-day steps: b x 4/10, b x 4/10, b x 2/10."""
    np.testing.assert_allclose(dated_carry_steps(0.003, 0.5, 1.0, 3), [0.003, 0.0, 0.0])
    first = 0.003 * 4 / 10
    np.testing.assert_allclose(dated_carry_steps(first, 10.0, 4.0, 4),
                               [0.0012, 0.0012, 0.0006, 0.0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dated_carry_steps(0.003, -1.0, 1.0, 3), [0.003, 0.0, 0.0])


def test_an_expired_contract_carries_nothing() -> None:
    """Expired 12 h before the market time (and not held): no carry (before, max(days, h) made
    its whole basis one horizon's carry, 0.3%)."""
    book, market = _setup(datetime(2024, 12, 31, 12, tzinfo=UTC))
    assert _carry_per_horizon(book, market, 1.0)[0] == 0.0
