"""Monte Carlo: identical results serially, on local processes and on a real Dask LocalCluster;
per-path metrics equal an independent replay of the same seeded path; the NAV fan and the summary
equal numpy over the paths; P(liquidation) matches a binomial reference on a two-row history."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbr.config import load_book_file
from fbr.montecarlo_cli import build_spec
from fbr.montecarlo_config import load_montecarlo_file
from models.errors import ValidationError
from optimizer.policies import NaiveFutures, NoRebalance
from scenarios.collateral import NO_SWEEPS
from scenarios.metrics import compute_metrics
from scenarios.montecarlo import (
    FAN_QUANTILES,
    MonteCarloSpec,
    PolicyRun,
    SimplePolicy,
    expand_grid,
    run_montecarlo,
)
from scenarios.path_bootstrap import BlockBootstrap
from scenarios.path_history import JointHistory, PathFrame
from scenarios.replay import run_backtest
from scenarios.sweep import Engine, EngineSpec

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "montecarlo_demo.toml"


@pytest.fixture(scope="module")
def small_spec() -> MonteCarloSpec:
    """The demo file's book, policies (incl. the optimiser) and band grid; 4 paths of 30 days."""
    cfg = load_montecarlo_file(DEMO)
    cfg = dataclasses.replace(cfg, paths=4, steps=30, seed=5)
    spec, _labels = build_spec(cfg)
    assert isinstance(spec, MonteCarloSpec)
    return spec


def test_identical_serial_processes_and_dask_cluster(small_spec: MonteCarloSpec) -> None:
    serial = small_spec.run()
    procs = run_montecarlo(small_spec, EngineSpec(Engine.PROCESSES, workers=2))
    dask = run_montecarlo(small_spec, EngineSpec(Engine.DASK, workers=2))  # LocalCluster, closed
    assert serial.policies == ["buy and hold", "naive futures [band=0.02]",
                               "naive futures [band=0.05]", "optimised"]
    assert len(serial.metrics) == 4 * 4
    for other in (procs, dask):
        pd.testing.assert_frame_equal(serial.metrics, other.metrics, check_exact=True)
        pd.testing.assert_frame_equal(serial.fan, other.fan, check_exact=True)
        pd.testing.assert_frame_equal(serial.summary(), other.summary(), check_exact=True)
    assert "Dask LocalCluster" in dask.engine and "processes" in procs.engine
    # the optimiser solved on every step of every path
    opt = serial.metrics[serial.metrics["policy"] == "optimised"]
    assert (opt["solves"] == 31).all()


def test_per_path_metrics_equal_an_independent_replay(small_spec: MonteCarloSpec) -> None:
    res = run_montecarlo(small_spec)
    for k in (0, 3):
        path = small_spec.generator.generate(np.random.SeedSequence([small_spec.seed, k]), 30)
        ref = compute_metrics(run_backtest(small_spec.book, path, NaiveFutures(band=0.05),
                                           liquidation_penalty=0.01, spot_fee=0.001))
        row = res.metrics[(res.metrics["policy"] == "naive futures [band=0.05]")
                          & (res.metrics["path"] == k)].iloc[0]
        for name in ("tracking_error", "total_cost_bps", "max_drawdown", "peak_margin_ratio",
                     "turnover"):
            assert row[name] == pytest.approx(getattr(ref, name), rel=1e-12, abs=1e-15)
    # the fan: numpy quantiles of NAV / NAV_0 over independently replayed buy-and-hold paths
    navs = []
    for k in range(small_spec.paths):
        r = run_backtest(small_spec.book, small_spec.path(k), NoRebalance(),
                         liquidation_penalty=0.01, spot_fee=0.001)
        nav = r.steps["nav"].to_numpy()
        navs.append(nav / nav[0])
    stack = np.vstack(navs)
    for q in FAN_QUANTILES:
        np.testing.assert_allclose(res.fan[("buy and hold", q)].to_numpy(),
                                   np.quantile(stack, q, axis=0), rtol=1e-12)
    # the summary: numpy over the per-path table
    summ = res.summary()
    sub = res.metrics[res.metrics["policy"] == "optimised"]
    te = sub["tracking_error"].to_numpy()
    assert summ.loc["optimised", "tracking_error_p50"] == pytest.approx(np.median(te))
    assert summ.loc["optimised", "tracking_error_p95"] == pytest.approx(np.quantile(te, 0.95))
    assert summ.loc["optimised", "paths"] == 4


