"""A negative ``[book] cash`` (a stablecoin debt: Binance Multi-Assets mode lets the USDT balance go
negative against pledged assets) loads when the book pledges spot, and is refused without pledges;
``fbr account import`` writes such an account; solve, whatif and the backtest replay run it."""

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

from fbr.cli import app as fbr_app  # noqa: E402
from fbr.config_loader import load_book_file  # noqa: E402
from models.errors import ValidationError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
KEY = "neg-cash-key-4d1e"
SECRET = "neg-cash-secret-9a27"
runner = CliRunner()

#: Seed example 1 with a 150 USD debt backed by its 0.1 BTC pledged at bidBuffer 5%, margin on.
PLEDGED = "\n[pledged]\nBTC = { bid_buffer = 0.05, quantity = 0.1 }\n"


def _seed(tmp_path: Path, cash: str, extra: str = "", name: str = "neg.toml") -> Path:
    text = SEED.read_text()
    text = text.replace("cash = 3000.0 ", f"cash = {cash} ").replace("margin = false ",
                                                                       "margin = true ")
    path = tmp_path / name
    path.write_text(text + extra)
    return path


def _json(*args: str) -> dict[str, Any]:
    res = runner.invoke(fbr_app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_a_negative_cash_loads_when_spot_is_pledged(tmp_path: Path) -> None:
    """cash = -150 with BTC pledged loads as a 150 USD debt: NAV = spot 6,000 + 2,500 + 1,500 -
    150 = 9,850; collateral = -150 + 0.1 x 60,000 x (1 - 0.05) = 5,550 USD."""
    loaded = load_book_file(_seed(tmp_path, "-150.0", PLEDGED))
    assert loaded.book.cash == -150.0
    assert loaded.book.nav(loaded.market) == pytest.approx(9_850.0, abs=1e-9)
    assert loaded.book.collateral(loaded.market) == pytest.approx(5_550.0, abs=1e-9)


def test_a_negative_cash_without_pledges_is_refused(tmp_path: Path) -> None:
    """cash = -150 and no [pledged]: an unbacked debt, refused naming the rule; a debt above the
    1e13 USD cap is refused even with pledges."""
    with pytest.raises(ValidationError) as exc:
        load_book_file(_seed(tmp_path, "-150.0"))
    assert exc.value.field == "book.cash"
    assert "a negative balance (a debt) needs pledged collateral" in exc.value.problem
    assert "[pledged]" in exc.value.fix
    with pytest.raises(ValidationError) as exc:
        load_book_file(_seed(tmp_path, "-2e13", PLEDGED, "huge.toml"))
    assert exc.value.field == "book.cash" and "1e+13" in exc.value.fix


def test_solve_whatif_and_replay_run_a_book_with_a_debt(tmp_path: Path) -> None:
    """The seed overlay (costs off, margin rows far from binding) is the naive one whatever the
    cash: BTC-PERP -1,000, ETH-PERP +500, SOL-PERP +500 USD (lot 1e-8: within 0.01 USD). Margin:
    collateral 5,550 (above); IM = 2,000 / 10 = 200 USD. What-if BTC -10%: spot PnL 0.1 x -6,000 =
    -600, NAV 9,850 -> 9,250; collateral -150 + 0.1 x 54,000 x 0.95 = 4,980. A 10-day replay of
    the book runs with no liquidation."""
    book = _seed(tmp_path, "-150.0", PLEDGED)
    sol = _json("solve", str(book))
    assert sol["status"] == "optimal" and sol["nav"] == pytest.approx(9_850.0)
    got = {p["symbol"]: p["notional"] for p in sol["target_positions"]}
    assert got == pytest.approx({"BTC-PERP": -1_000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0},
                                abs=0.01)
    assert sol["margin"]["collateral"] == pytest.approx(5_550.0)
    assert sol["margin"]["initial"] == pytest.approx(200.0, abs=1e-3)
    scen = _json("whatif", str(book), "--shock", "BTC=-10%")["scenarios"][0]
    assert (scen["nav_before"], scen["nav_after"]) == pytest.approx((9_850.0, 9_250.0))
    assert scen["pnl"]["spot"] == pytest.approx(-600.0)
    assert scen["margin_after"]["collateral"] == pytest.approx(4_980.0)
    bt = tmp_path / "bt.toml"
    bt.write_text(f'book = "{book.name}"\n[data]\nsource = "synthetic"\nseed = 12\ndays = 10\n'
                  'start = "2024-01-01"\n[[policies]]\nkind = "naive_futures"\nperiod = "7D"\n'
                  'name = "naive"\n[backtest]\nliquidation_penalty = "1%"\n')
    assert _json("backtest", str(bt))["policies"]["naive"]["liquidations"] == 0


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """The emulator with a short BTC perp and a USDT wallet that the test sets."""
    with cli_emulator(monkeypatch, KEY, SECRET) as emulator:
        emulator.set_position("BTCUSDT", -0.017, 61_000.0)
        yield emulator


def _import(path: Path) -> Result:
    return runner.invoke(account_app(), ["account", "import", str(path), "--exchange",
                                         "binanceusdm", "--yes"])


def test_import_writes_a_multi_assets_debt(emu: BinanceEmulator, tmp_path: Path) -> None:
    """Multi-Assets mode, 0.2 BTC in the futures wallet (bidBuffer 5%), USDT walletBalance -150:
    the import writes cash = -150 (the exchange's walletBalance) and BTC pledged (bid_buffer 0.05,
    quantity 0.2), and the written book loads with that debt. The book lists 0.1 BTC and the spot
    wallet is not read: the holding is at least the 0.2 the futures wallet holds, so [spot] is
    raised to it (a pledge above the holding would be refused)."""
    emu.balance = -150.0
    emu.set_multi_assets(True)
    emu.set_wallet_asset("BTC", 0.2, bid_buffer=0.05)
    book = tmp_path / "b.toml"
    book.write_text(SEED.read_text())
    res = _import(book)
    assert res.exit_code == 0, res.output
    doc = tomllib.loads(book.read_text())
    assert doc["book"]["cash"] == -150.0
    assert doc["pledged"]["BTC"] == {"bid_buffer": 0.05, "quantity": 0.2}
    assert doc["spot"]["BTC"] == 0.2 and doc["spot"]["ETH"] == 1.0
    assert load_book_file(book).book.cash == -150.0


def test_import_refuses_a_debt_nothing_backs(emu: BinanceEmulator, tmp_path: Path) -> None:
    """USDT walletBalance -150 and nothing pledged (Multi-Assets off): nothing is written (exit 2)
    and the message says the negative balance needs pledged collateral."""
    emu.balance = -150.0
    book = tmp_path / "b.toml"
    book.write_text(SEED.read_text())
    res = _import(book)
    assert res.exit_code == 2
    assert "needs pledged collateral" in res.output
    assert book.read_text() == SEED.read_text()
