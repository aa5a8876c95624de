"""Warm re-solve latency of the multi-period planner (optimizer.planner) against the native PIQP
floor on the very same data, in one process.

What is measured
----------------
N assets (one linear perpetual each), benchmarks/solve_speed.py's synthetic market, book and
``qp`` settings (linear trading cost, funding carry over a 3-day step, tracking error, tiered
margin, two stress scenarios, caps, gross leverage, two cluster bands; no impact: a QP served by
PIQP through ``optimizer.engines.PiqpEngine``), with ``OptimizerSettings.horizon`` = H. A daily
path of ``--days`` timed days follows an untimed day 0 (compile, set up, warm up): each day the
market moves, the book carries the previous day's first-step positions, and

- ``fbr``: ``problem.update(d)`` + ``problem.solve(d.settings.solvers)`` (what
  ``Rebalancer.solve_z`` does; the problem from ``Rebalancer.problem_for``: the
  ``PlannerProblem`` for H > 1, ``HedgeProblem`` for H = 1) on a ``ProblemData`` prepared
  outside the timer;
- ``native``: ``piqp.SparseSolver.update(P, c, A, b, G, h_u)`` + ``solve()`` on the standard-form
  data of ``PiqpEngine.refresh()`` for that day (set up once on day 0 with fbr's settings),
  exactly solve_speed.py's native floor (``NativePiqp``).

Each day's figure is the best of a few repetitions (gc off); the table gives the median over days
and the ratio fbr / native of the medians (target: <= 3 at N = 10, H = 5). ``max |dz|`` is the
worst max_j |z_fbr - z_native| (step 1, weight units). The script asserts that neither
``PlannerProblem.builds`` nor ``HedgeProblem.builds`` grows after day 0.

    python benchmarks/planner_speed.py                 # N = 10, H = 1 and 5, 25 days
    python benchmarks/planner_speed.py --sizes 10,50 --horizons 1,3,5,10 --days 15
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.solve_speed import (
    NativePiqp,
    SyntheticMarket,
    advance_book,
    best_of,
    make_book,
    make_settings,
    reps_for,
)
from optimizer.data import ProblemData
from optimizer.engines import PiqpEngine
from optimizer.planner import PlannerProblem
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem, SolveOutcome
from optimizer.rebalance import Rebalancer
from optimizer.settings import SolverName

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "planner_speed.json"
RATIO_TARGET = 3.0


@dataclass
class Run:
    """One (N, H) path: per-day best times (ms) and the worst |z_fbr - z_native|."""

    n: int
    horizon: int
    days: int
    variables: int = 0
    rows: int = 0
    compile_s: float = 0.0
    fbr_ms: list[float] = field(default_factory=list)
    native_ms: list[float] = field(default_factory=list)
    dz: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    failed_days: int = 0

    def summary(self) -> dict[str, Any]:
        """Medians, p90 and the fbr / native ratio of the medians."""
        fbr, nat = float(np.median(self.fbr_ms)), float(np.median(self.native_ms))
        return {"n": self.n, "horizon": self.horizon, "days": self.days,
                "variables": self.variables, "constraint_rows": self.rows,
                "compile_s": self.compile_s, "fbr_median_ms": fbr,
                "fbr_p90_ms": float(np.percentile(self.fbr_ms, 90)), "native_median_ms": nat,
                "native_p90_ms": float(np.percentile(self.native_ms, 90)),
                "ratio_fbr_native": fbr / nat if nat > 0 else math.nan,
                "max_dz": max(self.dz, default=math.nan),
                "median_iterations": float(np.median(self.iterations)) if self.iterations
                else math.nan, "failed_days": self.failed_days}


def run_path(n: int, horizon: int, days: int, seed: int) -> Run:
    """Day 0 untimed (compile, set up, warm up), then ``days`` timed warm re-solves."""
    mkt = SyntheticMarket.create(n, seed)
    risk = mkt.risk_model()
    book = make_book(mkt, seed)
    market = mkt.snapshot()
    settings = replace(make_settings(mkt, conic=False), horizon=horizon)
    rb = Rebalancer()
    d = prepare(book, market, risk, settings)
    t0 = time.perf_counter()
    hp = rb.problem_for(d)
    assert isinstance(hp, PlannerProblem) == (horizon > 1)
    hp.update(d)
    chain = d.settings.solvers
    out = hp.solve(chain)
    run = Run(n, horizon, days, compile_s=time.perf_counter() - t0)
    eng = hp.engine(SolverName.PIQP)
    assert isinstance(eng, PiqpEngine)
    run.variables, run.rows = eng.compiled.n, eng.compiled.rows
    native = NativePiqp()
    native.load(eng)
    for _ in range(3):  # warm-up
        hp.update(d)
        hp.solve(chain)
        native.run()
    builds = (PlannerProblem.builds, HedgeProblem.builds)
    z = out.result.z if out.result.z is not None else d.z0
    book = advance_book(book, d, z, market)
    fbr_reps = nat_reps = 5
    for _day in range(days):
        mkt.step()
        market = mkt.snapshot()
        d = prepare(book, market, risk, settings)

        def fbr_once(d: ProblemData = d) -> SolveOutcome:
            hp.update(d)
            return hp.solve(chain)

        t_fbr, res = best_of(fbr_once, fbr_reps)
        native.load(eng)
        t_nat, raw = best_of(native.run, nat_reps)
        z_fbr, z_nat = res.result.z, NativePiqp.z(raw, eng)
        if z_fbr is None:
            run.failed_days += 1
        elif z_nat is not None:
            run.dz.append(float(np.max(np.abs(z_fbr - z_nat))))
        run.iterations.append(res.result.iterations)
        run.fbr_ms.append(1e3 * t_fbr)
        run.native_ms.append(1e3 * t_nat)
        fbr_reps, nat_reps = reps_for(t_fbr), reps_for(t_nat)
        book = advance_book(book, d, z_fbr if z_fbr is not None else d.z0, market)
        if (PlannerProblem.builds, HedgeProblem.builds) != builds:
            raise AssertionError(f"N={n} H={horizon}: the problem was rebuilt on a re-solve")
    return run


def print_table(rows: list[dict[str, Any]]) -> list[str]:
    """Print the table; return the missed targets (ratio <= 3 at every size and horizon)."""
    head = (f"{'N':>5} {'H':>3} {'vars':>6} {'rows':>6} {'fbr med ms':>11} {'fbr p90':>8} "
            f"{'native med ms':>14} {'fbr/native':>11} {'max |dz|':>9} {'iters':>6}")
    print(head)
    misses: list[str] = []
    for r in rows:
        ok = r["ratio_fbr_native"] <= RATIO_TARGET
        if not ok:
            misses.append(f"N={r['n']} H={r['horizon']}: fbr/native {r['ratio_fbr_native']:.2f}x")
        print(f"{r['n']:>5} {r['horizon']:>3} {r['variables']:>6} {r['constraint_rows']:>6} "
              f"{r['fbr_median_ms']:>11.3f} {r['fbr_p90_ms']:>8.3f} {r['native_median_ms']:>14.3f} "
              f"{r['ratio_fbr_native']:>10.2f}x {r['max_dz']:>9.1e} {r['median_iterations']:>6.0f}"
              f"  {'ok' if ok else 'MISS'}")
    return misses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10", help="comma-separated N (assets = contracts)")
    ap.add_argument("--horizons", default="1,5", help="comma-separated planner horizons H")
    ap.add_argument("--days", type=int, default=25, help="timed days (after a day-0 warm-up)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    horizons = [int(h) for h in str(args.horizons).split(",") if h.strip()]
    t0 = time.perf_counter()
    rows = [run_path(n, h, args.days, args.seed).summary() for n in sizes for h in horizons]
    misses = print_table(rows)
    print(f"target: fbr / native <= {RATIO_TARGET:g}x; "
          + ("all met" if not misses else "missed: " + "; ".join(misses)))
    meta = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "sizes": sizes, "horizons": horizons, "days": args.days, "seed": args.seed,
            "config": "solve_speed qp (trading + carry + margin + stress + caps + leverage + "
                      "clusters; no impact), PIQP via PiqpEngine",
            "cpu_count": os.cpu_count(), "loadavg_end": os.getloadavg(),
            "wall_s": time.perf_counter() - t0, "ratio_target": RATIO_TARGET, "misses": misses}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2, default=float))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
