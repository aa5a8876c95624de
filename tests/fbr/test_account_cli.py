"""``fbr account import`` end to end, in process against the loopback Binance emulator (real ccxt for
the USD-M account and the spot wallet): the book written equals the exchange's account and is
accepted by ``fbr solve``; targets, comments and settings are kept; a second import changes nothing;
``--dry-run`` writes nothing; bad input ends in one message; the keys appear nowhere."""

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
from fbr.cli import app as fbr_app  # noqa: E402
from fbr.config_loader import load_book_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
KEY = "CANARY-key-7f3a9c"
SECRET = "CANARY-secret-51be20"
runner = CliRunner()




@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """The emulator with an account: shorts and a long on three perps, 2,500.5 USDT, Multi-Assets
    mode with 0.02 BTC in the futures wallet, and a spot wallet (BTC partly locked, ETH, BNB)."""
    with cli_emulator(monkeypatch, KEY, SECRET) as emulator:
        monkeypatch.setitem(account_cli.SPOT_FACTORIES, "binance", lambda c: emulator.spot_exchange(
            apiKey=c.api_key, secret=c.secret, timeout=400))
        emulator.set_position("BTCUSDT", -0.017, 61_000.0)
        emulator.set_position("ETHUSDT", 0.25, 2_900.0)
        emulator.set_position("SOLUSDT", -3.0, 140.0)
        emulator.balance = 2_500.5
        emulator.set_multi_assets(True)
        emulator.set_wallet_asset("BTC", 0.02, bid_buffer=0.05)
        emulator.set_spot_balance("BTC", 0.08, locked=0.001)
        emulator.set_spot_balance("ETH", 1.2)
        emulator.set_spot_balance("BNB", 3.0)
        yield emulator


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """The seed book with a comment of our own."""
    path = tmp_path / "book.toml"
    path.write_text(SEED.read_text().replace("[targets]", "[targets]                     # mine, keep"))
    return path


def _import(path: Path, *args: str) -> Result:
    return runner.invoke(account_app(), ["account", "import", str(path), "--exchange", "binanceusdm",
                                  *args])


def _no_secret(res: Result, *files: Path) -> None:
    for text in (res.stdout, res.stderr, *(f.read_text() for f in files if f.exists())):
        assert KEY not in text and SECRET not in text


def test_import_writes_the_account_and_keeps_the_book(emu: BinanceEmulator, book: Path) -> None:
    before = book.read_text()
    res = _import(book, "--spot", "binance", "--yes")
    assert res.exit_code == 0, res.output
    assert f"wrote {book}" in res.stdout and "+cash = 2500.5" in res.stdout
    assert "spot BNB 3" in res.stderr  # held, not in the book: named, not added
    doc = tomllib.loads(book.read_text())
    assert doc["book"]["cash"] == 2500.5
    assert doc["spot"] == {"BTC": 0.101, "ETH": 1.2, "SOL": 0.0}  # spot wallet + futures wallet
    assert doc["futures"] == [
        {"symbol": "BTC-PERP", "contracts": -0.017, "entry_price": 61000.0},
        {"symbol": "ETH-PERP", "contracts": 0.25, "entry_price": 2900.0},
        {"symbol": "SOL-PERP", "contracts": -3.0, "entry_price": 140.0}]
    assert doc["pledged"] == {"BTC": {"bid_buffer": 0.05, "quantity": 0.02}}
    btc, eth, sol = doc["contracts"]
    assert (btc["symbol"], btc["underlying"], btc["lot_step"], btc["min_qty"], btc["max_qty"],
            btc["min_notional"], btc["tick"], btc["contract_size"]) == (
        "BTC-PERP", "BTC", 0.001, 0.001, 120.0, 100.0, 0.1, 1.0)
    assert btc["tiers"][:2] == [
        {"min_notional": 0.0, "max_notional": 300000.0, "max_leverage": 125.0, "mmr": 0.004, "cum": 0.0},
        {"min_notional": 300000.0, "max_notional": 3000000.0, "max_leverage": 50.0, "mmr": 0.01,
         "cum": 1800.0}]
    assert (eth["min_notional"], sol["lot_step"], sol["min_notional"]) == (20.0, 1.0, 5.0)
    old = tomllib.loads(before)
    for section in ("targets", "contract_defaults", "market", "risk", "costs", "constraints"):
        assert doc[section] == old[section]
    assert doc["book"]["name"] == old["book"]["name"]
    comments = [line for line in before.splitlines() if "#" in line and "cash" not in line
                and not line.startswith(("BTC", "ETH", "SOL"))]
    assert all(line in book.read_text() for line in comments)
    assert "[targets]                     # mine, keep" in book.read_text()
    assert {r.method for r in emu.requests} == {"GET"}  # read only: no order, no setting changed
    assert len(emu.requests_to("/api/v3/account")) == 1
    _no_secret(res, book)


