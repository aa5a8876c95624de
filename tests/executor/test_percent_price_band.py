"""The price band's arithmetic (:mod:`executor.price_band`) and how fbr reads it from a ccxt market
(:func:`executor.ccxt_metadata.percent_price_band`): a limit buy at min(mark x (1 + guard),
mark x multiplierUp) rounded down to the tick, a sell at max(mark x (1 - guard), mark x
multiplierDown) rounded up; no band, the guard's price. Re-planned legs (resume) are held too."""

from __future__ import annotations

from typing import Any

import pytest
from exec_helpers import market

from executor.ccxt_metadata import percent_price_band
from executor.legs import legs_toward
from executor.plan import Instrument, OrderType, PlanOptions, Side, book_instruments
from executor.price_band import band_edge, guard_price, limit_price
from models.instruments import FuturesContract


def _binance(*filters: dict[str, Any]) -> dict[str, Any]:
    return {"symbol": "ETH/USDT:USDT", "info": {"symbol": "ETHUSDT", "filters": list(filters)}}


PERCENT = {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0200", "multiplierDown": "0.9800",
           "multiplierDecimal": "4"}


def test_the_band_is_read_from_binances_filters() -> None:
    tick = {"filterType": "PRICE_FILTER", "tickSize": "0.01"}
    assert percent_price_band(_binance(tick, PERCENT)) == (0.98, 1.02)


@pytest.mark.parametrize("mkt", [
    {"symbol": "ETH/USDT:USDT"},                                        # no info
    {"info": {"lotSizeFilter": {"qtyStep": "0.01"}}},                   # Bybit: no filters list
    _binance({"filterType": "PRICE_FILTER", "tickSize": "0.01"}),       # no PERCENT_PRICE
    _binance({**PERCENT, "multiplierUp": "abc"}),                       # not a number
    _binance({**PERCENT, "multiplierUp": None}),
    _binance({"filterType": "PERCENT_PRICE", "multiplierDown": "0.98"}),  # half missing
    _binance({**PERCENT, "multiplierDown": "1.03"}),                    # down >= up
    _binance({**PERCENT, "multiplierDown": "0"}),
    _binance({**PERCENT, "multiplierUp": "inf"}),
])
def test_no_band_where_the_market_states_none_fbr_can_read(mkt: dict[str, Any]) -> None:
    assert percent_price_band(mkt) is None


def test_the_limit_price_is_the_guards_inside_the_band_and_the_bands_outside() -> None:
    """Mark 2,857.14285714 (8 decimals, as Binance sends marks), tick 0.01, band 0.95 / 1.05:
    cap 2,857.14285714 x 1.05 = 2,999.999999997 -> down: 2,999.99 (never 3,000.00, past the cap);
    floor x 0.95 = 2,714.285714283 -> up: 2,714.29. Guard 0.01: 2,885.7142857114 -> 2,885.71
    (buy), 2,828.5714285686 -> 2,828.58 (sell), inside the band: the guard's prices."""
    mark, band = 2_857.14285714, (0.95, 1.05)
    assert band_edge(mark, True, band, 0.01) == 2_999.99
    assert band_edge(mark, False, band, 0.01) == 2_714.29
    assert limit_price(mark, True, 0.10, 0.01, band) == 2_999.99
    assert limit_price(mark, False, 0.10, 0.01, band) == 2_714.29
    assert limit_price(mark, True, 0.01, 0.01, band) == guard_price(mark, True, 0.01, 0.01) == 2_885.71
    assert limit_price(mark, False, 0.01, 0.01, band) == 2_828.58
    assert limit_price(mark, True, 0.10, 0.01, None) == 3_142.85  # 3,142.857142854 -> down
    assert limit_price(mark, False, 0.10, 0.01, None) == 2_571.43  # 2,571.428571426 -> up
    assert band_edge(mark, True, band, 0.0) == pytest.approx(2_999.999999997, abs=1e-9)


def test_re_planned_legs_are_held_inside_the_band_too() -> None:
    """Resume re-plans with :func:`executor.legs.legs_toward` on the same instruments: from flat to
    +1 ETH at mark 3,001.37 with guard 0.10 and a 0.98 / 1.02 band, the buy is at 3,061.39
    (3,061.3974 down to 0.01), not 3,301.50."""
    eth = FuturesContract("ETH-PERP", "ETH", lot_step=0.001, tick=0.01)
    inst = {"ETH-PERP": Instrument(eth, "ETH/USDT:USDT", None, (0.98, 1.02))}
    opts = PlanOptions(order_type=OrderType.LIMIT, slippage_guard=0.10)
    out = legs_toward({"ETH-PERP": 0.0}, {"ETH-PERP": 1.0}, inst, market({"ETH": 3_001.37}), opts,
                      "P1", 0)
    (leg,) = out.legs
    assert (leg.side, leg.limit_price) == (Side.BUY, 3_061.39)


def test_book_instruments_carry_no_band() -> None:
    from models.book import Book
    from models.instruments import SpotAsset

    book = Book(assets=(SpotAsset("ETH"),), contracts=(FuturesContract("ETH-PERP", "ETH"),),
                spot={"ETH": 1.0}, targets={"ETH": 1.0}, cash=0.0)
    assert book_instruments(book)["ETH-PERP"].price_band is None
