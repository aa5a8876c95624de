"""``executor.fetch_history`` against the emulator through real ccxt: paging, closed bars only, the
files ``models.io`` and ``MarketPath.from_data`` read, and a backtest on them."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pandas as pd
import pytest
from binance_emulator import BinanceEmulator, Fault

from executor.ccxt_wiring import retry_read
from executor.fetch_history import FetchRequest, FetchSilenceError, SpotSource, fetch_market_data
from models import io
from models.book import Book
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from optimizer.policies import NaiveFutures
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

SINCE = pd.Timestamp("2024-01-01", tz="UTC")
UNTIL = pd.Timestamp("2024-12-01", tz="UTC")  # 335 days: 2010 4 h bars, 1005 settlements
DAYS = 335
NOW = pd.Timestamp("2026-01-01", tz="UTC")


def factory_for(emu: BinanceEmulator, *, keys: bool = True) -> Any:
    def factory(exchange_id: str) -> Any:
        if exchange_id == "binanceusdm":
            return emu.exchange() if keys else emu.exchange(api_key="", secret="")
        assert exchange_id == "binance"
        return emu.spot_exchange()
    return factory


def no_sleep(_s: float) -> None:
    return None


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BinanceEmulator, Any]:
    """One fetch of BTC, ETH (daily and 4 h spot) shared by the read-back tests."""
    out = tmp_path_factory.mktemp("data")
    emu = BinanceEmulator().start()
    try:
        req = FetchRequest("binanceusdm", ("BTC", "ETH"), SINCE, UNTIL, ("1d", "4h"), out)
        summary = fetch_market_data(req, factory_for(emu), now=NOW, sleep=no_sleep)
    finally:
        emu.stop()
    return out, emu, summary


def test_paging_fetches_every_row_in_several_pages(fetched: tuple[Path, BinanceEmulator, Any]
                                                   ) -> None:
    _out, emu, summary = fetched
    rows = {(f.kind, f.symbol): f.rows for f in summary.files}
    assert rows[("spot_1d", "BTC")] == DAYS
    assert rows[("spot_4h", "BTC")] == DAYS * 6
    assert rows[("perp_mark_4h", "ETH")] == DAYS * 6
    assert rows[("funding", "ETH")] == DAYS * 3
    spot4 = [r for r in emu.requests_to("/api/v3/klines")
             if r.params["interval"] == "4h" and r.params["symbol"] == "BTCUSDT"]
    assert len(spot4) == 3  # 2010 bars in pages of 1000
    starts = [int(r.params["startTime"]) for r in spot4]
    assert starts[0] == int(SINCE.timestamp() * 1000) and starts == sorted(starts)
    funding = [r for r in emu.requests_to("/fapi/v1/fundingRate") if r.params["symbol"] == "ETHUSDT"]
    assert len(funding) == 2 and all(r.params["limit"] == "1000" for r in funding)


def test_files_hold_the_emulated_series(fetched: tuple[Path, BinanceEmulator, Any]) -> None:
    out, emu, _summary = fetched
    spot = io.load_spot_closes(out, ["BTC", "ETH"], interval="4h")
    h = emu.history["BTCUSDT"]
    # independent reference: 4 h close = the last hourly mark of the bar / (1 + basis)
    ref = (h.mark / (1.0 + h.basis))[3::4][: DAYS * 6]
    np.testing.assert_allclose(spot["BTC"].to_numpy(), ref, rtol=1e-12)
    assert spot.index[0] == SINCE and spot.index[-1] == UNTIL - pd.Timedelta(hours=4)
    marks = io.load_mark_closes(out, ["ETH"])
    np.testing.assert_allclose(marks["ETH"].to_numpy(),
                               emu.history["ETHUSDT"].mark[3::4][: DAYS * 6], rtol=1e-12)
    funding = io.load_funding(out, ["BTC"])
    np.testing.assert_allclose(funding["BTC"].to_numpy(), h.funding[: DAYS * 3], atol=5e-9)
    assert (funding.index[1] - funding.index[0]) == pd.Timedelta(hours=8)
    daily = pd.read_csv(out / "spot_1d" / "BTC.csv.gz")
    assert list(daily.columns) == ["timestamp", "open", "high", "low", "close", "volume",
                                   "quote_volume"]
    np.testing.assert_allclose(daily["quote_volume"], daily["volume"] * daily["close"])


def test_markets_files_read_by_models_io(fetched: tuple[Path, BinanceEmulator, Any]) -> None:
    out, _emu, _summary = fetched
    [contracts] = (out / "markets").glob("binance_usdm_contracts_*.csv.gz")
    spec = io.load_contract_spec(contracts, "BTC/USDT:USDT")
    assert (spec["lot_step"], spec["min_qty"], spec["min_notional"], spec["tick"]) == (
        0.001, 0.001, 100.0, 0.1)
    assert io.load_contract_spec(contracts, "ETH/USDT:USDT")["min_notional"] == 20.0
    [tiers_file] = (out / "markets").glob("binance_usdm_leverage_tiers_*.csv.gz")
    tiers = io.load_leverage_tiers(tiers_file, "BTC/USDT:USDT")
    b = tiers.brackets
    assert b[0].max_leverage == 125 and b[0].mmr == 0.004
    for lo, hi in itertools.pairwise(b):  # continuous maintenance at each edge
        n = hi.min_notional
        assert n * hi.mmr - hi.cum == pytest.approx(n * lo.mmr - lo.cum)


def test_a_backtest_runs_on_the_fetched_files(fetched: tuple[Path, BinanceEmulator, Any]
                                              ) -> None:
    out, _emu, _summary = fetched
    cons = (FuturesContract("BTC-PERP", "BTC", taker_fee=0.0005),
            FuturesContract("ETH-PERP", "ETH", taker_fee=0.0005))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = MarketPath.from_data(out, cons, start="2024-03-01", end="2024-06-01", step="8h")
    assert len(path.spot) == 92 * 3 + 1  # 8 h steps, both ends inclusive
    p0 = path.spot.iloc[0]
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), cons,
                spot={"BTC": 60_000 / p0["BTC"], "ETH": 40_000 / p0["ETH"]},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=20_000.0)
    res = run_backtest(book, path, NaiveFutures(period="7D"))
    steps = res.steps
    assert len(steps) == len(path.spot)
    assert steps["funding"].abs().sum() > 0  # the fetched funding was charged
    assert np.isfinite(steps["nav"].to_numpy()).all()


def test_only_closed_bars_are_written(tmp_path: Path, emulator: BinanceEmulator) -> None:
    now = pd.Timestamp("2024-01-10T10:00", tz="UTC")  # the 8:00 4 h bar is still open
    req = FetchRequest("binanceusdm", ("SOL",), SINCE, None, ("1d",), tmp_path, tiers=False)
    summary = fetch_market_data(req, factory_for(emulator), now=now, sleep=no_sleep)
    rows = {f.kind: f for f in summary.files}
    assert rows["spot_1d"].rows == 9 and rows["spot_1d"].last == "2024-01-09T00:00:00Z"
    assert rows["perp_mark_4h"].rows == 9 * 6 + 2  # 00:00 and 04:00 of the 10th closed
    assert rows["funding"].rows == 9 * 3 + 2  # settlements at 00:00 and 08:00
    assert "tiers" not in rows


def test_index_spot_source_and_missing_keys(tmp_path: Path, emulator: BinanceEmulator) -> None:
    req = FetchRequest("binanceusdm", ("BTC",), SINCE, SINCE + pd.Timedelta(days=5), ("1d",),
                       tmp_path, spot_source=SpotSource.INDEX)
    summary = fetch_market_data(req, factory_for(emulator, keys=False), now=NOW, sleep=no_sleep)
    assert emulator.requests_to("/fapi/v1/indexPriceKlines")
    assert not emulator.requests_to("/api/v3/klines")
    assert any("leverage tiers skipped" in n for n in summary.notes)
    spot = io.load_spot_closes(tmp_path, ["BTC"])
    h = emulator.history["BTCUSDT"]
    np.testing.assert_allclose(spot["BTC"].to_numpy(),
                               (h.mark / (1 + h.basis))[23::24][:5], rtol=1e-12)


def test_network_errors_are_retried_with_backoff(tmp_path: Path,
                                                 emulator: BinanceEmulator) -> None:
    emulator.inject(Fault.HTTP_429, path="/fapi/v1/fundingRate")
    emulator.inject(Fault.HTTP_503, path="/fapi/v1/fundingRate")
    slept: list[float] = []
    req = FetchRequest("binanceusdm", ("BTC",), SINCE, SINCE + pd.Timedelta(days=2), ("1d",),
                       tmp_path, tiers=False)
    summary = fetch_market_data(req, factory_for(emulator), now=NOW, sleep=slept.append)
    assert slept == [0.5, 1.0]  # base 0.5 s, doubled
    assert {f.kind: f.rows for f in summary.files}["funding"] == 6


def _funding_answered_429(emu: BinanceEmulator, retry_after_s: int, out: Path) -> FetchRequest:
    """Arm a 429 with Retry-After ``retry_after_s`` on the funding history; the 2-day BTC fetch."""
    emu.retry_after_s = retry_after_s
    emu.inject(Fault.HTTP_429, path="/fapi/v1/fundingRate")
    return FetchRequest("binanceusdm", ("BTC",), SINCE, SINCE + pd.Timedelta(days=2), ("1d",), out,
                        tiers=False)


def test_a_rate_limited_page_waits_the_retry_after_and_earns_no_ban(tmp_path: Path) -> None:
    """The funding history answers 429 with Retry-After: 3 on the emulator's (simulated) clock:
    the fetch waits 3 s, not its 0.5 s backoff, so the retried page is served, not banned."""
    from exec_helpers import SimClock

    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        req = _funding_answered_429(emu, 3, tmp_path)
        summary = fetch_market_data(req, factory_for(emu), now=NOW, sleep=clock.sleep)
        assert clock.slept == [3.0] and emu.bans == 0
        assert {f.kind: f.rows for f in summary.files}["funding"] == 6


def test_a_long_wait_is_not_retried_into(tmp_path: Path) -> None:
    """Retry-After 3,600 s (over the 300 s fbr waits): the fetch stops at once with the
    exchange's error, no sleep and no second request to the refused endpoint."""
    from exec_helpers import SimClock

    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        req = _funding_answered_429(emu, 3_600, tmp_path)
        with pytest.raises(FetchSilenceError, match="3,600 s"):
            fetch_market_data(req, factory_for(emu), now=NOW, sleep=clock.sleep)
        assert clock.slept == [] and len(emu.requests_to("/fapi/v1/fundingRate")) == 1
        assert emu.bans == 0


