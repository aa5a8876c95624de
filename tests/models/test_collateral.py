"""Collateral value of pledged spot (``models.collateral``): the exchange rules by hand, their checks,
the book's collateral and stress re-pricing through them, and the book file's ``[pledged]`` forms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fbr.config_holdings import parse_pledged
from models.book import Book, FuturesPosition
from models.collateral import (
    CollateralRule,
    CollateralTier,
    bid_buffer_rule,
    check_rule,
    flat_rule,
    stressed_collateral,
    tiered_rule,
)
from models.errors import ValidationError
from models.instruments import FuturesContract, MarginTiers, SpotAsset
from models.market import MarketSnapshot

PM = tiered_rule([(0, 1e6, 0.95), (1e6, 5e6, 0.9), (5e6, 2e7, 0.8)])
T0 = pd.Timestamp("2025-01-01", tz="UTC")


# --- the rules by hand ----------------------------------------------------------------------------

@pytest.mark.parametrize(("usd", "value"), [
    (0.0, 0.0),
    (500_000.0, 475_000.0),                       # inside tier 1: 0.95 x 0.5M
    (1e6, 950_000.0),                             # the edge
    (3e6, 950_000.0 + 0.9 * 2e6),                 # 0.95 x 1M + 0.9 x 2M = 2.75M
    (5e6, 950_000.0 + 3.6e6),
    (8e6, 950_000.0 + 3.6e6 + 0.8 * 3e6),
    (3e7, 950_000.0 + 3.6e6 + 0.8 * 1.5e7),       # above the last max: counts at 0
    (-5.0, 0.0),                                  # no negative holding
])
def test_tiered_value_by_hand(usd: float, value: float) -> None:
    assert PM.value(usd) == pytest.approx(value, rel=1e-15, abs=1e-9)


def test_flat_and_bid_buffer_rules() -> None:
    assert flat_rule(0.9).value(1_000.0) == pytest.approx(900.0)
    assert flat_rule(0.9).flat_ratio == 0.9 and PM.flat_ratio is None
    mam = bid_buffer_rule(0.05)
    assert mam.value(60_000.0) == pytest.approx(57_000.0) and mam.bid_buffer == 0.05
    assert mam.flat_ratio == pytest.approx(0.95)
    assert PM.edges() == (1e6, 5e6, 2e7) and flat_rule(0.9).edges() == ()
    # one tier is the flat ratio
    assert tiered_rule([(0, math.inf, 0.9)]).value(1_234.5) == flat_rule(0.9).value(1_234.5)


@given(st.floats(0, 4e7), st.floats(0, 4e7), st.floats(0, 1))
def test_tiered_value_is_concave_and_non_decreasing(a: float, b: float, t: float) -> None:
    lo, hi = min(a, b), max(a, b)
    mid = t * lo + (1 - t) * hi
    assert PM.value(hi) >= PM.value(lo) - 1e-6
    assert PM.value(mid) >= t * PM.value(lo) + (1 - t) * PM.value(hi) - 1e-6


@pytest.mark.parametrize(("rows", "field", "said"), [
    ([], "pledged.BTC.tiers", "empty"),
    ([(100, 1e6, 0.9)], "pledged.BTC.tiers[0]", "start at 0"),
    ([(0, 1e6, 0.95), (2e6, 5e6, 0.9)], "pledged.BTC.tiers[1]", "contiguous"),
    ([(0, 1e6, 0.95), (5e5, 5e6, 0.9)], "pledged.BTC.tiers[1]", "contiguous"),
    ([(0, 1e6, 0.95), (1e6, 1e6, 0.9)], "pledged.BTC.tiers[1]", "max_usd > min_usd"),
    ([(0, math.inf, 0.95), (1e6, 5e6, 0.9)], "pledged.BTC.tiers[0]", "open-ended"),
    ([(0, 1e6, 1.2)], "pledged.BTC.tiers[0]", "rate 1.2"),
    ([(0, 1e6, 0.9), (1e6, 5e6, 0.95)], "pledged.BTC.tiers[1]", "non-increasing"),
])
def test_bad_tiers_name_the_field(rows: list[tuple[float, float, float]], field: str,
                                  said: str) -> None:
    with pytest.raises(ValidationError) as e:
        tiered_rule(rows, "pledged.BTC")
    assert e.value.field == field and said in str(e.value), str(e.value)


def test_bad_bid_buffer_and_quantity() -> None:
    with pytest.raises(ValidationError, match=r"pledged.ETH.bid_buffer"):
        bid_buffer_rule(1.5, "pledged.ETH")
    with pytest.raises(ValidationError, match=r"pledged.ETH.quantity"):
        bid_buffer_rule(0.05, "pledged.ETH", quantity=-1.0)
    bad = CollateralRule((CollateralTier(0.0, 1e6, 0.9), CollateralTier(2e6, math.inf, 0.8)))
    with pytest.raises(ValidationError, match=r"pledged.X.tiers\[1\]"):
        check_rule(bad, "pledged.X")


# --- the book ------------------------------------------------------------------------------------

def _book(pledged: dict[str, float | CollateralRule], btc: float = 100.0, cash: float = 1_000.0
          ) -> tuple[Book, MarketSnapshot]:
    perp = FuturesContract("ETH-PERP", "ETH", lot_step=0.0, min_notional=0.0,
                           tiers=MarginTiers.flat(max_leverage=20.0, mmr=0.005))
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(perp,),
                spot={"BTC": btc, "ETH": 10.0}, targets={"BTC": 0.5, "ETH": 0.5}, cash=cash,
                futures={"ETH-PERP": FuturesPosition(20.0, 2_400.0)}, pledged=pledged)
    market = MarketSnapshot(time=T0, spot={"BTC": 60_000.0, "ETH": 2_500.0},
                            mark={"ETH-PERP": 2_500.0})
    return book, market


def test_book_collateral_through_the_tiers() -> None:
    book, market = _book({"BTC": PM})  # 100 BTC = 6M USD
    upnl = 20.0 * 100.0
    assert book.collateral(market) == pytest.approx(1_000.0 + upnl + 950_000.0 + 3.6e6 + 0.8e6)
    assert book.valuation(market).collateral == pytest.approx(book.collateral(market), rel=1e-15)


def test_flat_ratio_is_unchanged_and_matches_one_tier() -> None:
    flat, market = _book({"BTC": 0.9})
    one = _book({"BTC": tiered_rule([(0, math.inf, 0.9)])})[0]
    assert flat.collateral(market) == pytest.approx(1_000.0 + 2_000.0 + 0.9 * 6e6)
    assert one.collateral(market) == pytest.approx(flat.collateral(market), rel=1e-15)
    np.testing.assert_array_equal(flat.pledge_vector(), [0.9, 0.0])


def test_stress_re_prices_through_the_tiers() -> None:
    book, market = _book({"BTC": PM})
    val = book.valuation(market)
    r = np.array([-0.5, -0.3])  # BTC 6M -> 3M: back into tier 2
    want = val.wallet + 950_000.0 + 0.9 * 2e6
    assert book.stressed_collateral(val, r) == pytest.approx(want)
    assert stressed_collateral(val.wallet, book.pledge_rules(), book.pledged_usd(val.spot_values),
                               r) == pytest.approx(want)
    assert book.stressed_collateral(val, np.zeros(2)) == pytest.approx(val.collateral, rel=1e-15)


def test_pledged_quantity_caps_the_holding() -> None:
    book, market = _book({"BTC": bid_buffer_rule(0.05, quantity=2.0)})
    assert book.collateral(market) == pytest.approx(3_000.0 + 2.0 * 60_000.0 * 0.95)
    sold = book.evolve(spot={"BTC": 1.0, "ETH": 10.0})  # less held than pledged: all of it counts
    assert sold.collateral(market) == pytest.approx(3_000.0 + 60_000.0 * 0.95)
    np.testing.assert_allclose(book.pledge_vector(), [0.95 * 2.0 / 100.0, 0.0])


def test_book_checks_a_rule() -> None:
    bad = CollateralRule((CollateralTier(0.0, 1e6, 0.9), CollateralTier(1e6, math.inf, 0.95)))
    with pytest.raises(ValidationError, match=r"pledged.BTC.tiers\[1\]"):
        _book({"BTC": bad})


# --- the book file's [pledged] --------------------------------------------------------------------

def test_parse_pledged_forms() -> None:
    got = parse_pledged({"BTC": "95%", "ETH": {"bid_buffer": 0.05, "quantity": 2},
                         "SOL": {"tiers": [[0, 1e6, "95%"], [1e6, 5e6, 0.9], [5e6, math.inf, 0.5]]}},
                        ["BTC", "ETH", "SOL"])
    assert got["BTC"] == 0.95
    eth, sol = got["ETH"], got["SOL"]
    assert isinstance(eth, CollateralRule) and isinstance(sol, CollateralRule)
    assert eth.bid_buffer == 0.05 and eth.quantity == 2.0
    assert sol.value(3e6) == pytest.approx(2.75e6)
    assert sol.tiers[-1] == CollateralTier(5e6, math.inf, 0.5)


@pytest.mark.parametrize(("entry", "field", "said"), [
    ({"tiers": [[0, 1e6, 0.95], [2e6, 5e6, 0.9]]}, "pledged.BTC.tiers[1]", "contiguous"),
    ({"tiers": [[0, 1e6, 1.5]]}, "pledged.BTC.tiers[0]", "rate"),
    ({"tiers": [[0, 1e6]]}, "pledged.BTC.tiers[0]", "three numbers"),
    ({"tiers": "0-1e6"}, "pledged.BTC.tiers", "not a list"),
    ({"tiers": [[0, "lots", 0.9]]}, "pledged.BTC.tiers[0][1]", "lots"),
    ({"bid_buffer": -0.1}, "pledged.BTC.bid_buffer", "-0.1"),
    ({"bid_buffer": 0.05, "tiers": [[0, 1e6, 0.9]]}, "pledged.BTC", "both"),
    ({}, "pledged.BTC", "neither"),
    ({"bidbuffer": 0.05}, "pledged.BTC.bidbuffer", "bid_buffer"),
    ({"bid_buffer": 0.05, "quantity": -2}, "pledged.BTC.quantity", "-2"),
])
def test_parse_pledged_errors_name_the_field(entry: dict[str, object], field: str, said: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_pledged({"BTC": entry}, ["BTC", "ETH"])
    assert e.value.field == field and said in str(e.value), str(e.value)
