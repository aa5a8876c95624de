"""``fbr run`` on the paper venue at the book file's prices (``prices = "book"``, the examples'
default) holding a dated contract through its expiry settles it there, as the paper exchange
promises ("a dated position settles once the market reaches its expiry") and ``--simulate`` does.
The loop's feed gave the paper exchange the book file's market at the book file's time, so the
expiry never came: the expired position stayed, and every later cycle's plan was refused (a failed
cycle and a CRITICAL alert at every cycle). The venue is built by ``fbr.run_wiring.paper_venue``
as ``fbr run`` builds it; only the clock is simulated. Nothing here is random (the synthetic path
only seeds the policy's inputs)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from executor.alerts import AlertHub, MemorySink
from executor.plan import PlanOptions, with_book_settings
from executor.run_loop import Runner
from executor.run_settings import RunSettings
from executor.run_store import RunStore
from executor.schedule import SimClock
from fbr.backtest_config import build_path
from fbr.run_config import load_run_file
from fbr.run_wiring import loop_policy, paper_venue

BOOK = """[book]
name = "dated review"
cash = 3000.0

[targets]
BTC = 0.5
ETH = 0.3
SOL = 0.2

[spot]
BTC = 0.1
ETH = 1.0
SOL = 10.0

[contract_defaults]
lot_step = 0.001
min_notional = 0.0
leverage = 10

[[contracts]]
symbol = "BTC-Q"
underlying = "BTC"
kind = "dated"
expiry = 2024-06-03T08:00:00Z

[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"

[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"

[[contracts]]
symbol = "SOL-PERP"
underlying = "SOL"

[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true

[market.spot]
BTC = 70000.0
ETH = 3000.0
SOL = 200.0

[risk]
basis_risk = false
correlation = 0.7

[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95

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
interval = "7d"
gate = false

[triggers]
check_every = "6h"
"""
T0 = datetime(2024, 6, 1, tzinfo=UTC)
EXPIRY = datetime(2024, 6, 3, 8, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The account locks in ``tmp_path``."""
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))


def test_a_dated_position_held_through_expiry_settles_on_paper(tmp_path: Path) -> None:
    (tmp_path / "book.toml").write_text(BOOK, encoding="utf-8")
    (tmp_path / "run.toml").write_text(RUN, encoding="utf-8")
    cfg = load_run_file(tmp_path / "run.toml")
    bt = dataclasses.replace(cfg.backtest, risk_model="book")
    policy = loop_policy(cfg, bt, build_path(bt))
    sink = MemorySink()
    hub = AlertHub([sink], book=cfg.backtest.loaded.book.name)
    opened = paper_venue(cfg, tmp_path / "journal.sqlite", hub)
    loaded = cfg.backtest.loaded
    settings = RunSettings(schedule=cfg.schedule, mode="paper",
                           health_file=tmp_path / "state" / "health.json",
                           kill_file=tmp_path / "state" / "KILL", triggers=cfg.triggers,
                           limits=cfg.limits, gate=cfg.gate, costs=loaded.settings.costs)
    options = with_book_settings(PlanOptions(venue=opened.venue.gateway.venue), loaded.settings)
    clock = SimClock(T0, end=T0 + timedelta(days=14))
    runner = Runner(opened.venue, loaded.book, loaded.risk, policy, settings, options, clock, hub)
    runner.run()
    rs = RunStore(tmp_path / "journal.sqlite", runner.account)
    rows = rs.cycles()
    rs.close()
    book_now = opened.venue.gateway.account(loaded.book, opened.venue.fallback(clock.now()))
    opened.close()
    # the start cycle (2.3 days before expiry) hedges BTC through BTC-Q
    # (by hand: V = 7,000 + 3,000 + 2,000 = 12,000; BTC gap
    # 6,000 - 7,000 = -1,000 USD = -0.014 contracts at 70,000 after the 0.001 lot)
    assert rows[0].action == "traded"
    # after 2024-06-03 08:00 the dated position must be gone (settled at expiry, as the paper
    # exchange promises: 'A dated position settles once the market reaches its expiry')
    assert book_now.futures.get("BTC-Q") is None or book_now.futures["BTC-Q"].contracts == 0.0
    # and no later cycle fails on it
    later = [c for c in rows if c.time > EXPIRY]
    assert later and all(c.action != "failed" for c in later), [(c.time, c.message) for c in later]
