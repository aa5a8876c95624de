"""Margin tiers whose maintenance rate falls with the notional are refused: with them
MM(n) = max_k (mmr_k n - cum_k) is no longer the exchange's bracket rule. Equal rates in
neighbouring brackets are fine. Expected values by hand in the docstrings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fbr.config import load_book_file
from models.errors import ValidationError
from models.instruments import MarginTiers, TierBracket

BOOK = """[book]
name = "falling mmr"
cash = 10000.0
[targets]
ETH = 1.0
[spot]
ETH = 10.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 20.0
tiers = [
  {{ max_notional = 50_000, max_leverage = 50, mmr = 0.01 }},
  {{ max_notional = inf, max_leverage = 20, mmr = {mmr1} }},
]
[[futures]]
symbol = "ETH-PERP"
contracts = 40.0
entry_price = 2500.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
ETH = 2500.0
[risk.vols]
ETH = 0.70
"""


def test_falling_rate_is_refused() -> None:
    """[0, 50k) 1%, [50k, inf) 0.5% with the continuous cum_1 = 0 + (0.005 - 0.01) x 50,000 =
    -250. At n = 100,000 the bracket rule gives 0.005 x 100,000 + 250 = 750 USD, but
    max_k (mmr_k n - cum_k) = max(1,000, 750) = 1,000: the brackets are refused, naming
    tiers[1].mmr."""
    with pytest.raises(ValidationError) as info:
        MarginTiers((TierBracket(0.0, 50_000.0, 50.0, 0.01, 0.0),
                     TierBracket(50_000.0, math.inf, 100.0, 0.005, -250.0)))
    assert info.value.field == "tiers[1].mmr"
    assert "0.005" in info.value.problem and "0.01" in info.value.problem
    assert "mmr" in info.value.fix


def test_equal_rates_are_accepted() -> None:
    """[0, 50k) 1%, [50k, inf) 1%, cum 0 both: MM(100,000) = 0.01 x 100,000 = 1,000 USD by the
    bracket rule and by the max alike."""
    tiers = MarginTiers((TierBracket(0.0, 50_000.0, 50.0, 0.01, 0.0),
                         TierBracket(50_000.0, math.inf, 50.0, 0.01, 0.0)))
    assert float(tiers.maintenance(100_000.0)) == pytest.approx(1_000.0, abs=1e-9)
    assert tiers.bracket_lookup(100_000.0) == pytest.approx(1_000.0, abs=1e-9)


def test_book_file_names_the_bracket(tmp_path: Path) -> None:
    """The same brackets in a book file's [contract_defaults]: refused at load, naming
    contract_defaults.tiers[1].mmr; with the second rate raised to 2% (cum_1 = 0 + (0.02 - 0.01)
    x 50,000 = 500) the file loads and 40 ETH at 2,500 = 100,000 USD needs
    0.02 x 100,000 - 500 = 1,500 USD of maintenance."""
    f = tmp_path / "book.toml"
    f.write_text(BOOK.format(mmr1=0.005))
    with pytest.raises(ValidationError) as info:
        load_book_file(f)
    assert info.value.field == "contract_defaults.tiers[1].mmr"
    f.write_text(BOOK.format(mmr1=0.02))
    [eth] = load_book_file(f).book.contracts
    assert float(eth.tiers.maintenance(100_000.0)) == pytest.approx(1_500.0, abs=1e-9)
