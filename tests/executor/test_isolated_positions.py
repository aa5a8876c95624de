"""A book contract held in isolated margin is refused when the account is read
(``executor.ccxt_gateway.isolated_positions``, exit code 2), through real ccxt against the emulator.

fbr's collateral is the account's cross margin: the USDT wallet (Binance's ``walletBalance``, which
includes isolated wallets), unrealised PnL and pledged spot, against every position's maintenance.
An isolated position has its own wallet and liquidation price, so the figures fbr would print for
it (margin ratio, stress surplus, distance to liquidation) are not the exchange's. Binance also
refuses to switch a contract's margin type while it holds a position (-4048) or open orders
(-4047): ``fbr execute`` would fail at its set-up call after planning, so the read refuses first,
before any request that changes the account.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, cli_emulator
from typer.testing import CliRunner

from executor.ccxt_gateway import isolated_positions
from fbr.cli import app

runner = CliRunner()
BTC = "BTC/USDT:USDT"


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """An emulator `fbr ... --exchange binanceusdm` reaches; data and locks under ``tmp_path``."""
    monkeypatch.setenv("FBR_DATA_HOME", str(tmp_path / "fbr-data"))
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("FBR_JOURNAL", raising=False)
    with cli_emulator(monkeypatch, "isolated-key", "isolated-secret") as e:
        yield e


def _cli(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    book = tmp_path / "book.toml"
    book.write_text(SEED_BOOK.read_text(encoding="utf-8"), encoding="utf-8")
    res = runner.invoke(app, [args[0], str(book), *args[1:], "--exchange", "binanceusdm",
                              "--journal", str(tmp_path / "j.sqlite"), "--json"])
    return res.exit_code, json.loads(res.stdout)


def _changes(emu: BinanceEmulator) -> list[str]:
    return [f"{r.method} {r.path}" for r in list(emu.requests) if r.method in ("POST", "DELETE", "PUT")]


def _isolated_btc(emu: BinanceEmulator, contracts: float) -> None:
    ex = emu.exchange()
    ex.load_markets()
    ex.set_margin_mode("isolated", BTC)  # flat: Binance allows the switch
    emu.set_position("BTCUSDT", contracts, 60_000.0)
    emu.requests.clear()


def test_status_refuses_an_isolated_book_position(emu: BinanceEmulator, tmp_path: Path) -> None:
    _isolated_btc(emu, -0.05)
    code, out = _cli(tmp_path, "status")
    assert code == 2 and out["status"] == "error", out
    assert "BTCUSDT -0.05 contracts in isolated margin" in out["error"]
    assert "Fix: close the isolated position" in out["error"]
    assert _changes(emu) == []


def test_execute_live_refuses_before_any_change(emu: BinanceEmulator, tmp_path: Path) -> None:
    _isolated_btc(emu, 0.02)
    code, out = _cli(tmp_path, "execute", "--live")
    assert code == 2, out
    assert "BTCUSDT +0.02 contracts in isolated margin" in out["error"]
    assert _changes(emu) == [] and emu.requests_to("/fapi/v1/order") == []
    assert emu.positions["BTCUSDT"] == 0.02


def test_a_flat_isolated_contract_passes_and_is_set_to_cross(emu: BinanceEmulator,
                                                              tmp_path: Path) -> None:
    """No position: nothing to refuse; execute sets the contract to cross margin, then trades."""
    _isolated_btc(emu, 0.0)
    code, out = _cli(tmp_path, "execute", "--live")
    assert code == 0, out
    assert emu.margin_type["BTCUSDT"] == "CROSSED"
    assert "POST /fapi/v1/marginType" in _changes(emu)


def test_the_emulator_refuses_a_margin_type_change_with_a_position(emu: BinanceEmulator) -> None:
    ex = emu.exchange()
    ex.load_markets()
    emu.set_position("BTCUSDT", 0.01, 60_000.0)
    with pytest.raises(ccxt.ExchangeError, match="-4048"):
        ex.set_margin_mode("isolated", BTC)
    assert emu.margin_type["BTCUSDT"] == "CROSSED"


def test_isolated_rows_by_hand() -> None:
    to_book = {"BTCUSDT": "BTC-PERP", "SOLUSDT": "SOL-PERP"}
    rows = [
        {"symbol": BTC, "contracts": 0.05, "side": "short", "marginMode": "isolated",
         "info": {"symbol": "BTCUSDT"}},
        {"symbol": "SOL/USDT:USDT", "contracts": 3.0, "side": "long", "marginMode": "cross",
         "info": {"symbol": "SOLUSDT"}},
        {"symbol": "ETH/USDT:USDT", "contracts": 1.0, "side": "long", "marginMode": "isolated",
         "info": {"symbol": "ETHUSDT"}},  # not a book contract: the foreign check's
        {"symbol": "SOL/USDT:USDT", "contracts": 0.0, "side": "long", "marginMode": "isolated",
         "info": {"symbol": "SOLUSDT"}},  # flat
    ]
    assert isolated_positions(rows, to_book) == {"BTCUSDT": -0.05}
