"""TaxRates.long_term_days is a whole number of days in [0, 36,500] (100 years)."""

from __future__ import annotations

import pytest

from models.errors import ValidationError
from models.tax import TaxRates


@pytest.mark.parametrize("days", [36_501, 3_000_000, 10**20, -1])
def test_long_term_days_out_of_range_names_the_field(days: int) -> None:
    with pytest.raises(ValidationError) as info:
        TaxRates(0.3, 0.15, long_term_days=days)
    assert info.value.field == "tax.long_term_days"


@pytest.mark.parametrize("days", [0, 365, 36_500])
def test_long_term_days_in_range_is_kept(days: int) -> None:
    assert TaxRates(0.3, 0.15, long_term_days=days).long_term_days == days
