"""Fingerprint every replay fbr makes, so a refactor can show that nothing moved, frame for frame.

What is fingerprinted (each a SHA-256 of the exact float bits, not a rounded print):

- ``examples/backtest_demo.toml``: every policy's :class:`BacktestResult`, frame by frame (steps,
  spot_value, futures_notional, weights, trades, liquidations, spot_returns, rolls), the wall-clock
  column ``solve_time_ms`` left out;
- ``examples/montecarlo_demo.toml``: the per-path metrics and the NAV fan (run in-process, one
  worker, timing columns left out);
- every book in ``examples/`` (``seed_example_1``, ``seed_example_2``, ``ten_assets``,
  ``backtest_book``): the solution's futures targets z, rounded contracts, objective and status;
- both benchmark books of ``benchmarks/total_cost.py`` (book 1, book 2) on real data, when
  ``../shared/data`` is present: a spot band, naive overlays to target and to edge, fbr's overlay
  (plain, with the cost-to-go term, with the 3-step planner) and the hybrid with 25% HIFO taxes,
  over ``--days`` days from the book's start (every frame, as above).

Run ``python scripts/replay_fingerprint.py --out before.json`` on the old commit and
``python scripts/replay_fingerprint.py --compare before.json`` on the new one: it prints each
run's frames that differ and exits 1 when any does. A change that adds a column on purpose is
compared with ``--drop-columns NAME`` on both sides (the old commit's script may lack the option:
drop the column from the new side only when the old frames never had it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: Wall-clock columns: the only recorded values that differ between two runs of the same inputs.
TIMING = ("solve_time_ms", "seconds", "solve_seconds", "wall_s")
#: Columns left out of every frame's digest: the timing ones, and those given with
#: ``--drop-columns`` (a column a change adds on purpose, to show that nothing else moved).
LEFT_OUT: set[str] = set(TIMING)


def digest(obj: Any) -> str:
    """SHA-256 of a frame, series, array or scalar: exact bits, column names and index included."""
    h = hashlib.sha256()
    if isinstance(obj, pd.Series):
        obj = obj.to_frame()
    if isinstance(obj, pd.DataFrame):
        frame = obj.drop(columns=[c for c in obj.columns if str(c) in LEFT_OUT])
        h.update(repr(list(map(str, frame.columns))).encode())
        h.update(repr(list(map(str, frame.index))).encode())
        for col in frame.columns:
            values = frame[col].to_numpy()
            if values.dtype.kind in "fiub":
                h.update(np.ascontiguousarray(values.astype(np.float64)).tobytes())
            else:
                h.update(repr(list(map(str, values))).encode())
        return h.hexdigest()[:16]
    if isinstance(obj, np.ndarray):
        h.update(np.ascontiguousarray(obj.astype(np.float64)).tobytes())
        return h.hexdigest()[:16]
    h.update(repr(obj).encode())
    return h.hexdigest()[:16]


def result_frames(res: Any) -> dict[str, str]:
    """Per-frame digests of a BacktestResult."""
    return {name: digest(frame) for name, frame in res.frames().items()}


def examples_backtest() -> dict[str, dict[str, str]]:
    from fbr.backtest_config import build_path, load_backtest_file
    from fbr.backtest_run import run_all

    cfg = load_backtest_file(ROOT / "examples" / "backtest_demo.toml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = build_path(cfg)
        results = run_all(cfg, path)
    return {f"backtest_demo|{name}": result_frames(res) for name, res in results.items()}


def examples_montecarlo() -> dict[str, dict[str, str]]:
    from fbr.montecarlo_cli import build_spec
    from fbr.montecarlo_config import load_montecarlo_file
    from scenarios.montecarlo import run_montecarlo

    cfg = load_montecarlo_file(ROOT / "examples" / "montecarlo_demo.toml")
    spec, _labels = build_spec(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_montecarlo(spec)
    return {"montecarlo_demo": {"metrics": digest(res.metrics), "fan": digest(res.fan)}}


def examples_solve() -> dict[str, dict[str, str]]:
    from fbr.config_loader import load_book_file
    from optimizer.rebalance import solve_rebalance

    out: dict[str, dict[str, str]] = {}
    for name in ("seed_example_1", "seed_example_2", "ten_assets", "backtest_book"):
        loaded = load_book_file(ROOT / "examples" / f"{name}.toml")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sol = solve_rebalance(loaded.book, loaded.market, loaded.risk, loaded.settings)
        out[f"solve|{name}"] = {
            "status": sol.status,
            "positions": digest([(p.symbol, p.contracts, p.notional) for p in sol.target_positions]),
            "trades": digest([(t.symbol, t.contracts, t.notional) for t in sol.trades]),
            "spot_trades": digest([(t.asset, t.units, t.notional) for t in sol.spot_trades]),
            "tracking_error": digest((sol.tracking_error_before, sol.tracking_error_after,
                                      sol.tracking_error_unrounded)),
            "costs": digest(sol.costs)}
    return out


BENCH_RUNS: tuple[tuple[str, str, str], ...] = (
    ("spot", "band 0.02", "0"),
    ("naive_reserve", "band 0.05", "0"),
    ("naive_pledged", "edge 0.05", "0"),
    ("naive_pledged", "vedge 0.05", "0"),
    ("fbr_overlay", "gt 4", "0"),
    ("fbr_overlay", "gt 5 ctg 0.25 p 0.4", "0"),
    ("fbr_overlay", "gt 4 h 3", "0"),
    ("fbr_hybrid", "gt 4", "25hifo"),
)


def benchmark_books(days: int) -> dict[str, dict[str, str]]:
    import total_cost as tc
    import vs_naive as vn

    from models.data_layout import spot_folder
    from models.io import default_data_dir
    from scenarios.replay import run_backtest

    data = default_data_dir()
    if data is None or not (data / spot_folder("4h")).is_dir():
        print("benchmark books skipped: no ../shared/data", file=sys.stderr)
        return {}
    out: dict[str, dict[str, str]] = {}
    for book in ("book1", "book2"):
        if book == "book2":
            vn.use_book2()
        vn.END = (pd.Timestamp(vn.START) + pd.Timedelta(days=days)).strftime("%Y-%m-%d")
        tc.SETUP = tc.build_setup(data, vn.SPOT_USD, 180, 0.5)
        s = tc.shared()
        for family, param, case in BENCH_RUNS:
            bk, coll = _bench_book(tc, vn, s, family)
            policy = tc.make_policy(family, param, case)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = run_backtest(bk, s.path, policy, liquidation_penalty=vn.LIQ_PENALTY,
                                   spot_fee=vn.SPOT_FEE, collateral=coll,
                                   tax=tc.tax_setting(case, bk, s.start))
            key = f"{book}|{case}|{family}|{param}"
            out[key] = result_frames(res)
            print(f"  {key}: {len(res.trades)} trades", file=sys.stderr, flush=True)
    return out


def _bench_book(tc: Any, vn: Any, s: Any, family: str) -> tuple[Any, Any]:
    from scenarios.collateral import CollateralPolicy

    if family == "spot":
        return s.spot_book, tc.NO_SWEEPS
    if family == "naive_reserve":
        return s.reserve_book, CollateralPolicy(target_fraction=vn.RESERVE / (1 + vn.RESERVE))
    return s.pledged_book, tc.PLEDGED_SWEEPS


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, dict[str, str]]]] = {
    "solve": lambda a: examples_solve(),
    "backtest": lambda a: examples_backtest(),
    "montecarlo": lambda a: examples_montecarlo(),
    "books": lambda a: benchmark_books(a.days),
}


#: The run-key prefixes each part writes.
PREFIXES: dict[str, tuple[str, ...]] = {"solve": ("solve",), "backtest": ("backtest_demo",),
                                        "montecarlo": ("montecarlo_demo",),
                                        "books": ("book1", "book2")}


def compare(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> int:
    """Print the runs and frames that differ; 1 when any does (or a run or frame is missing).
    A frame only ``after`` records (a new record of a change) is listed, not counted."""
    bad = 0
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a is None or b is None:
            print(f"MISSING  {key}: {'before' if a is None else 'after'}")
            bad += 1
            continue
        diff = [f for f in sorted(set(a) & set(b)) if a[f] != b[f]]
        gone = sorted(set(a) - set(b))
        diff += [f"{f} (gone)" for f in gone]
        new = f" (new frames: {', '.join(sorted(set(b) - set(a)))})" if set(b) - set(a) else ""
        print(f"{'DIFFERS' if diff else 'same   '}  {key}" + (f": {', '.join(diff)}" if diff else "")
              + new)
        bad += bool(diff)
    print(f"{len(set(before) | set(after)) - bad} of {len(set(before) | set(after))} runs identical")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write the fingerprints (JSON) here")
    ap.add_argument("--compare", type=Path, default=None, help="compare with this earlier file")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    ap.add_argument("--days", type=int, default=120, help="days of each benchmark-book replay")
    ap.add_argument("--drop-columns", default="",
                    help="comma-separated columns left out of every frame (both files must be "
                         "made with the same list)")
    args = ap.parse_args(argv)
    LEFT_OUT.update(c for c in args.drop_columns.split(",") if c)
    prints: dict[str, dict[str, str]] = {}
    for part in args.parts.split(","):
        print(f"{part} ...", file=sys.stderr, flush=True)
        prints.update(PARTS[part](args))
    if args.out is not None:
        args.out.write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.out} ({len(prints)} runs)")
    if args.compare is not None:
        before = json.loads(args.compare.read_text())
        ran = {q for part in args.parts.split(",") for q in PREFIXES[part]}
        before = {k: v for k, v in before.items() if k.split("|")[0] in ran}
        return compare(before, prints)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
