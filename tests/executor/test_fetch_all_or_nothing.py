"""A fetch that fails midway writes nothing, and an interrupted write leaves the older file whole:
every series is read first, then each file is written under a temporary name and moved into
place. Before, the spot and mark files of a fetch stopped on the funding history stayed, and a
backtest ran on that folder with zero funding (a warning line only). Through real ccxt against the
loopback Binance emulator."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest
from binance_emulator import BinanceEmulator, Fault

from executor.base import ExchangeBannedError
from executor.fetch_history import FetchRequest, fetch_market_data
from models.errors import ValidationError
from models.instruments import FuturesContract
from scenarios.market_path import MarketPath

SINCE = pd.Timestamp("2024-01-01", tz="UTC")
NOW = pd.Timestamp("2026-01-01", tz="UTC")


def factory_for(emu: BinanceEmulator) -> Any:
    def factory(exchange_id: str) -> Any:
        return emu.exchange() if exchange_id == "binanceusdm" else emu.spot_exchange()
    return factory


def no_sleep(_s: float) -> None:
    return None


def btc_request(out: Path, days: int = 19) -> FetchRequest:
    return FetchRequest("binanceusdm", ("BTC",), SINCE, SINCE + pd.Timedelta(days=days), ("1d",),
                        out)


def files(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (temporary ones included), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_fetch_stopped_on_the_funding_history_writes_nothing(emulator: BinanceEmulator,
                                                               tmp_path: Path) -> None:
    """The funding history answers 429 with Retry-After 3,600: the fetch stops (the spot and
    mark klines of BTC were already read). Nothing is written, so MarketPath.from_data refuses
    the folder, where it ran before with BTC-PERP paying no funding although the emulator's span
    holds 57 settlements (19 days x 3) with sum(rates) != 0."""
    emulator.retry_after_s = 3_600
    emulator.inject(Fault.HTTP_429, path="/fapi/v1/fundingRate")
    with pytest.raises(ExchangeBannedError):
        fetch_market_data(btc_request(tmp_path), factory_for(emulator), now=NOW, sleep=no_sleep)
    assert emulator.requests_to("/api/v3/klines") and emulator.requests_to("/fapi/v1/markPriceKlines")
    h = emulator.history["BTCUSDT"]
    assert abs(float(h.funding[: 19 * 3].sum())) > 1e-4
    assert files(tmp_path) == {}
    with warnings.catch_warnings(), pytest.raises(ValidationError):
        warnings.simplefilter("ignore")
        MarketPath.from_data(tmp_path, (FuturesContract("BTC-PERP", "BTC"),),
                             start="2024-01-02", end="2024-01-19", step="1d")


def test_a_failed_refetch_leaves_the_older_folder_as_it_was(emulator: BinanceEmulator,
                                                            tmp_path: Path) -> None:
    """A good 19-day fetch, then a 30-day refetch whose funding history stays unreachable (503
    on all 4 tries): the refetch raises ExchangeNotAvailable and every file of the first fetch is
    byte for byte what it was (19 daily bars, not the 30 the refetch had read), with no temporary
    file left."""
    fetch_market_data(btc_request(tmp_path), factory_for(emulator), now=NOW, sleep=no_sleep)
    before = files(tmp_path)
    assert len(before) == 5  # spot_1d, perp_mark_4h, funding, contracts, tiers
    for _ in range(4):
        emulator.inject(Fault.HTTP_503, path="/fapi/v1/fundingRate")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        fetch_market_data(btc_request(tmp_path, days=30), factory_for(emulator), now=NOW,
                          sleep=no_sleep)
    assert files(tmp_path) == before


def test_an_interrupted_write_leaves_the_older_file_whole(emulator: BinanceEmulator,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A refetch whose writing fails (the disk full: every gzip write raises OSError) leaves each
    file of the earlier fetch whole and readable (the same bytes: 19 daily bars of BTC) and no
    temporary file; before, the first file was truncated in place."""
    fetch_market_data(btc_request(tmp_path), factory_for(emulator), now=NOW, sleep=no_sleep)
    before = files(tmp_path)

    def full(self: gzip.GzipFile, data: Any) -> int:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m, pytest.raises(OSError, match="No space left"):
        m.setattr(gzip.GzipFile, "write", full)
        fetch_market_data(btc_request(tmp_path, days=30), factory_for(emulator), now=NOW,
                          sleep=no_sleep)
    assert files(tmp_path) == before
    assert len(pd.read_csv(tmp_path / "spot_1d" / "BTC.csv.gz")) == 19
