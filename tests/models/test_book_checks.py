"""Every check of ``models.book_checks`` names its field, in the documented order."""

from __future__ import annotations

from typing import Any

import pytest

from models.book import Book, FuturesPosition
from models.collateral import bid_buffer_rule
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset

BTC, ETH = SpotAsset("BTC"), SpotAsset("ETH")
PERP = FuturesContract("BTC-PERP", "BTC")


def make(**over: Any) -> Book:
    kw: dict[str, Any] = {"assets": (BTC, ETH), "contracts": (PERP,), "spot": {"BTC": 1.0},
                          "targets": {"BTC": 0.5, "ETH": 0.5}, "cash": 1_000.0}
    kw.update(over)
    return Book(**kw)


@pytest.mark.parametrize(("over", "field", "words"), [
    ({"assets": (BTC, BTC)}, "assets", "duplicate"),
    ({"contracts": (PERP, PERP)}, "contracts", "duplicate"),
    ({"contracts": (FuturesContract("SOL-PERP", "SOL"),)}, "contracts.SOL-PERP.underlying", "SOL"),
    ({"spot": {"SOL": 1.0}}, "spot.SOL", "not a known asset"),
    ({"spot": {"BTC": -1.0}}, "spot.BTC", "-1.0"),
    ({"spot": {"BTC": float("nan")}}, "spot.BTC", "nan"),
    ({"targets": {"SOL": 0.1}}, "targets.SOL", "unknown symbol"),
    ({"targets": {"BTC": -0.1}}, "targets.BTC", "-0.1"),
    ({"targets": {"BTC": 0.6, "ETH": 0.5}}, "targets", "sum to 1.1"),
    ({"cash": float("inf")}, "cash", "inf"),
    ({"futures": {"ETH-PERP": FuturesPosition(1.0, 3_000.0)}}, "futures.ETH-PERP", "unknown contract"),
    ({"futures": {"BTC-PERP": FuturesPosition(float("nan"), 3_000.0)}}, "futures.BTC-PERP.contracts",
     "not finite"),
    ({"futures": {"BTC-PERP": FuturesPosition(1.0, 0.0)}}, "futures.BTC-PERP.entry_price", "0.0"),
    ({"pledged": {"SOL": 0.9}}, "pledged.SOL", "not a known asset"),
    ({"pledged": {"BTC": 1.2}}, "pledged.BTC", "1.2"),
])
def test_each_mistake_names_its_field(over: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(**over)
    assert exc.value.field == field
    assert words in str(exc.value)


def test_what_passes() -> None:
    """Weights up to 1 + 1e-6, negative cash (a debt), a flat position without an entry price and a
    pledge rule are accepted."""
    book = make(targets={"BTC": 0.5, "ETH": 0.5 + 1e-7}, cash=-50.0,
                futures={"BTC-PERP": FuturesPosition(0.0, 0.0)},
                pledged={"BTC": bid_buffer_rule(0.05)})
    assert book.cash == -50.0


def test_the_first_mistake_is_the_one_reported() -> None:
    """A duplicate asset and a negative spot: the symbols are checked first."""
    with pytest.raises(ValidationError) as exc:
        make(assets=(BTC, BTC), spot={"BTC": -1.0})
    assert exc.value.field == "assets"
