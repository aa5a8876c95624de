"""Bybit v5 market metadata, plans and order requests, through real ccxt code and no network.

ccxt.bybit has no per-row ``parse_market``: its markets are parsed inside ``fetch_future_markets``
from ``GET /v5/market/instruments-info``. The tests hand ccxt a ``requests.Session`` whose adapter
answers that endpoint from real-shaped v5 rows in memory (no socket opens), so ccxt's own URL
building, JSON decoding and market parsing run; fbr then converts the unified markets
(:func:`executor.ccxt_metadata.contract_from_market`), plans (:func:`executor.plan.plan_orders`)
and builds the order request (stopped before any socket by the proxy trick).

Bybit facts used (v5 docs): linear USDT perps are sized in the base coin (1 contract = 1 BTC,
``qtyStep`` 0.001, ``minNotionalValue`` 5 USDT; market orders capped at ``maxMktOrderQty``);
inverse perps are sized in USD (BTCUSD: 1 contract = 1 USD, ``qtyStep`` 1); ``orderLinkId`` is at
most 36 characters of ``[A-Za-z0-9_-]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ccxt
import pytest
import requests
from exec_helpers import market, solution_with, three_asset_book

from executor.base import OrderRejectedError
from executor.ccxt_gateway import CcxtGateway
from executor.ccxt_metadata import contract_from_market
from executor.plan import (
    Instrument,
    OrderPlan,
    PlanOptions,
    book_instruments,
    plan_orders,
)
from executor.plan_ids import CLIENT_ID_RULES, client_id_rule
from executor.safety import Limits
from models.book import FuturesPosition
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract, Settlement

# Real-shaped rows of GET /v5/market/instruments-info (strings, as Bybit sends them).
BYBIT_BTCUSDT = {
    "symbol": "BTCUSDT", "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": "BTC",
    "quoteCoin": "USDT", "launchTime": "1585526400000", "deliveryTime": "0", "deliveryFeeRate": "",
    "priceScale": "2",
    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
    "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
    "lotSizeFilter": {"maxOrderQty": "1190.000", "minOrderQty": "0.001", "qtyStep": "0.001",
                      "postOnlyMaxOrderQty": "1190.000", "maxMktOrderQty": "119.000",
                      "minNotionalValue": "5"},
    "unifiedMarginTrade": True, "fundingInterval": 480, "settleCoin": "USDT", "copyTrading": "both",
    "upperFundingRate": "0.005", "lowerFundingRate": "-0.005", "isPreListing": False,
    "preListingInfo": None, "displayName": "",
}
BYBIT_BTCUSD = {
    "symbol": "BTCUSD", "contractType": "InversePerpetual", "status": "Trading", "baseCoin": "BTC",
    "quoteCoin": "USD", "launchTime": "1542211200000", "deliveryTime": "0", "deliveryFeeRate": "",
    "priceScale": "2",
    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
    "priceFilter": {"minPrice": "0.50", "maxPrice": "1999999.00", "tickSize": "0.50"},
    "lotSizeFilter": {"maxOrderQty": "100000000", "minOrderQty": "1", "qtyStep": "1",
                      "postOnlyMaxOrderQty": "100000000", "maxMktOrderQty": "20000000"},
    "unifiedMarginTrade": False, "fundingInterval": 480, "settleCoin": "BTC", "copyTrading": "none",
    "upperFundingRate": "0.00375", "lowerFundingRate": "-0.00375", "isPreListing": False,
    "preListingInfo": None, "displayName": "",
}
ROWS = {"linear": [BYBIT_BTCUSDT], "inverse": [BYBIT_BTCUSD]}
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,36}")  # Bybit orderLinkId, written out independently
MARK = 60_000.0


class _InstrumentsInfo(requests.adapters.BaseAdapter):
    """Answers GET /v5/market/instruments-info from ``ROWS`` in memory (PreLaunch: none); any other
    request gets HTTP 404, so an unexpected call fails the test. Records what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        url = urlsplit(str(request.url))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.seen.append((str(request.method), url.path, query))
        resp = requests.Response()
        resp.url, resp.request = str(request.url), request
        resp.headers["Content-Type"] = "application/json"
        if request.method == "GET" and url.path == "/v5/market/instruments-info":
            category = query.get("category", "")
            rows = [] if query.get("status") == "PreLaunch" else ROWS.get(category, [])
            body = {"retCode": 0, "retMsg": "OK", "time": 1717200000000, "retExtInfo": {},
                    "result": {"category": category, "list": rows, "nextPageCursor": ""}}
            resp.status_code, resp.reason = 200, "OK"
        else:
            body = {"retCode": 10001, "retMsg": f"no canned answer for {url.path}"}
            resp.status_code, resp.reason = 404, "Not Found"
        resp._content = json.dumps(body).encode()
        return resp

    def close(self) -> None:
        """Nothing to release."""


