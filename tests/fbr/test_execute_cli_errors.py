"""`fbr execute` exit codes and the wrong inputs a first user hits (issue 10): a journal path that is
a folder or junk, --resume with another book, a dry run on an exchange without keys, an incomplete
execution (exit 4) and an order in doubt (exit 5), and a schema-1 journal read by this fbr."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

EXEC_TESTS = str(Path(__file__).resolve().parents[1] / "executor")
if EXEC_TESTS not in sys.path:
    sys.path.insert(0, EXEC_TESTS)

from binance_emulator import BinanceEmulator, Fault  # noqa: E402
from exec_helpers import cli_emulator  # noqa: E402

from executor.ccxt_gateway import CcxtGateway  # noqa: E402
from executor.journal import Journal  # noqa: E402
from executor.journal_schema import SCHEMA_VERSION  # noqa: E402
from fbr.cli import app  # noqa: E402
from models.errors import ExitCode  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
SEED2 = ROOT / "examples" / "seed_example_2.toml"
runner = CliRunner()


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceEmulator]:
    with cli_emulator(monkeypatch, "err-key", "err-secret") as emu:
        yield emu


def _run(*args: str) -> tuple[int, dict[str, Any]]:
    res = runner.invoke(app, [*args, "--json"])
    return res.exit_code, json.loads(res.stdout)


@pytest.mark.parametrize("kind", ["folder", "junk", "under_a_file"])
def test_a_bad_journal_path_is_one_message_before_any_work(tmp_path: Path, kind: str) -> None:
    if kind == "folder":
        journal = tmp_path / "dir"
        journal.mkdir()
    elif kind == "junk":
        journal = tmp_path / "junk.sqlite"
        journal.write_bytes(b"\x00\x01 not a database at all" * 40)
    else:
        (tmp_path / "file").write_text("x")
        journal = tmp_path / "file" / "j.sqlite"
    res = runner.invoke(app, ["execute", str(SEED), "--exchange", "paper", "--journal",
                              str(journal)])
    assert res.exit_code == ExitCode.BAD_INPUT, res.output
    assert str(journal) in res.stderr and "Fix:" in res.stderr
    assert "OperationalError" not in res.output and "Traceback" not in res.output
    if kind == "junk":  # nothing was lost: the file is untouched
        assert journal.read_bytes() == b"\x00\x01 not a database at all" * 40


def test_resume_with_another_book_is_refused_by_name(tmp_path: Path) -> None:
    journal = str(tmp_path / "j.sqlite")
    code, out = _run("execute", str(SEED), "--exchange", "paper", "--journal", journal)
    assert code == 0
    res = runner.invoke(app, ["execute", str(SEED2), "--resume", out["plan_id"], "--journal",
                              journal])
    assert res.exit_code == ExitCode.BAD_INPUT, res.output
    assert "was made for book" in res.stderr and str(SEED2) in res.stderr
    assert "KeyError" not in res.output


def test_a_dry_run_on_an_exchange_says_reading_the_account_needs_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FBR_BINANCEUSDM_API_KEY", raising=False)
    monkeypatch.delenv("FBR_BINANCEUSDM_SECRET", raising=False)
    res = runner.invoke(app, ["execute", str(SEED), "--exchange", "binanceusdm"])
    assert res.exit_code == ExitCode.BAD_INPUT
    assert "reads the account" in res.stderr and "--exchange dry-run" in res.stderr
    assert "live trading" not in res.stderr


def test_an_incomplete_execution_exits_4_naming_the_gap(emu: BinanceEmulator, tmp_path: Path) -> None:
    emu.inject(Fault.INSUFFICIENT_MARGIN, path="/fapi/v1/order", method="POST")
    code, out = _run("execute", str(SEED), "--exchange", "binanceusdm", "--live", "--journal",
                     str(tmp_path / "j.sqlite"))
    assert code == ExitCode.INCOMPLETE and out["exit_code"] == 4
    assert out["status"] == "incomplete" and not out["report"]["complete"]
    first = out["plan"]["legs"][0]["symbol"]
    assert set(out["report"]["gaps"]) == {first}
    assert any(m.startswith(f"{first}:") for m in out["report"]["messages"])


def test_an_order_in_doubt_exits_5_naming_the_leg(emu: BinanceEmulator, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = CcxtGateway.create_order
    emu.lookup_lag_s = 1e9  # the order never shows up in a lookup

    def blind(self: CcxtGateway, leg: Any) -> Any:
        for _ in range(400):  # and the account cannot be read after the send
            emu.inject(Fault.HTTP_503, path="/fapi/v3/positionRisk", method="GET")
        emu.inject(Fault.DISCONNECT_AFTER_ACCEPT, path="/fapi/v1/order", method="POST")
        return real(self, leg)

    monkeypatch.setattr(CcxtGateway, "create_order", blind)
    code, out = _run("execute", str(SEED), "--exchange", "binanceusdm", "--live", "--journal",
                     str(tmp_path / "j.sqlite"))
    assert code == ExitCode.UNKNOWN and out["status"] == "unknown"
    leg = out["plan"]["legs"][0]
    assert any(leg["client_id"] in m for m in out["report"]["messages"])
    assert len(emu.requests_to("/fapi/v1/order", "POST")) == 1  # nothing more was sent


def test_a_schema_1_journal_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE plans (plan_id TEXT PRIMARY KEY, venue TEXT NOT NULL, book_name TEXT NOT NULL,
            created_ms INTEGER NOT NULL, status TEXT NOT NULL, plan_json TEXT NOT NULL,
            book_path TEXT NOT NULL DEFAULT '');
        CREATE TABLE orders (plan_id TEXT NOT NULL REFERENCES plans(plan_id), leg INTEGER NOT NULL,
            client_id TEXT NOT NULL UNIQUE, symbol TEXT NOT NULL, side TEXT NOT NULL,
            contracts REAL NOT NULL, reduce_only INTEGER NOT NULL, status TEXT NOT NULL,
            exchange_id TEXT, filled REAL NOT NULL DEFAULT 0, average REAL,
            fee REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '', updated_ms INTEGER NOT NULL,
            PRIMARY KEY (plan_id, leg));
        INSERT INTO plans VALUES ('p1', 'paper', 'b', 1, 'open', '{}', '');
        INSERT INTO orders (plan_id, leg, client_id, symbol, side, contracts, reduce_only, status,
            updated_ms) VALUES ('p1', 0, 'fbrp1-000', 'BTC-PERP', 'buy', 0.1, 0, 'sending', 1);
    """)
    con.close()
    with Journal(path) as j:
        assert j.schema_version == SCHEMA_VERSION == 2
        row = j.orders("p1")[0]
        assert row.position_before is None and row.sent_ms is None  # unknown: never "not placed"
        assert j.open_plans("") == ["p1"]


