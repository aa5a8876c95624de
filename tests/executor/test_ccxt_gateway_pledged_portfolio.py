"""Reading Binance Portfolio Margin collateral tiers through real ccxt against the emulator:
``GET /sapi/v1/margin/crossMarginCollateralRatio`` (tiers per asset group) and ``GET
/sapi/v1/portfolio/collateralRate`` (one rate per asset) become the book's ``pledged`` tiered rules
(rate of tier k = min(discountRate_k, collateralRate)), and the book's collateral then equals the
exchange's own valuation of the holdings, a tier edge included."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK

from executor.ccxt_gateway import CcxtGateway
from executor.ccxt_metadata import with_instruments
from fbr.config import load_book_file
from models.book import Book
from models.collateral import CollateralRule, CollateralTier, flat_rule
from models.errors import ValidationError
from models.market import MarketSnapshot

PORTFOLIO = "/sapi/v1/portfolio/collateralRate"
CROSS = "/sapi/v1/margin/crossMarginCollateralRatio"


def _read(emulator: BinanceEmulator, book: Book, source: str = "portfolio_margin"
          ) -> tuple[CcxtGateway, Book, MarketSnapshot]:
    """The gateway's account reading of ``book`` at the exchange's market."""
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.0, pledge_source=source)
    inst = gw.instruments(book)
    market = gw.market(book, load_book_file(SEED_BOOK).market)
    return gw, gw.account(with_instruments(book, inst), market), market


def _seed(**changes: Any) -> Book:
    return dataclasses.replace(load_book_file(SEED_BOOK).book, **changes)


def test_tiers_read_and_a_holding_across_the_edge(emulator: BinanceEmulator) -> None:
    # BTC: cross-margin tiers [0, 1M] at 1.0, [1M, 5M] at 0.9; collateralRate 0.95 caps the first
    emulator.set_collateral_tiers(["BTC"], [(0.0, 1_000_000.0, 1.0), (1_000_000.0, 5_000_000.0, 0.9)])
    book = _seed(spot={"BTC": 20.0, "ETH": 1.0, "SOL": 10.0}, pledged={"BTC": 0.5})
    _, acc, market = _read(emulator, book)
    rule = acc.pledged["BTC"]
    assert isinstance(rule, CollateralRule)
    assert rule.tiers == (CollateralTier(0.0, 1_000_000.0, 0.95),
                          CollateralTier(1_000_000.0, 5_000_000.0, 0.9))
    assert rule.quantity is None and set(acc.pledged) == {"BTC"}
    u = 20.0 * market.spot_price("BTC")
    assert 1_000_000 < u < 5_000_000  # about 1.2M USD: past the first edge
    by_hand = 0.95 * 1_000_000 + 0.9 * (u - 1_000_000)
    assert acc.collateral(market) == pytest.approx(acc.cash + by_hand, rel=1e-12)
    assert by_hand == pytest.approx(emulator.portfolio_collateral("BTC", u), rel=1e-12)
    for path in (PORTFOLIO, CROSS):
        (req,) = emulator.requests_to(path, "GET")
        assert req.host == "api.binance.com" and "timestamp" in req.params  # signed sapi call


def test_open_and_zero_tiers_quantity_caps_and_flat_rates(emulator: BinanceEmulator) -> None:
    # SOL (default group): [0, 1M] 1.0, [1M, 5M] 0.975, [5M, inf) 0, capped at collateralRate 0.9;
    # ETH: one open tier at 1.0 capped at 0.95; the book pledges 4 of its 10 SOL
    book = _seed(pledged={"SOL": flat_rule(0.5, quantity=4.0), "ETH": 0.5})
    _, acc, market = _read(emulator, book)
    sol, eth = acc.pledged["SOL"], acc.pledged["ETH"]
    assert isinstance(sol, CollateralRule) and isinstance(eth, CollateralRule)
    assert [(t.min_usd, t.max_usd, t.rate) for t in sol.tiers] == [
        (0.0, 1_000_000.0, 0.9), (1_000_000.0, 5_000_000.0, 0.9), (5_000_000.0, math.inf, 0.0)]
    assert sol.quantity == 4.0 and eth.flat_ratio == 0.95
    expect = 0.9 * 4.0 * market.spot_price("SOL") + 0.95 * market.spot_price("ETH")
    assert acc.collateral(market) == pytest.approx(acc.cash + expect, rel=1e-12)


def test_wallet_asset_is_pledged_and_an_unknown_asset_is_not(emulator: BinanceEmulator) -> None:
    emulator.set_wallet_asset("BTC", 0.25)
    del emulator.pm_collateral_rate["SOL"]
    emulator.collateral_tiers = [(g, t) for g, t in emulator.collateral_tiers if "SOL" not in g]
    _, acc, market = _read(emulator, _seed(pledged={"SOL": 0.9}))
    assert set(acc.pledged) == {"BTC"}  # SOL: no rate in either answer -> not counted
    btc = acc.pledged["BTC"]
    assert isinstance(btc, CollateralRule) and btc.quantity == 0.25 and btc.flat_ratio == 0.95
    assert acc.spot["BTC"] == 0.25  # raised to the wallet's holding
    assert acc.collateral(market) == pytest.approx(
        acc.cash + 0.95 * 0.25 * market.spot_price("BTC"), rel=1e-12)


def test_default_source_asks_no_portfolio_endpoint(emulator: BinanceEmulator) -> None:
    _, acc, _ = _read(emulator, _seed(pledged={"SOL": 0.9}), source="multi_assets")
    assert acc.pledged == {"SOL": 0.9}
    assert not emulator.requests_to(PORTFOLIO) and not emulator.requests_to(CROSS)


def test_nothing_pledged_asks_nothing(emulator: BinanceEmulator) -> None:
    _, acc, _ = _read(emulator, _seed())
    assert acc.pledged == {}
    assert not emulator.requests_to(PORTFOLIO) and not emulator.requests_to(CROSS)


def test_endpoints_answer_through_ccxt_implicit_methods(emulator: BinanceEmulator) -> None:
    ex = emulator.exchange()
    rates: Any = ex.sapiGetPortfolioCollateralRate()
    assert {"asset": "BTC", "collateralRate": "0.9500"} in rates
    groups: Any = ex.sapiGetMarginCrossMarginCollateralRatio()
    sol = next(g for g in groups if "SOL" in g["assetNames"])
    assert sol["collaterals"][-1] == {"minUsdValue": "5000000", "discountRate": "0"}  # open tier


def test_bad_pledge_source() -> None:
    with pytest.raises(ValidationError, match="pledge_source"):
        CcxtGateway(object(), pledge_source="unified")
