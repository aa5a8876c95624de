"""Trading costs by hand: fees, half spread and the 3/2-power impact of given trades (USD)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.costs import CostModel, impact_coefficient
from models.instruments import FuturesContract
from models.market import MarketSnapshot

CONTRACTS = [FuturesContract("BTCUSDT", "BTC", taker_fee=0.0005),
             FuturesContract("ETHUSDT", "ETH", taker_fee=0.0004)]


def _market(**kw: object) -> MarketSnapshot:
    base: dict[str, object] = {"time": pd.Timestamp("2024-01-01", tz="UTC"),
                               "spot": {"BTC": 40_000.0, "ETH": 2_000.0},
                               "mark": {"BTCUSDT": 40_000.0, "ETHUSDT": 2_000.0},
                               "half_spread": {"BTCUSDT": 0.0002},  # ETH: the 1 bp default
                               "adv": {"BTCUSDT": 4e8}}  # ETH: no ADV, no impact
    base.update(kw)
    return MarketSnapshot(**base)  # type: ignore[arg-type]


def _model() -> CostModel:
    return CostModel.build(CONTRACTS, _market(), np.array([0.04, 0.03]), impact_k=0.5)


def test_coefficients_by_hand() -> None:
    m = _model()
    np.testing.assert_allclose(m.fee, [0.0005, 0.0004])
    np.testing.assert_allclose(m.half_spread, [0.0002, 0.0001])
    np.testing.assert_allclose(m.linear, [0.0007, 0.0005])
    # impact_j = k sigma_j / sqrt(ADV_j): 0.5 x 0.04 / sqrt(4e8) = 0.02 / 20,000 = 1e-6; ETH: ADV inf -> 0
    np.testing.assert_allclose(m.impact, [1e-6, 0.0], rtol=1e-12, atol=0)


def test_costs_of_a_trade_by_hand() -> None:
    m = _model()
    t = np.array([-40_000.0, 10_000.0])
    assert m.fees(t) == pytest.approx(0.0005 * 40_000 + 0.0004 * 10_000)  # 20 + 4
    assert m.fees(t) == pytest.approx(24.0)
    assert m.spread(t) == pytest.approx(9.0)  # 0.0002 x 40,000 + 0.0001 x 10,000
    # 1e-6 x 40,000^{3/2} = 1e-6 x 8,000,000 = 8 USD (a product 40,000 x 1.5 would give 0.06)
    assert m.impact_cost(t) == pytest.approx(8.0)
    assert m.total(t) == pytest.approx(24.0 + 9.0 + 8.0)
    assert m.total(t, with_impact=False) == pytest.approx(33.0)
    assert isinstance(m.total(t), float)


def test_impact_is_a_three_halves_power() -> None:
    m = _model()
    one = m.impact_cost(np.array([10_000.0, 0.0]))
    four = m.impact_cost(np.array([40_000.0, 0.0]))
    assert one == pytest.approx(1e-6 * 1e6)  # 10,000^{1.5} = 1e6
    assert four / one == pytest.approx(8.0)  # 4^{3/2}
    assert m.impact_cost(np.zeros(2)) == 0.0


def test_impact_k_scales_impact_only() -> None:
    m1 = CostModel.build(CONTRACTS, _market(), np.array([0.04, 0.03]), impact_k=1.0)
    m2 = CostModel.build(CONTRACTS, _market(), np.array([0.04, 0.03]))  # default k = 1
    np.testing.assert_allclose(m1.impact, [2e-6, 0.0])
    np.testing.assert_allclose(m2.impact, m1.impact)
    np.testing.assert_allclose(m1.linear, _model().linear)


def test_unknown_volatility_gives_no_impact_not_nan() -> None:
    m = CostModel.build(CONTRACTS, _market(adv={"BTCUSDT": 4e8, "ETHUSDT": 1e8}),
                        np.array([math.nan, 0.03]), impact_k=1.0)
    assert m.impact[0] == 0.0
    assert m.impact[1] == pytest.approx(0.03 / 1e4)
    assert math.isfinite(m.total(np.array([1e6, 1e6])))


def test_impact_coefficient_by_hand() -> None:
    """k sigma / sqrt(ADV): k 0.5, sigma 4% a day, ADV USD 1e8 -> 0.5 x 0.04 / 1e4 = 2e-6
    USD^-1/2 (a USD 1e6 trade costs 2e-6 x 1e9 = USD 2,000); an unknown ADV (inf) or a vol that is
    not finite prices no impact; scalars as arrays of one."""
    got = impact_coefficient(0.5, np.array([0.04, 0.04, math.nan, 0.02]),
                             np.array([1e8, math.inf, 1e8, 4e6]))
    np.testing.assert_allclose(got, [2e-6, 0.0, 0.0, 0.5 * 0.02 / 2e3], rtol=1e-15, atol=0.0)
    assert float(impact_coefficient(0.5, 0.04, 1e8)) == pytest.approx(2e-6, rel=1e-15)
    assert float(impact_coefficient(1.0, math.inf, 1e8)) == 0.0
