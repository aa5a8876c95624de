"""Backtest throughput: 5 years of 8-hourly steps (~5,480) for 10 assets with the optimised policy.

Goal (issue 4): <= 5 s end to end on this 2-core machine. Measured, not asserted in a test.

The market is the embedded synthetic generator's, re-stamped at 8 h: ``generate_history`` is run for
as many "days" as there are steps, its daily log returns are scaled by sqrt(1/3) (an 8 h step has a
third of a day's variance), and each step carries one funding settlement (the generator's 8 h
rates). The book is ``examples/ten_assets.toml`` (tiered margin, two stress scenarios, a cluster band,
costs on). End to end = building the policy and running ``scenarios.replay.run_backtest`` over every
step (the problem is compiled inside the run, on the first step). Reported: the median over
``--repeats`` runs, and per-step time; baselines (no rebalancing, naive overlay) in the same run.

Also the multi-period planner (``horizon = 5``; goal of issue 12: <= 30 s) and the cost-to-go
term (kappa 30, p 0.4) on the same book.

Usage: ``python benchmarks/backtest_speed.py [--steps 5480] [--repeats 3] [--out PATH]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fbr.config_loader import load_book_file
from models.synthetic import generate_history
from optimizer.policies import NaiveFutures, NoRebalance, OptimizedFutures, Policy
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

ROOT = Path(__file__).resolve().parents[1]
STEP_H = 8


def eight_hour_path(symbols: tuple[str, ...], contracts: tuple, steps: int, seed: int) -> MarketPath:  # type: ignore[type-arg]
    """A synthetic 8-hourly path (see the module docstring)."""
    hist = generate_history(symbols, days=steps, seed=seed)
    index = pd.date_range("2020-07-01", periods=steps, freq=f"{STEP_H}h", tz="UTC")
    daily = MarketPath.from_synthetic(hist, contracts)
    logret = hist.spot.apply(np.log).diff().fillna(0.0) * np.sqrt(STEP_H / 24.0)
    spot = pd.DataFrame(np.exp(logret.cumsum().to_numpy()) * hist.spot.iloc[0].to_numpy(),
                        index=index, columns=hist.spot.columns)
    assert daily.mark is not None
    basis = (daily.mark.to_numpy() / hist.spot[[c.underlying for c in contracts]].to_numpy())
    mark = pd.DataFrame(spot[[c.underlying for c in contracts]].to_numpy() * basis, index=index,
                        columns=[c.symbol for c in contracts])
    assert daily.funding is not None
    rates = daily.funding.iloc[:steps].to_numpy()
    funding = pd.DataFrame(rates, index=index[: len(rates)], columns=daily.funding.columns)
    return MarketPath(spot=spot, mark=mark, funding=funding, half_spread=daily.half_spread,
                      adv=daily.adv, synthetic=True)


def timed(make_policy: Callable[[], Policy], run: Callable[[Policy], object],
          repeats: int) -> tuple[float, list[float]]:
    """Median wall time (s) of ``run(make_policy())`` over ``repeats`` runs, and all the runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(make_policy())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5480, help="8 h steps (5 years = 5480)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "backtest_speed.json")
    args = ap.parse_args()

    lb = load_book_file(ROOT / "examples" / "ten_assets.toml")
    book = lb.book
    path = eight_hour_path(tuple(book.asset_symbols), book.contracts, args.steps, args.seed)
    steps = len(path.spot)
    policies: dict[str, Callable[[], Policy]] = {
        "no_rebalance": NoRebalance,
        "naive_futures_band5": lambda: NaiveFutures(band=0.05),
        "optimized": lambda: OptimizedFutures(lb.risk, lb.settings),
        # issue 12: the multi-period planner (H = 5) and the cost-to-go term; goal <= 30 s
        "planner_h5": lambda: OptimizedFutures(lb.risk, dataclasses.replace(lb.settings, horizon=5)),
        "cost_to_go": lambda: OptimizedFutures(lb.risk, dataclasses.replace(
            lb.settings, costs=dataclasses.replace(lb.settings.costs, cost_to_go=30.0,
                                                   cost_to_go_power=0.4))),
    }
    rows: dict[str, dict[str, float | list[float]]] = {}
    print(f"{steps} steps of {STEP_H} h ({steps * STEP_H / 24 / 365:.1f} years), "
          f"{len(book.asset_symbols)} assets, {args.repeats} repeats; goal: optimized <= 5 s")
    for name, make in policies.items():
        med, runs = timed(make, lambda p: run_backtest(book, path, p), args.repeats)
        rows[name] = {"median_s": med, "runs_s": runs, "ms_per_step": 1e3 * med / steps}
        print(f"  {name:22s} {med:7.2f} s   {1e3 * med / steps:6.3f} ms/step")
    opt = rows["optimized"]["median_s"]
    assert isinstance(opt, float)
    five_years = opt * 5480 / steps
    ok = five_years <= 5.0
    print(f"optimized: {five_years:.2f} s for 5480 steps"
          f"{' (scaled from ' + str(steps) + ' steps)' if steps != 5480 else ''}: "
          f"{'meets' if ok else 'MISSES'} the 5 s goal")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": steps, "assets": len(book.asset_symbols),
                                    "repeats": args.repeats, "results": rows}, indent=2))
    plan = rows["planner_h5"]["median_s"]
    assert isinstance(plan, float)
    print(f"planner (H = 5): {plan * 5480 / steps:.2f} s for 5480 steps: "
          f"{'meets' if plan * 5480 / steps <= 30.0 else 'MISSES'} the 30 s goal")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
