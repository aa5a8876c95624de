"""Exchange metadata as fbr contracts (review findings): leverage tiers read through ccxt are
checked as the book's brackets are (one ValidationError naming the exchange, the symbol and the
row; a given cum that breaks continuity refused; cum derived at the lower bound actually used),
and the leverage a contract carries is the whole number sent to the exchange."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK

from executor.ccxt_gateway import CcxtGateway
from executor.ccxt_metadata import contract_from_market, tiers_from_ccxt
from fbr.config import load_book_file
from models.errors import ValidationError
from models.instruments import FuturesContract, MarginTiers, TierBracket

SYM = "BTC/USDT:USDT"
WHERE = f"binance leverage tiers of {SYM}"


def _row(lo: float, hi: float | None, mmr: Any, lev: Any, cum: Any = None) -> dict[str, Any]:
    info = {} if cum is None else {"cum": cum}
    return {"symbol": SYM, "minNotional": lo, "maxNotional": hi, "maintenanceMarginRate": mmr,
            "maxLeverage": lev, "info": info}


def test_exchange_brackets_with_text_cums_give_the_exchange_s_maintenance() -> None:
    rows = [_row(0, 50_000, 0.004, 125, "0"), _row(50_000, 250_000, 0.005, 100, "50"),
            _row(250_000, None, 0.01, 50, "1300")]
    t = tiers_from_ccxt(rows, venue="binance")
    assert [b.cum for b in t.brackets] == [0.0, 50.0, 1300.0]
    assert t.brackets[-1].max_notional == float("inf")
    # Binance's lookup at 100,000 USD: bracket 2, 0.005 x 100,000 - 50 = 450 USD;
    # at 400,000 USD: bracket 3, 0.01 x 400,000 - 1,300 = 2,700 USD
    assert float(t.maintenance(100_000.0)) == pytest.approx(450.0)
    assert float(t.maintenance(400_000.0)) == pytest.approx(2_700.0)


def test_a_given_cum_that_breaks_continuity_is_refused_naming_exchange_symbol_and_row() -> None:
    # cum 0 in every row: MM just below 50,000 is 0.004 x 50,000 = 200 USD, at it 0.005 x 50,000
    # - 0 = 250 USD (a +50 jump; continuous cum = 0 + (0.005 - 0.004) x 50,000 = 50). At 100,000
    # USD Binance's lookup gives 0.005 x 100,000 - 0 = 500 USD, fbr's max_k (mmr_k n - cum_k)
    # 0.01 x 100,000 = 1,000 USD: the table is refused rather than trusted.
    rows = [_row(0, 50_000, 0.004, 125, "0"), _row(50_000, 250_000, 0.005, 100, "0"),
            _row(250_000, 1_000_000, 0.01, 50, "0")]
    with pytest.raises(ValidationError) as exc:
        tiers_from_ccxt(rows, venue="binance", symbol=SYM)
    assert exc.value.field == f"{WHERE}: tiers[1].info.cum"
    assert "200.00 USD just below 50,000 USD to 250.00 USD" in exc.value.problem
    assert "cum = 50 " in exc.value.problem


def test_a_first_bracket_cum_other_than_zero_is_refused() -> None:
    rows = [_row(0, 50_000, 0.004, 125, "10"), _row(50_000, None, 0.005, 100, "60")]
    with pytest.raises(ValidationError) as exc:
        tiers_from_ccxt(rows, venue="binance")
    assert exc.value.field == f"{WHERE}: tiers[0].info.cum"


@pytest.mark.parametrize(("key", "value", "problem"),
                         [("maintenanceMarginRate", None, "is missing"),
                          ("maxLeverage", "abc", "not a number"),
                          ("minNotional", float("nan"), "not a finite number"),
                          ("maintenanceMarginRate", True, "not a number")])
def test_a_missing_or_non_numeric_field_is_one_validation_error(key: str, value: Any,
                                                                problem: str) -> None:
    rows = [_row(0, 50_000, 0.004, 125), _row(50_000, None, 0.005, 100)]
    rows[1][key] = value
    with pytest.raises(ValidationError) as exc:
        tiers_from_ccxt(rows, venue="binance")
    assert exc.value.field == f"{WHERE}: tiers[1].{key}"
    assert problem in exc.value.problem


def test_a_non_numeric_cum_is_named() -> None:
    rows = [_row(0, 50_000, 0.004, 125, "0"), _row(50_000, None, 0.005, 100, "n/a")]
    with pytest.raises(ValidationError) as exc:
        tiers_from_ccxt(rows, venue="binance")
    assert exc.value.field == f"{WHERE}: tiers[1].info.cum"


def test_a_falling_rate_from_the_exchange_names_exchange_symbol_and_ccxt_field() -> None:
    rows = [_row(0, 50_000, 0.005, 100), _row(50_000, None, 0.004, 50)]
    with pytest.raises(ValidationError) as exc:
        tiers_from_ccxt(rows, venue="okx", symbol="BTC/USDT:USDT")
    assert exc.value.field == "okx leverage tiers of BTC/USDT:USDT: tiers[1].maintenanceMarginRate"


def test_errors_name_the_row_as_the_exchange_sent_it_when_rows_come_unsorted() -> None:
    # sent highest first: the falling rate is in rows[0] (0.004 from 50,000 after 0.005 below it)
    rows = [_row(50_000, None, 0.004, 50), _row(0, 50_000, 0.005, 100)]
    with pytest.raises(ValidationError) as exc:
        tiers_from_ccxt(rows, venue="binance")
    assert exc.value.field == f"{WHERE}: tiers[0].maintenanceMarginRate"


def test_the_symbol_defaults_to_the_rows_and_the_venue_to_exchange() -> None:
    rows = [_row(0, 50_000, None, 125)]
    with pytest.raises(ValidationError) as exc:
        tiers_from_ccxt(rows)
    assert exc.value.field == f"exchange leverage tiers of {SYM}: tiers[0].maintenanceMarginRate"


def test_an_open_ended_row_below_another_is_named() -> None:
    rows = [_row(0, None, 0.004, 125), _row(50_000, 250_000, 0.005, 100)]
    with pytest.raises(ValidationError) as exc:
        tiers_from_ccxt(rows, venue="binance")
    assert exc.value.field == f"{WHERE}: tiers[0].maxNotional"


def test_cum_is_derived_at_the_lower_bound_used_across_a_gap() -> None:
    # OKX-style rows leave a unit gap: [0, 500) then [501, 1,000). The bracket is taken from 500
    # (the previous maxNotional), so continuity there needs cum = (0.02 - 0.01) x 500 = 5
    # (not 5.01 at 501): MM at 500 is 0.01 x 500 = 5 below and 0.02 x 500 - 5 = 5 at it
    rows = [_row(0, 500, 0.01, 50), _row(501, 1_000, 0.02, 25)]
    t = tiers_from_ccxt(rows, venue="okx")
    assert t.brackets[1].min_notional == 500.0
    assert t.brackets[1].cum == pytest.approx(5.0, abs=1e-12)
    assert t.bracket_lookup(500.0) == pytest.approx(5.0)
    assert t.bracket_lookup(500.0 - 1e-9) == pytest.approx(5.0)
    # 800 USD: 0.02 x 800 - 5 = 11
    assert float(t.maintenance(800.0)) == pytest.approx(11.0)


MARKET = {"symbol": SYM, "contractSize": 1.0, "linear": True, "inverse": False, "swap": True,
          "precision": {"amount": 0.001, "price": 0.1},
          "limits": {"amount": {"min": 0.001, "max": 1000.0}, "cost": {"min": 100.0}}}


@pytest.mark.parametrize(("book_leverage", "top", "want"),
                         [(2.5, 125.0, 2.0), (20.0, 12.5, 12.0), (10.0, 125.0, 10.0)])
def test_the_contract_s_leverage_is_the_whole_number_sent(book_leverage: float, top: float,
                                                          want: float) -> None:
    # floor(min(book, max bracket leverage)): 2.5 -> 2, min(20, 12.5) = 12.5 -> 12, 10 -> 10
    tiers = MarginTiers((TierBracket(0.0, 1e9, top, 0.004, 0.0),))
    base = FuturesContract("BTC-PERP", "BTC", leverage=book_leverage,
                           tiers=MarginTiers.flat(max_leverage=125.0))
    assert contract_from_market(MARKET, base, tiers=tiers).leverage == want


def test_brackets_below_one_x_are_refused_naming_the_contract() -> None:
    tiers = MarginTiers((TierBracket(0.0, 1e9, 0.5, 0.5, 0.0),))
    base = FuturesContract("BTC-PERP", "BTC", leverage=1.0, tiers=MarginTiers.flat(max_leverage=2.0))
    with pytest.raises(ValidationError) as exc:
        contract_from_market(MARKET, base, tiers=tiers)
    assert exc.value.field == "contracts.BTC-PERP.leverage"


def test_the_leverage_set_on_the_exchange_is_the_one_fbr_plans_with() -> None:
    # a book built in code at 2.5x (a book file refuses it): Binance is set to int(2.5) = 2x, and
    # the instrument fbr plans initial margin with must carry 2x too
    loaded = load_book_file(Path(SEED_BOOK))
    book = dataclasses.replace(loaded.book, contracts=tuple(
        dataclasses.replace(c, leverage=2.5) for c in loaded.book.contracts))
    with BinanceEmulator() as emu:
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        instruments = gw.instruments(book)
        gw.prepare(instruments)
        assert emu.leverage["BTCUSDT"] == 2
        assert instruments["BTC-PERP"].contract.leverage == 2.0
