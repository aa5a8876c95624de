"""Peak memory of one rebalance over a large universe whose risk model is a full covariance.

The book: N assets (default 2,000), one linear perpetual each, seeded random prices, holdings and
targets, 20% of the spot value as collateral, default settings (trading costs, carry, margin).
The risk model is handed over in full-rank form (``RiskModel.from_covariance`` of a K0 = 8 factor
covariance F F' + diag(d)), which is what a book file with explicit vols/correlations or a sample
covariance gives. Without the factor form the compiled problem needs O(N^3) memory (about
120 GiB at N = 2,000: a MemoryError); with it (``OptimizerSettings.factor_min_assets``) O(N^2).

Printed: the process's peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) before
and after the solve, the solve's wall time, the status and the factor-form note. Not run by CI.

Run: ``python benchmarks/large_universe.py [--assets 2000] [--factors 8] [--seed 7]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.rebalance import Rebalancer
from optimizer.settings import OptimizerSettings


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def universe(n: int, k0: int, seed: int) -> tuple[Book, MarketSnapshot, RiskModel]:
    """A seeded N-asset book, its market and a full-rank risk model (see the module docstring)."""
    rng = np.random.default_rng(seed)
    syms = [f"A{i}" for i in range(n)]
    px = rng.uniform(1.0, 100.0, n)
    contracts = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-8, min_notional=0.0)
                      for s in syms)
    w = rng.dirichlet(np.ones(n))
    value = w * np.clip(1.0 + rng.normal(0.0, 0.2, n), 0.1, None)
    value *= 1e7 / value.sum()
    book = Book(tuple(SpotAsset(s) for s in syms), contracts,
                {s: float(v / p) for s, v, p in zip(syms, value, px, strict=True)},
                {s: float(x) for s, x in zip(syms, w, strict=True)}, cash=2e6)
    market = MarketSnapshot(pd.Timestamp("2025-01-01", tz="UTC"),
                            dict(zip(syms, map(float, px), strict=True)),
                            {c.symbol: float(p) for c, p in zip(contracts, px, strict=True)})
    F = rng.normal(0.0, 0.25, (n, k0)) + 0.25
    cov = F @ F.T + np.diag(rng.uniform(0.05, 0.3, n))
    return book, market, RiskModel.from_covariance(syms, cov)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=int, default=2000)
    ap.add_argument("--factors", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    book, market, risk = universe(args.assets, args.factors, args.seed)
    before = peak_rss_mib()
    t0 = time.perf_counter()
    sol = Rebalancer().solve(book, market, risk, OptimizerSettings())
    seconds = time.perf_counter() - t0
    print(f"N = {args.assets} assets, M = {len(book.contracts)} contracts, risk model "
          f"{risk.loadings.shape[1]} loading columns (full covariance)")
    print(f"status {sol.status}, solver {sol.solver}, solve + report {seconds:.2f} s, "
          f"tracking error {100 * sol.tracking_error_before:.3f}% -> "
          f"{100 * sol.tracking_error_after:.3f}%")
    for m in sol.messages:
        print(f"note: {m}")
    print(f"peak RSS before the solve {before:.0f} MiB; peak RSS of the whole run "
          f"{peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
