"""The replay split into small steps (issue 11, build item 1) decides and records exactly what the
one-function replay did: every recorded frame of ``scenarios.replay.run_backtest`` equals, bit for
bit, that of the frozen copy in ``tests/scenarios/replay_reference.py`` (test-only code).

Cases: every policy of every example backtest file under examples/, every policy kind of
``fbr.backtest_config`` (including the optimiser with a trailing risk model and an explicit
collateral band), a rolled chain of dated futures with a settlement at spot, a liquidation (hand
case and a drained wallet on a long synthetic path), collateral sweeps in and out, ADV-driven
impact, irregular funding, and the engine steps on their own. Only ``steps.solve_time_ms`` (wall
clock) is left out of the comparison.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fbr.backtest_config import BacktestConfig, build_path, load_backtest_file, parse_backtest
from fbr.backtest_run import backtest_options, build_policy
from models.book import Book
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.margin import MarginModel
from models.market import MarketSnapshot
from models.synthetic import generate_history
from optimizer.policies import NaiveFutures, NoRebalance, Policy, TargetHoldings, current_holdings
from scenarios.backtest_result import BacktestResult
from scenarios.collateral import NO_SWEEPS, CollateralPolicy
from scenarios.dated_basis import BasisModel, with_dated_marks
from scenarios.market_path import MarketPath
from scenarios.montecarlo import PolicyRun
from scenarios.replay import run_backtest
from scenarios.replay_state import ReplayState, value_state
from scenarios.replay_steps import check_margin, liquidate, pay_funding
from scenarios.rolls import RollingPolicy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: Wall-clock columns: the only recorded values allowed to differ between two runs.
WALL_CLOCK = {"steps": ["solve_time_ms"]}
D0 = pd.Timestamp("2025-01-01", tz="UTC")


def _load_reference() -> ModuleType:
    name = "replay_reference_frozen"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("replay_reference.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


REFERENCE = _load_reference()


def assert_identical(new: BacktestResult, ref: BacktestResult) -> None:
    """Every recorded frame equal to the bit (dtypes, index, columns and values), wall clock aside."""
    a, b = new.frames(), ref.frames()
    assert a.keys() == b.keys()
    for name, frame in a.items():
        drop = WALL_CLOCK.get(name, [])
        pd.testing.assert_frame_equal(frame.drop(columns=drop), b[name].drop(columns=drop),
                                      check_exact=True, obj=name)
    pd.testing.assert_series_equal(new.targets, ref.targets, check_exact=True)
    assert new.policy == ref.policy


def run_both(book: Book, path: MarketPath, make: Callable[[], Policy], **opts: Any) -> BacktestResult:
    """Run the refactored and the frozen replay (a fresh policy each) and compare them."""
    new = run_backtest(book, path, make(), **opts)
    ref = REFERENCE.run_backtest(book, path, make(), **opts)
    assert isinstance(ref, BacktestResult)
    assert_identical(new, ref)
    return new


def run_config(cfg: BacktestConfig) -> dict[str, BacktestResult]:
    path = build_path(cfg)
    opts = backtest_options(cfg)
    out = {}
    for spec in cfg.policies:
        out[spec.name] = run_both(cfg.loaded.book, path, functools.partial(build_policy, spec, cfg, path),
                                  **opts)
    return out


# --- every example backtest file, every policy kind -------------------------------------------------

def example_backtests() -> list[Path]:
    found = []
    for p in sorted(EXAMPLES.rglob("*.toml")):
        text = p.read_text()
        if "[[policies]]" in text and "\n[montecarlo" not in text and "\n[paths" not in text:
            found.append(p)
    return found


@pytest.mark.parametrize("path", example_backtests(), ids=lambda p: p.name)
def test_example_backtests_are_identical(path: Path) -> None:
    res = run_config(load_backtest_file(path))
    assert len(res) >= 1


def test_montecarlo_example_paths_are_identical() -> None:
    """The Monte Carlo example replays generated paths: its first two paths, every policy run."""
    from fbr.montecarlo_cli import build_spec
    from fbr.montecarlo_config import load_montecarlo_file

    spec, _ = build_spec(load_montecarlo_file(EXAMPLES / "montecarlo_demo.toml"))
    for k in range(2):
        path = spec.path(k)
        for run in spec.policies:
            def make(run: PolicyRun = run, path: MarketPath = path) -> Policy:
                policy = run.factory(path, dict(run.params))
                policy.name = run.label
                return policy
            run_both(spec.book, path, make, liquidation_penalty=spec.liquidation_penalty,
                     spot_fee=spec.spot_fee, collateral=spec.collateral, impact_k=spec.impact_k)


def all_kinds_config(collateral: Mapping[str, Any] | None) -> BacktestConfig:
    """The demo book on a 150-day synthetic path under every policy kind."""
    doc: dict[str, Any] = {
        "book": "backtest_book.toml",
        "data": {"source": "synthetic", "seed": 12, "days": 150, "start": "2024-01-01"},
        "policies": [
            {"kind": "no_rebalance"},
            {"kind": "calendar_spot", "period": "14D"},
            {"kind": "band_spot", "band": 0.03},
            {"kind": "naive_futures", "period": "3D", "band": 0.02},
            {"kind": "vol_band_futures", "base_band": 0.02, "window": 20},
            {"kind": "dca_futures", "steps": 3, "band": 0.02},
            {"kind": "optimized", "risk_lookback_days": 40, "gamma_trade": 0.5},
        ],
        "backtest": {"liquidation_penalty": 0.02, "spot_fee": 0.0008},
    }
    if collateral is not None:
        doc["backtest"]["collateral"] = dict(collateral)
    return parse_backtest(doc, source=EXAMPLES / "backtest_demo.toml")


@pytest.mark.parametrize("collateral", [None, {"target_fraction": 0.05, "band": 0.2}],
                         ids=["default_band", "tight_band"])
def test_every_policy_kind_is_identical(collateral: Mapping[str, Any] | None) -> None:
    res = run_config(all_kinds_config(collateral))
    kinds = {name.split()[0] for name in res}
    assert kinds >= {"no_rebalance", "calendar_spot", "band_spot", "naive_futures",
                     "vol_band_futures", "dca_futures", "optimized"}
    assert any(not r.trades[r.trades["kind"] == "futures"].empty for r in res.values())


# --- dated futures: a rolled chain, a settlement at spot ---------------------------------------------

def test_rolled_chain_of_dated_futures_is_identical() -> None:
    hist = generate_history(("BTC", "ETH"), days=120, seed=11)
    t0 = hist.spot.index[0].to_pydatetime()
    chain = tuple(FuturesContract(f"BTC-{i}", "BTC", kind=ContractKind.DATED,
                                  expiry=t0 + timedelta(days=d, hours=8))
                  for i, d in enumerate((20, 50, 80, 110, 140)))
    perp = FuturesContract("ETH-PERP", "ETH")
    cons = (*chain, perp)
    base = MarketPath.from_synthetic(hist, cons)
    path = with_dated_marks(base, cons, BasisModel.fit(base, (FuturesContract("BTC-PERP", "BTC"),
                                                                 perp)))
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), cons, spot={"BTC": 1.0, "ETH": 5.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=20_000.0)
    res = run_both(book, path, lambda: RollingPolicy(NaiveFutures(period="7D"), chain))
    assert len(res.rolls) >= 3


class Scripted(Policy):
    """Holds, except at the listed times, where it sets futures notional (USD)."""

    name = "scripted"

    def __init__(self, futures: Mapping[pd.Timestamp, Mapping[str, float]]) -> None:
        self.futures = dict(futures)

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        return TargetHoldings(spot=held.spot, futures={**held.futures, **self.futures.get(t, {})})


def test_settlement_at_spot_is_identical() -> None:
    q1 = FuturesContract("BTC-Q1", "BTC", kind=ContractKind.DATED, taker_fee=0.0005,
                         expiry=datetime(2025, 1, 11, tzinfo=UTC))
    idx = pd.date_range(D0, periods=14, freq="D")
    spot = pd.DataFrame({"BTC": [10_000.0 + 100.0 * k for k in range(14)]}, index=idx)
    path = MarketPath(spot=spot, mark=pd.DataFrame({"BTC-Q1": spot["BTC"] * 1.01}),
                      half_spread=pd.Series({"BTC-Q1": 0.0}))
    book = Book((SpotAsset("BTC"),), (q1,), spot={"BTC": 1.0}, targets={"BTC": 1.0}, cash=5_000.0)
    for coll in (NO_SWEEPS, None):
        res = run_both(book, path, lambda: Scripted({D0: {"BTC-Q1": -5_000.0}}), collateral=coll)
        assert (res.trades["kind"] == "settle").sum() == 1


# --- liquidation ----------------------------------------------------------------------------------

def one_perp_book(cash: float) -> Book:
    return Book((SpotAsset("BTC"),), (FuturesContract("BTC-PERP", "BTC"),), spot={"BTC": 1.0},
                targets={"BTC": 1.0}, cash=cash)


def test_liquidation_is_identical() -> None:
    idx = pd.date_range(D0, periods=3, freq="D")
    for price_1 in (90.4, 95.0):
        spot = pd.DataFrame({"BTC": [100.0, price_1, price_1]}, index=idx)
        path = MarketPath(spot=spot, half_spread=pd.Series({"BTC-PERP": 0.0001}))
        res = run_both(one_perp_book(1_000.0), path,
                       lambda: Scripted({idx[0]: {"BTC-PERP": 10_000.0}}), liquidation_penalty=0.01)
        assert len(res.liquidations) == (1 if price_1 == 90.4 else 0)


def synthetic_case(n_days: int, seed: int) -> tuple[Book, MarketPath]:
    hist = generate_history(("BTC", "ETH", "SOL"), days=n_days, seed=seed)
    cons = tuple(FuturesContract(f"{s}-PERP", s) for s in hist.symbols)
    p0 = hist.spot.iloc[0]
    book = Book(tuple(SpotAsset(s) for s in hist.symbols), cons,
                spot={"BTC": 50_000 / p0["BTC"], "ETH": 30_000 / p0["ETH"], "SOL": 20_000 / p0["SOL"]},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=20_000.0)
    return book, MarketPath.from_synthetic(hist, cons)


def test_drained_wallet_liquidations_and_sweeps_are_identical() -> None:
    book, path = synthetic_case(365, 11)
    off = run_both(book, path, lambda: NaiveFutures(band=0.05), collateral=NO_SWEEPS)
    assert off.steps["liquidated"].sum() > 0 and not off.liquidations.empty
    on = run_both(book, path, lambda: NaiveFutures(band=0.05))
    assert on.steps["sweep_in"].sum() > 0
    spot_only = Book(book.assets, (), spot=book.spot, targets=book.targets, cash=book.cash)
    run_both(spot_only, MarketPath(spot=path.spot), NoRebalance)


# --- collateral sweeps, impact, irregular funding ---------------------------------------------------

@pytest.mark.parametrize("btc_2", [1_400.0, 600.0])
@pytest.mark.parametrize("collateral", [None, CollateralPolicy(target_fraction=0.1, band=0.05),
                                        CollateralPolicy(band=1.0), NO_SWEEPS])
def test_collateral_sweeps_are_identical(btc_2: float, collateral: CollateralPolicy | None) -> None:
    perp = FuturesContract("BTC-PERP", "BTC", taker_fee=0.0)
    book = Book((SpotAsset("BTC"), SpotAsset("ETH")), (perp,), spot={"BTC": 10.0, "ETH": 100.0},
                targets={"BTC": 0.6, "ETH": 0.4}, cash=3_000.0)
    idx = pd.date_range(D0, periods=3, freq="D")
    spot = pd.DataFrame({"BTC": [1_000.0, 1_100.0, btc_2], "ETH": [50.0, 50.0, 50.0]}, index=idx)
    path = MarketPath(spot=spot, half_spread=pd.Series({"BTC-PERP": 0.0}))
    res = run_both(book, path, lambda: Scripted({idx[0]: {"BTC-PERP": -5_000.0}}),
                   collateral=collateral)
    if collateral is None:
        assert float(res.steps["sweep_in" if btc_2 > 1_000 else "sweep_out"].iloc[2]) > 0


def test_impact_and_irregular_funding_are_identical() -> None:
    book, path = synthetic_case(200, 5)
    adv = pd.DataFrame(5e6, index=path.spot.index, columns=[c.symbol for c in book.contracts])
    adv.iloc[::7, 0] = np.nan
    assert path.funding is not None
    odd = path.funding.iloc[::3].copy()
    odd.index = odd.index + pd.Timedelta(hours=5)
    varied = MarketPath(spot=path.spot, mark=path.mark, funding=pd.concat([path.funding, odd])
                        .sort_index(kind="stable"), half_spread=path.half_spread, adv=adv)
    res = run_both(book, varied, lambda: NaiveFutures(period="5D"), impact_k=1.5, spot_fee=0.0015,
                   liquidation_penalty=0.03)
    assert res.steps["slippage_futures"].sum() > 0 and res.steps["funding"].abs().sum() > 0


# --- the engine steps on their own ------------------------------------------------------------------

def test_engine_steps_match_the_hand_example() -> None:
    """100 contracts long at 100 (cash 1,000) marked at 90.4: funding 0.001 x 9,040 = 9.04 paid;
    collateral 1,000 - 960 - 9.04 = 30.96 < MM 0.005 x 9,040 = 45.20 -> liquidated, penalty
    0.01 x 9,040 = 90.40."""
    book = one_perp_book(1_000.0)
    t0 = MarketSnapshot(time=D0, spot={"BTC": 100.0}, mark={"BTC-PERP": 100.0})
    held = book.with_futures({"BTC-PERP": 100.0}, t0)
    state = ReplayState(spot=dict(held.spot), futures=dict(held.futures), cash=held.cash)
    t1 = MarketSnapshot(time=D0 + pd.Timedelta(days=1), spot={"BTC": 90.4}, mark={"BTC-PERP": 90.4})
    val = value_state(book, state, t1)
    paid, val = pay_funding(state, val, np.array([[0.001]]))
    assert paid == pytest.approx(9.04) and state.cash == pytest.approx(1_000.0 - 9.04)
    assert val.collateral == pytest.approx(1_000.0 - 960.0 - 9.04)
    ms = check_margin(MarginModel.from_contracts(book.contracts), val)
    assert ms.liquidated and ms.maintenance == pytest.approx(45.20)
    penalty, events = liquidate(book, state, t1, val, 0.01)
    assert penalty == pytest.approx(90.40) and len(events) == 1
    assert state.futures.get("BTC-PERP") is None or state.futures["BTC-PERP"].contracts == 0
    assert state.cash == pytest.approx(1_000.0 - 9.04 - 960.0 - 90.40)


# --- both benchmark books on the shared market data ---------------------------------------------------

def _vs_naive(book2: bool) -> ModuleType:
    """A fresh copy of benchmarks/vs_naive.py (its book settings are module globals)."""
    spec = importlib.util.spec_from_file_location(f"vs_naive_book{2 if book2 else 1}",
                                                  ROOT / "benchmarks" / "vs_naive.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    if book2:
        module.use_book2()
    return module


@pytest.mark.shared_data
@pytest.mark.parametrize("book2", [False, True], ids=["book1", "book2"])
def test_benchmark_books_are_identical(book2: bool) -> None:
    """Both books of benchmarks/vs_naive.py over their first 120 days of 8 h data, every policy of
    its quick grid, with its reserve, collateral band, fees and penalty."""
    from models.io import default_data_dir
    from models.risk import estimate_risk, returns_from_prices

    data = default_data_dir()
    assert data is not None and (data / "spot_4h").is_dir(), "../shared/data/spot_4h"
    vn = _vs_naive(book2)
    end = (pd.Timestamp(vn.START) + pd.Timedelta(days=120)).strftime("%Y-%m-%d")
    cons = vn.contracts(data, max(vn.START, vn.TIERS_FIRST))
    path = vn.market_path(data, cons, 1.0, vn.START, end)
    lb_start = (pd.Timestamp(vn.START) - pd.Timedelta(days=100)).strftime("%Y-%m-%d")
    hist = vn.spot_history(data, lb_start, end)
    first = estimate_risk(returns_from_prices(hist.loc[hist.index <= path.spot.index[0]].tail(270)),
                          "ledoit_wolf", periods_per_year=3 * 365.0)
    spot_book, overlay = vn.books(path, cons)
    specs = vn.policy_grid(True, lambda: vn.TrailingRisk(first, hist, list(vn.ASSETS), 90,
                                                         "ledoit_wolf"), [1.0, 16.0], [1.0])
    for s in specs:
        coll = (CollateralPolicy(target_fraction=vn.RESERVE / (1 + vn.RESERVE)) if s.overlay
                else NO_SWEEPS)
        run_both(overlay if s.overlay else spot_book, path, s.make,
                 liquidation_penalty=vn.LIQ_PENALTY, spot_fee=vn.SPOT_FEE, collateral=coll)
