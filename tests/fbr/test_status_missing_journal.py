"""``fbr status --exchange paper`` with a journal that does not exist: like ``fbr solve`` and
``fbr whatif`` (README "One state") it creates nothing and says that the book file's holdings
stand in for the paper account; it used to create the folder and the SQLite file and report a
fresh paper account without a word (a mistyped --journal went unnoticed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from fbr.cli import app

ROOT = Path(__file__).resolve().parents[2]
SEED = str(ROOT / "examples" / "seed_example_1.toml")
runner = CliRunner()


def _json(*args: str) -> dict[str, Any]:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_status_paper_with_a_missing_journal_creates_nothing_and_says_so(tmp_path: Path) -> None:
    """A journal under a folder that does not exist: status exits 0 on the book file's holdings,
    creates neither the folder nor the file, and alerts with solve's own words."""
    journal = tmp_path / "typo" / "journal.sqlite"
    solve = _json("solve", SEED, "--exchange", "paper", "--journal", str(journal))
    status = _json("status", SEED, "--exchange", "paper", "--journal", str(journal))
    assert not journal.parent.exists()
    note = f"holdings: {solve['holdings_source']}"
    assert note == (f"holdings: paper account (journal {journal} does not exist yet: the book "
                    f"file's holdings)")
    assert status["alerts"] == [note]
    assert status["rebalance_due"] is True  # the book file's drifted holdings (seed example 1)
    text = runner.invoke(app, ["status", SEED, "--exchange", "paper", "--journal", str(journal)])
    assert text.exit_code == 0 and "does not exist yet" in " ".join(text.stdout.split())
    assert not journal.parent.exists()


def test_status_paper_with_the_journals_account_has_no_holdings_alert(tmp_path: Path) -> None:
    """After a paper execute the journal holds the account: no note, the book is on target."""
    journal = str(tmp_path / "j.sqlite")
    _json("execute", SEED, "--exchange", "paper", "--journal", journal)
    status = _json("status", SEED, "--exchange", "paper", "--journal", journal)
    assert status["alerts"] == [] and status["rebalance_due"] is False