def test_retry_read_gives_up_and_never_retries_exchange_errors() -> None:
    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        raise ccxt.RequestTimeout("slow")

    with pytest.raises(ccxt.RequestTimeout):
        retry_read(flaky, attempts=3, sleep=no_sleep)
    assert len(calls) == 3

    def refused() -> int:
        calls.append(2)
        raise ccxt.InsufficientFunds("no")

    with pytest.raises(ccxt.InsufficientFunds):
        retry_read(refused, sleep=no_sleep)
    assert calls.count(2) == 1
    slept: list[float] = []
    retry_read(flaky_then(3, 7), attempts=6, base_delay_s=1.0, max_delay_s=3.0,
               sleep=slept.append)
    assert slept == [1.0, 2.0, 3.0]


def test_retry_read_retries_status_unknown_and_at_once_when_told() -> None:
    """A transient failure that is no NetworkError (ccxt OperationFailed, Binance -1000) is
    retried; ``on_retry`` returning True (the refusal's cause is fixed) skips the sleep."""
    calls: list[int] = []

    def unknown_then_ok() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ccxt.OperationFailed('binanceusdm {"code":-1000,"msg":"An unknown error"}')
        return 5

    slept: list[float] = []
    told: list[int] = []

    def on_retry(k: int, exc: BaseException) -> bool:
        told.append(k)
        return k == 1

    assert retry_read(unknown_then_ok, base_delay_s=1.0, sleep=slept.append, on_retry=on_retry) == 5
    assert told == [1, 2] and slept == [2.0]  # retry 1 at once, retry 2 after 1.0 x 2^1 s


