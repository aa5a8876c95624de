"""``MarketSnapshot.funding_interval_h``: the hours between a contract's settlements when the
market measured them (a replay on a path that settled every 4 h), read by the optimiser's carry
(``optimizer.carry._carry_per_horizon``): carry = rate x horizon x 24 / hours, by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from models.book import Book
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from optimizer.carry import _carry_per_horizon

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _market(**hours: float) -> MarketSnapshot:
    return MarketSnapshot(time=T0, spot={"BTC": 100.0}, mark={"BTC-PERP": 100.0},
                          funding={"BTC-PERP": 1e-4}, funding_interval_h=hours)


def test_the_carry_counts_the_measured_settlements() -> None:
    book = Book((SpotAsset("BTC"),), (FuturesContract("BTC-PERP", "BTC"),), spot={"BTC": 1.0},
                targets={"BTC": 1.0})
    # the contract's own 8 h: 3 a day; measured 4 h: 6 a day; over 2 days 6 and 12 settlements
    assert _carry_per_horizon(book, _market(), 2.0)[0] == pytest.approx(6 * 1e-4)
    m = _market(**{"BTC-PERP": 4.0})
    assert m.funding_hours("BTC-PERP", 8.0) == 4.0 and m.funding_hours("X", 8.0) == 8.0
    assert _carry_per_horizon(book, m, 2.0)[0] == pytest.approx(12 * 1e-4)


@pytest.mark.parametrize("hours", [0.0, -8.0, float("nan"), float("inf")])
def test_a_bad_interval_is_named(hours: float) -> None:
    with pytest.raises(ValidationError) as err:
        _market(**{"BTC-PERP": hours})
    assert err.value.field == "market.funding_interval_h.BTC-PERP"
