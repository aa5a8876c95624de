"""`fbr execute` on the paper venue when the journal fails or the book changed before a resume
(a review of crash recovery): a journal write that fails after an order went out stops the run
with exit 5, naming the plan and `--resume`, and the resume finishes the plan with each trade
sent once; a resume whose book now maps a contract to another exchange instrument (a quarterly
rolled under the same name) is refused before anything is sent."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from executor.journal import Journal
from executor.paper import PaperGateway
from fbr.cli import app

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
runner = CliRunner()


class Crash(BaseException):
    """Stands for the process dying."""


def _plan_id(journal: Path) -> str:
    con = sqlite3.connect(journal)
    (pid,) = con.execute("SELECT plan_id FROM plans").fetchone()
    con.close()
    return str(pid)


def _traded(journal: Path, pid: str) -> dict[str, float]:
    """Signed contracts filled per contract, from the journal's fills."""
    con = sqlite3.connect(journal)
    rows = con.execute("SELECT o.symbol, o.side, f.contracts FROM fills f JOIN orders o ON "
                       "o.plan_id = f.plan_id AND o.leg = f.leg WHERE f.plan_id = ?", (pid,)).fetchall()
    con.close()
    out: dict[str, float] = {}
    for sym, side, q in rows:
        out[sym] = out.get(sym, 0.0) + (q if side == "buy" else -q)
    return out


def test_a_journal_write_failing_after_a_fill_stops_with_exit_5_and_the_resume_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "j.sqlite"
    real = Journal.record_state

    def full(self: Journal, *a: Any, **k: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Journal, "record_state", full)  # the first fill cannot be journalled
    res = runner.invoke(app, ["execute", str(SEED), "--exchange", "paper", "--journal",
                              str(journal), "--json"])
    pid = _plan_id(journal)
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert res.exit_code == 5, doc  # the README's code for a plan stopped with an order in doubt
    assert pid in doc["error"] and f"--resume {pid}" in doc["error"]
    monkeypatch.setattr(Journal, "record_state", real)
    again = runner.invoke(app, ["execute", "--resume", pid, "--journal", str(journal), "--json"])
    assert again.exit_code == 0, again.output
    out = json.loads(again.stdout)
    assert out["report"]["complete"]
    plan = out["plan"]  # every contract traded once, from start to target
    assert _traded(journal, pid) == pytest.approx(
        {s: plan["target"][s] - plan["start"][s] for s in plan["target"]})


DATED = """
[[contracts]]
symbol = "BTC-Q"
underlying = "BTC"
kind = "dated"
expiry = {expiry}

[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"

[[contracts]]
symbol = "SOL-PERP"
underlying = "SOL"
"""


def _dated_book(path: Path, expiry: str) -> Path:
    """The seed book (no [[contracts]]: one perpetual per asset) with BTC hedged by a quarterly."""
    text = SEED.read_text(encoding="utf-8")
    cut = text.index("\n[market]")
    path.write_text(text[:cut] + DATED.format(expiry=expiry) + text[cut:], encoding="utf-8")
    return path


def test_a_resume_on_a_contract_now_naming_another_instrument_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = _dated_book(tmp_path / "book.toml", "2024-06-28T08:00:00Z")
    journal = tmp_path / "j.sqlite"

    def crash(self: PaperGateway, leg: Any) -> Any:
        raise Crash()

    monkeypatch.setattr(PaperGateway, "create_order", crash)
    with pytest.raises(Crash):
        runner.invoke(app, ["execute", str(book), "--exchange", "paper", "--journal", str(journal)],
                      catch_exceptions=False)
    monkeypatch.undo()
    pid = _plan_id(journal)
    _dated_book(book, "2024-09-27T08:00:00Z")  # the quarterly rolled under the same name
    res = runner.invoke(app, ["execute", "--resume", pid, "--journal", str(journal)])
    assert res.exit_code == 2, res.output
    assert "BTC-Q (BTC/USDT:USDT-240628 in the plan, BTC/USDT:USDT-240927 now)" in res.stderr
    assert _traded(journal, pid) == {}  # nothing sent
