"""One state (issue 14 item 2): `fbr solve` and `fbr whatif` read the holdings where `fbr execute`
and `fbr status` do: the book file (default), the journal's paper account (`--exchange paper`) or
the exchange account (`--exchange binanceusdm`, here the loopback emulator)."""

from __future__ import annotations

import dataclasses
import json
import shutil
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
from cli_helpers import run_fbr  # noqa: E402
from exec_helpers import cli_emulator  # noqa: E402

from fbr.cli import app  # noqa: E402
from fbr.config import load_book_file  # noqa: E402
from fbr.execute_wiring import BOOK_FILE_SOURCE, ExchangeChoice, account_loaded  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
#: The seed book's lot step (contracts): "no trade" means every trade within one lot.
LOT = 1e-8
runner = CliRunner()


def _fbr_json(*args: str) -> dict[str, Any]:
    """The real entry point (subprocess) with --json; exit code 0 and one JSON object."""
    res = run_fbr(*args, "--json")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _invoke_json(*args: str) -> dict[str, Any]:
    """The app in-process with --json (the emulator's factory is patched in this process)."""
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A temporary copy of seed example 1 (short BTC $1,000, long ETH $500, long SOL $500)."""
    path = tmp_path / "seed.toml"
    shutil.copy(SEED, path)
    return path


def _targets(doc: dict[str, Any]) -> dict[str, float]:
    return {p["symbol"]: p["contracts"] for p in doc["target_positions"]}


def _assert_no_trades(doc: dict[str, Any]) -> None:
    assert all(abs(t["contracts"]) <= LOT + 1e-12 for t in doc["trades"]), doc["trades"]


def test_solve_without_exchange_is_the_book_file_answer(book: Path) -> None:
    doc = _fbr_json("solve", str(book))
    assert doc["holdings_source"] == BOOK_FILE_SOURCE
    notional = {t["symbol"]: t["notional"] for t in doc["trades"]}
    assert notional == pytest.approx({"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0},
                                     abs=0.01)
    text = run_fbr("solve", str(book))
    assert text.returncode == 0 and "holdings:" not in text.stdout  # the default output as before


def test_after_paper_execute_solve_and_whatif_see_the_paper_account(book: Path,
                                                                   tmp_path: Path) -> None:
    journal = str(tmp_path / "j.sqlite")
    ex = _fbr_json("execute", str(book), "--exchange", "paper", "--journal", journal)
    assert ex["mode"] == "paper" and ex["report"]["complete"]
    positions = ex["report"]["positions"]
    assert positions["BTC-PERP"] < 0 < positions["ETH-PERP"]

    # solve from the paper account: nothing left to trade, the targets are the paper positions
    sol = _fbr_json("solve", str(book), "--exchange", "paper", "--journal", journal)
    assert sol["holdings_source"] == f"paper account (journal {journal})"
    _assert_no_trades(sol)
    assert _targets(sol) == pytest.approx(positions, abs=LOT)
    # ... while the book file alone still asks for the seed answer
    assert len(_fbr_json("solve", str(book))["trades"]) == 3

    # what-if from the paper account: the futures positions are there and carry the BTC shock
    wi = _fbr_json("whatif", str(book), "--exchange", "paper", "--journal", journal,
                   "--shock", "BTC=-10%")
    assert wi["holdings_source"] == f"paper account (journal {journal})"
    assert wi["positions"] == pytest.approx(positions, abs=LOT)
    assert all(q != 0 for q in wi["positions"].values())
    pnl = wi["scenarios"][0]["pnl"]
    # the short BTC-PERP (~$1,000) gains ~$100 on a 10% fall; the book file alone has no futures
    assert pnl["futures"] == pytest.approx(100.0, abs=1.0)
    bare = _fbr_json("whatif", str(book), "--shock", "BTC=-10%")
    assert bare["positions"] == {} and bare["scenarios"][0]["pnl"]["futures"] == 0.0

    text = run_fbr("solve", str(book), "--exchange", "paper", "--journal", journal)
    assert text.returncode == 0 and "holdings: paper account (journal" in text.stdout


def test_paper_without_a_journal_starts_from_the_book_file_and_writes_nothing(
        book: Path, tmp_path: Path) -> None:
    journal = tmp_path / "none" / "j.sqlite"
    sol = _fbr_json("solve", str(book), "--exchange", "paper", "--journal", str(journal))
    assert len(sol["trades"]) == 3 and "does not exist yet" in sol["holdings_source"]
    wi = _fbr_json("whatif", str(book), "--exchange", "paper", "--journal", str(journal),
                   "--shock", "BTC=-10%")
    assert wi["positions"] == {} and "does not exist yet" in wi["holdings_source"]
    assert not journal.exists() and not journal.parent.exists()


def test_account_loaded_dry_run_and_an_unknown_book(book: Path, tmp_path: Path) -> None:
    loaded = load_book_file(book)
    same = account_loaded(loaded, ExchangeChoice.DRY_RUN, tmp_path / "unused.sqlite")
    assert same.loaded is loaded and not same.from_account
    journal = tmp_path / "j.sqlite"
    res = runner.invoke(app, ["execute", str(book), "--exchange", "paper", "--journal",
                              str(journal)])
    assert res.exit_code == 0, res.output
    paper = account_loaded(loaded, ExchangeChoice.PAPER, journal)
    assert paper.from_account and set(paper.loaded.book.futures) == {"BTC-PERP", "ETH-PERP",
                                                                     "SOL-PERP"}
    assert paper.loaded.book.cash < loaded.book.cash  # the paper fills paid taker fees
    base = load_book_file(book)
    other = dataclasses.replace(base, book=dataclasses.replace(base.book, name="another book"))
    fresh = account_loaded(other, ExchangeChoice.PAPER, journal)
    assert fresh.loaded is other and "has none for book 'another book'" in fresh.source


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    """A loopback emulator that `fbr ... --exchange binanceusdm` talks to, keys in the environment."""
    with cli_emulator(monkeypatch, "one-state-key", "one-state-secret") as emu:
        yield emu


def test_solve_and_whatif_read_the_binance_account(emu: BinanceEmulator, book: Path,
                                                   tmp_path: Path) -> None:
    journal = str(tmp_path / "j.sqlite")
    before = _invoke_json("solve", str(book), "--exchange", "binanceusdm")
    assert before["holdings_source"] == "binanceusdm account" and len(before["trades"]) == 3
    out = _invoke_json("execute", str(book), "--exchange", "binanceusdm", "--live", "--journal",
                       journal)
    assert out["report"]["complete"]
    n_orders = len(emu.requests_to("/fapi/v1/order", "POST"))
    sol = _invoke_json("solve", str(book), "--exchange", "binanceusdm")
    steps = {p["symbol"]: p["contracts"] for p in out["plan"]["legs"]}
    assert all(abs(t["contracts"]) < 1e-9 for t in sol["trades"]), (sol["trades"], steps)
    assert _targets(sol) == pytest.approx(out["plan"]["target"], abs=1e-9)
    wi = _invoke_json("whatif", str(book), "--exchange", "binanceusdm", "--shock", "BTC=-10%")
    assert wi["positions"] == pytest.approx(out["plan"]["target"], abs=1e-9)
    assert wi["scenarios"][0]["pnl"]["futures"] > 0  # the short BTC gains
    assert len(emu.requests_to("/fapi/v1/order", "POST")) == n_orders  # solve/whatif send nothing
    for doc in (before, sol, wi):
        assert "one-state-secret" not in json.dumps(doc)


def test_the_dashboards_whatif_reads_the_binance_account(emu: BinanceEmulator, book: Path,
                                                         tmp_path: Path) -> None:
    """The dashboard's what-if shocks the exchange account, as `fbr whatif --exchange
    binanceusdm` and the dashboard's own status read it (it shocked the book file's holdings:
    NAV 13,000 and no position)."""
    from starlette.testclient import TestClient

    from fbr.web.app import create_app
    from fbr.web.state import DashboardState, ServeConfig

    emu.set_position("BTCUSDT", -0.017, 61_000.0)
    emu.set_position("ETHUSDT", 0.25, 2_900.0)
    emu.balance = 2_500.5
    cli = _invoke_json("whatif", str(book), "--exchange", "binanceusdm", "-s", "BTC=-30%")
    state = DashboardState(ServeConfig(book=book, exchange=ExchangeChoice.BINANCEUSDM,
                                       journal=tmp_path / "none.sqlite"))
    web = TestClient(create_app(state), base_url="http://127.0.0.1")
    got = web.get("/api/whatif", params={"shock": "BTC=-30%"}).json()
    want = cli["scenarios"][0]
    assert cli["positions"] and want["nav_before"] != pytest.approx(13_000.0)
    for key in ("nav_before", "nav_after", "tracking_error_before", "tracking_error_after"):
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
