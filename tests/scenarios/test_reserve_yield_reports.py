"""The HTML report's metrics and the Monte Carlo metrics price the reserve at the yield they are
given (the book's ``[costs] reserve_yield``), not a fixed 4%.

By hand: 1 BTC at a flat 1,000 USD and a 1,000 USD wallet, no position, two daily steps. NAV is
2,000 throughout, so reserve_opportunity_cost_bps = y x sum_t W_{t-1} dt / (mean NAV x years) x 1e4
= y x 1,000 / 2,000 x 1e4 = 5,000 y bp: 500 at y = 10%, 200 at the 4% default.
"""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from optimizer.policies import NoRebalance
from scenarios.backtest_result import BacktestResult
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.montecarlo import MonteCarloSpec, MonteCarloWork, PolicyRun, SimplePolicy, TaskKey
from scenarios.path_bootstrap import BlockBootstrap
from scenarios.path_history import JointHistory, PathFrame
from scenarios.replay import run_backtest
from scenarios.report import render_report

BOOK = Book((SpotAsset("BTC"),), (FuturesContract("BTC-PERP", "BTC"),), spot={"BTC": 1.0},
            targets={"BTC": 1.0}, cash=1000.0)


def _flat_wallet() -> BacktestResult:
    idx = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    path = MarketPath(spot=pd.DataFrame({"BTC": [1000.0] * 3}, index=idx))
    res = run_backtest(BOOK, path, NoRebalance(), collateral=NO_SWEEPS)
    assert res.steps["nav"].tolist() == pytest.approx([2000.0] * 3)
    assert res.steps["wallet"].tolist() == pytest.approx([1000.0] * 3)
    return res


def _table_cell(text: str, policy: str, header: str) -> str:
    """The metrics table's cell of ``policy`` under ``header``."""
    heads = re.findall(r"<th>([^<]*)</th>", text.split("</thead>")[0])
    row = re.search(rf"<th class='policy'>{re.escape(html.escape(policy))}</th>(.*?)</tr>", text)
    assert row is not None
    cells: list[str] = re.findall(r"<td>(.*?)</td>", row.group(1))
    return cells[heads.index(header) - 1]  # the first header is "policy"


@pytest.mark.parametrize(("reserve_yield", "expected"), [(0.10, "500"), (None, "200")])
def test_report_table_prices_the_reserve_at_the_yield_given(tmp_path: Path, reserve_yield: float | None,
                                                            expected: str) -> None:
    """The headline table at the yield given (None: the 4% default)."""
    res = _flat_wallet()
    out = (render_report({"hold": res}, tmp_path / "r.html") if reserve_yield is None
           else render_report({"hold": res}, tmp_path / "r.html", reserve_yield=reserve_yield))
    text = out.html.read_text(encoding="utf-8")
    assert _table_cell(text, "hold", "reserve opportunity cost bps") == expected


def _flat_spec(reserve_yield: float | None) -> MonteCarloSpec:
    history = JointHistory(assets=("BTC",), returns=np.zeros((2, 1)), funding=np.zeros((2, 1, 1)),
                           basis=np.zeros((2, 1)), step=pd.Timedelta(days=1),
                           settle_offsets=(pd.Timedelta(0),))
    frame = PathFrame(start=pd.Timestamp("2024-01-01", tz="UTC"), start_prices={"BTC": 1000.0},
                      contracts=BOOK.contracts)
    spec = MonteCarloSpec(book=BOOK, generator=BlockBootstrap(history, frame, mean_block=1.0),
                          policies=(PolicyRun("hold", SimplePolicy("no_rebalance")),), paths=1,
                          steps=2, seed=0, collateral=NO_SWEEPS)
    return spec if reserve_yield is None else dataclasses.replace(spec, reserve_yield=reserve_yield)


@pytest.mark.parametrize(("reserve_yield", "expected"), [(0.10, 500.0), (None, 200.0)])
def test_montecarlo_prices_the_reserve_at_the_specs_yield(reserve_yield: float | None,
                                                          expected: float) -> None:
    spec = _flat_spec(reserve_yield)
    path = spec.path(0)
    assert len(path.spot) == 3 and path.spot["BTC"].tolist() == pytest.approx([1000.0] * 3)
    out = MonteCarloWork(spec)(TaskKey(0, "hold"))
    assert out.metrics["reserve_opportunity_cost_bps"] == pytest.approx(expected)
