"""fbr run --simulate steps the paper exchange through every path step, also those between two of
the loop's wake-ups (``check_every`` longer than the path's step): a liquidation Binance and
``fbr backtest`` apply at such a step happens there (it was missed: the exchange jumped from one
wake-up's step to the next, and the account survived a wipe-out). Figures by hand below."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from executor.alerts import AlertHub
from fbr.backtest_run import backtest_options, build_policy
from fbr.run_config import load_run_file
from fbr.run_sim import simulate
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

BOOK = """
[book]
name = "skip"
cash = 600.0
[targets]
BTC = "50%"
ETH = "50%"
[spot]
ETH = 100.0
[contract_defaults]
lot_step = 0
min_notional = 0.0
leverage = 20
taker_fee = "5bp"
[market]
time = 2024-01-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 100.0
ETH = 100.0
[risk]
basis_risk = false
correlation = 0.5
[risk.vols]
BTC = 0.6
ETH = 0.6
[costs]
trading = false
carry = false
impact = false
[constraints]
margin = false
"""

RUN = """
book = "{book}"
[data]
source = "synthetic"
seed = 1
days = 3
start = "2024-01-01"
[[policies]]
kind = "naive_futures"
period = "1D"
name = "p"
[backtest]
collateral = false
risk_model = "book"
[run]
exchange = "paper"
gate = false
interval = "2d"
max_order_usd = 1e12
max_plan_usd = 1e12
[triggers]
margin_ratio = false
margin_warn = false
funding_alert = false
check_every = "2d"
"""


def test_liquidation_on_a_step_between_wakeups_is_applied(tmp_path: Path) -> None:
    (tmp_path / "book.toml").write_text(BOOK, encoding="utf-8")
    (tmp_path / "run.toml").write_text(RUN.format(book="book.toml"), encoding="utf-8")
    cfg = load_run_file(tmp_path / "run.toml")
    idx = pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"], tz="UTC")
    # BTC 100 -> 80 -> 100, ETH flat at 100
    path = MarketPath(spot=pd.DataFrame({"BTC": [100.0, 80.0, 100.0], "ETH": [100.0] * 3},
                                        index=idx))
    sim = simulate(cfg, path, tmp_path / "j.sqlite", tmp_path / "state", AlertHub())
    # By hand: at 01-02 (the first wake-up, 2024-01-02 is on the 2 d epoch grid) the naive overlay
    # is long 50 BTC-PERP ($5,000) and short 50 ETH-PERP ($5,000) at 1 bp half spread, 5 bp fee:
    # wallet 600 - 5.00 - 1.00 = 594. On 01-03 BTC = 80: collateral = 594 - 50 x 20 = -406 <=
    # maintenance 0.5% x (4,000 + 5,000) = 45: Binance liquidates at 01-03, and so does the backtest.
    bt = run_backtest(cfg.backtest.loaded.book, path, build_policy(cfg.policy, cfg.backtest, path),
                      **backtest_options(cfg.backtest))
    assert bool(bt.steps["liquidated"].iloc[1])  # the backtest's step 01-03
    times = [pd.Timestamp(e.time) for e in sim.liquidations]
    assert times == [idx[1]], times
    (event,) = sim.liquidations
    assert event.contracts == {"BTC-PERP": 50.0, "ETH-PERP": -50.0}
    assert event.collateral == pytest.approx(594.0 - 50 * 20, abs=1e-6)