def test_an_exchange_refusal_is_one_message(emu: BinanceEmulator, tmp_path: Path) -> None:
    """An account in hedge position mode: refused before any order, one message with the fix."""
    emu.set_hedge_mode(True)
    res = runner.invoke(app, ["execute", str(SEED), "--exchange", "binanceusdm", "--live",
                              "--journal", str(tmp_path / "j.sqlite")])
    assert res.exit_code == ExitCode.BAD_INPUT, res.output
    assert "hedge position mode" in res.stderr and "Fix:" in res.stderr
    assert "Traceback" not in res.output
    assert emu.requests_to("/fapi/v1/order", "POST") == []


def _spot_trading_book(tmp_path: Path) -> Path:
    """Seed example 1 with the spot leg on and 50 bp perpetuals: spot (10 bp) is the cheaper way
    back to target, so the solution trades spot."""
    text = SEED.read_text().replace("trading = false", "trading = true")
    text = text.replace("leverage = 10.0", 'leverage = 10.0\ntaker_fee = "50bp"')
    book = tmp_path / "hybrid.toml"
    book.write_text(text + "\n[solver]\nspot_leg = true\n")
    return book


@pytest.mark.parametrize("mode", [(), ("--exchange", "paper")])
def test_a_solution_that_trades_spot_is_refused_before_any_order(tmp_path: Path,
                                                                 mode: tuple[str, ...]) -> None:
    """fbr sends futures orders only: a plan of the futures alone would report success and leave
    the book off target. Refused (exit 6) with the spot trades named, nothing journalled."""
    book = _spot_trading_book(tmp_path)
    solved = runner.invoke(app, ["solve", str(book), "--json"])
    assert solved.exit_code == 0, solved.output
    spot = json.loads(solved.stdout)["spot_trades"]
    assert spot, "the case should trade spot"
    journal = tmp_path / "j.sqlite"
    code, out = _run("execute", str(book), *mode, "--journal", str(journal))
    assert code == ExitCode.REFUSED == out["exit_code"]
    assert "trades spot" in out["error"] and "futures orders only" in out["error"]
    assert "Fix:" in out["error"] and "spot_leg" in out["error"]
    for t in spot:
        assert f"{t['asset']} {t['notional']:+,.2f} USD" in out["error"]
    if journal.exists():
        with Journal(journal) as j:
            assert j.plan_ids() == []
