"""``fbr data fetch`` adding symbols to a data folder on the same day: the markets files are named by
date, so a second fetch's contracts and tiers files must keep the rows of the symbols fetched
earlier that day (it used to replace the file with this run's symbols only). Driven through real
ccxt against the loopback Binance emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from binance_emulator import BinanceEmulator

from executor.fetch_history import FetchRequest, fetch_market_data
from models import io

SINCE = pd.Timestamp("2024-01-01", tz="UTC")
NOW = pd.Timestamp("2026-01-01", tz="UTC")  # earlier than the emulator's (wall) clock: the date


def factory_for(emu: BinanceEmulator) -> Any:
    def factory(exchange_id: str) -> Any:
        return emu.exchange() if exchange_id == "binanceusdm" else emu.spot_exchange()
    return factory


def no_sleep(_s: float) -> None:
    return None


def fetch(emu: BinanceEmulator, out: Path, *symbols: str) -> None:
    """A 3-day daily fetch of ``symbols`` into ``out`` (with keys: the tiers file too)."""
    req = FetchRequest("binanceusdm", symbols, SINCE, SINCE + pd.Timedelta(days=3), ("1d",), out)
    fetch_market_data(req, factory_for(emu), now=NOW, sleep=no_sleep)


def markets(out: Path) -> tuple[Path, Path]:
    [contracts] = (out / "markets").glob("binance_usdm_contracts_*.csv.gz")
    [tiers] = (out / "markets").glob("binance_usdm_leverage_tiers_*.csv.gz")
    return contracts, tiers


def test_adding_a_symbol_keeps_the_specs_and_tiers_of_symbols_fetched_earlier(
        emulator: BinanceEmulator, tmp_path: Path) -> None:
    """Fetch BTC, ETH; later the same day fetch SOL into the same folder. The day's markets files
    still hold BTC's spec and tiers as the emulator serves them: BTCUSDT's exchangeInfo LOT_SIZE
    step 0.001, MIN_NOTIONAL 100, tick 0.1, and first bracket 125x at mmr 0.004; ETH's min
    notional 20; and SOL's (step 1, min notional 5, first bracket 75x at 0.005). Before the fix
    the SOL fetch left a contracts file with SOL alone (BTC: ValidationError)."""
    fetch(emulator, tmp_path, "BTC", "ETH")
    fetch(emulator, tmp_path, "SOL")
    contracts, tiers = markets(tmp_path)
    btc = io.load_contract_spec(contracts, "BTC/USDT:USDT")
    assert (btc["lot_step"], btc["min_notional"], btc["tick"]) == (0.001, 100.0, 0.1)
    assert io.load_contract_spec(contracts, "ETH/USDT:USDT")["min_notional"] == 20.0
    sol = io.load_contract_spec(contracts, "SOL/USDT:USDT")
    assert (sol["lot_step"], sol["min_notional"]) == (1.0, 5.0)
    b = io.load_leverage_tiers(tiers, "BTC/USDT:USDT").brackets
    assert (b[0].max_leverage, b[0].mmr) == (125, 0.004)
    s = io.load_leverage_tiers(tiers, "SOL/USDT:USDT").brackets
    assert (s[0].max_leverage, s[0].mmr) == (75, 0.005)


def test_the_markets_files_depend_on_the_symbols_not_on_the_runs(emulator: BinanceEmulator,
                                                                 tmp_path: Path) -> None:
    """BTC, ETH then SOL, then ETH again (replacing its rows, not adding them twice), gives the
    same bytes as one fetch of SOL, BTC, ETH: 3 contract rows (BTCUSDT, ETHUSDT, SOLUSDT, sorted
    by symbol) and 15 tier rows (the emulator's 5 brackets per symbol, tiers 1..5 in order)."""
    runs, once = tmp_path / "runs", tmp_path / "once"
    for symbols in (("BTC", "ETH"), ("SOL",), ("ETH",)):
        fetch(emulator, runs, *symbols)
    fetch(emulator, once, "SOL", "BTC", "ETH")
    for a, b in zip(markets(runs), markets(once), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    contracts, tiers = (pd.read_csv(p) for p in markets(runs))
    assert list(contracts["symbol"]) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert list(tiers["symbol"]) == [f"{s}/USDT:USDT" for s in ("BTC", "ETH", "SOL")
                                     for _ in range(5)]
    assert list(tiers["tier"]) == [1.0, 2.0, 3.0, 4.0, 5.0] * 3


def test_a_same_date_file_with_other_columns_keeps_them(emulator: BinanceEmulator,
                                                        tmp_path: Path) -> None:
    """A contracts file of the same date holding a symbol this fetch does not ask for (XRPUSDT,
    minNotional 5 and an extra column ``note``) keeps that row and column; BTC's row comes from
    the emulator (minNotional 100), the old BTC row (minNotional 1) is replaced."""
    fetch(emulator, tmp_path, "BTC")
    contracts, _tiers = markets(tmp_path)
    old = pd.read_csv(contracts, dtype=str, keep_default_na=False)
    extra = pd.DataFrame([{**old.iloc[0].to_dict(), "minNotional": "1"},
                          {**old.iloc[0].to_dict(), "symbol": "XRPUSDT", "pair": "XRPUSDT",
                           "baseAsset": "XRP", "minNotional": "5"}])
    extra["note"] = ["stale", "kept"]
    extra.to_csv(contracts, index=False, compression={"method": "gzip", "mtime": 0})
    fetch(emulator, tmp_path, "BTC")
    after = pd.read_csv(contracts, dtype=str, keep_default_na=False)
    assert list(after["symbol"]) == ["BTCUSDT", "XRPUSDT"]
    assert float(after["minNotional"][0]) == 100.0 and after["minNotional"][1] == "5"
    assert list(after["note"]) == ["", "kept"]
