"""Reading spot pledged as margin (Binance USD-M Multi-Assets mode) through real ccxt against the
emulator: the account's wallet assets and ``/fapi/v1/assetIndex`` become the book's ``pledged``
rules at quantity x index x (1 - bidBuffer), and the book's collateral then equals the margin
balance the exchange itself reports."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK

from executor.ccxt_gateway import CcxtGateway
from executor.ccxt_metadata import with_instruments
from fbr.config import load_book_file
from models.book import Book
from models.collateral import CollateralRule
from models.market import MarketSnapshot


def _read(emulator: BinanceEmulator, book: Book | None = None
          ) -> tuple[CcxtGateway, Book, MarketSnapshot]:
    """The gateway's account reading of the seed book (or ``book``) at the exchange's market."""
    loaded = load_book_file(SEED_BOOK)
    book = book or loaded.book
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.0)
    inst = gw.instruments(book)
    market = gw.market(book, loaded.market)
    return gw, gw.account(with_instruments(book, inst), market), market


def _exchange_margin_balance(gw: CcxtGateway) -> float:
    answer: Any = gw.ex.fapiPrivateV3GetAccount()
    return float(answer["totalMarginBalance"])


def test_multi_assets_wallet_btc_is_pledged_at_index_less_bid_buffer(emulator: BinanceEmulator
                                                                     ) -> None:
    emulator.set_multi_assets(True)
    emulator.set_wallet_asset("BTC", 0.05, bid_buffer=0.05)
    gw, acc, market = _read(emulator)
    rule = acc.pledged["BTC"]
    assert isinstance(rule, CollateralRule)
    assert (rule.bid_buffer, rule.quantity) == (0.05, 0.05)
    assert set(acc.pledged) == {"BTC"}
    index = emulator.asset_index("BTC")
    assert market.spot_price("BTC") == pytest.approx(index, rel=1e-12)  # the index, from premiumIndex
    # 0.05 of the book's 0.1 BTC is in the wallet: pledged value 0.05 x index x 0.95
    assert acc.spot["BTC"] == 0.1
    assert acc.collateral(market) == pytest.approx(acc.cash + 0.05 * index * 0.95, rel=1e-12)
    assert acc.collateral(market) == pytest.approx(_exchange_margin_balance(gw), rel=1e-9)
    assert len(emulator.requests_to("/fapi/v1/assetIndex")) == 1
    assert len(emulator.requests_to("/fapi/v1/multiAssetsMargin", "GET")) == 1


def test_wallet_holding_above_the_book_spot_raises_spot(emulator: BinanceEmulator) -> None:
    emulator.set_multi_assets(True)
    emulator.set_wallet_asset("BTC", 0.25, bid_buffer=0.1)
    emulator.set_wallet_asset("SOL", 4.0, bid_buffer=0.2)
    gw, acc, market = _read(emulator)
    assert acc.spot["BTC"] == 0.25 and acc.spot["SOL"] == 10.0
    pledged = 0.25 * market.spot_price("BTC") * 0.9 + 4.0 * market.spot_price("SOL") * 0.8
    assert acc.collateral(market) == pytest.approx(acc.cash + pledged, rel=1e-12)
    assert acc.collateral(market) == pytest.approx(_exchange_margin_balance(gw), rel=1e-9)


def test_mode_switched_on_through_ccxt_post(emulator: BinanceEmulator) -> None:
    emulator.set_wallet_asset("ETH", 0.5)
    ex = emulator.exchange()
    ex.fapiPrivatePostMultiAssetsMargin({"multiAssetsMargin": "true"})
    assert emulator.multi_assets
    _, acc, market = _read(emulator)
    assert set(acc.pledged) == {"ETH"}
    assert acc.collateral(market) == pytest.approx(acc.cash + 0.5 * market.spot_price("ETH") * 0.95)


def test_single_asset_mode_pledges_nothing(emulator: BinanceEmulator) -> None:
    emulator.set_wallet_asset("BTC", 0.05)
    book = dataclasses.replace(load_book_file(SEED_BOOK).book, pledged={"BTC": 0.95})
    gw, acc, market = _read(emulator, book)
    assert acc.pledged == {}
    assert acc.collateral(market) == pytest.approx(_exchange_margin_balance(gw), rel=1e-12)
    assert not emulator.requests_to("/fapi/v1/assetIndex")


def test_no_wallet_asset_asks_nothing_more_and_keeps_the_book_file(emulator: BinanceEmulator
                                                                   ) -> None:
    book = dataclasses.replace(load_book_file(SEED_BOOK).book, pledged={"SOL": 0.9})
    _, acc, _ = _read(emulator, book)
    assert acc.pledged == {"SOL": 0.9} and acc.cash == pytest.approx(100_000.0)
    assert not emulator.requests_to("/fapi/v1/multiAssetsMargin")
    assert not emulator.requests_to("/fapi/v1/assetIndex")


def test_asset_without_an_index_row_is_not_collateral(emulator: BinanceEmulator) -> None:
    emulator.set_multi_assets(True)
    emulator.set_wallet_asset("SOL", 3.0)
    del emulator.bid_buffer["SOL"]
    _, acc, _ = _read(emulator)
    assert acc.pledged == {} and acc.spot["SOL"] == 10.0


def test_asset_index_answers_one_symbol(emulator: BinanceEmulator) -> None:
    row: Any = emulator.exchange().fapiPublicGetAssetIndex({"symbol": "BTCUSD"})
    assert row["symbol"] == "BTCUSD" and float(row["bidBuffer"]) == 0.05
    assert float(row["index"]) == pytest.approx(emulator.asset_index("BTC"))
