"""``fbr account import`` and stablecoins other than USDT: a second stablecoin in the futures wallet
(USDC) is written into ``[book] cash`` at the exchange's value (Multi-Assets mode: index x
(1 - bidBuffer); mode off: 0), with a note saying so; stablecoins in the spot wallet are named as
not counted. None of them gets the "list an asset in [targets]" advice (which would make USDC a
spot asset hedged with a USDC-PERP that does not exist), none goes to [spot] or [pledged]."""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

EXEC_TESTS = str(Path(__file__).resolve().parents[1] / "executor")
if EXEC_TESTS not in sys.path:
    sys.path.insert(0, EXEC_TESTS)

from binance_emulator import BinanceEmulator  # noqa: E402
from cli_helpers import account_app  # noqa: E402
from exec_helpers import cli_emulator  # noqa: E402

from fbr import account_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
KEY = "stable-key-6b0c"
SECRET = "stable-secret-e38f"
TARGETS_ADVICE = "list an asset in [targets]"
runner = CliRunner()


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """2,500.5 USDT and 1,000 USDC (index 1, bidBuffer 0) in the futures wallet, a short BTC
    perp; the spot wallet read with the same keys."""
    with cli_emulator(monkeypatch, KEY, SECRET) as emulator:
        monkeypatch.setitem(account_cli.SPOT_FACTORIES, "binance", lambda c: emulator.spot_exchange(
            apiKey=c.api_key, secret=c.secret, timeout=400))
        emulator.set_position("BTCUSDT", -0.017, 61_000.0)
        emulator.balance = 2_500.5
        emulator.asset_prices["USDC"] = 1.0
        emulator.bid_buffer["USDC"] = 0.0
        emulator.wallet_assets["USDC"] = 1_000.0
        yield emulator


@pytest.fixture
def book(tmp_path: Path) -> Path:
    path = tmp_path / "book.toml"
    path.write_text(SEED.read_text())
    return path


def _import(path: Path, *args: str) -> Result:
    return runner.invoke(account_app(), ["account", "import", str(path), "--exchange", "binanceusdm",
                                         *args])


def _json(res: Result) -> dict[str, Any]:
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_usdc_in_the_futures_wallet_is_cash(emu: BinanceEmulator, book: Path) -> None:
    """Multi-Assets on: cash = 2,500.5 + 1,000 x 1.0 x (1 - 0) = 3,500.5 USD, written; USDC in
    neither [spot] nor [pledged]; its note says how it was counted, no [targets] advice."""
    emu.set_multi_assets(True)
    res = _import(book, "--yes")
    assert res.exit_code == 0, res.output
    doc = tomllib.loads(book.read_text())
    assert doc["book"]["cash"] == 3500.5
    assert "USDC" not in doc["spot"] and "USDC" not in doc.get("pledged", {})
    assert ("note: futures wallet USDC 1000: counted in [book] cash as 1000.00 USD (index 1 x "
            "(1 - bidBuffer 0))") in res.stderr
    assert TARGETS_ADVICE not in res.stderr


def test_usdc_with_the_mode_off_is_zero_and_said(emu: BinanceEmulator, book: Path) -> None:
    """Multi-Assets off: Binance counts only USDT as margin, so cash = 2,500.5 (USDC 0), and the
    note says so and how to count it."""
    out = _json(_import(book, "--dry-run", "--json"))
    assert out["account"]["cash"] == 2500.5
    assert out["notes"][-1] == (
        "futures wallet USDC 1000: counted in [book] cash as 0.00 USD (Multi-Assets mode is off, "
        "so Binance counts only USDT as margin; to count it, switch Multi-Assets mode on or "
        "convert it to USDT)")
    assert not any(TARGETS_ADVICE in n for n in out["notes"])


def test_stablecoins_in_the_spot_wallet_are_named_not_counted(emu: BinanceEmulator,
                                                               book: Path) -> None:
    """Spot wallet: 500 USDT, 20 USDC, 0.05 BTC and 3 BNB. BNB alone is "not in the book" (a coin
    one may add to [targets]); USDT and USDC are named as not counted (the book's cash is the
    futures wallet's); [spot] gets BTC only among them. Cash (Multi-Assets on) 3,500.5."""
    emu.set_multi_assets(True)
    for asset, qty in (("USDT", 500.0), ("USDC", 20.0), ("BTC", 0.05), ("BNB", 3.0)):
        emu.set_spot_balance(asset, qty)
    out = _json(_import(book, "--spot", "binance", "--dry-run", "--json"))
    assert out["account"]["cash"] == 3500.5
    assert out["account"]["spot"] == {"BTC": 0.05, "ETH": 0.0, "SOL": 0.0}
    advice = [n for n in out["notes"] if TARGETS_ADVICE in n]
    assert advice == ["held on the exchange but not in the book (not added; list an asset in "
                      "[targets] to manage it): spot BNB 3"]
    for coin, qty in (("USDC", 20), ("USDT", 500)):
        assert (f"spot wallet {coin} {qty}: not counted (a stablecoin in the spot wallet is not "
                f"futures margin; [book] cash is the futures wallet's: transfer it there to count "
                f"it)") in out["notes"]
