"""Spot policies (calendar_spot, band_spot) and targets that sum below 1.

Book by hand: BTC 60,000 and ETH 3,000 USD; spot 1 BTC + 10 ETH = 60,000 + 30,000 = 90,000 USD;
wallet 10,000 USD, so NAV = 100,000. Targets BTC 45% + ETH 45% = 90% (10% cash).

On ``targets_base = "invested"`` V is the spot value itself (90,000): trading spot to w*_i V
leaves 0.9 x 90,000 = 81,000 of spot, the next trade 0.9 x 81,000 = 72,900, ... (90,000 x 0.9^k,
a liquidation of the book at constant prices). Such a book is refused (``targets``) before any
trade. On ``targets_base = "nav"`` V = NAV = 100,000: spot goes to 45,000 + 45,000 = 90,000 (0.75
BTC and 15 ETH) and stays there at constant prices, NAV unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from models.book import Book, TargetsBase
from models.errors import ValidationError
from models.instruments import SpotAsset
from models.market import MarketSnapshot
from optimizer.policies import BandSpotRebalance, CalendarSpotRebalance, Policy
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

D0 = pd.Timestamp("2025-01-01", tz="UTC")
PX = {"BTC": 60_000.0, "ETH": 3_000.0}


def flat_path(n: int) -> MarketPath:
    """n daily steps at constant prices (BTC 60,000, ETH 3,000)."""
    idx = pd.date_range(D0, periods=n, freq="D")
    return MarketPath(spot=pd.DataFrame({a: [p] * n for a, p in PX.items()}, index=idx))


def book(targets: dict[str, float], base: TargetsBase = TargetsBase.INVESTED) -> Book:
    return Book((SpotAsset("BTC", fee=0.0), SpotAsset("ETH", fee=0.0)), (),
                spot={"BTC": 1.0, "ETH": 10.0}, targets=targets, cash=10_000.0, targets_base=base)


def market() -> MarketSnapshot:
    return MarketSnapshot(D0, spot=PX, mark={})


def calendar() -> Policy:
    return CalendarSpotRebalance("1D")


def band() -> Policy:
    return BandSpotRebalance(0.04)


SPOT_POLICIES: dict[str, Callable[[], Policy]] = {"calendar": calendar, "band": band}


@pytest.mark.parametrize("kind", sorted(SPOT_POLICIES))
def test_invested_targets_below_one_refused_at_first_call(kind: str) -> None:
    """45% + 45% = 90% on the invested base: the first call raises, naming ``targets`` and the
    fix (targets_base = "nav", or targets summing to 1); before the fix it returned spot
    0.45 x 90,000 / 60,000 = 0.675 BTC (81,000 of spot: 9,000 sold into cash)."""
    with pytest.raises(ValidationError) as exc:
        SPOT_POLICIES[kind]()(book({"BTC": 0.45, "ETH": 0.45}), market(), D0)
    assert exc.value.field == "targets"
    assert "0.9" in exc.value.problem
    assert 'targets_base = "nav"' in exc.value.fix and "sum to 1" in exc.value.fix


def test_band_spot_refused_even_inside_its_band() -> None:
    """band 0.5: drift BTC = 60,000 / 90,000 - 0.45 = 0.2167 < 0.5, not due; the book is refused
    all the same (the first trade would start the sell-off), before any step of a replay."""
    with pytest.raises(ValidationError, match="targets"):
        BandSpotRebalance(0.5)(book({"BTC": 0.45, "ETH": 0.45}), market(), D0)


@pytest.mark.parametrize("kind", sorted(SPOT_POLICIES))
def test_replay_refuses_before_selling_the_book(kind: str) -> None:
    """The replay of 6 constant-price days: before the fix the spot value went 81,000, 72,900,
    65,610, ... (90,000 x 0.9^k); now the replay stops at its first step with the error."""
    with pytest.raises(ValidationError, match="targets"):
        run_backtest(book({"BTC": 0.45, "ETH": 0.45}), flat_path(6), SPOT_POLICIES[kind](),
                     spot_fee=0.0, collateral=NO_SWEEPS)


@pytest.mark.parametrize("kind", sorted(SPOT_POLICIES))
def test_nav_base_keeps_the_remainder_in_the_wallet(kind: str) -> None:
    """Same targets on targets_base = "nav": V = 100,000, spot to 45,000 + 45,000 = 90,000
    (0.75 BTC, 15 ETH) at the first step, trading 15,000 + 15,000 = 30,000. The replay's 1 bp
    spot half spread costs 30,000 x 1e-4 = 3 USD of NAV, so a later calendar trade moves spot to
    0.9 x 99,997 = 89,997.3 at most: the spot value stays within 3 USD of 90,000 at every step
    (the sell-off would give 81,000 at the second)."""
    b = book({"BTC": 0.45, "ETH": 0.45}, TargetsBase.NAV)
    res = run_backtest(b, flat_path(6), SPOT_POLICIES[kind](), spot_fee=0.0, collateral=NO_SWEEPS)
    total = res.spot_value.sum(axis=1).to_numpy()
    assert total[0] == pytest.approx(90_000.0)
    assert np.all(np.abs(total - 90_000.0) <= 3.0 + 1e-6), total
    assert res.steps["traded_spot"].iloc[0] == pytest.approx(30_000.0)
    assert res.steps["traded_spot"].iloc[1:].sum() <= 3.0, res.steps["traded_spot"].tolist()


def test_invested_targets_summing_to_one_still_trade() -> None:
    """50% + 50% on the invested base (V = 90,000): spot to 45,000 each, i.e. 0.75 BTC, 15 ETH."""
    pol: Policy = CalendarSpotRebalance("7D")
    out = pol(book({"BTC": 0.5, "ETH": 0.5}), market(), D0)
    assert out.spot == pytest.approx({"BTC": 0.75, "ETH": 15.0})


def test_targets_off_one_by_float_noise_still_trade() -> None:
    """Targets 0.5 + (0.5 - 1e-15) = 1 - 1e-15 (as "0.7 + 0.1 + 0.1 + 0.1" = 0.9999999999999999
    sums in floats): below 1 by float noise only, so the policy trades
    (BTC 0.5 x 90,000 / 60,000 = 0.75 units)."""
    targets = {"BTC": 0.5, "ETH": 0.5 - 1e-15}
    out = BandSpotRebalance(0.04)(book(targets), market(), D0)
    assert out.spot["BTC"] == pytest.approx(0.75)