def _bybit() -> tuple[ccxt.bybit, _InstrumentsInfo]:
    """A real ccxt.bybit with its linear and inverse markets loaded through the in-memory adapter,
    then keys and both proxies set: any further request is built and signed, never sent."""
    adapter = _InstrumentsInfo()
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    ex = ccxt.bybit({"session": session,
                     "options": {"fetchMarkets": {"types": ["linear", "inverse"]},
                                 # a unified trading account, so create_order asks nothing first
                                 "enableUnifiedMargin": False, "enableUnifiedAccount": True}})
    ex.load_markets()
    ex.apiKey, ex.secret = "k", "s"
    ex.httpProxy = ex.httpsProxy = "http://127.0.0.1:9"
    return ex, adapter


@pytest.fixture(scope="module")
def bybit() -> tuple[ccxt.bybit, _InstrumentsInfo]:
    return _bybit()


def _base() -> FuturesContract:
    base: FuturesContract = three_asset_book().contracts[0]  # exec_helpers is loaded untyped
    return base


# --- markets -> FuturesContract ---------------------------------------------------------------

def test_markets_come_from_the_v5_instruments_endpoint(bybit: tuple[ccxt.bybit, _InstrumentsInfo]
                                                       ) -> None:
    ex, adapter = bybit
    asked = {(m, p, q.get("category"), q.get("status")) for m, p, q in adapter.seen}
    assert asked == {("GET", "/v5/market/instruments-info", c, s)
                     for c in ("linear", "inverse") for s in (None, "PreLaunch")}
    assert {"BTC/USDT:USDT", "BTC/USD:BTC"} <= set(ex.markets)


def test_linear_usdt_perp_metadata(bybit: tuple[ccxt.bybit, _InstrumentsInfo]) -> None:
    ex, _ = bybit
    m = ex.market("BTC/USDT:USDT")
    assert (m["id"], m["linear"], m["inverse"]) == ("BTCUSDT", True, False)
    c = contract_from_market(m, _base(), decimal_places=ex.precisionMode == ccxt.DECIMAL_PLACES)
    assert c.settlement == Settlement.LINEAR and c.kind == ContractKind.PERPETUAL
    assert c.contract_size == 1.0  # 1 contract = 1 BTC
    assert c.lot_step == pytest.approx(0.001) and c.tick == pytest.approx(0.1)
    assert c.min_qty == pytest.approx(0.001) and c.min_notional == pytest.approx(5.0)
    # market orders are capped at maxMktOrderQty (119 BTC), below the limit-order cap (1190 BTC)
    assert c.max_qty == pytest.approx(119.0)
    # notional of N contracts = N x 1 BTC x price: 0.25 x 60,000 = 15,000; 2.5 x 30,000 = 75,000
    assert c.notional_per_contract(MARK) * 0.25 == pytest.approx(15_000.0)
    assert c.notional_per_contract(30_000.0) * 2.5 == pytest.approx(75_000.0)
    assert c.contracts_for(15_000.0, MARK) == pytest.approx(0.25)


def test_inverse_perp_is_sized_in_usd(bybit: tuple[ccxt.bybit, _InstrumentsInfo]) -> None:
    ex, _ = bybit
    m = ex.market("BTC/USD:BTC")
    assert (m["id"], m["linear"], m["inverse"], m["settle"]) == ("BTCUSD", False, True, "BTC")
    c = contract_from_market(m, _base())
    assert c.settlement == Settlement.INVERSE and c.kind == ContractKind.PERPETUAL
    assert c.contract_size == 1.0  # 1 contract = 1 USD
    assert (c.lot_step, c.min_qty, c.tick) == (1.0, 1.0, 0.5)
    assert c.min_notional == 0.0  # Bybit states minNotionalValue for linear contracts only
    assert c.max_qty == pytest.approx(20_000_000.0)
    # 1,500 contracts are 1,500 USD whatever the price
    for price in (60_000.0, 30_000.0, 125_000.0):
        assert c.notional_per_contract(price) * 1500 == pytest.approx(1500.0)
        assert c.contracts_for(-1500.0, price) == pytest.approx(-1500.0)


# --- plans --------------------------------------------------------------------------------------

def _plan(contract: FuturesContract, symbol: str, target_usd: float, held: float = 0.0,
          limits: Limits | None = None) -> OrderPlan:
    futures = {"BTC-PERP": FuturesPosition(held, MARK)} if held else None
    book = three_asset_book({"BTC-PERP": contract}, futures=futures)
    inst = {**book_instruments(book), "BTC-PERP": Instrument(contract, symbol)}
    opts = PlanOptions(venue="bybit", limits=limits or Limits())
    return plan_orders(solution_with({"BTC-PERP": target_usd, "ETH-PERP": 0.0, "SOL-PERP": 0.0}),
                       book, market(), inst, opts, plan_id="20240601000000abcd")


