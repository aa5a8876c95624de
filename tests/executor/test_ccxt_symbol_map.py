"""Each book contract on its own exchange contract of its kind (executor.plan.default_exchange_symbol,
executor.ccxt_metadata.check_symbol_map). A dated future used to map to the perpetual's ccxt
symbol: the perpetual's position was read as the dated contract's, and both contracts' orders
went to the perpetual. Now a dated contract maps to ccxt's ``BASE/QUOTE:SETTLE-YYMMDD``, and a
map the exchange cannot honour is refused before any order. Real ccxt against the emulator,
which lists perpetuals only."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from binance_emulator import BinanceEmulator

from executor.ccxt_gateway import CcxtGateway
from executor.plan import default_exchange_symbol
from models.book import Book
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract, Settlement, SpotAsset

EXPIRY = datetime(2030, 9, 26, 8, tzinfo=UTC)
PERP = FuturesContract("BTC-PERP", "BTC", min_notional=0.0)
DATED = FuturesContract("BTC-0926", "BTC", kind=ContractKind.DATED, expiry=EXPIRY, min_notional=0.0)


def _book(*contracts: FuturesContract) -> Book:
    return Book((SpotAsset("BTC"),), contracts, spot={"BTC": 1.0}, targets={"BTC": 0.5},
                cash=50_000.0, name="dated")


def test_default_symbols_by_kind_and_settlement() -> None:
    assert default_exchange_symbol(PERP) == "BTC/USDT:USDT"
    assert default_exchange_symbol(DATED) == "BTC/USDT:USDT-300926"
    inverse = FuturesContract("BTCUSD-0926", "BTC", kind=ContractKind.DATED, expiry=EXPIRY,
                              settlement=Settlement.INVERSE, contract_size=100.0)
    assert default_exchange_symbol(inverse) == "BTC/USD:BTC-300926"
    assert default_exchange_symbol(FuturesContract("BTCUSD-PERP", "BTC",
                                                   settlement=Settlement.INVERSE)) == "BTC/USD:BTC"
    # an expiry on a perpetual (the book file allows it) adds no suffix: only a dated one has it
    assert default_exchange_symbol(FuturesContract("BTC-PERP", "BTC", expiry=EXPIRY)) == "BTC/USDT:USDT"


def test_a_dated_contract_the_exchange_does_not_list_is_refused_not_traded_as_the_perpetual() -> None:
    with BinanceEmulator() as emu:
        emu.set_position("BTCUSDT", -0.2)
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        with pytest.raises(ValidationError,
                           match=re.escape("contracts.BTC-0926: maps to 'BTC/USDT:USDT-300926'")):
            gw.instruments(_book(PERP, DATED))
        assert emu.requests_to("/fapi/v1/order", "POST") == []


def test_two_book_contracts_on_one_exchange_contract_are_refused() -> None:
    other = FuturesContract("BTC-PERP-2", "BTC", min_notional=0.0)
    with BinanceEmulator() as emu:
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        with pytest.raises(ValidationError,
                           match=re.escape("BTC-PERP-2: maps to 'BTC/USDT:USDT', as BTC-PERP")):
            gw.instruments(_book(PERP, other))


def test_a_dated_contract_mapped_to_a_perpetual_is_refused() -> None:
    with BinanceEmulator() as emu:
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0,
                         symbols={"BTC-0926": "ETH/USDT:USDT"})
        with pytest.raises(ValidationError, match=r"contracts.BTC-0926.kind: is dated, but "
                                                  r"'ETH/USDT:USDT' is a perpetual"):
            gw.instruments(_book(PERP, DATED))
