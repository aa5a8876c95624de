"""The readers of a paper account count the funding intervals its ``fbr run`` loop uses.

A paper loop on an exchange's prices (``[run] prices = "binanceusdm"``, ``LivePaperGateway``) pays
and counts funding at the exchange's stated intervals (executor/paper_feed.py). ``fbr status``,
``fbr solve --exchange paper``, ``fbr whatif --exchange paper`` and the dashboard read the same
paper account; they must count the same settlements, not the book file's 8 h. Here a fake price
source states 4 h for SOL (and nothing for BTC and ETH, which keep the book's 8 h); the loop's
venue is built by ``fbr.run_wiring.paper_venue`` and reads its instruments once, as the loop does
at its first read. Expected values by hand."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fbr.cli import app
from fbr.run_config import RunConfig, load_run_file
from models.book import Book
from models.instruments import FuturesContract
from models.market import MarketSnapshot

#: the book's funding rates (fraction per settlement) and the carry horizon (days)
RATES = {"BTC-PERP": 1e-4, "ETH-PERP": 2e-4, "SOL-PERP": 5e-4}
HORIZON_DAYS = 2.0
BOOK = """[book]
name = "paper intervals"
cash = 3000.0
[targets]
BTC = 0.50
ETH = 0.30
SOL = 0.20
[spot]
BTC = 0.1
ETH = 1.0
SOL = 10.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 10.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
SOL = 150.0
[market.funding]
"BTC-PERP" = 1e-4
"ETH-PERP" = 2e-4
"SOL-PERP" = 5e-4
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95
[costs]
trading = false
impact = false
carry = true
gamma_fund = 1e-9
horizon_days = 2
[constraints]
margin = false
"""


class StatedSource:
    """A price source that states SOLUSDT's funding interval, 4 h, and no other (its market is
    the book file's)."""

    venue = "fake"

    def exchange_symbol(self, contract: FuturesContract) -> str:
        return f"{contract.underlying}USDT"

    def funding_hours(self, symbols: Iterable[str]) -> dict[str, float]:
        return {s: 4.0 for s in symbols if s == "SOLUSDT"}

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        return fallback


def _run_config(tmp: Path, prices: str) -> RunConfig:
    (tmp / "book.toml").write_text(BOOK, encoding="utf-8")
    run = tmp / "run.toml"
    run.write_text('book = "book.toml"\n[[policies]]\nkind = "naive_futures"\nband = "1%"\n'
                   f'name = "naive"\n[run]\nexchange = "paper"\nprices = "{prices}"\n',
                   encoding="utf-8")
    return load_run_file(run)


def _loop_reads(tmp: Path, journal: Path, prices: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's paper venue (``fbr run``'s constructor) on :class:`StatedSource`'s prices (or
    the book file's), its instruments read once (the loop's first read), then closed."""
    from fbr import paper_prices, run_wiring

    monkeypatch.setattr(paper_prices, "public_gateway", lambda *a, **k: StatedSource())
    cfg = _run_config(tmp, prices)
    opened = run_wiring.paper_venue(cfg, journal)
    opened.started()  # the loop holds its run lock
    try:
        inst = opened.venue.gateway.instruments(cfg.backtest.loaded.book)
        assert inst["SOL-PERP"].contract.funding_interval_h == (4.0 if prices != "book" else 8.0)
    finally:
        opened.close()


def _invoke_json(*args: str) -> dict[str, Any]:
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The journal of a paper loop on :class:`StatedSource`'s prices, after its first read."""
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    path = tmp_path / "j.sqlite"
    _loop_reads(tmp_path, path, "binanceusdm", monkeypatch)
    return path


def test_solve_on_the_paper_account_counts_the_loop_s_4h(tmp_path: Path, journal: Path) -> None:
    """``fbr solve --exchange paper``: the carry over 2 days counts 12 SOL settlements (4 h) and 6
    of BTC and ETH (8 h): funding_carry = sum_j x_j r_j 48 / h_j (the book's 8 h: 6 for SOL)."""
    doc = _invoke_json("solve", str(tmp_path / "book.toml"), "--exchange", "paper",
                       "--journal", str(journal))
    assert doc["holdings_source"] == f"paper account (journal {journal}) at binanceusdm prices"
    x = {p["symbol"]: p["notional"] for p in doc["target_positions"]}
    assert abs(x["SOL-PERP"]) > 100.0  # a real SOL position, so its count matters
    hours = {"BTC-PERP": 8.0, "ETH-PERP": 8.0, "SOL-PERP": 4.0}
    hand = sum(x[s] * RATES[s] * HORIZON_DAYS * 24.0 / hours[s] for s in RATES)
    assert doc["costs"]["funding_carry"] == pytest.approx(hand, rel=1e-9)


def test_whatif_on_the_paper_account_counts_six_sol_settlements_a_day(tmp_path: Path,
                                                                      journal: Path) -> None:
    doc = _invoke_json("whatif", str(tmp_path / "book.toml"), "--exchange", "paper",
                       "--journal", str(journal), "--shock", "horizon=1d", "--no-resolve")
    (sc,) = doc["scenarios"]
    assert sc["settlements"] == {"BTC-PERP": 3.0, "ETH-PERP": 3.0, "SOL-PERP": 6.0}


def test_status_and_the_dashboard_read_the_account_at_the_loop_s_intervals(
        tmp_path: Path, journal: Path) -> None:
    """``fbr status`` and the dashboard's book page build the paper gateway with
    ``fbr.status_cli.account_gateway`` and read it with ``account_view`` (status_report): its
    instruments and the account's contracts carry 4 h for SOL-PERP."""
    from executor.journal import Journal
    from executor.workflow import account_view
    from fbr.config import load_book_file
    from fbr.execute_wiring import ExchangeChoice
    from fbr.status_cli import account_gateway

    loaded = load_book_file(tmp_path / "book.toml")
    with Journal(journal) as j:
        gw, acc = account_gateway(loaded, ExchangeChoice.PAPER, j)
        book, _, inst = account_view(gw, acc, loaded.market)
    want = {"BTC-PERP": 8.0, "ETH-PERP": 8.0, "SOL-PERP": 4.0}
    assert {s: i.contract.funding_interval_h for s, i in inst.items()} == want
    assert {c.symbol: c.funding_interval_h for c in book.contracts} == want


def test_a_loop_on_the_book_s_prices_puts_the_book_s_intervals_back(
        tmp_path: Path, journal: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The book file's rates are per its own 8 h: a later loop on them (``prices = "book"``)
    counts 8 h, and so do the readers (6 SOL settlements a day after the loop on the source's
    prices, 3 after the one on the book's)."""
    def sol_a_day() -> float:
        doc = _invoke_json("whatif", str(tmp_path / "book.toml"), "--exchange", "paper",
                           "--journal", str(journal), "--shock", "horizon=1d", "--no-resolve")
        return float(doc["scenarios"][0]["settlements"]["SOL-PERP"])

    assert sol_a_day() == 6.0
    _loop_reads(tmp_path, journal, "book", monkeypatch)
    assert sol_a_day() == 3.0
