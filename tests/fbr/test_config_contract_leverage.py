"""Book-file leverage is a whole number >= 1 (review finding): exchanges set leverage in whole
steps (Binance 1..125) and fbr sends int(leverage), so a book at 2.5x would plan initial margin
|n| / 2.5 while the exchange, set to 2x, asks |n| / 2 (25% more) and refuses the last orders.
Such a book is refused at load with one message naming the field. No network."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.config import load_book_file
from models.errors import ValidationError

BOOK = """
[book]
cash = 3000.0
[targets]
BTC = 0.5
ETH = 0.5
[spot]
BTC = 0.1
ETH = 1.0
[contract_defaults]
lot_step = 1e-8
{defaults_leverage}
[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
{btc_leverage}
[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
[risk]
correlation = 0.7
basis_risk = false
[risk.vols]
BTC = 0.55
ETH = 0.70
"""
FIX = "give a whole number >= 1: exchanges set leverage in whole steps"


def _load_error(tmp_path: Path, defaults_leverage: str = "", btc_leverage: str = "") -> ValidationError:
    path = tmp_path / "book.toml"
    path.write_text(BOOK.format(defaults_leverage=defaults_leverage, btc_leverage=btc_leverage))
    with pytest.raises(ValidationError) as exc:
        load_book_file(path)
    return exc.value


def test_fractional_default_leverage_is_refused_naming_contract_defaults(tmp_path: Path) -> None:
    err = _load_error(tmp_path, defaults_leverage="leverage = 2.5")
    assert err.field == "contract_defaults.leverage"
    assert "2.5" in err.problem and "not a whole number" in err.problem
    assert "2x" in err.problem  # what the exchange would be set to: int(2.5) = 2
    assert err.fix == FIX


def test_fractional_contract_leverage_is_refused_naming_the_contract_row(tmp_path: Path) -> None:
    err = _load_error(tmp_path, defaults_leverage="leverage = 10", btc_leverage="leverage = 12.5")
    assert err.field == "contracts[0].leverage"
    assert "12.5" in err.problem and err.fix == FIX


@pytest.mark.parametrize("value", ["0.5", "0", "-3"])
def test_leverage_below_one_is_refused(tmp_path: Path, value: str) -> None:
    err = _load_error(tmp_path, defaults_leverage=f"leverage = {value}")
    assert err.field == "contract_defaults.leverage" and err.fix == FIX


def test_text_leverage_is_refused(tmp_path: Path) -> None:
    err = _load_error(tmp_path, defaults_leverage='leverage = "3"')
    assert err.field == "contract_defaults.leverage"


@pytest.mark.parametrize(("defaults", "btc", "want_btc", "want_eth"),
                         [("leverage = 3", "", 3.0, 3.0),
                          ("leverage = 20.0", "leverage = 5", 5.0, 20.0)])
def test_whole_leverage_written_as_int_or_float_loads(tmp_path: Path, defaults: str, btc: str,
                                                      want_btc: float, want_eth: float) -> None:
    path = tmp_path / "book.toml"
    path.write_text(BOOK.format(defaults_leverage=defaults, btc_leverage=btc))
    contracts = {c.symbol: c for c in load_book_file(path).book.contracts}
    assert contracts["BTC-PERP"].leverage == want_btc
    assert contracts["ETH-PERP"].leverage == want_eth
