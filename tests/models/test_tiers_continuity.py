"""The one continuity rule of margin brackets (models.instruments.first_margin_jump), shared by
inline book brackets, tiers_from files and exchange tiers: MM_k(n) = mmr_k n - cum_k must be 0 at
notional 0 and meet the bracket below at each lower edge, within MM_JUMP_TOL_USD."""

from __future__ import annotations

import math

import pytest

from models.instruments import MM_JUMP_TOL_USD, TierBracket, continuous_cum, first_margin_jump


def _brackets(*cums: float) -> tuple[TierBracket, ...]:
    return (TierBracket(0.0, 50_000.0, 125.0, 0.004, cums[0]),
            TierBracket(50_000.0, 250_000.0, 100.0, 0.005, cums[1]),
            TierBracket(250_000.0, math.inf, 50.0, 0.01, cums[2]))


def test_continuous_cum_is_the_edge_equality() -> None:
    # 0.004 x 50,000 - 0 = 0.005 x 50,000 - cum  =>  cum = 250 - 200 = 50
    assert continuous_cum(_brackets(0, 0, 0)[0], 0.005, 50_000.0) == pytest.approx(50.0)


def test_continuous_brackets_have_no_jump() -> None:
    # 50 + (0.01 - 0.005) x 250,000 = 1,300
    assert first_margin_jump(_brackets(0.0, 50.0, 1_300.0)) is None
    # within the tolerance (half of it) is not a jump
    assert first_margin_jump(_brackets(0.0, 50.0 + MM_JUMP_TOL_USD / 2, 1_300.0)) is None


def test_a_later_jump_gives_the_bracket_the_continuous_cum_and_both_sides() -> None:
    jump = first_margin_jump(_brackets(0.0, 50.0, 1_000.0))
    assert jump is not None
    # at 250,000: below 0.005 x 250,000 - 50 = 1,200; at 0.01 x 250,000 - 1,000 = 1,500
    assert jump.k == 2 and jump.continuous == pytest.approx(1_300.0)
    assert jump.below == pytest.approx(1_200.0) and jump.at == pytest.approx(1_500.0)


def test_a_first_bracket_cum_is_a_jump_at_notional_zero() -> None:
    jump = first_margin_jump(_brackets(25.0, 75.0, 1_325.0))
    assert jump is not None
    assert (jump.k, jump.continuous, jump.below, jump.at) == (0, 0.0, 0.0, -25.0)
