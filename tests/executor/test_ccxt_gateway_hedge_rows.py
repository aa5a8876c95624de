"""Positions read in hedge (dual-side) mode, where the exchange gives a LONG and a SHORT row per
symbol: fbr refuses to trade such an account but reads it (status, dry runs, `fbr account`), so
the net position must keep the rows' PnL. By hand: LONG 1 BTC at 60,000 and SHORT 0.4 at 50,000
net to 0.6 at (60,000 - 0.4 x 50,000) / 0.6 = 66,666.67; at a 61,000 mark the PnL is
1 x 1,000 - 0.4 x 11,000 = -3,400 USD (the larger row's entry, 60,000, gave +600)."""

from __future__ import annotations

from typing import Any

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import market, three_asset_book

from executor.ccxt_gateway import CcxtGateway

ROWS = [
    {"symbol": "BTC/USDT:USDT", "contracts": 1.0, "side": "long", "entryPrice": 60_000.0,
     "unrealizedPnl": 1_000.0},
    {"symbol": "BTC/USDT:USDT", "contracts": 0.4, "side": "short", "entryPrice": 50_000.0,
     "unrealizedPnl": -4_400.0},
]


def _read(rows: list[dict[str, Any]]) -> tuple[Any, Any]:
    with BinanceEmulator() as emu:
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        book = three_asset_book()
        gw.instruments(book)
        gw.ex.fetch_positions = lambda *a, **k: rows
        m = market({"BTC": 61_000.0, "ETH": 2_500.0, "SOL": 150.0})
        return gw.account(book, m), m


def test_hedge_rows_net_at_the_entry_that_keeps_their_pnl() -> None:
    acc, m = _read(ROWS)
    pos = acc.futures["BTC-PERP"]
    assert pos.contracts == pytest.approx(0.6)
    assert pos.entry_price == pytest.approx(200_000.0 / 3.0)
    assert acc.unrealized_pnl(m) == pytest.approx(-3_400.0)


def test_a_one_way_row_keeps_the_exchange_s_entry_exactly() -> None:
    acc, _ = _read([dict(ROWS[1], entryPrice=50_123.1)])
    assert acc.futures["BTC-PERP"].contracts == -0.4
    assert acc.futures["BTC-PERP"].entry_price == 50_123.1