def _crash_or_calm_spec(tmp_path: Path, paths: int) -> MonteCarloSpec:
    """A short BTC perp on thin collateral; the history has two rows: BTC +30 % or flat."""
    book_file = tmp_path / "short.toml"
    book_file.write_text("""
[book]
cash = 1000.0
[targets]
BTC = 1.0
[spot]
BTC = 0.1
[[futures]]
symbol = "BTC-PERP"
contracts = -0.5
entry_price = 60000.0
[market]
time = 2024-01-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
[risk.vols]
BTC = 0.5
""")
    loaded = load_book_file(book_file)
    history = JointHistory(assets=("BTC",), returns=np.array([[0.3], [0.0]]),
                           funding=np.zeros((2, 1, 1)), basis=np.zeros((2, 1)),
                           step=pd.Timedelta(days=1), settle_offsets=(pd.Timedelta(0),))
    frame = PathFrame(start=pd.Timestamp("2024-01-01", tz="UTC"), start_prices={"BTC": 60000.0},
                      contracts=tuple(loaded.book.contracts))
    gen = BlockBootstrap(history, frame, mean_block=1.0)  # iid rows
    return MonteCarloSpec(book=loaded.book, generator=gen,
                          policies=(PolicyRun("hold", SimplePolicy("no_rebalance")),),
                          paths=paths, steps=1, seed=42, collateral=NO_SWEEPS)


def test_probability_of_liquidation_binomial_reference(tmp_path: Path) -> None:
    K = 300
    spec = _crash_or_calm_spec(tmp_path, K)
    res = run_montecarlo(spec)
    # hand calculation: +30 % on a 30,000 USD short loses 9,000 > the 1,000 collateral: liquidated;
    # a flat step keeps 1,000 against a maintenance margin of a few hundred USD: safe
    crashed = np.array([spec.path(k).spot["BTC"].iloc[1] > 70_000 for k in range(K)])
    np.testing.assert_array_equal(res.metrics["liquidated"].to_numpy(), crashed)
    p = float(res.summary()["p_liquidation"].loc["hold"])
    assert p == pytest.approx(crashed.mean())
    assert abs(p - 0.5) < 3 * np.sqrt(0.25 / K)  # each path picks the crash row with prob. 1/2
    assert res.summary().loc["hold", "p_liquidation_se"] == pytest.approx(np.sqrt(p * (1 - p) / K))


def test_grid_and_spec_validation(small_spec: MonteCarloSpec) -> None:
    runs = expand_grid("naive", SimplePolicy("naive_futures"), {"band": [0.02, 0.05], "period": ["7D"]})
    assert [r.label for r in runs] == ["naive [band=0.02, period=7D]", "naive [band=0.05, period=7D]"]
    with pytest.raises(ValidationError, match="paths"):
        dataclasses.replace(small_spec, paths=0)
    with pytest.raises(ValidationError, match="more than once"):
        dataclasses.replace(small_spec, policies=(runs[0], runs[0]))
    with pytest.raises(ValidationError, match="policy"):
        SimplePolicy("naive_futures", (("bogus", 1.0),))(small_spec.path(0), {})


def test_held_notes_count_the_steps_and_paths_where_a_policy_was_held() -> None:
    """Hand-built per-path metrics: policy "a" held at 3 + 0 + 2 steps over 3 paths (5 steps on 2
    of 3 paths), "b" never: one note, for "a"; a table without the column gives none."""
    from scenarios.montecarlo import MonteCarloResult

    rows = [{"path": k, "policy": name, "unsolved_steps": held}
            for name, counts in (("a", (3, 0, 2)), ("b", (0, 0, 0)))
            for k, held in enumerate(counts)]
    res = MonteCarloResult(metrics=pd.DataFrame(rows), fan=pd.DataFrame())
    assert res.held_notes() == ["a: no answer to trade at 5 steps on 2 of 3 paths; the book was "
                                "held as it stood there"]
    bare = MonteCarloResult(metrics=pd.DataFrame([{"path": 0, "policy": "a"}]), fan=pd.DataFrame())
    assert bare.held_notes() == []
