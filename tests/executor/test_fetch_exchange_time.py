"""``fbr data fetch`` judges "closed" on the exchange's clock, not the local one: a local clock
running fast must not write the still-open candle as final, and a --since at or after the
exchange's time is refused before any data request. Against the loopback Binance emulator with its
clock pinned (``set_time``), serving klines as Binance does at its own time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from binance_emulator import HOUR_MS, INTERVAL_MS, BinanceEmulator

from executor.fetch_history import FetchRequest, fetch_market_data
from models import io
from models.errors import ValidationError

SINCE = pd.Timestamp("2024-01-01", tz="UTC")
SERVER = pd.Timestamp("2024-01-10T11:59", tz="UTC")  # the exchange's time
LOCAL = SERVER + pd.Timedelta(minutes=2)  # a local clock 2 minutes fast: 12:01


class BinanceLikeKlines(BinanceEmulator):  # type: ignore[misc]  # (the emulator is untyped)
    """The emulator, but klines as Binance serves them at its time (``now_ms``): no bar opening
    after it, and the bar still open at it with the close of its last completed hour (Binance
    sends the open candle with the price so far)."""

    def _klines(self, p: dict[str, str], kind: str, max_limit: int) -> object:
        rows = super()._klines(p, kind, max_limit)
        assert isinstance(rows, list)
        now = self.now_ms()
        step = INTERVAL_MS[p["interval"]]
        h = self.history[self._market(p.get("pair", p.get("symbol"))).symbol]
        out = []
        for r in rows:
            t0 = int(r[0])
            if t0 > now:
                continue
            if t0 + step > now:  # still open: close = the last completed hour's close
                i = int((t0 - int(h.hour_ms[0])) // HOUR_MS) + int((now - t0) // HOUR_MS) - 1
                price = h.mark[i] if kind in ("last", "mark") else h.mark[i] / (1 + h.basis[i])
                r = [*r[:4], repr(float(price)), *r[5:]]
            out.append(r)
        return out


def factory_for(emu: BinanceEmulator) -> Any:
    def factory(exchange_id: str) -> Any:
        return emu.exchange() if exchange_id == "binanceusdm" else emu.spot_exchange()
    return factory


def no_sleep(_s: float) -> None:
    return None


def test_a_local_clock_ahead_of_the_exchange_writes_no_open_candle(tmp_path: Path) -> None:
    """Exchange time 2024-01-10 11:59 UTC, local clock 12:01. The 4 h mark bar opening at 08:00
    closes at 12:00 exchange time: still open (its served close is the 10:00 hour's mark, not the
    final one), so the file ends at the 04:00 bar: 9 x 6 + 2 = 56 rows, the last one's close the
    emulator's hourly mark of 07:00-08:00 (h.mark[9 * 24 + 7]). Funding: the settlements up to
    08:00 of the 10th, 29. Daily spot: 9 bars (the 10th is open)."""
    with BinanceLikeKlines() as emu:
        emu.set_time(int(SERVER.timestamp() * 1000))
        req = FetchRequest("binanceusdm", ("BTC",), SINCE, None, ("1d",), tmp_path, tiers=False)
        summary = fetch_market_data(req, factory_for(emu), now=LOCAL, sleep=no_sleep)
        h = emu.history["BTCUSDT"]
        marks = io.load_mark_closes(tmp_path, ["BTC"])["BTC"]
        assert len(marks) == 56
        assert marks.index[-1] == pd.Timestamp("2024-01-10T04:00", tz="UTC")
        assert marks.iloc[-1] == pytest.approx(float(h.mark[9 * 24 + 7]), rel=1e-12)
        rows = {f.kind: f.rows for f in summary.files}
        assert rows["funding"] == 29 and rows["spot_1d"] == 9
        assert len(emu.requests_to("/fapi/v1/time")) == 1  # the exchange's time, read once


def test_a_since_after_the_exchange_time_is_refused_before_any_data_request(
        tmp_path: Path) -> None:
    """--since 2024-01-10 12:00: before the local clock (12:01) but after the exchange's time
    (11:59), so no bar of the span has closed: refused naming since and --since, after the one
    time request (/fapi/v1/time) and before any other; nothing written."""
    with BinanceLikeKlines() as emu:
        emu.set_time(int(SERVER.timestamp() * 1000))
        since = pd.Timestamp("2024-01-10T12:00", tz="UTC")
        req = FetchRequest("binanceusdm", ("BTC",), since, None, ("1d",), tmp_path, tiers=False)
        with pytest.raises(ValidationError, match="--since") as err:
            fetch_market_data(req, factory_for(emu), now=LOCAL, sleep=no_sleep)
        assert err.value.field == "since" and "2024-01-10 11:59:00 UTC" in str(err.value)
        assert [r.path for r in emu.requests] == ["/fapi/v1/time"]
    assert not list(tmp_path.iterdir())
