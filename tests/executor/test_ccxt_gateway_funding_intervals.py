"""Funding intervals from the exchange: Binance settles most perpetuals every 8 h and moves some to
4 h or 1 h, listing those in ``GET /fapi/v1/fundingInfo`` (ccxt ``fetch_funding_intervals``).
A perpetual's carry over the horizon is its rate per settlement times the settlements in it, so
the interval the book file assumes (8 h by default) would halve a 4 h contract's carry. The
gateway's instruments take the exchange's interval (8 h for the perpetuals the list leaves out),
and the emulator settles each symbol on its own interval."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from binance_emulator import HOUR_MS, BinanceEmulator
from exec_helpers import SEED_BOOK

from executor.ccxt_gateway import CcxtGateway
from fbr.config import load_book_file
from optimizer.carry import _carry_per_horizon

T0 = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp() * 1000)


def test_the_instruments_carry_the_exchange_s_funding_interval() -> None:
    """SOLUSDT on 4 h, the others unlisted (8 h); the book file says 1 h for every contract. The
    carry over one day at 0.01% per settlement, by hand: 6 x 0.0001 for SOL, 3 x 0.0001 for BTC
    (the book's 1 h would have made them 24 x)."""
    with BinanceEmulator() as emu:
        emu.funding_hours["SOLUSDT"] = 4
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        loaded = load_book_file(SEED_BOOK)
        book = replace(loaded.book, contracts=tuple(replace(c, funding_interval_h=1.0)
                                                    for c in loaded.book.contracts))
        inst = gw.instruments(book)
        hours = {s: i.contract.funding_interval_h for s, i in inst.items()}
        assert hours == {"BTC-PERP": 8.0, "ETH-PERP": 8.0, "SOL-PERP": 4.0}
        exchange_book = replace(book, contracts=tuple(i.contract for i in inst.values()))
        market = replace(loaded.market, funding=dict.fromkeys(book.contract_symbols, 0.0001))
        carry = _carry_per_horizon(exchange_book, market, 1.0)
        assert carry == pytest.approx([3 * 0.0001, 3 * 0.0001, 6 * 0.0001], rel=1e-12)


def test_the_emulator_settles_each_symbol_on_its_own_interval() -> None:
    """Over 8 h from 00:00: SOL (4 h) settles at 04:00 and 08:00, BTC (8 h) at 08:00 only; the
    premium index names each symbol's next settlement."""
    with BinanceEmulator() as emu:
        emu.set_time(T0)
        emu.funding_hours["SOLUSDT"] = 4
        emu.set_position("BTCUSDT", 0.1)
        emu.set_position("SOLUSDT", -10.0)
        rows = emu.advance(hours=8)
        assert [(r.symbol, r.time_ms - T0) for r in rows] == [
            ("SOLUSDT", 4 * HOUR_MS), ("BTCUSDT", 8 * HOUR_MS), ("SOLUSDT", 8 * HOUR_MS)]
        assert emu.next_funding_ms("SOLUSDT") == T0 + 12 * HOUR_MS
        assert emu.next_funding_ms("BTCUSDT") == T0 + 16 * HOUR_MS