def flaky_then(failures: int, value: int) -> Any:
    left = [failures]

    def fn() -> int:
        if left[0] > 0:
            left[0] -= 1
            raise ccxt.ExchangeNotAvailable("down")
        return value
    return fn


def test_bad_requests_are_validation_errors(tmp_path: Path, emulator: BinanceEmulator) -> None:
    with pytest.raises(ValidationError, match="symbols"):
        fetch_market_data(FetchRequest("binanceusdm", ("DOGE",), SINCE, None, ("1d",), tmp_path),
                          factory_for(emulator), now=NOW, sleep=no_sleep)
    with pytest.raises(ValidationError, match="interval"):
        FetchRequest("binanceusdm", ("BTC",), SINCE, None, ("3d",), tmp_path)
    with pytest.raises(ValidationError, match="until"):
        FetchRequest("binanceusdm", ("BTC",), SINCE, SINCE, ("1d",), tmp_path)
    with pytest.raises(ValidationError, match="symbols"):
        FetchRequest("binanceusdm", ("btc",), SINCE, None, ("1d",), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


def test_same_data_gives_identical_bytes(tmp_path: Path, emulator: BinanceEmulator) -> None:
    blobs = []
    for k in range(2):
        out = tmp_path / str(k)
        req = FetchRequest("binanceusdm", ("ETH",), SINCE, SINCE + pd.Timedelta(days=3), ("1d",),
                           out, tiers=False)
        fetch_market_data(req, factory_for(emulator), now=NOW, sleep=no_sleep)
        blobs.append((out / "funding" / "ETH.csv.gz").read_bytes())
    assert blobs[0] == blobs[1]
