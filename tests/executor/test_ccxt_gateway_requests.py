"""The exact order requests ccxt sends for a plan: Binance USD-M from the emulator's request log;
OKX from ccxt's own request record (the proxy trick: built and signed, never sent)."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import ccxt
import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, market, solution_with, three_asset_book

from executor.base import OrderRejectedError
from executor.ccxt_gateway import CcxtGateway
from executor.ccxt_metadata import contract_from_market
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import Instrument, OrderType, PlanOptions, book_instruments, plan_orders
from executor.workflow import prepare_plan
from fbr.config import load_book_file
from models.book import FuturesPosition
from models.instruments import Settlement

MARKS = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
STEPS = {"BTC": "0.001", "ETH": "0.001", "SOL": "1"}
SPOT_QTY = {"BTC": 0.1, "ETH": 1.0, "SOL": 10.0}
TARGETS = {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}
BTC_POSITION = -0.03


def _expected_trades() -> dict[str, Decimal]:
    """The seed rule by hand at the emulator's prices: spot at the index (mark / 1.0003), V = spot
    value, target notional x = w* V - spot, contracts = x / mark rounded to the step, minus the
    position held."""
    index = {a: m / 1.0003 for a, m in MARKS.items()}
    V = sum(SPOT_QTY[a] * index[a] for a in MARKS)
    out = {}
    for a in MARKS:
        q = (TARGETS[a] * V - SPOT_QTY[a] * index[a]) / MARKS[a]
        step = Decimal(STEPS[a])
        target = (Decimal(repr(q)) / step).to_integral_value(ROUND_HALF_EVEN) * step
        out[a] = target - (Decimal(repr(BTC_POSITION)) if a == "BTC" else 0)
    return out


def _run(emulator: BinanceEmulator, tmp_path: Path, order_type: OrderType) -> list[dict[str, str]]:
    emulator.set_position("BTCUSDT", BTC_POSITION, 60_000.0)
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                        PlanOptions(order_type=order_type, slippage_guard=0.005), plan_id="P1")
    with Journal(tmp_path / "j.sqlite") as j:
        JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                          retry=RetryPolicy(base_delay_s=0.0)).execute(prep.plan)
    return [{k: v for k, v in r.params.items() if k not in ("timestamp", "recvWindow")}
            for r in emulator.requests_to("/fapi/v1/order", "POST")]


def test_market_order_requests_are_exact(emulator: BinanceEmulator, tmp_path: Path) -> None:
    trades = _expected_trades()
    # by hand: BTC -0.012 target from -0.03 held -> buy 0.018 reduce-only; ETH buy 0.05; SOL buy 4
    assert trades == {"BTC": Decimal("0.018"), "ETH": Decimal("0.050"), "SOL": Decimal("4")}
    sent = _run(emulator, tmp_path, OrderType.MARKET)
    assert sent == [
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.018", "reduceOnly": "true",
         "newClientOrderId": "fbrP1-000", "newOrderRespType": "RESULT"},
        {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.05",
         "newClientOrderId": "fbrP1-001", "newOrderRespType": "RESULT"},
        {"symbol": "SOLUSDT", "side": "BUY", "type": "MARKET", "quantity": "4",
         "newClientOrderId": "fbrP1-002", "newOrderRespType": "RESULT"},
    ]
    for p in sent:  # the quantity is at the exchange's precision (a whole number of steps)
        asset = p["symbol"].removesuffix("USDT")
        assert Decimal(p["quantity"]) % Decimal(STEPS[asset]) == 0
    assert emulator.positions == pytest.approx({"BTCUSDT": -0.012, "ETHUSDT": 0.05, "SOLUSDT": 4.0})


def test_limit_order_requests_carry_the_guard_price(emulator: BinanceEmulator, tmp_path: Path) -> None:
    sent = _run(emulator, tmp_path, OrderType.LIMIT)
    # buys: mark x 1.005 on the tick (BTC 0.1, ETH 0.01, SOL 0.01)
    assert [(p["symbol"], p["type"], p["price"], p["timeInForce"], p.get("reduceOnly")) for p in sent] == [
        ("BTCUSDT", "LIMIT", "60300", "IOC", "true"), ("ETHUSDT", "LIMIT", "3015", "IOC", None),
        ("SOLUSDT", "LIMIT", "150.75", "IOC", None)]


# --- OKX and Binance coin-M: real ccxt market parsing and request building, offline ---------------

OKX_BTC_SWAP = {"instId": "BTC-USDT-SWAP", "instType": "SWAP", "instFamily": "BTC-USDT", "uly": "BTC-USDT",
                "ctType": "linear", "ctVal": "0.01", "ctValCcy": "BTC", "ctMult": "1", "settleCcy": "USDT",
                "lotSz": "1", "minSz": "1", "maxMktSz": "12000", "maxLmtSz": "100000000", "tickSz": "0.1",
                "lever": "100", "state": "live", "listTime": "1573557408000", "expTime": "",
                "baseCcy": "", "quoteCcy": "", "category": "1", "alias": "", "optType": "", "stk": ""}
COINM_BTC_PERP = {"symbol": "BTCUSD_PERP", "pair": "BTCUSD", "contractType": "PERPETUAL",
                  "deliveryDate": 4133404800000, "onboardDate": 1597042800000, "contractStatus": "TRADING",
                  "contractSize": 100, "marginAsset": "BTC", "baseAsset": "BTC", "quoteAsset": "USD",
                  "pricePrecision": 1, "quantityPrecision": 0, "baseAssetPrecision": 8, "quotePrecision": 8,
                  "underlyingType": "COIN", "underlyingSubType": [],
                  "filters": [{"filterType": "PRICE_FILTER", "minPrice": "1000", "maxPrice": "4520958",
                               "tickSize": "0.1"},
                              {"filterType": "LOT_SIZE", "stepSize": "1", "maxQty": "1000000", "minQty": "1"},
                              {"filterType": "MARKET_LOT_SIZE", "stepSize": "1", "maxQty": "60000",
                               "minQty": "1"}],
                  "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC", "IOC", "FOK", "GTX"]}


def test_okx_contract_size_from_real_ccxt_parsing_and_its_request() -> None:
    """OKX BTC-USDT-SWAP is 0.01 BTC per contract: 1,200 USD short at 60,000 = 2 contracts; the
    request (built and signed by ccxt, stopped before any socket by the proxy trick) carries the
    OKX-style client id (alphanumeric, <= 32) and reduceOnly."""

    ex = ccxt.okx({"apiKey": "k", "secret": "s", "password": "p",
                   "httpProxy": "http://127.0.0.1:9", "httpsProxy": "http://127.0.0.1:9"})
    m = ex.parse_market(OKX_BTC_SWAP)
    ex.set_markets([m])
    book0 = three_asset_book()
    okx_btc = contract_from_market(m, book0.contracts[0])
    assert (okx_btc.contract_size, okx_btc.lot_step, okx_btc.min_qty) == (0.01, 1.0, 1.0)
    book = three_asset_book({"BTC-PERP": okx_btc}, futures={"BTC-PERP": FuturesPosition(-5.0, 60_000.0)})
    inst = {**book_instruments(book), "BTC-PERP": Instrument(okx_btc, m["symbol"])}
    plan = plan_orders(solution_with({"BTC-PERP": -1800.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0}), book,
                       market(), inst, PlanOptions(venue="okx"), plan_id="20240601000000abcd")
    (leg,) = plan.legs
    # held -5 contracts (-3000 USD); target -1800 / 600 = -3 -> buy 2 reduce-only
    assert (leg.side.value, leg.contracts, leg.reduce_only) == ("buy", 2.0, True)
    with pytest.raises(OrderRejectedError, match="InvalidProxySettings"):
        CcxtGateway(ex).create_order(leg)
    body = json.loads(ex.last_request_body)
    assert body == [{"instId": "BTC-USDT-SWAP", "side": "buy", "ordType": "market", "sz": "2",
                     "tdMode": "cross", "clOrdId": "fbr20240601000000abcd000", "reduceOnly": True}]


def test_binance_coinm_inverse_contracts_from_real_ccxt_parsing() -> None:
    """Binance coin-M BTCUSD_PERP: inverse, 100 USD per contract, whatever the price."""

    m = ccxt.binancecoinm().parse_market(COINM_BTC_PERP)
    book0 = three_asset_book()
    inv = contract_from_market(m, book0.contracts[0])
    assert inv.settlement == Settlement.INVERSE and inv.contract_size == 100.0 and inv.lot_step == 1.0
    book = three_asset_book({"BTC-PERP": inv})
    inst = {**book_instruments(book), "BTC-PERP": Instrument(inv, m["symbol"])}
    plan = plan_orders(solution_with({"BTC-PERP": -1049.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0}), book,
                       market(), inst, PlanOptions(), plan_id="P2")
    (leg,) = plan.legs
    assert (m["symbol"], leg.side.value, leg.contracts) == ("BTC/USD:BTC", "sell", 10.0)
    assert leg.notional == pytest.approx(-1000.0)
