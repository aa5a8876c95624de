"""History reads longer than one page (Binance userTrades and allOrders answer at most 1000 rows a
request): every row since the send is read, page after page, so the reconciler never judges an
order on the first page of a longer history."""

from __future__ import annotations

from typing import Any

import pytest
from binance_emulator import BinanceEmulator, EmuOrder, EmuTrade

from executor.base import ReadFailedError
from executor.ccxt_gateway import CcxtGateway
from executor.ccxt_orders import HISTORY_MAX_PAGES, HISTORY_PAGE, all_pages
from executor.plan import Instrument, default_exchange_symbol
from models.instruments import FuturesContract

T0 = 1_700_000_000_000


def _btc() -> Instrument:
    c = FuturesContract("BTC-PERP", "BTC")
    return Instrument(c, default_exchange_symbol(c))


def _fill(emulator: BinanceEmulator, n: int, first_ms: int) -> None:
    """``n`` one-lot buys of BTCUSDT, one per order, one millisecond apart, from ``first_ms``."""
    for k in range(n):
        emulator.orders.append(EmuOrder(10_000 + k, f"other-{k}", "BTCUSDT", "BUY", "MARKET", 0.001,
                                        0.0, False, "FILLED", 0.001, 60_000.0, time_ms=first_ms + k,
                                        update_ms=first_ms + k))
        emulator.trades.append(EmuTrade(50_000 + k, 10_000 + k, "BTCUSDT", "BUY", 0.001, 60_000.0,
                                        0.024, 0.0, first_ms + k))


def test_trades_since_reads_every_page(emulator: BinanceEmulator) -> None:
    _fill(emulator, 10, T0 - 10)  # before the start: not read
    _fill(emulator, 2_345, T0)
    emulator.trades[:] = [EmuTrade(50_000 + i, t.order_id, t.symbol, t.side, t.qty, t.price, t.fee,
                                   t.realized_pnl, t.time_ms) for i, t in enumerate(emulator.trades)]
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.0)
    trades = gw.trades_since(_btc(), T0)
    assert len(trades) == 2_345  # by hand: the rows at or after T0
    assert [t.time_ms for t in trades] == list(range(T0, T0 + 2_345))
    sent = [r.params for r in emulator.requests_to("/fapi/v1/userTrades")]
    assert len(sent) == 3  # 1000 + 1000 + 345
    assert sent[0]["startTime"] == str(T0) and "fromId" not in sent[0]
    # later pages by id only (Binance refuses fromId beside a time): after the first page's last id
    assert "startTime" not in sent[1] and sent[1]["fromId"] == str(50_010 + 1_000)
    assert sent[2]["fromId"] == str(50_010 + 2_000)


def test_orders_since_reads_every_page(emulator: BinanceEmulator) -> None:
    _fill(emulator, 1_500, T0)
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.0)
    orders = gw.orders_since(_btc(), T0)
    assert sorted(o.client_id for o in orders) == sorted(f"other-{k}" for k in range(1_500))
    sent = [r.params for r in emulator.requests_to("/fapi/v1/allOrders")]
    assert len(sent) == 2 and sent[1]["orderId"] == str(10_000 + 1_000) and "startTime" not in sent[1]


def test_one_short_page_is_one_request(emulator: BinanceEmulator) -> None:
    _fill(emulator, 3, T0)
    gw = CcxtGateway(emulator.exchange(), base_delay_s=0.0)
    assert len(gw.trades_since(_btc(), T0)) == 3
    assert len(emulator.requests_to("/fapi/v1/userTrades")) == 1


def _rows(times: list[int], first_id: int = 0) -> list[dict[str, Any]]:
    return [{"id": str(first_id + k), "timestamp": t} for k, t in enumerate(times)]


def test_by_time_drops_rows_seen_at_the_page_boundary() -> None:
    """Another venue: the next page starts at the latest time seen; rows seen already are dropped."""
    times = [0] * 10 + list(range(1, 2 * HISTORY_PAGE))  # ten rows at t=0, then one per ms
    history = _rows(times)

    def page(since: int | None, after_id: int | None) -> list[dict[str, Any]]:
        assert after_id is None and since is not None
        return [r for r in history if r["timestamp"] >= since][:HISTORY_PAGE]

    got = all_pages(page, 0, by_id=False, what="x")
    assert [r["id"] for r in got] == [r["id"] for r in history]


def test_a_full_page_at_one_time_is_refused() -> None:
    history = _rows([5] * (HISTORY_PAGE + 1))

    def page(since: int | None, after_id: int | None) -> list[dict[str, Any]]:
        assert since is not None
        return [r for r in history if r["timestamp"] >= since][:HISTORY_PAGE]

    with pytest.raises(ReadFailedError, match="one time"):
        all_pages(page, 0, by_id=False, what="x")


def test_a_history_past_the_page_limit_is_refused() -> None:
    def page(since: int | None, after_id: int | None) -> list[dict[str, Any]]:
        first = after_id or 0
        return _rows([0] * HISTORY_PAGE, first)

    with pytest.raises(ReadFailedError, match="not read whole"):
        all_pages(page, 0, by_id=True, what="x")


def test_exactly_the_page_limit_is_read_whole() -> None:
    total = HISTORY_MAX_PAGES * HISTORY_PAGE - 1

    def page(since: int | None, after_id: int | None) -> list[dict[str, Any]]:
        first = after_id or 0
        return _rows([0] * max(0, min(HISTORY_PAGE, total - first)), first)

    assert len(all_pages(page, 0, by_id=True, what="x")) == total