def test_linear_plan_contracts_and_client_ids(bybit: tuple[ccxt.bybit, _InstrumentsInfo]) -> None:
    ex, _ = bybit
    c = contract_from_market(ex.market("BTC/USDT:USDT"), _base())
    # held -0.03 BTC; target -1,234.5 USD / 60,000 = -0.020575 -> -0.021 on the 0.001 step
    # -> buy 0.009 reduce-only, 0.009 x 60,000 = 540 USD
    plan = _plan(c, "BTC/USDT:USDT", -1234.5, held=-0.03)
    (leg,) = plan.legs
    assert (leg.side.value, leg.reduce_only, leg.exchange_symbol) == ("buy", True, "BTC/USDT:USDT")
    assert leg.contracts == pytest.approx(0.009) and leg.notional == pytest.approx(540.0)
    assert plan.target["BTC-PERP"] == pytest.approx(-0.021)
    assert leg.client_id == "fbr20240601000000abcd-000" and CLIENT_ID.fullmatch(leg.client_id)


def test_linear_market_orders_split_at_the_market_order_cap(
        bybit: tuple[ccxt.bybit, _InstrumentsInfo]) -> None:
    ex, _ = bybit
    c = contract_from_market(ex.market("BTC/USDT:USDT"), _base())
    # 150 BTC short (9,000,000 USD) opens in chunks of at most 119 BTC: two of 75
    plan = _plan(c, "BTC/USDT:USDT", -150 * MARK,
                 limits=Limits(max_order_usd=1e8, max_plan_usd=1e8))
    assert [(leg.side.value, leg.contracts) for leg in plan.legs] == [("sell", 75.0), ("sell", 75.0)]
    assert [leg.client_id for leg in plan.legs] == ["fbr20240601000000abcd-000",
                                                   "fbr20240601000000abcd-001"]
    assert sum(leg.notional for leg in plan.legs) == pytest.approx(-9_000_000.0)


def test_inverse_plan_counts_usd_contracts(bybit: tuple[ccxt.bybit, _InstrumentsInfo]) -> None:
    ex, _ = bybit
    c = contract_from_market(ex.market("BTC/USD:BTC"), _base())
    # target -2,345.6 USD at 1 USD a contract -> -2,346 contracts (step 1), whatever the mark
    plan = _plan(c, "BTC/USD:BTC", -2345.6)
    (leg,) = plan.legs
    assert (leg.side.value, leg.contracts, leg.reduce_only) == ("sell", 2346.0, False)
    assert leg.notional == pytest.approx(-2346.0)
    assert CLIENT_ID.fullmatch(leg.client_id)
    # a 1,000 USD short reduced to 400 USD: buy 600 contracts, reduce-only
    plan2 = _plan(c, "BTC/USD:BTC", -400.0, held=-1000.0)
    (leg2,) = plan2.legs
    assert (leg2.side.value, leg2.contracts, leg2.reduce_only) == ("buy", 600.0, True)


def test_bybit_client_id_rule() -> None:
    rule = client_id_rule("bybit")
    assert rule is CLIENT_ID_RULES["bybit"]
    # "fbr" + plan id + "-" + 3 digits: a 29-char plan id gives 36 chars (the limit), 30 gives 37
    ok = rule.make("a" * 29, 7)
    assert ok == "fbr" + "a" * 29 + "-007" and len(ok) == 36 and CLIENT_ID.fullmatch(ok)
    with pytest.raises(ValidationError, match="plan_id"):
        rule.make("a" * 30, 7)
    # '.' and ':' pass Binance's rule but not Bybit's
    assert client_id_rule("binanceusdm").make("v1.2:x", 0) == "fbrv1.2:x-000"
    with pytest.raises(ValidationError, match="plan_id"):
        rule.make("v1.2:x", 0)


# --- the requests ccxt builds ---------------------------------------------------------------------

def _sent_body(ex: ccxt.bybit, plan: OrderPlan) -> Mapping[str, Any]:
    (leg,) = plan.legs
    with pytest.raises(OrderRejectedError, match="InvalidProxySettings"):
        CcxtGateway(ex).create_order(leg)
    assert urlsplit(str(ex.last_request_url)).path == "/v5/order/create"
    body: dict[str, Any] = json.loads(ex.last_request_body)
    return body


def test_order_requests_carry_the_client_id_as_order_link_id(
        bybit: tuple[ccxt.bybit, _InstrumentsInfo]) -> None:
    ex, _ = bybit
    lin = contract_from_market(ex.market("BTC/USDT:USDT"), _base())
    body = _sent_body(ex, _plan(lin, "BTC/USDT:USDT", -1234.5, held=-0.03))
    assert {k: body.get(k) for k in ("category", "symbol", "side", "orderType", "qty", "reduceOnly",
                                     "orderLinkId")} == {
        "category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
        "qty": "0.009", "reduceOnly": True, "orderLinkId": "fbr20240601000000abcd-000"}
    inv = contract_from_market(ex.market("BTC/USD:BTC"), _base())
    body = _sent_body(ex, _plan(inv, "BTC/USD:BTC", -2345.6))
    assert {k: body.get(k) for k in ("category", "symbol", "side", "qty", "orderLinkId")} == {
        "category": "inverse", "symbol": "BTCUSD", "side": "Sell", "qty": "2346",
        "orderLinkId": "fbr20240601000000abcd-000"}
    assert not body.get("reduceOnly")