def test_imported_book_solves_and_loads_as_the_account(emu: BinanceEmulator, book: Path) -> None:
    assert _import(book, "--spot", "binance", "--yes").exit_code == 0
    res = runner.invoke(fbr_app, ["solve", str(book), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["status"] == "optimal"
    loaded = load_book_file(book).book
    assert loaded.cash == 2500.5
    assert {s: (p.contracts, p.entry_price) for s, p in loaded.futures.items()} == {
        "BTC-PERP": (-0.017, 61000.0), "ETH-PERP": (0.25, 2900.0), "SOL-PERP": (-3.0, 140.0)}
    assert dict(loaded.spot) == {"BTC": 0.101, "ETH": 1.2, "SOL": 0.0}


def test_second_import_changes_nothing(emu: BinanceEmulator, book: Path) -> None:
    assert _import(book, "--spot", "binance", "--yes").exit_code == 0
    first = book.read_bytes()
    res = _import(book, "--spot", "binance", "--yes")
    assert res.exit_code == 0, res.output
    assert "no change" in res.stdout and "---" not in res.stdout
    assert book.read_bytes() == first
    out = json.loads(_import(book, "--spot", "binance", "--json").stdout)
    assert (out["changed"], out["written"], out["diff"]) == (False, False, "")
    assert book.read_bytes() == first


def test_a_funding_interval_the_exchange_changed_is_imported(emu: BinanceEmulator,
                                                             book: Path) -> None:
    """SOLUSDT settles every 4 h (Binance's fundingInfo lists it): the import writes SOL-PERP's
    funding_interval_h = 4 and nothing for the 8 h contracts (the book's default); the book then
    loads with it, and a second import changes nothing."""
    emu.funding_hours["SOLUSDT"] = 4
    assert _import(book, "--yes").exit_code == 0
    btc, eth, sol = tomllib.loads(book.read_text())["contracts"]
    assert sol["funding_interval_h"] == 4.0
    assert "funding_interval_h" not in btc and "funding_interval_h" not in eth
    contracts = {c.symbol: c for c in load_book_file(book).book.contracts}
    assert contracts["SOL-PERP"].funding_interval_h == 4.0
    first = book.read_bytes()
    assert _import(book, "--yes").exit_code == 0 and book.read_bytes() == first


def test_dry_run_shows_the_diff_and_writes_nothing(emu: BinanceEmulator, book: Path) -> None:
    before = book.read_bytes()
    res = _import(book, "--spot", "binance", "--dry-run")
    assert res.exit_code == 0, res.output
    assert book.read_bytes() == before
    assert res.stdout.startswith("--- book.toml (now)\n+++ book.toml (imported)\n")
    assert "-cash = 3000.0" in res.stdout and "+[[futures]]" in res.stdout
    assert "dry run: nothing written" in res.stdout
    _no_secret(res, book)


def test_json_output(emu: BinanceEmulator, book: Path) -> None:
    res = _import(book, "--yes", "--json")  # no --spot: [spot] left alone
    assert res.exit_code == 0, res.output
    out: dict[str, Any] = json.loads(res.stdout)
    assert (out["status"], out["changed"], out["written"]) == ("ok", True, True)
    assert out["account"]["cash"] == 2500.5 and out["account"]["spot"] is None
    assert out["account"]["futures"]["SOL-PERP"] == {"contracts": -3.0, "entry_price": 140.0}
    assert out["account"]["pledged"] == {"BTC": {"bid_buffer": 0.05, "quantity": 0.02}}
    assert any("--spot binance" in n for n in out["notes"])
    assert tomllib.loads(book.read_text())["spot"] == {"BTC": 0.1, "ETH": 1.0, "SOL": 10.0}
    _no_secret(res, book)


def test_without_yes_and_no_terminal_refuses(emu: BinanceEmulator, book: Path) -> None:
    before = book.read_bytes()
    res = _import(book)
    assert res.exit_code == 2
    assert "Fix: add --yes" in res.stderr and "+cash = 2500.5" in res.stdout
    assert book.read_bytes() == before


def test_terminal_confirmation(emu: BinanceEmulator, book: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(account_cli, "_interactive", lambda: True)
    before = book.read_bytes()
    res = runner.invoke(account_app(), ["account", "import", str(book), "--exchange", "binanceusdm"],
                        input="n\n")
    assert res.exit_code == 0 and "nothing written" in res.stdout
    assert book.read_bytes() == before
    res = runner.invoke(account_app(), ["account", "import", str(book), "--exchange", "binanceusdm"],
                        input="y\n")
    assert res.exit_code == 0 and "wrote" in res.stdout
    assert tomllib.loads(book.read_text())["book"]["cash"] == 2500.5


def test_position_on_a_contract_the_book_does_not_list_is_a_note(emu: BinanceEmulator,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text('[targets]\nBTC = 0.6\nETH = 0.4\n\n[spot]\nBTC = 0.1\nETH = 1.0\n\n'
                    '[market]\nmark_from_spot = true\n\n[market.spot]\nBTC = 60000.0\nETH = 3000.0\n\n'
                    '[risk]\ncorrelation = 0.7\n\n[risk.vols]\nBTC = 0.5\nETH = 0.7\n')
    res = _import(path, "--yes")
    assert res.exit_code == 0, res.output
    assert "position SOL/USDT:USDT -3 contracts" in res.stderr
    doc = tomllib.loads(path.read_text())
    assert [f["symbol"] for f in doc["futures"]] == ["BTC-PERP", "ETH-PERP"]
    assert [c["symbol"] for c in doc["contracts"]] == ["BTC-PERP", "ETH-PERP"]
    assert doc["targets"] == {"BTC": 0.6, "ETH": 0.4}


def test_missing_keys_name_the_variables(emu: BinanceEmulator, book: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FBR_BINANCEUSDM_SECRET")
    before = book.read_bytes()
    res = _import(book, "--yes")
    assert res.exit_code == 2
    assert res.stderr.count("error:") == 1 and "Traceback" not in res.output
    assert "FBR_BINANCEUSDM_API_KEY" in res.stderr and "FBR_BINANCEUSDM_SECRET" in res.stderr
    assert book.read_bytes() == before and emu.requests == []
    _no_secret(res, book)


def test_missing_book_is_one_message(emu: BinanceEmulator, tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    res = _import(path, "--yes")
    assert res.exit_code == 2
    assert res.stderr.count("error:") == 1 and "does not exist" in res.stderr
    assert "[targets]" in res.stderr and "Fix:" in res.stderr
    assert not path.exists()
    res = _import(path, "--yes", "--json")
    assert json.loads(res.stdout)["exit_code"] == 2


def test_exchange_error_carrying_the_key_is_redacted(emu: BinanceEmulator, book: Path) -> None:
    emu.inject_error(path="/api/v3/account", status=401, code=-2015,
                     msg=f"Invalid API-key {KEY}, IP, or permissions for action.")
    before = book.read_bytes()
    res = _import(book, "--spot", "binance", "--yes")
    assert res.exit_code == 2, res.output
    assert "***" in res.stderr and "fetch_balance" in res.stderr
    assert book.read_bytes() == before
    _no_secret(res, book)


def test_multi_assets_off_pledges_nothing_and_says_so(emu: BinanceEmulator, book: Path) -> None:
    emu.set_multi_assets(False)
    res = _import(book, "--spot", "binance", "--yes")
    assert res.exit_code == 0, res.output
    assert "counts none as margin" in res.stderr
    doc = tomllib.loads(book.read_text())
    assert "pledged" not in doc
    assert doc["spot"]["BTC"] == 0.101  # the wallet's BTC is still held
