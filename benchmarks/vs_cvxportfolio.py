"""fbr's backtester against cvxportfolio's on the same single-period tracking problem and the same data.

What is compared
----------------
For each size N (assets), one seeded synthetic daily history (``models.synthetic.generate_history``):
``--warmup`` days to estimate the covariance (and to give both simulators' trailing volatility a
history), then ``--periods`` daily periods that both backtesters replay. Fixed target weights
w*_i proportional to 1 / (i + 1). Both policies solve, each period,

    minimise  (w - w*)' Sigma_annual (w - w*) + sum_i a_i |t_i| + b sigma_i |t_i|^{3/2} / sqrt(ADV_i)

(t the trade in USD over the portfolio value; a_i = taker fee 5 bp + the asset's half spread;
b = ``--impact-k``; sigma_i the daily volatility of the shared covariance; ADV the generator's
constant ADV), with the same Sigma estimated from the warm-up window (sample covariance of daily
simple returns). Both simulators charge the same linear + 3/2-power cost, the 3/2 term with a
trailing 30-day volatility and the same constant volume.

- **cvxportfolio**: ``SinglePeriodOptimization`` with objective
  ``-365 * FullCovariance(Sigma_daily) - TransactionCost(a, b, exponent=1.5)``, ``benchmark`` = the
  target weights (so the risk term is on w+ - w*), ``LongOnly`` constraint; ``MarketSimulator`` over
  ``UserProvidedMarketData`` (returns, prices, constant volume, zero-return cash) with the same
  ``TransactionCost``. The book is a spot portfolio that trades the assets themselves. Timed:
  ``simulator.backtest(...)`` (policy + simulator, including its first-period compilation).
- **fbr**: the same targets as a spot book (spot held at w* at the start, never traded) with one
  linear perpetual per asset; ``optimizer.policies.OptimizedFutures`` with costs trading + impact
  (``CostSettings(impact_k=b)``), carry off, basis risk off, margin constraint on with a 30% cash
  reserve (ample collateral), run through ``scenarios.replay.run_backtest(book,
  MarketPath.from_synthetic(hist, contracts), policy)``. Timed: ``run_backtest`` (policy +
  simulator, including the first compilation). Collateral sweeps are switched off when this build's
  ``run_backtest`` takes ``collateral`` (a pure overlay: spot is never traded).

Tracking error is computed here, the same numpy code for both sides, from each side's weights
history: ``exposure TE`` = annualised std (ddof 1, x sqrt(365)) of ``(w_t - w*)' R_{t+1}`` with
w_t the post-trade effective weights at close t and R_{t+1} the simple returns to the next close
(frictionless: it measures how well the weights track); ``realised TE`` = annualised std of the book's
return minus ``w*' R_{t+1}`` (costs, and for fbr funding, included).

Differences that remain (see also the printed notes): cvxportfolio's weights are of the whole
portfolio value (spot + cash, costs paid from cash); fbr's effective weights are (spot + futures
notional) over the invested base (spot value), with the 30% reserve outside it. fbr pays funding in
its simulator (synthetic 8 h funding, carry is not in the objective); cvxportfolio has no holding
cost. fbr rounds contract quantities to lots and cancels noise trades; cvxportfolio trades
continuous weights. fbr's policy sees the covariance's daily volatility in its impact term, as does
cvxportfolio's (passed as ``sigma``).

Process layout: this script runs under fbr's venv; it writes the shared data as CSV to a temporary
directory and runs its own ``--cvxp-worker DIR`` mode with ``.venv-cvxp/bin/python`` (cvxportfolio
upgrades cffi past what ccxt pins, so it lives in its own venv, created on first run with
``python -m venv .venv-cvxp && .venv-cvxp/bin/pip install cvxportfolio``). The worker writes its
timings and weights back as JSON/CSV.

Run: ``python benchmarks/vs_cvxportfolio.py [--sizes 3,10,20] [--periods 365] [--warmup 90]
[--repeats 3] [--seed 7] [--impact-k 1.0] [--out benchmarks/results/vs_cvxportfolio.json]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
CVXP_VENV = ROOT / ".venv-cvxp"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "vs_cvxportfolio.json"
DAYS_PER_YEAR = 365.0
TAKER_FEE = 0.0005
RESERVE = 0.30
INITIAL_VALUE = 1e6
VOL_WINDOW_DAYS = 30
SPEEDUP_GOAL = 5.0
CASH = "USDOLLAR"


# ==============================================================================================
# shared helpers (both interpreters)
# ==============================================================================================
def _read_frame(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, index_col=0)
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index, utc=True))
    return frame


def _timed(fn: Any) -> tuple[Any, float]:
    """(fn(), seconds) with garbage collection off while timing."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0
    finally:
        if enabled:
            gc.enable()


