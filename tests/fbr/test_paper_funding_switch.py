"""A paper account a loop follows on the book file's prices keeps no funding clock: switched back
to an exchange's prices, its loop starts afresh (its first read pays nothing) rather than pay every
settlement since the exchange loop's last read (a review: a month of them, 90 x 0.75 = 67.50 USD,
at today's rate on today's positions, for a month the account paid no funding).

Book (by hand): short 10 SOL-PERP at 150, exchange funding 0.05% per 8 h (00/08/16 UTC): each
settlement pays the short 10 x 150 x 0.0005 = 0.75 USD. Cash 3,000 USD, no trade anywhere.
2024-06-01 07:30 a loop on the exchange's prices reads the account (its first read); then a loop
on the book file's prices reads it hourly until 2024-07-01 00:15; at 00:30 a loop on the
exchange's prices again: no settlement in (00:15, 00:30], nothing is paid; the 08:00 settlement
after that is (0.75 USD at 08:30)."""

from __future__ import annotations

import dataclasses
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import fbr.paper_prices as paper_prices
from executor.paper_store import PaperStore
from fbr.run_config import load_run_file
from fbr.run_wiring import paper_venue
from models.book import Book
from models.market import MarketSnapshot

BOOK = """[book]
name = "clock"
cash = 3000.0

[targets]
SOL = 1.0

[spot]
SOL = 10.0

[[contracts]]
symbol = "SOL-PERP"
underlying = "SOL"
taker_fee = 0.0005
lot_step = 1e-8
min_notional = 0.0

[[futures]]
symbol = "SOL-PERP"
contracts = -10.0
entry_price = 150.0

[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true

[market.spot]
SOL = 150.0

[risk]
basis_risk = false

[risk.vols]
SOL = 0.9

[costs]
trading = false
carry = false
impact = false

[constraints]
margin = false
"""
RUN = """book = "book.toml"

[data]
source = "synthetic"
seed = 1
days = 60
start = "2024-01-01"

[[policies]]
kind = "naive_futures"
band = 0.01

[backtest]
collateral = false

[run]
exchange = "paper"
interval = "1d"
prices = "{prices}"
"""
T0 = datetime(2024, 6, 1, tzinfo=UTC)


class Source:
    """The exchange's public market: SOL at 150, SOL-PERP funding 0.05% per 8 h."""

    venue = "source"

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        return dataclasses.replace(fallback, funding={"SOL-PERP": 5e-4})


def _cash(journal: Path) -> float:
    with closing(PaperStore(journal, "clock")) as store:
        saved = store.load()
    assert saved is not None
    return saved[1]


def _loop_reads(tmp: Path, prices: str, times: list[datetime]) -> None:
    """One `fbr run` process on ``prices``: its venue, started (lock held), reading at ``times``."""
    (tmp / "run.toml").write_text(RUN.format(prices=prices), encoding="utf-8")
    cfg = load_run_file(tmp / "run.toml")
    opened = paper_venue(cfg, tmp / "journal.sqlite")
    try:
        opened.started()
        for t in times:
            opened.venue.fallback(t)
    finally:
        opened.close()


def test_a_loop_back_on_the_exchange_s_prices_starts_its_funding_afresh(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paper_prices, "public_gateway", lambda *a, **k: Source())
    (tmp_path / "book.toml").write_text(BOOK, encoding="utf-8")
    journal = tmp_path / "journal.sqlite"

    _loop_reads(tmp_path, "binanceusdm", [T0 + timedelta(hours=7.5)])
    assert _cash(journal) == pytest.approx(3000.0, abs=1e-9)

    hourly = [T0 + timedelta(hours=8 + k) for k in range(30 * 24 - 8)] + [
        datetime(2024, 7, 1, 0, 15, tzinfo=UTC)]
    _loop_reads(tmp_path, "book", hourly)
    assert _cash(journal) == pytest.approx(3000.0, abs=1e-9)  # the book loop pays no funding

    _loop_reads(tmp_path, "binanceusdm", [datetime(2024, 7, 1, 0, 30, tzinfo=UTC)])
    # no settlement in (00:15, 00:30]: nothing to pay
    assert _cash(journal) == pytest.approx(3000.0, abs=1e-9)
    _loop_reads(tmp_path, "binanceusdm", [datetime(2024, 7, 1, 8, 30, tzinfo=UTC)])
    assert _cash(journal) == pytest.approx(3000.75, abs=1e-9)
