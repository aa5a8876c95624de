"""Monte Carlo throughput (paths per second) by engine: serial, local processes and a local Dask
cluster, on 1 and 2 workers.

The workload is ``examples/montecarlo_demo.toml`` (five-coin book; buy and hold, the naive futures
overlay at two bands and the optimised overlay: 4 backtests per path) with ``--paths`` paths of
``--steps`` daily steps from the stationary block bootstrap. Each engine runs the whole sweep,
pool / cluster start-up included (that is what a user waits for), ``--repeats`` times; then
"warm" Dask: the sweep sent to an already running LocalCluster by its address after one warm-up
sweep (worker imports and start-up excluded: the steady-state rate of a long-lived cluster). Reported:
the median wall time, paths per second = paths / median, and the speed-up vs the serial run
measured in the same invocation. Every engine's metrics table is checked identical to the serial
one. The machine's load average is recorded: figures from a shared machine are noisy.

Usage: ``python benchmarks/montecarlo_speed.py [--paths 48] [--steps 180] [--repeats 3] [--out PATH]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import pandas as pd

from fbr.montecarlo_cli import build_spec
from fbr.montecarlo_config import load_montecarlo_file
from scenarios.montecarlo import MonteCarloResult, run_montecarlo
from scenarios.sweep import Engine, EngineSpec

ROOT = Path(__file__).resolve().parents[1]
ENGINES = (("serial", EngineSpec()),
           ("processes x1", EngineSpec(Engine.PROCESSES, workers=1)),
           ("processes x2", EngineSpec(Engine.PROCESSES, workers=2)),
           ("dask x1", EngineSpec(Engine.DASK, workers=1)),
           ("dask x2", EngineSpec(Engine.DASK, workers=2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=48)
    ap.add_argument("--steps", type=int, default=180)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "montecarlo_speed.json")
    args = ap.parse_args()

    cfg = load_montecarlo_file(ROOT / "examples" / "montecarlo_demo.toml")
    cfg = dataclasses.replace(cfg, paths=args.paths, steps=args.steps)
    spec, _labels = build_spec(cfg)
    load_before = os.getloadavg()
    results: dict[str, dict[str, object]] = {}
    reference: MonteCarloResult | None = None
    print(f"{args.paths} paths: {len(spec.keys())} backtests per sweep", flush=True)

    def measure(name: str, engine: EngineSpec, warm: bool) -> None:
        nonlocal reference
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = run_montecarlo(spec, engine)
            runs.append(time.perf_counter() - t0)
            if reference is None:
                reference = res
            else:
                pd.testing.assert_frame_equal(reference.metrics, res.metrics, check_exact=True)
        med = statistics.median(runs)
        results[name] = {"engine": engine.engine.value, "workers": engine.workers, "median_s": med,
                         "runs_s": runs, "paths_per_s": args.paths / med,
                         "tasks_per_s": len(spec.keys()) / med, "startup_included": not warm}
        print(f"  {name}: {med:.2f} s", flush=True)

    for name, engine in ENGINES:
        measure(name, engine, warm=False)
    # warm Dask: a LocalCluster already running (reached by its address), after one warm-up sweep
    from distributed import LocalCluster

    for n in (1, 2):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        try:
            warm = EngineSpec(Engine.DASK, address=str(cluster.scheduler_address))
            run_montecarlo(spec, warm)
            measure(f"dask x{n} warm", warm, warm=True)
        finally:
            cluster.close()
    serial = float(results["serial"]["median_s"])  # type: ignore[arg-type]
    for r in results.values():
        r["speedup_vs_serial"] = serial / float(r["median_s"])  # type: ignore[arg-type]
    report = {"paths": args.paths, "steps": args.steps, "policies": [p.label for p in spec.policies],
              "tasks": len(spec.keys()), "repeats": args.repeats, "cpu_count": os.cpu_count(),
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "identical_results": True, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.paths} paths x {args.steps} steps x {len(spec.policies)} policies "
          f"({len(spec.keys())} backtests), median of {args.repeats}; "
          f"{os.cpu_count()} CPUs, load {load_before[0]:.2f} before")
    print(f"{'engine':<16}{'median s':>10}{'paths/s':>10}{'vs serial':>11}")
    for name, r in results.items():
        print(f"{name:<16}{r['median_s']:>10.2f}{r['paths_per_s']:>10.2f}"
              f"{r['speedup_vs_serial']:>10.2f}x")
    print(f"results identical on every engine; written to {args.out}")


if __name__ == "__main__":
    main()
