"""A local clock off the exchange's: Binance refuses a signed request whose timestamp is 1 s or more
ahead of its clock, or more than recvWindow behind it (-1021, before processing anything). The
emulator applies that rule on its own clock; fbr measures the offset when the markets load and
again after any such refusal, so reads go through and an order is still sent exactly once."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import ccxt
import pytest
import requests
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, SimClock

from executor.base import OrderState, Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import OrderLeg, PlanOptions
from executor.workflow import prepare_plan
from fbr.config import load_book_file

NOW_MS = 1_750_000_000_000  # the emulator's pinned clock
BINANCE = {"BTC-PERP": "BTCUSDT", "ETH-PERP": "ETHUSDT", "SOL-PERP": "SOLUSDT"}


def _signed_status(emu: BinanceEmulator, timestamp: int, recv_window: int | None = None) -> tuple[int, int]:
    """(HTTP status, Binance code or 0) of a hand-signed GET /fapi/v2/balance at ``timestamp``."""
    params: dict[str, int] = {"timestamp": timestamp}
    if recv_window is not None:
        params["recvWindow"] = recv_window
    query = urlencode(params)
    sig = hmac.new(b"test-secret", query.encode(), hashlib.sha256).hexdigest()
    r = requests.get(f"{emu.base_url}/fapi/v2/balance?{query}&signature={sig}",
                     headers={"X-MBX-APIKEY": "test-key"}, timeout=5)
    body = r.json()
    return r.status_code, (body.get("code", 0) if isinstance(body, dict) else 0)


def test_the_emulator_applies_binances_timestamp_rule_at_its_edges(emulator: BinanceEmulator) -> None:
    """Processed iff timestamp < server + 1,000 ms and server - timestamp <= recvWindow (5,000 by
    default, at most 60,000): by hand at each edge."""
    emulator.set_time(NOW_MS)
    assert _signed_status(emulator, NOW_MS - 5_000) == (200, 0)
    assert _signed_status(emulator, NOW_MS - 5_001) == (400, -1021)
    assert _signed_status(emulator, NOW_MS + 999) == (200, 0)
    assert _signed_status(emulator, NOW_MS + 1_000) == (400, -1021)
    assert _signed_status(emulator, NOW_MS - 9_000, recv_window=10_000) == (200, 0)
    assert _signed_status(emulator, NOW_MS, recv_window=60_001) == (400, -1131)


def test_raw_ccxt_on_a_skewed_clock_is_refused_until_it_syncs(emulator: BinanceEmulator) -> None:
    """ccxt without the offset signs with the local clock: refused as InvalidNonce; after
    ``load_time_difference`` (what fbr turns on) the same call goes through."""
    ex = emulator.exchange()
    ex.load_markets()
    emulator.set_time(NOW_MS)  # the exchange's clock is now months away from the local one
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        ex.fetch_balance()
    ex.load_time_difference()
    assert ex.fetch_balance()["USDT"]["total"] > 0


def test_the_gateway_resyncs_once_and_reads_through(emulator: BinanceEmulator,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Markets loaded (offset measured), then the exchange's clock jumps 2 minutes ahead: the next
    signed read is refused once, the offset is measured again (one more GET /fapi/v1/time), and
    the read returns, with no backoff sleep and a warning that names the resync."""
    emulator.set_time(NOW_MS)
    sleeps: list[float] = []
    gw = CcxtGateway(emulator.exchange(), base_delay_s=1.0, sleep=sleeps.append)
    book = load_book_file(SEED_BOOK).book
    gw.instruments(book)
    times = len(emulator.requests_to("/fapi/v1/time"))
    assert times >= 1  # measured when the markets loaded
    emulator.set_time(NOW_MS + 120_000)
    with caplog.at_level(logging.WARNING, logger="executor.ccxt"):
        positions = gw.positions(gw.instruments(book))
    assert set(positions) == set(BINANCE)
    assert len(emulator.requests_to("/fapi/v1/time")) == times + 1
    assert sleeps == []
    assert any("clock resynced" in r.getMessage() for r in caplog.records)


class DriftBeforeFirstOrder:
    """``gw`` whose first ``create_order`` finds the exchange's clock 30 s further on (the local
    clock drifted between the executor's reads and its first order)."""

    def __init__(self, gw: CcxtGateway, emu: BinanceEmulator) -> None:
        self._gw, self._emu, self.venue, self.drifted = gw, emu, gw.venue, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gw, name)

    def create_order(self, leg: OrderLeg) -> OrderState:
        if not self.drifted:
            self.drifted = True
            self._emu.set_time(NOW_MS + 30_000)
        return self._gw.create_order(leg)


def test_an_order_refused_for_its_timestamp_is_sent_once_after_the_resync(tmp_path: Path) -> None:
    """The exchange's clock moves 30 s on just before the first order: that POST is refused
    unprocessed (-1021), the refusal is reconciled on a resynced clock (no such order on the
    exchange), the missing trade goes out as one follow-up order, and the plan completes at
    target with one accepted order per contract."""
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        emu.set_time(NOW_MS)
        loaded = load_book_file(SEED_BOOK)
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
        j = Journal(tmp_path / "j.sqlite")
        drifting = DriftBeforeFirstOrder(gw, emu)
        report = JournaledExecutor(drifting, j, PlanBasis(prep.book, prep.market, prep.instruments,
                                                          loaded.risk),
                                   retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep).execute(prep.plan)
        posts = emu.requests_to("/fapi/v1/order", "POST")
        first = prep.plan.legs[0]
        assert drifting.drifted and len(posts) == len(prep.plan.legs) + 1  # one refused, one follow-up
        assert posts[0].params["newClientOrderId"] == first.client_id
        assert int(posts[0].params["timestamp"]) < NOW_MS + 25_000 <= int(posts[1].params["timestamp"])
        assert emu.orders_for(first.client_id) == []  # refused: never on the book
        follow = posts[-1].params
        assert (follow["symbol"], follow["side"], float(follow["quantity"])) == (
            BINANCE[first.symbol], first.side.value.upper(), first.contracts)
        assert report.outcome == Outcome.COMPLETE
        for leg in prep.plan.legs[1:]:
            assert len(emu.orders_for(leg.client_id)) == 1
        for book_sym, bsym in BINANCE.items():  # each contract traded once, to the plan's target
            assert emu.positions[bsym] == pytest.approx(prep.plan.reachable[book_sym], abs=1e-9)
        j.close()
