"""``[book] pledge_source``: how a book's exchange account reads pledged spot. The loader accepts
"multi_assets" (default) and "portfolio_margin" and refuses anything else in one message (exit 2,
before the exchange is asked anything); every ccxt gateway the CLI builds for a book gets it:
``fbr status`` / ``fbr execute`` (dry run) / ``fbr solve --exchange`` read the Portfolio Margin
endpoints of the loopback emulator only when the book says so, and the collateral reported equals
the hand-computed tiered value; ``fbr run``'s venues and ``fbr account import`` get it too, and an
import keeps the key. No network: real ccxt against the loopback Binance emulator."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

EXEC_TESTS = str(Path(__file__).resolve().parents[1] / "executor")
if EXEC_TESTS not in sys.path:
    sys.path.insert(0, EXEC_TESTS)

from binance_emulator import BinanceEmulator  # noqa: E402
from cli_helpers import account_app  # noqa: E402
from exec_helpers import cli_emulator  # noqa: E402

from executor.workflow import account_view  # noqa: E402
from fbr.cli import app  # noqa: E402
from fbr.config_loader import load_book_file  # noqa: E402
from fbr.run_config import load_run_file  # noqa: E402
from fbr.run_wiring import exchange_venue, paper_venue  # noqa: E402
from models.collateral import PLEDGE_SOURCES  # noqa: E402
from models.errors import ExitCode, ValidationError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "examples" / "seed_example_1.toml").read_text()
KEY = "pledge-src-key-4c1e"
SECRET = "pledge-src-secret-9d27"
PORTFOLIO = "/sapi/v1/portfolio/collateralRate"
CROSS = "/sapi/v1/margin/crossMarginCollateralRatio"
runner = CliRunner()


def _book(tmp_path: Path, source: str | None) -> Path:
    """The seed book (0.1 BTC in spot) with ``[pledged] BTC = 0.5`` and ``[book] pledge_source =
    source`` (absent when None)."""
    text = SEED
    if source is not None:
        text = text.replace("[book]\n", f'[book]\npledge_source = "{source}"   # how pledges are read\n')
        assert "pledge_source" in text
    path = tmp_path / "book.toml"
    path.write_text(text + "\n[pledged]\nBTC = 0.5\n")
    return path


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """The emulator the CLI's exchange factory reaches; BTC with Portfolio Margin tiers [0, 5k] at
    1.0 and [5k, 1M] at 0.9 USD (its collateralRate 0.95 caps the first)."""
    with cli_emulator(monkeypatch, KEY, SECRET) as emulator:
        emulator.set_collateral_tiers(["BTC"], [(0.0, 5_000.0, 1.0), (5_000.0, 1_000_000.0, 0.9)])
        yield emulator


def _pm_calls(emu: BinanceEmulator) -> int:
    return len(emu.requests_to(PORTFOLIO, "GET")) + len(emu.requests_to(CROSS, "GET"))


# --- the key in the loader ---------------------------------------------------------------------

def test_key_default_and_values(tmp_path: Path) -> None:
    # the loader and the gateway both check against models.collateral.PLEDGE_SOURCES
    assert PLEDGE_SOURCES == ("multi_assets", "portfolio_margin")
    assert load_book_file(_book(tmp_path, None)).pledge_source == "multi_assets"
    assert load_book_file(_book(tmp_path, "multi_assets")).pledge_source == "multi_assets"
    assert load_book_file(_book(tmp_path, "portfolio_margin")).pledge_source == "portfolio_margin"
    assert load_book_file(_book(tmp_path, "Portfolio_Margin")).pledge_source == "portfolio_margin"


@pytest.mark.parametrize("value", ['"unified"', "1", '""'])
def test_bad_value_is_a_validation_error(tmp_path: Path, value: str) -> None:
    path = _book(tmp_path, "multi_assets")
    path.write_text(path.read_text().replace('"multi_assets"', value))
    with pytest.raises(ValidationError) as info:
        load_book_file(path)
    msg = str(info.value)
    assert info.value.field == "book.pledge_source"
    for word in ("book.toml", '"multi_assets"', '"portfolio_margin"', "Fix:"):
        assert word in msg, msg


def test_bad_value_one_message_exit_2_before_the_exchange(emu: BinanceEmulator,
                                                          tmp_path: Path) -> None:
    path = _book(tmp_path, "unified")
    res = runner.invoke(app, ["status", str(path), "--exchange", "binanceusdm", "--journal",
                              str(tmp_path / "j.sqlite")])
    assert res.exit_code == int(ExitCode.BAD_INPUT) == 2, res.output
    out = res.output
    assert out.count("book.pledge_source") == 1, out
    for word in (str(path), "'unified'", '"multi_assets"', '"portfolio_margin"', "Fix:"):
        assert word in out, out
    assert "Traceback" not in out
    assert not emu.requests  # refused before any request


# --- the CLI's gateways read the account as the book says -------------------------------------

@pytest.mark.parametrize("source", ["portfolio_margin", None])
def test_status_reads_pledged_collateral_as_the_book_says(emu: BinanceEmulator, tmp_path: Path,
                                                          source: str | None) -> None:
    """0.1 BTC at the index (~60k: u ~ 6,000 USD, past the 5k edge). Portfolio Margin: collateral =
    wallet + 0.95 x 5k + 0.9 x (u - 5k); the default (Multi-Assets) keeps the book's flat 0.5 and
    asks no Portfolio Margin endpoint."""
    path = _book(tmp_path, source)
    res = runner.invoke(app, ["status", str(path), "--exchange", "binanceusdm", "--journal",
                              str(tmp_path / "j.sqlite"), "--json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    u = 0.1 * emu.asset_index("BTC")
    assert 5_000 < u < 1_000_000
    if source == "portfolio_margin":
        by_hand = 0.95 * 5_000 + 0.9 * (u - 5_000)
        assert by_hand == pytest.approx(emu.portfolio_collateral("BTC", u), rel=1e-12)
        for p in (PORTFOLIO, CROSS):
            (req,) = emu.requests_to(p, "GET")
            assert "timestamp" in req.params  # signed sapi call
    else:
        by_hand = 0.5 * u
        assert _pm_calls(emu) == 0
    assert doc["margin"]["collateral"] == pytest.approx(emu.balance + by_hand, rel=1e-9)


@pytest.mark.parametrize("args", [["execute"], ["solve"]], ids=["execute-dry-run", "solve"])
@pytest.mark.parametrize("source", ["portfolio_margin", "multi_assets"])
def test_execute_and_solve_gateways_get_the_key(emu: BinanceEmulator, tmp_path: Path,
                                                args: list[str], source: str) -> None:
    path = _book(tmp_path, source)
    res = runner.invoke(app, [*args, str(path), "--exchange", "binanceusdm", "--json"])
    assert res.exit_code == 0, res.output
    assert (_pm_calls(emu) == 2) == (source == "portfolio_margin")


# --- fbr run ------------------------------------------------------------------------------------

RUN = """
book = "{book}"
[[policies]]
kind = "naive_futures"
band = "1%"
name = "naive"
[run]
exchange = "paper"
prices = "binanceusdm"
interval = "1d"
"""


@pytest.mark.parametrize("source", ["portfolio_margin", "multi_assets"])
def test_run_venues_get_the_key(emu: BinanceEmulator, tmp_path: Path, source: str) -> None:
    """``exchange_venue``'s gateway reads the account's pledges as the book says; the paper venue's
    exchange price feed (public endpoints) is built with the same key."""
    run = tmp_path / "run.toml"
    run.write_text(RUN.format(book=_book(tmp_path, source)))
    cfg = load_run_file(run)
    assert cfg.backtest.loaded.pledge_source == source
    opened = exchange_venue(cfg, tmp_path / "j.sqlite", live=False)
    try:
        loaded = cfg.backtest.loaded
        account_view(opened.venue.gateway, loaded.book, loaded.market)
    finally:
        opened.close()
    assert (_pm_calls(emu) == 2) == (source == "portfolio_margin")
    paper = paper_venue(cfg, tmp_path / "p.sqlite")
    try:
        feed: Any = paper.venue.fallback
        assert feed.source._pledge_source == source
    finally:
        paper.close()


# --- fbr account import ---------------------------------------------------------------------------



def test_account_import_reads_portfolio_margin_and_keeps_the_key(emu: BinanceEmulator,
                                                                 tmp_path: Path) -> None:
    emu.balance = 2_500.5
    emu.set_position("BTCUSDT", -0.017, 61_000.0)
    emu.set_wallet_asset("BTC", 0.02)
    path = _book(tmp_path, "portfolio_margin")
    before = path.read_text()
    res = runner.invoke(account_app(), ["account", "import", str(path), "--exchange",
                                         "binanceusdm", "--yes"])
    assert res.exit_code == 0, res.output
    after = path.read_text()
    assert after != before and "cash = 2500.5" in after  # [book] was written
    line = 'pledge_source = "portfolio_margin"   # how pledges are read\n'
    assert before.count(line) == 1 and after.count(line) == 1
    assert after.index(line) == before.index(line)  # first key of [book], untouched
    assert load_book_file(path).pledge_source == "portfolio_margin"
    assert _pm_calls(emu) == 2
    assert "Portfolio Margin tiers" in res.output and "bid_buffer" not in after
