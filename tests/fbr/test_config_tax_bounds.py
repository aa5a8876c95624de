"""[tax] long_term_days, [[lots]] acquired and cost_basis: out-of-range or ambiguous values are one
input error naming the field (review findings 3-5 of the tax-aware spot leg)."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fbr.config import load_book_file
from models.errors import ValidationError

SEED1 = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"


def _doc() -> dict[str, Any]:
    """Seed example 1 (0.1 BTC, 1 ETH, 10 SOL) with the spot leg, [tax] 30% / 15% and one lot per
    asset bought 2023-01-01."""
    doc = tomllib.loads(SEED1.read_text(encoding="utf-8"))
    doc["solver"] = {"spot_leg": True}
    doc["tax"] = {"short_term": "30%", "long_term": "15%"}
    doc["lots"] = [
        {"asset": "BTC", "quantity": 0.1, "cost_basis": 30000.0, "acquired": date(2023, 1, 1)},
        {"asset": "ETH", "quantity": 1.0, "cost_basis": 2000.0, "acquired": date(2023, 1, 1)},
        {"asset": "SOL", "quantity": 10.0, "cost_basis": 100.0, "acquired": date(2023, 1, 1)},
    ]
    return doc


def _load(tmp_path: Path, doc: dict[str, Any]) -> Any:
    path = tmp_path / "book.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load_book_file(path)


@pytest.mark.parametrize("days", [1e20, 3_000_000, 36_501])
def test_long_term_days_beyond_100_years_is_refused(tmp_path: Path, days: float) -> None:
    """The bound is 36,500 days (100 years); 1e20 used to crash with an OverflowError and
    3,000,000 with "year 10242 is out of range", naming no field."""
    doc = _doc()
    doc["tax"]["long_term_days"] = days
    with pytest.raises(ValidationError) as info:
        _load(tmp_path, doc)
    assert info.value.field == "tax.long_term_days"


def test_long_term_days_at_the_bound_is_accepted(tmp_path: Path) -> None:
    doc = _doc()
    doc["tax"]["long_term_days"] = 36_500
    assert _load(tmp_path, doc).settings.spot.rates.long_term_days == 36_500


@pytest.mark.parametrize("text", ["01/06/2023", "13/01/2024", "2023-06", "2023", "Jan 1 2023",
                                  "2023-01-01Z", "2023-1-1"])
def test_non_iso_acquired_text_is_refused(tmp_path: Path, text: str) -> None:
    """A lenient parser reads 01/06/2023 month first (6 Jan) but 13/01/2024 day first, and 2023-06
    as 1 June: the holding period, so the rate, would rest on a guess."""
    doc = _doc()
    doc["lots"][0]["acquired"] = text
    with pytest.raises(ValidationError) as info:
        _load(tmp_path, doc)
    assert info.value.field == "lots[0].acquired"


@pytest.mark.parametrize(("value", "want"), [
    ("2023-06-01", datetime(2023, 6, 1, tzinfo=UTC)),
    ("2023-06-01T12:30", datetime(2023, 6, 1, 12, 30, tzinfo=UTC)),
    ("2023-06-01T12:30:15.5Z", datetime(2023, 6, 1, 12, 30, 15, 500_000, tzinfo=UTC)),
    ("2023-06-01T02:00:00+02:00", datetime(2023, 6, 1, tzinfo=UTC)),
    (date(2023, 6, 1), datetime(2023, 6, 1, tzinfo=UTC)),
    (datetime(2023, 6, 1, 8, 0), datetime(2023, 6, 1, 8, 0, tzinfo=UTC)),
])
def test_iso_and_toml_acquired_values_are_read_as_utc(tmp_path: Path, value: object,
                                                      want: datetime) -> None:
    doc = _doc()
    doc["lots"][0]["acquired"] = value
    lot = _load(tmp_path, doc).settings.spot.lots["BTC"][0]
    assert lot.acquired == want


def test_unrealistic_cost_basis_is_refused(tmp_path: Path) -> None:
    """Market prices and entry prices must lie within 1e-12 .. 1e9 USD per unit; a cost basis of
    1e20 USD/BTC used to be accepted (a tax credit of -1.5e18 USD after a solver failure)."""
    doc = _doc()
    doc["lots"][0]["cost_basis"] = 1e20
    with pytest.raises(ValidationError) as info:
        _load(tmp_path, doc)
    assert info.value.field == "lots[0].cost_basis"


@pytest.mark.parametrize("basis", [0.0, 1e9])
def test_cost_basis_of_zero_or_at_the_price_bound_is_accepted(tmp_path: Path, basis: float) -> None:
    doc = _doc()
    doc["lots"][0]["cost_basis"] = basis
    assert _load(tmp_path, doc).settings.spot.lots["BTC"][0].cost_basis == basis
