"""The liquidation rule (equality liquidates, as on Binance), the margin ratio at zero or negative
collateral, and the exact tiered inverse behind "how much to add or cut" (hand computations)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.instruments import FuturesContract, MarginTiers, TierBracket
from models.margin import (
    MarginModel,
    MarginState,
    liquidation_gap,
    margin_state,
    max_notional_within,
)

#: Binance-like brackets: 0.4% to 50k, 0.5% (cum 50) to 250k, 1% (cum 1,300) above; cum makes
#: MM continuous: 0.004 x 50k = 0.005 x 50k - 50 = 200; 0.005 x 250k - 50 = 0.01 x 250k - 1,300.
TIERS = MarginTiers((TierBracket(0.0, 5e4, 125.0, 0.004, 0.0),
                     TierBracket(5e4, 2.5e5, 100.0, 0.005, 50.0),
                     TierBracket(2.5e5, 1e12, 50.0, 0.01, 1300.0)))


def _model(*symbols: str) -> MarginModel:
    return MarginModel.from_contracts([FuturesContract(s, "BTC", tiers=TIERS) for s in symbols])


def test_equality_liquidates() -> None:
    state = MarginState(collateral=4700.0, initial=60_000.0, maintenance=4700.0, has_positions=True)
    assert state.liquidated
    assert state.margin_ratio == 1.0


def test_just_above_maintenance_is_not_liquidated() -> None:
    state = MarginState(collateral=4700.01, initial=60_000.0, maintenance=4700.0, has_positions=True)
    assert not state.liquidated
    assert state.margin_ratio == pytest.approx(4700.0 / 4700.01)
    assert state.margin_ratio < 1.0


@pytest.mark.parametrize("collateral", [0.0, -1.0, -1e6])
def test_no_or_negative_collateral_with_a_position_is_liquidated_and_ratio_is_infinite(
        collateral: float) -> None:
    state = MarginState(collateral=collateral, initial=100.0, maintenance=5.0, has_positions=True)
    assert state.liquidated
    assert state.margin_ratio == math.inf  # was 1.0: "at the edge" for a book far past it
    assert state.initial_utilisation == math.inf


def test_negative_collateral_without_positions_has_nothing_to_liquidate() -> None:
    state = MarginState(collateral=-50.0, initial=0.0, maintenance=0.0, has_positions=False)
    assert not state.liquidated
    assert state.margin_ratio == 0.0
    assert state.initial_utilisation == 0.0


def test_margin_state_from_positions_by_hand() -> None:
    mm = _model("X")
    # 600k USD long: bracket 3, MM = 0.01 x 600,000 - 1,300 = 4,700
    assert margin_state(mm, np.array([6e5]), 4700.0).liquidated
    assert not margin_state(mm, np.array([6e5]), 4701.0).liquidated
    assert margin_state(mm, np.array([-6e5]), -10.0).margin_ratio == math.inf


def test_max_notional_within_is_the_exact_tiered_inverse() -> None:
    mmr, cum = TIERS.mmr, TIERS.cum
    # b = 4,000: min(4,000 / 0.004, 4,050 / 0.005, 5,300 / 0.01) = min(1e6, 810k, 530k) = 530k
    assert max_notional_within(mmr, cum, 4000.0) == pytest.approx(530_000.0)
    assert float(TIERS.maintenance(530_000.0)) == pytest.approx(4000.0)
    # b = 150 sits in bracket 1: 150 / 0.004 = 37,500
    assert max_notional_within(mmr, cum, 150.0) == pytest.approx(37_500.0)
    assert TIERS.bracket_lookup(37_500.0) == pytest.approx(150.0)
    assert max_notional_within(mmr, cum, -1.0) == -math.inf


def test_liquidation_gap_by_hand_two_positions() -> None:
    mm = _model("X", "Y")
    x = np.array([6e5, -1e5])  # MM: 4,700 and 0.005 x 100,000 - 50 = 450; total 5,150
    gap = liquidation_gap(mm, x, 5000.0)
    assert gap.maintenance == pytest.approx(5150.0)
    assert gap.shortfall == pytest.approx(150.0)
    # X alone: b = 5,000 - 450 = 4,550 -> min(4,550/0.004, 4,600/0.005, 5,850/0.01) = 585,000
    assert gap.max_notional[0] == pytest.approx(585_000.0)
    assert gap.reduce_notional[0] == pytest.approx(15_000.0)
    # Y alone: b = 5,000 - 4,700 = 300 -> min(300/0.004, 350/0.005, 1,600/0.01) = 70,000
    assert gap.max_notional[1] == pytest.approx(70_000.0)
    assert gap.reduce_notional[1] == pytest.approx(30_000.0)


def test_liquidation_gap_when_no_single_cut_is_enough() -> None:
    mm = _model("X", "Y")
    gap = liquidation_gap(mm, np.array([6e5, 6e5]), 4000.0)  # each alone leaves 4,000 - 4,700 < 0
    assert gap.shortfall == pytest.approx(9400.0 - 4000.0)
    assert np.all(np.isinf(gap.reduce_notional))