# ==============================================================================================
# cvxportfolio half (runs under .venv-cvxp/bin/python with --cvxp-worker)
# ==============================================================================================
def cvxp_worker(workdir: Path) -> None:
    """Run cvxportfolio's backtest on the data in ``workdir``; write ``cvxp_result.json`` and
    ``cvxp_weights.csv`` / ``cvxp_value.csv`` there."""
    import warnings

    import cvxportfolio as cvx  # type: ignore[import-not-found]
    from cvxportfolio.forecast import HistoricalStandardDeviation  # type: ignore[import-not-found]

    spec = json.loads((workdir / "spec.json").read_text())
    returns = _read_frame(workdir / "returns.csv")
    prices = _read_frame(workdir / "prices.csv")
    volumes = _read_frame(workdir / "volumes.csv")
    sigma_daily = pd.read_csv(workdir / "sigma_daily.csv", index_col=0)
    assets = list(spec["assets"])
    target = pd.Series(spec["target"], index=assets, dtype=float)
    a = pd.Series(spec["linear_cost"], index=assets, dtype=float)
    vol = pd.Series(spec["daily_vol"], index=assets, dtype=float)
    adv = pd.Series(spec["adv"], index=assets, dtype=float)
    k = float(spec["impact_k"])
    start = pd.Timestamp(spec["start"])
    end = pd.Timestamp(spec["end"])
    bench = pd.concat([target, pd.Series({CASH: 0.0})])
    h0 = pd.concat([target * INITIAL_VALUE, pd.Series({CASH: 0.0})])
    base = workdir / "cvxportfolio_data"

    def one_run() -> tuple[Any, float]:
        md = cvx.UserProvidedMarketData(returns=returns, volumes=volumes, prices=prices,
                                        cash_key=CASH, min_history=pd.Timedelta(0),
                                        base_location=base)
        sim_cost = cvx.TransactionCost(
            a=a, b=k, exponent=1.5,
            sigma=HistoricalStandardDeviation(rolling=pd.Timedelta(days=VOL_WINDOW_DAYS)))
        sim = cvx.MarketSimulator(market_data=md, costs=[sim_cost], base_location=base)
        pol_cost = cvx.TransactionCost(a=a, b=k, sigma=vol, volume_hat=adv, exponent=1.5)
        policy = cvx.SinglePeriodOptimization(
            objective=-DAYS_PER_YEAR * cvx.FullCovariance(sigma_daily) - pol_cost,
            constraints=[cvx.LongOnly()], benchmark=bench)
        return _timed(lambda: sim.backtest(policy, start_time=start, end_time=end, h=h0))

    runs: list[float] = []
    result = None
    split = (math.nan, math.nan)  # (policy, simulator) seconds of the fastest run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(int(spec["repeats"])):
            res, secs = one_run()
            runs.append(secs)
            if secs <= min(runs):
                split = (float(res.policy_times.sum()), float(res.simulator_times.sum()))
            if result is None:
                result = res
    assert result is not None
    h = result.h
    u = result.u.dropna(how="all")  # the row at end_time holds the final h only
    idx = u.index
    post = (h.loc[idx] + u)  # post-trade, before costs come off cash
    weights = post[assets].div(post.sum(axis=1), axis=0)
    costs = sum(series.loc[idx].fillna(0.0) for series in result.costs.values())
    weights.to_csv(workdir / "cvxp_weights.csv")
    pd.DataFrame({"value": result.v}).to_csv(workdir / "cvxp_value.csv")
    out = {
        "periods": len(idx),
        "first": str(idx[0]),
        "last": str(idx[-1]),
        "total_s_runs": runs,
        "policy_s": split[0],
        "simulator_s": split[1],
        "costs_usd": float(costs.sum()),
        "turnover_sum": float(u[assets].abs().sum(axis=1).div(h.loc[idx].sum(axis=1)).sum()),
        "final_value": float(result.v.iloc[-1]),
        "version": cvx.__version__,
    }
    (workdir / "cvxp_result.json").write_text(json.dumps(out))


# ==============================================================================================
# fbr half (runs under fbr's venv)
# ==============================================================================================
def ensure_cvxp_venv() -> Path:
    """``.venv-cvxp``'s python, creating the venv and installing cvxportfolio if missing."""
    py = CVXP_VENV / "bin" / "python"
    if py.exists():
        check = subprocess.run([str(py), "-c", "import cvxportfolio"], capture_output=True, check=False)
        if check.returncode == 0:
            return py
    print(f"creating {CVXP_VENV} with cvxportfolio (first run) ...", flush=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CVXP_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "cvxportfolio"], check=True)
    return py


