"""``fbr run`` on the paper venue keeps one gateway for the loop's whole life. A manual
``fbr execute BOOK --exchange paper`` on the same journal between two cycles (which the README
allows) trades the paper account in the journal file; the loop's next cycle must read that account,
not the one it read when it started: it then has nothing left to trade, and the account's positions
stay the sum of its own trades (the loop's fills used to overwrite the account with its stale copy,
erasing the manual trades).

Figures by hand from examples/seed_example_1.toml (spot 0.1 BTC, 1 ETH, 10 SOL at 60,000 / 2,500 /
150, targets 50/30/20, costs and constraints off, lot step 1e-8): the hedge is (w* x 10,000 - spot
USD) / price, i.e. BTC -1,000 / 60,000, ETH +500 / 2,500, SOL +500 / 150 contracts."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from executor.live import PlanBasis
from executor.plan import PlanOptions
from executor.workflow import prepare_plan
from fbr.cli import app
from fbr.run_config import RunConfig, load_run_file
from fbr.run_wiring import OpenVenue, paper_venue

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
HEDGE = {"BTC-PERP": -1000.0 / 60_000.0, "ETH-PERP": 500.0 / 2500.0, "SOL-PERP": 500.0 / 150.0}
LOT = 1e-8


def _run_file(tmp: Path) -> RunConfig:
    (tmp / "book.toml").write_text(SEED.read_text())
    f = tmp / "run.toml"
    f.write_text('book = "book.toml"\n[data]\nsource = "synthetic"\nseed = 1\ndays = 30\n'
                 'start = "2024-01-01"\n[[policies]]\nkind = "optimized"\nname = "opt"\n'
                 '[backtest]\ncollateral = false\n[run]\nexchange = "paper"\n')
    return load_run_file(f)


def _manual_execute(tmp: Path, journal: Path) -> dict[str, Any]:
    """``fbr execute book.toml --exchange paper --journal J --json``, in process."""
    res = CliRunner().invoke(app, ["execute", str(tmp / "book.toml"), "--exchange", "paper",
                                   "--journal", str(journal), "--json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _stored(journal: Path) -> tuple[dict[str, float], dict[str, float], int]:
    """(positions, sum of trades per contract, number of trades) of the paper account."""
    c = sqlite3.connect(journal)
    try:
        pos = dict(c.execute("SELECT symbol, contracts FROM paper_positions").fetchall())
        trades: dict[str, float] = {}
        rows = c.execute("SELECT symbol, contracts FROM paper_trades").fetchall()
    finally:
        c.close()
    for s, q in rows:
        trades[s] = trades.get(s, 0.0) + q
    return pos, trades, len(rows)


def _cycle_plan(cfg: RunConfig, opened: OpenVenue) -> Any:
    """What a loop cycle plans: the account read through the loop's gateway."""
    loaded = cfg.backtest.loaded
    return prepare_plan(opened.venue.gateway, loaded.book, loaded.market, loaded.risk,
                        loaded.settings, PlanOptions(venue="paper"))


def _at_hedge(positions: dict[str, float]) -> None:
    assert set(positions) == set(HEDGE)
    for s, q in HEDGE.items():
        assert abs(positions[s] - q) <= LOT + 1e-12, (s, positions)


def test_the_loop_reads_a_manual_execute_made_between_its_cycles(tmp_path: Path) -> None:
    cfg = _run_file(tmp_path)
    journal = tmp_path / "j.sqlite"
    opened = paper_venue(cfg, journal)  # the loop starts on the (flat) paper account
    try:
        _manual_execute(tmp_path, journal)
        pos, _, _ = _stored(journal)
        _at_hedge(pos)
        prep = _cycle_plan(cfg, opened)
        seen = {s: p.contracts for s, p in prep.book.futures.items()}
        assert seen == pytest.approx(pos, abs=1e-12)  # the stored account, not a stale copy
        assert list(prep.plan.legs) == []  # already at the hedge: nothing left to trade
    finally:
        opened.close()


def test_the_loop_s_cycle_does_not_overwrite_the_manual_trades(tmp_path: Path) -> None:
    cfg = _run_file(tmp_path)
    journal = tmp_path / "j.sqlite"
    opened = paper_venue(cfg, journal)
    try:
        _manual_execute(tmp_path, journal)
        _, _, n_manual = _stored(journal)
        prep = _cycle_plan(cfg, opened)
        loaded = cfg.backtest.loaded
        assert opened.venue.executor is not None
        opened.venue.executor(PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk)
                              ).execute(prep.plan)
    finally:
        opened.close()
    pos, trades, n = _stored(journal)
    assert trades == pytest.approx({s: pos.get(s, 0.0) for s in trades}, abs=1e-12)
    assert set(pos) <= set(trades)  # every position comes from the account's own trades
    _at_hedge(pos)  # the hedge once, not twice
    assert n == n_manual  # the loop sent nothing
