"""`fbr status`'s funding model (no income history, no journalled funding): the settlements since
the last rebalance are the funding times on the UTC grid (00/08/16 for 8 h) that passed, as the
exchange pays them (and as the paper feed counts them), not floor(hours elapsed / 8), which is off
by one either way depending on where the rebalance sits in the 8 h window (a review)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import executor.status as status_mod
from executor.journal import Journal
from executor.paper import PaperGateway
from executor.plan import book_instruments
from executor.status import funding_view
from fbr.cli import app
from fbr.config import load_book_file

BOOK = """
[book]
name = "funding model"
cash = 5000.0
[targets]
BTC = 1.0
[spot]
BTC = 0.1
[contract_defaults]
lot_step = 0.001
min_notional = 0.0
[[futures]]
symbol = "BTC-PERP"
contracts = -0.05
entry_price = 60000.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
[market.funding]
BTC-PERP = 0.001
[risk]
basis_risk = false
[risk.vols]
BTC = 0.55
[costs]
trading = false
carry = false
[constraints]
margin = false
"""
EIGHT_H_MS = 8 * 3_600_000


@pytest.mark.parametrize(("offset_ms", "settlements"), [
    (60_000, 1),                  # a minute past the next grid time: 1 paid, under 8 h elapsed
    (EIGHT_H_MS - 60_000, 1),     # a minute before the one after
    (EIGHT_H_MS + 60_000, 2),     # past two grid times
])
def test_the_funding_model_counts_the_grid_times_passed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset_ms: int, settlements: int) -> None:
    """Short 0.05 BTC-PERP at 60,000 (3,000 USD), +0.1% per 8 h: +3.00 USD to the short a
    settlement; 'now' is ``offset_ms`` after the first 8 h grid time following the rebalance."""
    book = tmp_path / "book.toml"
    book.write_text(BOOK, encoding="utf-8")
    journal = tmp_path / "j.sqlite"
    res = CliRunner().invoke(app, ["execute", str(book), "--exchange", "paper", "--journal",
                                   str(journal)])
    assert res.exit_code == 0, res.output
    with Journal(journal) as j:
        last = j.last_rebalance("paper", "funding model")
    assert last is not None
    now = (last.time_ms // EIGHT_H_MS + 1) * EIGHT_H_MS + offset_ms
    monkeypatch.setattr(status_mod, "now_ms", lambda: now)
    loaded = load_book_file(book)
    with Journal(journal) as j:
        fv = funding_view(loaded.book, loaded.market, PaperGateway(loaded.book, loaded.market), j,
                          book_instruments(loaded.book))
    assert fv.source.startswith("model")
    assert fv.total == pytest.approx(0.05 * 60_000.0 * 0.001 * settlements)