def exposure_te(weights: np.ndarray, target: np.ndarray, fwd_returns: np.ndarray) -> float:
    """Annualised std of (w_t - w*)' R_{t+1}; rows of weights and fwd_returns aligned."""
    active = ((weights - target) * fwd_returns).sum(axis=1)
    return float(np.std(active, ddof=1) * math.sqrt(DAYS_PER_YEAR))


def realised_te(book_returns: np.ndarray, target: np.ndarray, fwd_returns: np.ndarray) -> float:
    """Annualised std of the book's return minus w*' R_{t+1}."""
    diff = book_returns - fwd_returns @ target
    return float(np.std(diff, ddof=1) * math.sqrt(DAYS_PER_YEAR))


class _TimedPolicy:
    """Wraps a policy to accumulate the time spent in it (policy vs simulator split)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, book: Any, market: Any, t: pd.Timestamp) -> Any:
        t0 = time.perf_counter()
        out = self.inner(book, market, t)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def run_size(n: int, args: argparse.Namespace, cvxp_python: Path) -> dict[str, Any]:
    """One size: build the data, run cvxportfolio (subprocess) and fbr, compare."""
    import dataclasses

    from models.book import Book, TargetsBase
    from models.instruments import FuturesContract, SpotAsset
    from models.risk import RiskModel
    from models.synthetic import default_symbols, generate_history
    from optimizer.policies import OptimizedFutures
    from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings
    from scenarios.collateral import NO_SWEEPS
    from scenarios.market_path import MarketPath
    from scenarios.metrics import compute_metrics
    from scenarios.replay import run_backtest

    symbols = list(default_symbols(n))
    # closes index[warmup] .. index[-2] are replayed (periods + 1 closes, ``periods`` returns); the
    # last close only completes cvxportfolio's open-to-open return table
    days = args.warmup + args.periods + 2
    hist = generate_history(symbols, days=days, seed=args.seed + n)
    closes = hist.spot.astype(float)
    simple = closes.pct_change().iloc[1:]
    train = simple.iloc[: args.warmup]
    sigma_daily = train.cov().to_numpy()
    sigma_annual = sigma_daily * DAYS_PER_YEAR
    daily_vol = np.sqrt(np.diag(sigma_daily))
    raw = 1.0 / np.arange(1, n + 1)
    target = raw / raw.sum()
    half = np.array([hist.half_spread[s] for s in symbols])
    adv = np.array([hist.adv_usd[s] for s in symbols])
    linear = TAKER_FEE + half
    index = closes.index
    start, end = index[args.warmup], index[-2]

    # ---- the cvxportfolio half, in its own interpreter ----
    with tempfile.TemporaryDirectory(prefix="vs_cvxp_") as tmp:
        work = Path(tmp)
        fwd = closes.shift(-1) / closes - 1.0
        rets = fwd.iloc[:-1].copy()
        rets[CASH] = 0.0
        rets.to_csv(work / "returns.csv")
        closes.iloc[:-1].to_csv(work / "prices.csv")
        pd.DataFrame(np.tile(adv, (len(rets), 1)), index=rets.index, columns=symbols).to_csv(
            work / "volumes.csv")
        pd.DataFrame(sigma_daily, index=symbols, columns=symbols).to_csv(work / "sigma_daily.csv")
        spec = {"assets": symbols, "target": target.tolist(), "linear_cost": linear.tolist(),
                "daily_vol": daily_vol.tolist(), "adv": adv.tolist(), "impact_k": args.impact_k,
                "start": str(start), "end": str(end), "repeats": args.repeats}
        (work / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": ""}
        proc = subprocess.run([str(cvxp_python), str(Path(__file__).resolve()), "--cvxp-worker",
                               str(work)], capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"cvxportfolio worker failed (N={n}):\n{proc.stderr[-4000:]}")
        cv = json.loads((work / "cvxp_result.json").read_text())
        cv_w = _read_frame(work / "cvxp_weights.csv")
        cv_v = _read_frame(work / "cvxp_value.csv")["value"]

    # ---- the fbr half ----
    sliced = dataclasses.replace(
        hist, spot=hist.spot.loc[start:end], mark=hist.mark.loc[start:end],
        funding=hist.funding.loc[start:end])
    contracts = tuple(FuturesContract(f"{s}-PERP", s, taker_fee=TAKER_FEE) for s in symbols)
    px0 = closes.loc[start].to_numpy()
    spot_qty = {s: float(target[i] * INITIAL_VALUE / px0[i]) for i, s in enumerate(symbols)}
    book = Book(tuple(SpotAsset(s) for s in symbols), contracts, spot=spot_qty,
                targets={s: float(target[i]) for i, s in enumerate(symbols)},
                cash=RESERVE * INITIAL_VALUE, targets_base=TargetsBase.INVESTED)
    risk = RiskModel.from_covariance(symbols, sigma_annual, method="warmup-sample")
    settings = OptimizerSettings(
        costs=CostSettings(trading=True, impact=True, impact_k=args.impact_k, carry=False),
        constraints=ConstraintSettings(margin=True), basis_risk=False)
    path = MarketPath.from_synthetic(sliced, contracts)
    kwargs: dict[str, Any] = {"collateral": NO_SWEEPS}
    sweeps = "off"
    runs: list[float] = []
    fbr_res = None
    policy_s = 0.0
    for _ in range(args.repeats):
        pol = _TimedPolicy(OptimizedFutures(risk, settings))
        res, secs = _timed(lambda pol=pol: run_backtest(book, path, pol, **kwargs))
        runs.append(secs)
        if fbr_res is None or secs <= min(runs):
            policy_s = pol.seconds
        if fbr_res is None:
            fbr_res = res
    assert fbr_res is not None
    fbr_steps = len(fbr_res.steps.index)
    metrics = compute_metrics(fbr_res)

    # ---- tracking error, the same code for both ----
    fwd_all = (closes.shift(-1) / closes - 1.0)
    common = fbr_res.weights.index.intersection(cv_w.index)
    common = common[common < end]
    R = fwd_all.loc[common, symbols].to_numpy()
    w_f = fbr_res.weights.loc[common, symbols].to_numpy()
    w_c = cv_w.loc[common, symbols].to_numpy()
    nav = fbr_res.steps["nav"]
    base = fbr_res.steps["base"]
    fbr_ret = ((nav.shift(-1) - nav) / base).loc[common].to_numpy()
    cv_ret = (cv_v.shift(-1) / cv_v - 1.0).loc[common].to_numpy()
    s = fbr_res.steps
    fbr_costs = float(s["fee_futures"].sum() + s["slippage_futures"].sum() + s["fee_spot"].sum()
                      + s["slippage_spot"].sum())

    cv_total = min(cv["total_s_runs"])
    fbr_total = min(runs)
    cv_pp = cv_total / cv["periods"] * 1e3
    fbr_pp = fbr_total / fbr_steps * 1e3
    return {
        "n": n,
        "periods_common": len(common),
        "cvxportfolio": {
            "periods": cv["periods"], "ms_per_period": cv_pp, "total_s_runs": cv["total_s_runs"],
            "policy_ms_per_period": cv["policy_s"] / cv["periods"] * 1e3,
            "simulator_ms_per_period": cv["simulator_s"] / cv["periods"] * 1e3,
            "exposure_te": exposure_te(w_c, target, R), "realised_te": realised_te(cv_ret, target, R),
            "costs_bps_of_initial": cv["costs_usd"] / INITIAL_VALUE * 1e4,
            "version": cv["version"],
        },
        "fbr": {
            "periods": fbr_steps, "ms_per_period": fbr_pp, "total_s_runs": runs,
            "policy_ms_per_period": policy_s / fbr_steps * 1e3,
            "simulator_ms_per_period": (fbr_total - policy_s) / fbr_steps * 1e3,
            "exposure_te": exposure_te(w_f, target, R), "realised_te": realised_te(fbr_ret, target, R),
            "costs_bps_of_initial": fbr_costs / INITIAL_VALUE * 1e4,
            "funding_bps_of_initial": float(s["funding"].sum()) / INITIAL_VALUE * 1e4,
            "metrics_tracking_error": metrics.tracking_error,
            "metrics_exposure_tracking_error": metrics.exposure_tracking_error,
            "liquidations": metrics.liquidations, "sweeps": sweeps,
            "max_abs_futures_weight": float((fbr_res.futures_notional.abs().div(base, axis=0)).max().max()),
        },
        "no_rebalance_exposure_te": exposure_te(
            _drift_weights(closes.loc[common, symbols].to_numpy(), target), target, R),
        "ratio_cvxp_over_fbr": cv_pp / fbr_pp,
    }


def _drift_weights(prices: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Weights of a buy-and-hold book that starts at the target (the do-nothing reference)."""
    values = target * prices / prices[0]
    return values / values.sum(axis=1, keepdims=True)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'N':>3} {'periods':>7} | {'cvxp ms/per':>11} {'(pol/sim)':>11} | {'fbr ms/per':>10} "
            f"{'(pol/sim)':>11} | {'cvxp/fbr':>8} | {'expTE cvxp':>10} {'expTE fbr':>9} "
            f"{'expTE hold':>10} | {'realTE cvxp':>11} {'realTE fbr':>10} | {'cost bp cvxp':>12} "
            f"{'cost bp fbr':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        c, f = r["cvxportfolio"], r["fbr"]
        print(f"{r['n']:>3} {r['periods_common']:>7} | {c['ms_per_period']:>11.2f} "
              f"{c['policy_ms_per_period']:>5.2f}/{c['simulator_ms_per_period']:<5.2f} | "
              f"{f['ms_per_period']:>10.2f} {f['policy_ms_per_period']:>5.2f}/"
              f"{f['simulator_ms_per_period']:<5.2f} | {r['ratio_cvxp_over_fbr']:>7.2f}x | "
              f"{c['exposure_te']:>10.4%} {f['exposure_te']:>9.4%} {r['no_rebalance_exposure_te']:>10.4%} | "
              f"{c['realised_te']:>11.4%} {f['realised_te']:>10.4%} | "
              f"{c['costs_bps_of_initial']:>12.2f} {f['costs_bps_of_initial']:>11.2f}")


