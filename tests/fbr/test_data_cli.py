"""``fbr data fetch`` end to end: in process against the loopback Binance emulator (real ccxt),
and as a subprocess for usage errors (exit code 2, one message, no traceback, no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))
from binance_emulator import BinanceEmulator, Fault

import fbr.data_cli
from fbr.cli import app
from models import io
from models.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """A running emulator; ``fbr data fetch`` gets ccxt instances wired to it (keyless futures
    client, as with no keys in the environment, unless a test swaps it)."""
    emulator = BinanceEmulator().start()

    def factory(exchange_id: str) -> Any:
        if exchange_id == "binanceusdm":
            return emulator.exchange(api_key="", secret="")
        return emulator.spot_exchange()

    monkeypatch.setattr(fbr.data_cli, "exchange_factory", factory)
    monkeypatch.setattr("executor.ccxt_wiring.time.sleep", lambda _s: None)
    try:
        yield emulator
    finally:
        emulator.stop()


def test_fetch_json_summary_and_files(emu: BinanceEmulator, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["data", "fetch", "--symbols", "btc,SOL", "--since",
                                   "2024-01-01", "--until", "2024-04-01", "--out", str(tmp_path),
                                   "--interval", "1d,4h", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["status"] == "ok" and summary["exchange"] == "binanceusdm"
    rows = {(f["kind"], f["symbol"]): f["rows"] for f in summary["files"]}
    days = (pd.Timestamp("2024-04-01") - pd.Timestamp("2024-01-01")).days  # 91
    assert rows[("spot_1d", "BTC")] == days and rows[("spot_4h", "SOL")] == days * 6
    assert rows[("funding", "SOL")] == days * 3
    assert any("leverage tiers skipped" in n for n in summary["notes"])
    for f in summary["files"]:
        assert Path(f["path"]).is_file()
    spot = io.load_spot_closes(tmp_path, ["BTC", "SOL"])
    assert len(spot) == days and spot.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert "test-key" not in res.output and "test-secret" not in res.output


def test_fetch_table_output_with_progress(emu: BinanceEmulator, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["data", "fetch", "--symbols", "ETH", "--since", "2024-01-01",
                                   "--until", "2024-01-05", "--out", str(tmp_path),
                                   "--spot-source", "index"])
    assert res.exit_code == 0, res.output
    assert "spot_1d" in res.output and "funding" in res.output
    assert emu.requests_to("/fapi/v1/indexPriceKlines")


def _fetch_error(out: Path, *args: str) -> str:
    """``fbr data fetch --out OUT --json ARGS`` ending in a usage/exchange error: exit 2 and the
    one JSON error object's message."""
    res = CliRunner().invoke(app, ["data", "fetch", "--out", str(out), "--json", *args])
    assert res.exit_code == 2, res.output
    message = json.loads(res.stdout.splitlines()[0])
    assert message["status"] == "error"
    return str(message["error"])


def test_exchange_down_is_one_clear_error(emu: BinanceEmulator, tmp_path: Path) -> None:
    for _ in range(4):  # more than the retries
        emu.inject(Fault.HTTP_503, path="/fapi/v1/exchangeInfo")
    error = _fetch_error(tmp_path, "--symbols", "BTC", "--since", "2024-01-01")
    assert "could not reach binanceusdm" in error


def test_a_rate_limit_ban_is_one_clear_error(emu: BinanceEmulator, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A 429 asking for an hour: no retry into it, exit 2, a message that says so (not "could
    not reach")."""
    monkeypatch.setenv("FBR_DATA_HOME", str(tmp_path / "home"))  # the silence it keeps: not shared
    emu.retry_after_s = 3_600
    emu.inject(Fault.HTTP_429, path="/fapi/v1/exchangeInfo")
    error = _fetch_error(tmp_path, "--symbols", "BTC", "--since", "2024-01-01")
    assert "is rate-limiting this IP" in error
    assert len(emu.requests_to("/fapi/v1/exchangeInfo")) == 1 and emu.bans == 0


def test_unknown_symbol_names_the_field(emu: BinanceEmulator, tmp_path: Path) -> None:
    error = _fetch_error(tmp_path, "--symbols", "BTC,XYZ", "--since", "2024-01-01")
    assert "symbols" in error and "XYZ/USDT:USDT" in error


@pytest.mark.parametrize(("args", "field"), [
    (["--since", "someday"], "since"),
    (["--since", "2024-01-01", "--interval", "3d"], "interval"),
    (["--since", "2024-02-01", "--until", "2024-01-01"], "until"),
    (["--since", "2024-01-01", "--spot-source", "csv"], "spot-source"),
])
def test_usage_errors_name_the_field(args: list[str], field: str, tmp_path: Path) -> None:
    error = _fetch_error(tmp_path, "--symbols", "BTC", *args)
    assert error.startswith(field)
    assert not list(tmp_path.iterdir())


def test_usage_error_through_the_console_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fbr.cli", "data", "fetch", "--symbols", "BTC",
                           "--since", "2024-13-45", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert "since" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1


def test_default_factory_keys_only_for_the_futures_exchange(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """No network: building ccxt instances opens no connection."""
    monkeypatch.setenv("FBR_BINANCEUSDM_API_KEY", "k-123")  # the variables `fbr execute` reads
    monkeypatch.setenv("FBR_BINANCEUSDM_SECRET", "s-456")
    fut = fbr.data_cli.default_factory("binanceusdm")
    spot = fbr.data_cli.default_factory("binance")
    assert (fut.id, fut.apiKey, fut.secret, fut.enableRateLimit) == ("binanceusdm", "k-123",
                                                                     "s-456", True)
    assert fut.options["maxRetriesOnFailure"] == 0 and fut.options["fetchCurrencies"] is False
    assert spot.id == "binance" and not spot.apiKey and not spot.secret
    assert spot.options["fetchMarkets"]["types"] == ["spot"]
    with pytest.raises(ValidationError, match="exchange"):
        fbr.data_cli.default_factory("no-such-exchange")
