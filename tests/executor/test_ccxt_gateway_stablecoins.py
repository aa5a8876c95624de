"""USD stablecoins other than USDT in the futures wallet (USDC, FDUSD, ...) are cash: in Multi-Assets
mode at the exchange's index x (1 - bidBuffer) (its ``/fapi/v1/assetIndex`` row), with the mode off
at 0 (Binance counts only USDT as margin then), through real ccxt against the emulator. The book's
collateral then equals the margin balance the exchange reports; a note says how each was counted."""

from __future__ import annotations

from typing import Any

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK

from executor.ccxt_gateway import CcxtGateway
from executor.ccxt_metadata import with_instruments
from fbr.config import load_book_file
from models.book import Book
from models.market import MarketSnapshot


def _read(emulator: BinanceEmulator) -> tuple[CcxtGateway, Book, MarketSnapshot]:
    """The gateway's account reading of the seed book at the exchange's market."""
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.0)
    inst = gw.instruments(loaded.book)
    market = gw.market(loaded.book, loaded.market)
    return gw, gw.account(with_instruments(loaded.book, inst), market), market


def _usdc(emulator: BinanceEmulator, quantity: float, index: float, bid_buffer: float) -> None:
    """``quantity`` USDC in the futures wallet, its assetIndex row at ``index`` and ``bid_buffer``
    (the emulator's wallet and index tables take any asset)."""
    emulator.asset_prices["USDC"] = index
    emulator.bid_buffer["USDC"] = bid_buffer
    emulator.wallet_assets["USDC"] = quantity


def _exchange_margin_balance(gw: CcxtGateway) -> float:
    answer: Any = gw.ex.fapiPrivateV3GetAccount()
    return float(answer["totalMarginBalance"])


def test_usdc_counts_as_cash_at_index_less_bid_buffer(emulator: BinanceEmulator) -> None:
    """USDT 2,500.5 and USDC 1,000 at index 0.9998, bidBuffer 1%, Multi-Assets on: cash =
    2,500.5 + 1,000 x 0.9998 x 0.99 = 2,500.5 + 989.802 = 3,490.302 USD; USDC is not pledged spot.
    The book's collateral (no positions: the wallet) equals the exchange's totalMarginBalance."""
    emulator.balance = 2_500.5
    emulator.set_multi_assets(True)
    _usdc(emulator, 1_000.0, 0.9998, 0.01)
    gw, acc, market = _read(emulator)
    assert acc.cash == pytest.approx(3_490.302, abs=1e-9)
    assert acc.pledged == {} and "USDC" not in acc.spot
    assert acc.collateral(market) == pytest.approx(_exchange_margin_balance(gw), rel=1e-12)
    assert gw.stablecoin_notes == (
        "futures wallet USDC 1000: counted in [book] cash as 989.80 USD (index 0.9998 x "
        "(1 - bidBuffer 0.01))",)


def test_usdc_and_pledged_btc_share_one_mode_and_index_read(emulator: BinanceEmulator) -> None:
    """USDC 500 at index 1, bidBuffer 0 and BTC 0.05 at bidBuffer 5% in the wallet: cash = 100,000
    + 500 = 100,500 USD, BTC pledged at 0.05 x index x 0.95; the mode and the assetIndex are read
    once each, as with BTC alone."""
    emulator.set_multi_assets(True)
    _usdc(emulator, 500.0, 1.0, 0.0)
    emulator.set_wallet_asset("BTC", 0.05, bid_buffer=0.05)
    gw, acc, market = _read(emulator)
    assert acc.cash == pytest.approx(100_500.0, abs=1e-9)
    assert set(acc.pledged) == {"BTC"}
    index = emulator.asset_index("BTC")
    assert acc.collateral(market) == pytest.approx(100_500.0 + 0.05 * index * 0.95, rel=1e-12)
    assert acc.collateral(market) == pytest.approx(_exchange_margin_balance(gw), rel=1e-12)
    assert len(emulator.requests_to("/fapi/v1/assetIndex")) == 1
    assert len(emulator.requests_to("/fapi/v1/multiAssetsMargin", "GET")) == 1


def test_usdc_with_the_mode_off_counts_zero_with_a_note(emulator: BinanceEmulator) -> None:
    """Single-asset mode: Binance counts only USDT as margin, so USDC 1,000 adds 0: cash = the
    USDT 2,500.5, equal to the exchange's margin balance; no assetIndex read."""
    emulator.balance = 2_500.5
    _usdc(emulator, 1_000.0, 1.0, 0.0)
    gw, acc, market = _read(emulator)
    assert acc.cash == 2_500.5
    assert acc.collateral(market) == pytest.approx(_exchange_margin_balance(gw), rel=1e-12)
    assert not emulator.requests_to("/fapi/v1/assetIndex")
    assert gw.stablecoin_notes == (
        "futures wallet USDC 1000: counted in [book] cash as 0.00 USD (Multi-Assets mode is off, "
        "so Binance counts only USDT as margin; to count it, switch Multi-Assets mode on or "
        "convert it to USDT)",)


def test_stablecoin_values_by_hand() -> None:
    """A holding at (index 0.999, bidBuffer 0.02): 100 x 0.999 x 0.98 = 97.902; a debt of 200 at
    (index 1.001, askBuffer 0.03): -200 x 1.001 x 1.03 = -206.206; without a rate a holding is 0
    and a debt its face value, -200."""
    from executor.ccxt_collateral import stablecoin_value

    value, note = stablecoin_value("FDUSD", 100.0, (0.999, 0.02, 0.05), True, "USDT")
    assert value == pytest.approx(97.902, abs=1e-12) and "97.90 USD" in note
    value, note = stablecoin_value("USDC", -200.0, (1.001, 0.01, 0.03), True, "USDT")
    assert value == pytest.approx(-206.206, abs=1e-12) and "askBuffer 0.03" in note
    assert stablecoin_value("USDC", 100.0, None, True, "USDT")[0] == 0.0
    value, note = stablecoin_value("USDC", -200.0, None, False, "USDT")
    assert value == -200.0 and "a debt, at face value" in note
