"""The Binance USD-M emulator driven through real ccxt: every call the executor and the data
fetcher use, signature checks, Binance order rules and the error mapping of injected faults."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
from urllib.parse import urlencode

import ccxt
import pytest
import requests
from binance_emulator import DAY_MS, BinanceEmulator, Fault

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
SOL = "SOL/USDT:USDT"
JAN_2024_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def test_load_markets_gives_the_emulated_trading_rules(exchange: ccxt.binanceusdm) -> None:
    btc, sol = exchange.market(BTC), exchange.market(SOL)
    assert (btc["id"], btc["swap"], btc["linear"], btc["contractSize"]) == ("BTCUSDT", True, True,
                                                                          1.0)
    assert btc["precision"]["amount"] == 0.001 and btc["precision"]["price"] == 0.1
    assert btc["limits"]["cost"]["min"] == 100.0 and btc["limits"]["amount"]["min"] == 0.001
    assert sol["precision"]["amount"] == 1.0 and sol["limits"]["cost"]["min"] == 5.0
    assert exchange.amount_to_precision(BTC, 0.12345) == "0.123"  # truncates to the step


def test_market_order_form_body_is_recorded_without_secrets(emulator: BinanceEmulator,
                                                             exchange: ccxt.binanceusdm) -> None:
    exchange.create_order(BTC, "market", "sell", 0.0129, None,
                          {"clientOrderId": "fbr-1:a/b_c.d", "reduceOnly": False})
    [req] = emulator.requests_to("/fapi/v1/order", "POST")
    assert req.host == "fapi.binance.com"
    assert req.params["symbol"] == "BTCUSDT"
    assert req.params["side"] == "SELL"
    assert req.params["type"] == "MARKET"
    assert req.params["quantity"] == "0.012"  # truncated to the 0.001 step by ccxt
    assert req.params["newClientOrderId"] == "fbr-1:a/b_c.d"
    assert req.params["reduceOnly"] == "false"
    assert "signature" not in req.params and "timestamp" in req.params
    for r in emulator.requests:
        assert all(k.lower() != "x-mbx-apikey" for k in r.headers)
        assert emulator.api_key not in str(r.headers)


def test_fill_balance_and_position_follow_hand_arithmetic(emulator: BinanceEmulator,
                                                          exchange: ccxt.binanceusdm) -> None:
    order = exchange.create_order(BTC, "market", "buy", 0.02, None, {"clientOrderId": "buy-1"})
    assert order["status"] == "closed" and order["filled"] == 0.02 and order["average"] == 60_000
    fee = 0.02 * 60_000 * 0.0005  # taker 5 bp = 0.6 USDT
    emulator.set_mark("BTCUSDT", 61_000.0)
    [pos] = exchange.fetch_positions([BTC])
    paths = [r.path for r in emulator.requests]
    assert paths.index("/fapi/v1/leverageBracket") < paths.index("/fapi/v3/positionRisk")
    assert pos["contracts"] == pytest.approx(0.02) and pos["side"] == "long"
    assert pos["entryPrice"] == pytest.approx(60_000)
    assert pos["unrealizedPnl"] == pytest.approx(0.02 * 1_000)
    assert pos["notional"] == pytest.approx(0.02 * 61_000)
    assert pos["maintenanceMargin"] == pytest.approx(0.02 * 61_000 * 0.004)
    bal = exchange.fetch_balance()
    assert bal["USDT"]["total"] == pytest.approx(100_000 - fee + 20.0)
    assert bal["USDT"]["used"] == pytest.approx(0.02 * 61_000 / 20)  # IM at the default 20x
    # closing at 61k realises the 20 USDT and pays another taker fee
    exchange.create_order(BTC, "market", "sell", 0.02, None, {"reduceOnly": True})
    assert emulator.positions["BTCUSDT"] == 0
    assert emulator.balance == pytest.approx(100_000 - fee + 20 - 0.02 * 61_000 * 0.0005)


def test_limit_order_rests_fills_on_mark_move_and_cancels(emulator: BinanceEmulator,
                                                          exchange: ccxt.binanceusdm) -> None:
    rest = exchange.create_order(ETH, "limit", "buy", 0.5, 2_900, {"clientOrderId": "eth-lim"})
    assert rest["status"] == "open" and rest["filled"] == 0
    assert [o["clientOrderId"] for o in exchange.fetch_open_orders(ETH)] == ["eth-lim"]
    other = exchange.create_order(ETH, "limit", "buy", 0.5, 2_800)
    emulator.set_mark("ETHUSDT", 2_850.0)  # crosses 2900, not 2800
    fetched = exchange.fetch_order(None, ETH, {"clientOrderId": "eth-lim"})
    assert fetched["status"] == "closed" and fetched["average"] == 2_850
    cancelled = exchange.cancel_order(other["id"], ETH)
    assert cancelled["status"] == "canceled"
    assert exchange.fetch_open_orders(ETH) == []
    assert emulator.positions["ETHUSDT"] == pytest.approx(0.5)
    with pytest.raises(ccxt.OrderNotFound):
        exchange.cancel_order(other["id"], ETH)


def test_order_rules_map_to_ccxt_errors(emulator: BinanceEmulator,
                                        exchange: ccxt.binanceusdm) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="-4164"):  # 0.001 x 60k = 60 < 100 USDT
        exchange.create_order(BTC, "market", "buy", 0.001)
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # nothing to reduce
        exchange.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})
    with pytest.raises(ccxt.BadRequest, match="-4015"):
        exchange.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "x" * 37})
    with pytest.raises(ccxt.BadRequest, match="-4015"):
        exchange.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "a b"})
    with pytest.raises(ccxt.BadRequest, match="-1106"):  # reduce-only with a hedge-mode side
        exchange.create_order(BTC, "market", "sell", 0.01, None,
                              {"reduceOnly": True, "positionSide": "LONG"})
    with pytest.raises(ccxt.BadRequest, match="-1111"):  # off the step, sent raw past ccxt
        exchange.fapiPrivatePostOrder({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                       "quantity": "0.0105"})
    with pytest.raises(ccxt.BadRequest, match="-4014"):  # price off the 0.1 tick
        exchange.fapiPrivatePostOrder({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                       "quantity": "0.01", "price": "50000.05",
                                       "timeInForce": "GTC"})
    with pytest.raises(ccxt.OrderNotFound):
        exchange.fetch_order(None, BTC, {"clientOrderId": "never-sent"})
    assert emulator.orders == []
    longest = "Az09.:/_-" * 4  # 36 characters, every allowed kind
    exchange.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": longest})
    assert [o.status for o in emulator.orders_for(longest)] == ["FILLED"]


def test_insufficient_margin_against_initial_margin(exchange: ccxt.binanceusdm,
                                                    emulator: BinanceEmulator) -> None:
    # 100k USDT at 20x carries 2M notional: 33 BTC at 60k = 1.98M passes, 34 more does not
    exchange.create_order(BTC, "market", "buy", 33)
    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order(BTC, "market", "buy", 1)
    # reducing is always allowed
    exchange.create_order(BTC, "market", "sell", 3, None, {"reduceOnly": True})
    assert emulator.positions["BTCUSDT"] == pytest.approx(30)


def test_leverage_margin_mode_and_tiers(exchange: ccxt.binanceusdm,
                                        emulator: BinanceEmulator) -> None:
    exchange.set_leverage(5, BTC)
    assert emulator.leverage["BTCUSDT"] == 5
    with pytest.raises(ccxt.BadRequest):
        exchange.set_leverage(126, BTC)  # above the first bracket's 125x
    exchange.set_margin_mode("isolated", BTC)
    with pytest.raises(ccxt.MarginModeAlreadySet):
        exchange.set_margin_mode("isolated", BTC)
    tiers = exchange.fetch_leverage_tiers([BTC, SOL])[BTC]
    assert [t["maxLeverage"] for t in tiers] == sorted((t["maxLeverage"] for t in tiers),
                                                       reverse=True)
    for lo, hi in itertools.pairwise(tiers):
        assert hi["minNotional"] == lo["maxNotional"]
        # maintenance is continuous at the bracket edge: mmr n - cum equal on both sides
        n = hi["minNotional"]
        assert (n * hi["maintenanceMarginRate"] - float(hi["info"]["cum"])
                == pytest.approx(n * lo["maintenanceMarginRate"] - float(lo["info"]["cum"])))


def test_funding_rate_and_history_paging(exchange: ccxt.binanceusdm,
                                         emulator: BinanceEmulator) -> None:
    emulator.set_funding("BTCUSDT", 0.00025)
    assert exchange.fetch_funding_rate(BTC)["fundingRate"] == pytest.approx(0.00025)
    first = exchange.fetch_funding_rate_history(BTC, since=JAN_2024_MS, limit=1000)
    assert len(first) == 1000  # one full page
    times = [r["timestamp"] for r in first]
    assert times[0] == JAN_2024_MS and all(
        b - a == 8 * 3_600_000 for a, b in itertools.pairwise(times))
    rest = exchange.fetch_funding_rate_history(BTC, since=times[-1] + 1, limit=1000)
    assert len(rest) == 400 * 3 - 1000  # 400 days of 3 settlements
    req = emulator.requests_to("/fapi/v1/fundingRate")[-1]
    assert req.params["startTime"] == str(times[-1] + 1) and req.params["limit"] == "1000"


def test_klines_paging_intervals_and_spot(exchange: ccxt.binanceusdm,
                                          emulator: BinanceEmulator) -> None:
    daily = exchange.fetch_ohlcv(BTC, "1d", since=JAN_2024_MS, limit=1500)
    assert len(daily) == 400 and daily[1][0] - daily[0][0] == DAY_MS
    four = exchange.fetch_ohlcv(BTC, "4h", since=JAN_2024_MS, limit=1500, params={"price": "mark"})
    [req] = emulator.requests_to("/fapi/v1/markPriceKlines")
    assert len(four) == int(req.params["limit"]) < 2400  # one page (ccxt caps mark at 1000)
    # the daily close equals the close of the day's last 4 h bar; high is the max of its 6 bars
    assert daily[0][4] == pytest.approx(four[5][4])
    assert daily[0][2] == pytest.approx(max(b[2] for b in four[:6]))
    spot = emulator.spot_exchange()
    spot.load_markets()
    s = spot.fetch_ohlcv("BTC/USDT", "1d", since=JAN_2024_MS, limit=1000)
    assert len(s) == 400 and emulator.requests_to("/api/v3/klines")[-1].host == "api.binance.com"
    basis = [p[4] / q[4] - 1 for p, q in zip(daily, s, strict=True)]
    assert all(0 < b < 0.001 for b in basis)  # mark above spot by a few bp


def test_bad_signature_and_bad_key_are_authentication_errors(emulator: BinanceEmulator) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        emulator.exchange(secret="not-the-secret").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        emulator.exchange(api_key="someone-else").fetch_balance()


def test_signature_is_hmac_sha256_of_the_query(emulator: BinanceEmulator) -> None:
    """Sign by hand (independent of ccxt): the right HMAC passes, a tampered query fails."""
    query = urlencode({"timestamp": int(time.time() * 1000), "recvWindow": 5000})
    sig = hmac.new(b"test-secret", query.encode(), hashlib.sha256).hexdigest()
    headers = {"X-MBX-APIKEY": "test-key"}
    ok = requests.get(f"{emulator.base_url}/fapi/v2/balance?{query}&signature={sig}",
                      headers=headers, timeout=5)
    assert ok.status_code == 200 and ok.json()[0]["asset"] == "USDT"
    tampered = query.replace("5000", "6000")
    bad = requests.get(f"{emulator.base_url}/fapi/v2/balance?{tampered}&signature={sig}",
                       headers=headers, timeout=5)
    assert bad.status_code == 400 and bad.json()["code"] == -1022


@pytest.mark.parametrize(("fault", "error"), [
    (Fault.HTTP_429, ccxt.DDoSProtection),
    (Fault.HTTP_503, ccxt.ExchangeNotAvailable),
    (Fault.MIN_NOTIONAL, ccxt.InvalidOrder),
    (Fault.INSUFFICIENT_MARGIN, ccxt.InsufficientFunds),
])
def test_injected_faults_map_to_ccxt_errors(emulator: BinanceEmulator,
                                            exchange: ccxt.binanceusdm, fault: Fault,
                                            error: type[Exception]) -> None:
    emulator.inject(fault, path="/fapi/v1/order", method="POST")
    exchange.fetch_balance()  # another endpoint does not consume the fault
    with pytest.raises(error):
        exchange.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "f-1"})
    assert emulator.orders_for("f-1") == []
    # one-shot: the same order goes through next time
    exchange.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "f-1"})
    assert [o.status for o in emulator.orders_for("f-1")] == ["FILLED"]


def test_timeout_after_accept_leaves_a_filled_order(emulator: BinanceEmulator) -> None:
    ex = emulator.exchange(timeout=250)
    ex.load_markets()
    emulator.inject(Fault.TIMEOUT_AFTER_ACCEPT, path="/fapi/v1/order", method="POST",
                    delay_s=1.0)
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "amb-1"})
    [order] = emulator.orders_for("amb-1")
    assert order.status == "FILLED" and emulator.positions["BTCUSDT"] == pytest.approx(0.01)
    # reconciliation by client id finds it
    assert ex.fetch_order(None, BTC, {"clientOrderId": "amb-1"})["status"] == "closed"


def test_timeout_before_accept_leaves_nothing(emulator: BinanceEmulator) -> None:
    ex = emulator.exchange(timeout=250)
    ex.load_markets()
    emulator.inject(Fault.TIMEOUT_BEFORE_ACCEPT, path="/fapi/v1/order", delay_s=1.0)
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "amb-2"})
    assert emulator.orders_for("amb-2") == [] and emulator.positions["BTCUSDT"] == 0
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, BTC, {"clientOrderId": "amb-2"})


def test_disconnect_after_accept_is_a_network_error_with_the_order_filled(
        emulator: BinanceEmulator, exchange: ccxt.binanceusdm) -> None:
    emulator.inject(Fault.DISCONNECT_AFTER_ACCEPT, path="/fapi/v1/order", method="POST")
    with pytest.raises(ccxt.NetworkError):
        exchange.create_order(BTC, "market", "sell", 0.01, None, {"clientOrderId": "dc-1"})
    [order] = emulator.orders_for("dc-1")
    assert order.status == "FILLED" and emulator.positions["BTCUSDT"] == pytest.approx(-0.01)


def test_duplicate_open_client_id_is_rejected(exchange: ccxt.binanceusdm) -> None:
    exchange.create_order(ETH, "limit", "sell", 0.1, 3_500, {"clientOrderId": "dup"})
    with pytest.raises(ccxt.InvalidOrder, match="-4116"):
        exchange.create_order(ETH, "limit", "sell", 0.1, 3_600, {"clientOrderId": "dup"})


def test_trades_ticker_and_book(emulator: BinanceEmulator, exchange: ccxt.binanceusdm) -> None:
    exchange.create_order(SOL, "market", "buy", 10)
    emulator.set_mark("SOLUSDT", 160.0)
    exchange.create_order(SOL, "market", "sell", 4, None, {"reduceOnly": True})
    buy, sell = exchange.fetch_my_trades(SOL)
    assert (buy["side"], buy["amount"], buy["price"]) == ("buy", 10, 150)
    assert buy["fee"]["cost"] == pytest.approx(10 * 150 * 0.0005)
    assert float(sell["info"]["realizedPnl"]) == pytest.approx(4 * (160 - 150))
    assert exchange.fetch_ticker(SOL)["last"] == 160
    book = exchange.fetch_order_book(SOL, 5)
    bid, ask = book["bids"][0][0], book["asks"][0][0]
    assert bid < 160 < ask and ask - bid == pytest.approx(0.04)  # +-1 bp on the 0.01 tick