NOTES = [
    "cvxportfolio trades the spot assets; fbr leaves spot untouched and trades one linear perpetual "
    "per asset (an overlay). Weights: cvxportfolio = holdings / total value (cash included, costs "
    "paid from cash); fbr = (spot + futures notional) / spot value (the 30% wallet reserve is outside "
    "the base).",
    "Same objective family on both: 365 x (w - w*)' Sigma_daily (w - w*) + a|t| + b sigma |t|^1.5 / "
    "sqrt(ADV), same Sigma (sample covariance of the warm-up window), same a, b, sigma, ADV. fbr adds "
    "a margin constraint (slack with the 30% reserve); cvxportfolio a long-only constraint (slack "
    "near target).",
    "Simulators: both charge a|t| + b sigma_30d |t|^1.5 / sqrt(volume) with the same constant volume; "
    "fbr's 30-step vol has a shorter history during its first 30 steps (it only sees the replayed "
    "path), cvxportfolio's sees the warm-up. fbr's simulator also pays synthetic perp funding "
    "(carry is off in the objective) and rounds contract quantities to 0.001 lots; "
    "cvxportfolio has no holding cost and no rounding.",
    "Timing: wall clock of the whole backtest call (first-period compilation included), divided by "
    "the number of periods; min over --repeats runs. pol/sim: cvxportfolio's own policy_times / "
    "simulator_times; fbr's policy time measured by a wrapper around the policy, sim = the rest.",
    "expTE hold: the same exposure TE of a book that never rebalances (for scale).",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="3,10,20")
    p.add_argument("--periods", type=int, default=365)
    p.add_argument("--warmup", type=int, default=90)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--impact-k", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--cvxp-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cvxp_worker is not None:
        cvxp_worker(args.cvxp_worker)
        return 0
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    cvxp_python = ensure_cvxp_venv()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    rows = []
    for n in sizes:
        print(f"N = {n} ...", flush=True)
        rows.append(run_size(n, args, cvxp_python))
    print()
    print_table(rows)
    print()
    for r in rows:
        ok = "meets" if r["ratio_cvxp_over_fbr"] >= SPEEDUP_GOAL else "misses"
        print(f"N = {r['n']}: fbr is {r['ratio_cvxp_over_fbr']:.2f}x faster per period ({ok} the "
              f"{SPEEDUP_GOAL:.0f}x goal); fbr liquidations {r['fbr']['liquidations']}, sweeps "
              f"{r['fbr']['sweeps']}, fbr funding {r['fbr']['funding_bps_of_initial']:.1f} bp of V0")
    print()
    for note in NOTES:
        print(f"- {note}")
    elapsed = time.perf_counter() - t_start
    out = {
        "benchmark": "vs_cvxportfolio",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k != "cvxp_worker"},
        "initial_value": INITIAL_VALUE, "reserve": RESERVE, "taker_fee": TAKER_FEE,
        "speedup_goal": SPEEDUP_GOAL,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg()},
        "elapsed_s": elapsed,
        "rows": rows,
        "notes": NOTES,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.out} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
