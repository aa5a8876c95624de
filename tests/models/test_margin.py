"""The margin engine by hand: initial margin |n| / L, tiered maintenance, padding of the tier
arrays, the stress surplus, utilisation and ratio, and the tiered inverse (USD figures)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.instruments import FuturesContract, MarginTiers, TierBracket
from models.margin import (
    MarginModel,
    MarginState,
    insurance_fund_cover,
    liquidation_gap,
    margin_state,
    max_notional_within,
    tier_maintenance,
)

#: 0.4% to 50k, 0.5% (cum 50) to 250k, 1% (cum 1,300) above (continuous at both edges).
TIERS3 = MarginTiers((TierBracket(0.0, 5e4, 125.0, 0.004, 0.0),
                      TierBracket(5e4, 2.5e5, 100.0, 0.005, 50.0),
                      TierBracket(2.5e5, 1e12, 50.0, 0.01, 1300.0)))
#: Two brackets: 1% to 100k, 2.5% (cum 1,500) above: 0.01 x 100k = 0.025 x 100k - 1,500 = 1,000.
TIERS2 = MarginTiers((TierBracket(0.0, 1e5, 50.0, 0.01, 0.0),
                      TierBracket(1e5, 1e12, 20.0, 0.025, 1500.0)))


def _model() -> MarginModel:
    return MarginModel.from_contracts([FuturesContract("BTCUSDT", "BTC", leverage=10.0, tiers=TIERS3),
                                       FuturesContract("ETHUSDT", "ETH", leverage=4.0, tiers=TIERS2)])


def test_arrays_are_padded_with_the_last_bracket() -> None:
    m = _model()
    np.testing.assert_array_equal(m.leverage, [10.0, 4.0])
    np.testing.assert_array_equal(m.mmr, [[0.004, 0.005, 0.01], [0.01, 0.025, 0.025]])
    np.testing.assert_array_equal(m.cum, [[0.0, 50.0, 1300.0], [0.0, 1500.0, 1500.0]])
    np.testing.assert_array_equal(m.lo, [[0.0, 5e4, 2.5e5], [0.0, 1e5, np.inf]])


def test_initial_margin_by_hand() -> None:
    m = _model()
    # |-60,000| / 10 = 6,000; 20,000 / 4 = 5,000
    np.testing.assert_allclose(m.initial(np.array([-60_000.0, 20_000.0])), [6000.0, 5000.0])


def test_two_tier_maintenance_by_hand() -> None:
    m = _model()
    # BTC 100k: max(400, 500 - 50, 1,000 - 1,300) = 450; ETH -200k: max(2,000, 5,000 - 1,500) = 3,500
    np.testing.assert_allclose(m.maintenance(np.array([100_000.0, -200_000.0])), [450.0, 3500.0])
    # ETH 40k sits in bracket 1: 0.01 x 40,000 = 400 (the tier 2 line gives -500)
    np.testing.assert_allclose(m.maintenance(np.array([0.0, 40_000.0])), [0.0, 400.0])
    # agrees with the exchange's own bracket lookup
    for n in (1.0, 49_999.0, 50_000.0, 120_000.0, 3e5, 2e6):
        assert m.maintenance(np.array([n, n]))[0] == pytest.approx(TIERS3.bracket_lookup(n))
        assert m.maintenance(np.array([n, n]))[1] == pytest.approx(TIERS2.bracket_lookup(n))


def test_tier_maintenance_is_never_negative_and_uses_abs() -> None:
    mmr = np.array([[0.01, 0.02]])
    cum = np.array([[50.0, 500.0]])  # both lines below 0 for |n| < 5,000
    np.testing.assert_array_equal(tier_maintenance(mmr, cum, np.array([1000.0])), [0.0])
    # -60,000: max(600 - 50, 1,200 - 500) = 700
    np.testing.assert_allclose(tier_maintenance(mmr, cum, np.array([-60_000.0])), [700.0])
    # any array-like notionals, a list too (tier_maintenance calls np.asarray)
    np.testing.assert_allclose(tier_maintenance(mmr, cum, [60_000.0]), [700.0])


def test_stress_surplus_by_hand() -> None:
    m = _model()
    x = np.array([100_000.0, -40_000.0])
    g = np.array([-0.10, 0.25])
    # collateral 20,000; PnL g'x = -10,000 - 10,000 = -20,000 -> 0;
    # MM at stressed notionals: BTC 90,000 -> 0.005 x 90,000 - 50 = 400; ETH 50,000 -> 500
    # 20,000 - 20,000 - 900 = -900
    assert m.stress_surplus(x, 20_000.0, g) == pytest.approx(-900.0)
    # a rally helps the long: g = +10%, 0: 20,000 + 10,000 - (0.005 x 110,000 - 50 = 500) - 400
    assert m.stress_surplus(x, 20_000.0, np.array([0.10, 0.0])) == pytest.approx(29_100.0)
    assert isinstance(m.stress_surplus(x, 20_000.0, g), float)


def test_margin_state_and_utilisation_by_hand() -> None:
    m = _model()
    s = margin_state(m, np.array([100_000.0, -200_000.0]), 80_000.0)
    assert s.initial == pytest.approx(10_000.0 + 50_000.0)
    assert s.maintenance == pytest.approx(450.0 + 3500.0)
    assert s.has_positions
    assert s.initial_utilisation == pytest.approx(60_000.0 / 80_000.0)  # IM / C, not C / IM
    assert s.margin_ratio == pytest.approx(3950.0 / 80_000.0)
    assert not s.liquidated
    flat = margin_state(m, np.zeros(2), 1000.0)
    assert not flat.has_positions and flat.initial == 0.0 and flat.maintenance == 0.0
    assert flat.initial_utilisation == 0.0 and flat.margin_ratio == 0.0
    assert not flat.at_risk


def test_utilisation_and_ratio_above_one() -> None:
    s = MarginState(collateral=2_000.0, initial=5_000.0, maintenance=3_000.0, has_positions=True)
    assert s.initial_utilisation == pytest.approx(2.5)
    assert s.margin_ratio == pytest.approx(1.5)
    assert s.liquidated


@pytest.mark.parametrize("collateral", [0.0, -5.0])
def test_no_collateral_cases(collateral: float) -> None:
    # a maintenance need but no position flag: still at risk, ratio infinite
    s = MarginState(collateral=collateral, initial=0.0, maintenance=10.0, has_positions=False)
    assert s.at_risk and s.margin_ratio == math.inf and s.initial_utilisation == 0.0
    assert not s.liquidated
    # an initial need but no position flag: utilisation infinite
    s = MarginState(collateral=collateral, initial=10.0, maintenance=0.0, has_positions=False)
    assert s.initial_utilisation == math.inf and not s.at_risk and s.margin_ratio == 0.0


def test_max_notional_within_edges() -> None:
    mmr, cum = TIERS2.mmr, TIERS2.cum
    # b = 1,000 is the tier edge: min(1,000 / 0.01, 2,500 / 0.025) = 100,000
    assert max_notional_within(mmr, cum, 1000.0) == pytest.approx(100_000.0)
    # b = 2,000: min(200,000, 3,500 / 0.025 = 140,000) = 140,000
    assert max_notional_within(mmr, cum, 2000.0) == pytest.approx(140_000.0)
    assert max_notional_within(mmr, cum, 0.0) == 0.0  # a zero budget fits nothing (but is not < 0)
    assert max_notional_within(np.zeros(2), cum, 5.0) == math.inf
    # zero-rate brackets are ignored: only 0.02 counts -> (10 + 100) / 0.02
    assert max_notional_within(np.array([0.0, 0.02]), np.array([0.0, 100.0]), 10.0) == pytest.approx(5500.0)
    assert isinstance(max_notional_within(mmr, cum, 1000.0), float)


def test_liquidation_gap_flat_book_and_safe_book() -> None:
    m = _model()
    gap = liquidation_gap(m, np.array([0.0, -200_000.0]), 3000.0)  # MM = 3,500 > C
    assert gap.maintenance == pytest.approx(3500.0)
    assert gap.shortfall == pytest.approx(500.0)
    assert gap.collateral == 3000.0
    assert gap.reduce_notional[0] == 0.0  # no BTC position: nothing to cut
    # ETH alone: b = 3,000 -> min(300,000, 4,500 / 0.025 = 180,000) = 180,000; cut 20,000
    assert gap.max_notional[1] == pytest.approx(180_000.0)
    assert gap.reduce_notional[1] == pytest.approx(20_000.0)
    safe = liquidation_gap(m, np.array([100_000.0, 0.0]), 10_000.0)
    assert safe.shortfall == 0.0
    assert safe.reduce_notional[0] == 0.0  # already below the cap: max(n - cap, 0)
    # BTC: b = 10,000 -> min(2.5e6, 10,050 / 0.005 = 2.01e6, 11,300 / 0.01 = 1.13e6)
    assert safe.max_notional[0] == pytest.approx(1_130_000.0)


def test_liquidation_gap_zero_cap_is_impossible() -> None:
    m = _model()
    # C = 450 = MM(BTC 100k), nothing else held: b_BTC = 450 - 0 = 450 -> cap 100,000 > 0;
    # ETH held at 40k (MM 400) and C = 400: b_ETH = 400 - 450 < 0 -> -inf, cut inf
    gap = liquidation_gap(m, np.array([100_000.0, 40_000.0]), 400.0)
    assert gap.max_notional[1] == -math.inf
    assert gap.reduce_notional[1] == math.inf
    # b_BTC = 400 - 400 = 0 -> cap 0, which is no cap at all: -inf
    assert gap.max_notional[0] == -math.inf
    assert gap.reduce_notional[0] == math.inf


def test_empty_model_has_one_tier_column() -> None:
    m = MarginModel.from_contracts([])
    assert m.mmr.shape == (0, 1) and m.cum.shape == (0, 1) and m.lo.shape == (0, 1)
    assert m.leverage.shape == (0,)


def test_zero_rate_brackets_do_not_enter_the_inverse() -> None:
    # a zero budget: only the 2% bracket counts, (0 + 100) / 0.02 (a 0 / 0 would poison the min)
    assert max_notional_within(np.array([0.0, 0.02]), np.array([0.0, 100.0]), 0.0) == pytest.approx(5000.0)


def test_liquidation_gap_below_one_dollar() -> None:
    m = MarginModel.from_contracts([FuturesContract("X", "BTC", tiers=MarginTiers.flat(mmr=0.01))])
    # a 0.8 USD position, MM 0.008, collateral 0.005: the cap is 0.005 / 0.01 = 0.5 USD
    gap = liquidation_gap(m, np.array([0.8]), 0.005)
    assert gap.max_notional[0] == pytest.approx(0.5)
    assert gap.reduce_notional[0] == pytest.approx(0.3)
    assert gap.shortfall == pytest.approx(0.003)


@pytest.mark.parametrize(("account", "absorbed"), [(-2.25, 2.25), (-0.004, 0.004), (0.0, 0.0),
                                                   (0.5, 0.0), (1_000.0, 0.0)])
def test_the_insurance_fund_takes_only_a_deficit(account: float, absorbed: float) -> None:
    """After a liquidation the exchange's insurance fund takes what the account lacks, max(-A, 0),
    and nothing from an account with a balance (by hand)."""
    assert insurance_fund_cover(account) == pytest.approx(absorbed, abs=1e-15)
