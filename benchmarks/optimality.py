"""How far each rebalancing policy is from the optimum that no policy can beat (issue 12).

What is computed
----------------
Book 1's shape: BTC/ETH/SOL at 50/30/20, 8 h steps, annual vols 0.55/0.70/0.95, correlations
0.80 (BTC-ETH), 0.70 (BTC-SOL), 0.75 (ETH-SOL), Gaussian returns, 6 bp per unit traded (fbr's
default perpetual costs: 5 bp taker fee + 1 bp half spread), a futures overlay that can trade each
asset on its own. The model, its dynamic programme and the discretisation are stated in
``optimality_dp.py``; the simulated policies in ``optimality_sim.py``.

1. **The optimum.** Relative value iteration of the average-cost Bellman equation on a grid of
   weight deviations, for a sweep of lambda (the price of TE^2); each solution's policy is then
   evaluated on the same chain (stationary law by power iteration), giving one point (TE, trading
   cost) of the optimal frontier per lambda. Each lambda is solved coarse to fine (``--divs``:
   grid spacing L / div, L = (c / lambda)^(1/3) the region's scale, each level warm-started from
   the previous); the report shows the frontier at the two finest levels and how far it moved.
2. **Policies on common paths** (``--paths`` x ``--steps`` steps, the same seeded returns for all):
   band to target, band to edge (uniform, vol-scaled and per-asset widths), a tracking-error
   trigger (to target, or to the edge of the TE ellipsoid), calendars, fbr's single-period
   objective (TE^2 + gamma_trade c |t|), the same with the cost-to-go term (``[costs]
   cost_to_go`` kappa, ``cost_to_go_power`` p: kappa (e - w)' Q_p (e - w), Q_p = Sigma^p scaled to
   Sigma's trace), and the DP policy itself (a check of the chain against the simulation).
   fbr's policies are simulated by an exact coordinate-descent solver of the same objective; the
   run first checks it against fbr's own optimiser (``optimizer.rebalance.Rebalancer``) on random
   states, and checks that the multi-period planner with zero drift equals the single-period
   policy at gamma_trade / H (with proportional costs and no drift the plan trades once and holds).
3. **Matched TE.** Each family's cost at TE 0.3, 0.5, 1 and 2% is interpolated log-log on its
   simulated frontier; the optimum's on its chain frontier (finest level). The report gives each
   family's cost, its excess over the optimum, and the optimum's saving against the bands.

Run: ``python benchmarks/optimality.py [--quick] [--json]`` writes
``benchmarks/results/optimality.json``, ``optimality.md`` and ``optimality.png``. A full run takes
about 11 minutes on two cores, 8 with ``--dp-cache`` (``--quick``: a few minutes, coarse grids,
fewer paths).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from optimality_dp import DPSolution, Model, evaluate, grid_for, regrid, solve_dp  # noqa: E402
from optimality_sim import (  # noqa: E402
    PolicyFn,
    SimStats,
    at_te,
    band_to_edge,
    band_to_target,
    calendar,
    dp_policy,
    frontier,
    simulate,
    single_period,
    te_band_to_edge,
    te_band_to_target,
    vol_bands,
)

from optimizer.cost_to_go import fit_power, lasso_step, power_shape  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TE_TARGETS = (0.003, 0.005, 0.01, 0.02)
LAMBDAS = (0.1, 0.25, 0.6, 1.5, 4.0, 10.0, 25.0, 60.0)
DIVS = (8.0, 16.0, 24.0)
BANDS = tuple(float(b) for b in np.geomspace(0.003, 0.08, 12))
#: per-asset widths of the tuned band-to-edge, relative to BTC's (ETH's and SOL's)
RATIOS = (0.4, 0.55, 0.7, 0.85, 1.0)
#: tracking-error triggers (annual TE, fractions)
TE_BANDS = tuple(float(b) for b in np.geomspace(0.001, 0.05, 14))
CALENDARS = (1, 2, 3, 6, 12, 21, 42, 90, 180, 365)
KAPPAS = tuple(float(k) for k in np.geomspace(5e-5, 3e-2, 12))  # gamma_trade x c
#: the cost-to-go term's kappa: large, so Q_p sets the no-trade region's shape; p is fitted by
#: simulation (optimizer.cost_to_go.fit_power at TE 1%, its own seed), and p +- 0.1 shown beside it
CTG_KAPPA = 30.0
FIT_TE = 0.01
KAPPAS_CTG = tuple(float(k) for k in np.geomspace(5e-5, 0.1, 14))


def ctg_matrix(model: Model, kappa: float, p: float) -> np.ndarray:
    """The quadratic of fbr's objective with the cost-to-go term: Sigma + kappa Q_p."""
    return model.sigma + kappa * power_shape(model.sigma, p)


# ---------------------------------------------------------------------------------------------
# 1. the optimum


def dp_frontier(model: Model, lambdas: tuple[float, ...], divs: tuple[float, ...],
                log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[float, DPSolution]]:
    """Every lambda solved coarse to fine; one row per (lambda, div) and the finest solutions."""
    rows: list[dict[str, Any]] = []
    finest: dict[float, DPSolution] = {}
    for lam in lambdas:
        prev: DPSolution | None = None
        for div in divs:
            g = grid_for(model, lam, div)
            t0 = time.perf_counter()
            start = None if prev is None else regrid(prev.values, prev.grid, g)
            sol = solve_dp(model, g, lam, start=start)
            st = evaluate(model, g, sol.policy, tol=1e-10)
            secs = time.perf_counter() - t0
            rows.append({"lambda": lam, "div": div, "eta": g.eta, "nodes": int(np.prod(g.shape)),
                         "iterations": sol.iterations, "seconds": secs,
                         **dataclasses.asdict(st)})
            log(f"  DP lambda {lam:g} div {div:g}: {g.shape} TE {st.te:.4%} cost {st.cost_bp:.3f} "
                f"bp/yr ({sol.iterations} it, {secs:.0f} s, edge mass {st.edge_mass:.1e})")
            prev = sol
        assert prev is not None
        finest[lam] = prev
    return rows, finest


def dp_at(rows: list[dict[str, Any]], div: float) -> dict[str, float | None]:
    pts = [(r["te"], r["cost_bp"]) for r in rows if r["div"] == div]
    return {f"{te:g}": at_te(pts, te) for te in TE_TARGETS}


def cached_dp(model: Model, divs: tuple[float, ...], cache: Path | None,
              log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[float, DPSolution]]:
    """:func:`dp_frontier`, read from / written to ``cache`` (keyed by the model, lambdas, divs)."""
    import pickle

    key = (dataclasses.astuple(model), LAMBDAS, divs)
    if cache is not None and cache.is_file():
        got = pickle.loads(cache.read_bytes())
        if got[0] == key:
            log(f"  read {cache}")
            return got[1], got[2]
    rows, finest = dp_frontier(model, LAMBDAS, divs, log)
    if cache is not None:
        cache.write_bytes(pickle.dumps((key, rows, finest)))
    return rows, finest


# ---------------------------------------------------------------------------------------------
# 2. policies on common paths


def families(model: Model, finest: dict[float, DPSolution],
             powers: tuple[float, ...]) -> dict[str, list[tuple[str, PolicyFn]]]:
    """Every simulated family: (parameter label, policy)."""
    out: dict[str, list[tuple[str, PolicyFn]]] = {
        "band_to_target": [(f"b={b:.4f}", band_to_target(b)) for b in BANDS],
        "band_to_edge": [(f"b={b:.4f}", band_to_edge(np.full(3, b))) for b in BANDS],
        "band_to_edge_vol": [(f"b={b:.4f}", band_to_edge(vol_bands(model, b))) for b in BANDS],
        "band_to_edge_per_asset": [
            (f"b={b:.4f} x (1, {r2:g}, {r3:g})", band_to_edge(b * np.array([1.0, r2, r3])))
            for r2 in RATIOS for r3 in RATIOS for b in BANDS],
        "te_band_to_target": [(f"TE>{b:.4f}", te_band_to_target(model.sigma, b)) for b in TE_BANDS],
        "te_band_to_edge": [(f"TE>{b:.4f}", te_band_to_edge(model.sigma, b)) for b in TE_BANDS],
        "calendar": [(f"every {k} steps", calendar(k)) for k in CALENDARS],
        "fbr_single_period": [(f"gamma_trade={k / model.cost:.3g}", single_period(model.sigma, k))
                              for k in KAPPAS],
        "dp_policy": [(f"lambda={lam:g}", dp_policy(sol)) for lam, sol in finest.items()],
    }
    for i, p in enumerate(powers):
        kappa = CTG_KAPPA
        Q = ctg_matrix(model, kappa, p)
        name = "fbr_cost_to_go_fitted" if i == 0 else f"fbr_cost_to_go_p{p:g}"
        out[name] = [
            (f"gamma_trade={k * (1 + kappa) / model.cost:.3g}", single_period(Q, k * (1 + kappa)))
            for k in KAPPAS_CTG]
    return out


def simulate_all(model: Model, fams: dict[str, list[tuple[str, PolicyFn]]], paths: int, steps: int,
                 log: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, items in fams.items():
        t0 = time.perf_counter()
        rows = []
        for label, pol in items:
            st: SimStats = simulate(model, pol, paths=paths, steps=steps)
            rows.append({"param": label, **dataclasses.asdict(st)})
        out[name] = rows
        log(f"  {name}: {len(items)} runs, {time.perf_counter() - t0:.0f} s")
    return out


# ---------------------------------------------------------------------------------------------
# fbr's own optimiser vs the simulated objective


def fbr_check(model: Model, samples: int, seed: int = 7) -> dict[str, float]:
    """Max |y_fbr - y_sim| (weights) over random states for the single-period objective, the
    cost-to-go term and the planner (H = 3 vs the single period at gamma_trade / 3)."""
    import pandas as pd

    from models.book import Book, FuturesPosition
    from models.instruments import FuturesContract, SpotAsset
    from models.market import MarketSnapshot
    from models.risk import RiskModel
    from optimizer.rebalance import Rebalancer
    from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings

    syms = ("BTC", "ETH", "SOL")
    prices = {"BTC": 60000.0, "ETH": 3000.0, "SOL": 150.0}
    V = 1e6
    w = np.asarray(model.weights)
    risk = RiskModel.from_covariance(list(syms), model.sigma)
    rng = np.random.default_rng(seed)
    rb = Rebalancer()
    worst = {"single_period": 0.0, "cost_to_go": 0.0, "planner_h3": 0.0}

    def solve(d: np.ndarray, gamma: float, kappa: float, p: float, horizon: int) -> np.ndarray:
        assets = tuple(SpotAsset(s) for s in syms)
        cons = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-9, min_notional=0.0)
                     for s in syms)
        book = Book(assets, cons, spot={s: w[i] * V / prices[s] for i, s in enumerate(syms)},
                    targets=dict(zip(syms, w, strict=True)), cash=0.3 * V,
                    futures={f"{s}-PERP": FuturesPosition(d[i] * V / prices[s], prices[s])
                             for i, s in enumerate(syms)})
        market = MarketSnapshot(pd.Timestamp("2025-01-01", tz="UTC"), spot=prices,
                                mark={f"{s}-PERP": prices[s] for s in syms})
        costs = CostSettings(trading=True, impact=False, carry=False, gamma_trade=gamma,
                             cost_to_go=kappa, cost_to_go_power=p)
        settings = OptimizerSettings(costs=costs, constraints=ConstraintSettings(margin=False),
                                     basis_risk=False, round_lots=False, noise_trade_weight=0.0,
                                     horizon=horizon)
        sol = rb.solve(book, market, risk, settings)
        return np.array([sol.effective_weights_after[s] - sol.targets[s] for s in syms])

    for _ in range(samples):
        d = rng.normal(0.0, 0.02, 3)
        gamma = float(np.exp(rng.uniform(np.log(0.3), np.log(30.0))))
        k = gamma * model.cost
        y = solve(d, gamma, 0.0, 0.5, 1)
        worst["single_period"] = max(worst["single_period"],
                                     float(np.abs(y - lasso_step(model.sigma, k, d[None])[0]).max()))
        kappa, p = CTG_KAPPA, 0.4
        y = solve(d, gamma, kappa, p, 1)
        ref = lasso_step(ctg_matrix(model, kappa, p), k, d[None])[0]
        worst["cost_to_go"] = max(worst["cost_to_go"], float(np.abs(y - ref).max()))
        y = solve(d, gamma, 0.0, 0.5, 3)
        ref = lasso_step(model.sigma, k / 3.0, d[None])[0]
        worst["planner_h3"] = max(worst["planner_h3"], float(np.abs(y - ref).max()))
    return worst


# ---------------------------------------------------------------------------------------------
# 3. matched TE and the report


def matched(sims: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Each family's cost at the TE targets on its Pareto frontier (log-log interpolation)."""
    out = {}
    for name, rows in sims.items():
        pts = frontier([(r["te"], r["cost_bp"]) for r in rows])
        out[name] = {f"{te:g}": at_te(pts, te) for te in TE_TARGETS}
    return out


def excess(cost: float | None, opt: float | None) -> float | None:
    """(cost / optimum - 1) in %."""
    if cost is None or opt is None:
        return None
    return (cost / opt - 1.0) * 100.0


def summary(opt: dict[str, float | None], fams: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Per TE: the optimum, fbr's best policy (the single period or the fitted cost-to-go, not the
    sensitivity runs), its excess, and the optimum's saving against the bands."""
    fbr = ["fbr_single_period", "fbr_cost_to_go_fitted"]
    out: dict[str, Any] = {}
    for te in (f"{t:g}" for t in TE_TARGETS):
        best_fbr = min((fams[n][te] for n in fbr if fams[n][te] is not None), default=None)
        best_name = next((n for n in fbr if fams[n][te] == best_fbr), None)
        o = opt[te]
        out[te] = {
            "optimum_bp": o,
            "best_fbr": best_name, "best_fbr_bp": best_fbr,
            "best_fbr_excess_pct": excess(best_fbr, o),
            "within_5pct": None if best_fbr is None or o is None else best_fbr <= 1.05 * o,
            "optimum_below_band_to_target_pct": _below(o, fams["band_to_target"][te]),
            "optimum_below_band_to_edge_pct": _below(o, fams["band_to_edge"][te]),
            "optimum_below_te_band_to_edge_pct": _below(o, fams["te_band_to_edge"][te]),
        }
    return out


def _below(opt: float | None, other: float | None) -> float | None:
    if opt is None or other is None:
        return None
    return (1.0 - opt / other) * 100.0


def fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(res: dict[str, Any]) -> str:
    tes = [f"{t:g}" for t in TE_TARGETS]
    head = "| policy | " + " | ".join(f"TE {float(t) * 100:g}%" for t in tes) + " |"
    sep = "|" + " --- |" * (len(tes) + 1)
    lines = ["# Distance from the optimum (book 1's shape, Gaussian model)", "",
             "Trading cost in bp of the base per year at matched TE; in brackets the excess over "
             "the DP optimum. Produced by `python benchmarks/optimality.py`.", "", head, sep]
    opt = res["optimum"]["finest"]
    lines.append("| **DP optimum** | " + " | ".join(fmt(opt[t]) for t in tes) + " |")
    for name, costs in res["matched"].items():
        cells = [f"{fmt(costs[t])} ({fmt(excess(costs[t], opt[t]), 1)}%)" if costs[t] else "-"
                 for t in tes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Grid refinement: the optimum at the two finest levels "
              f"(div {res['divs'][-2]:g} and {res['divs'][-1]:g}) and the shift:", "",
              "| TE | " + " | ".join(tes) + " |", "|" + " --- |" * (len(tes) + 1)]
    lines.append("| coarser | " + " | ".join(fmt(res["optimum"]["coarser"][t]) for t in tes) + " |")
    lines.append("| finest | " + " | ".join(fmt(opt[t]) for t in tes) + " |")
    lines.append("| shift % | " + " | ".join(fmt(v, 1) for v in res["optimum"]["shift_pct"].values())
                 + " |")
    lines += ["", "Summary:", "", "| TE | optimum | best fbr | fbr excess % | within 5% | "
              "optimum below band-to-target % | optimum below band-to-edge % | "
              "optimum below TE-band-to-edge % |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t, s in res["summary"].items():
        lines.append(f"| {float(t) * 100:g}% | {fmt(s['optimum_bp'])} | {s['best_fbr']} "
                     f"{fmt(s['best_fbr_bp'])} | {fmt(s['best_fbr_excess_pct'], 1)} | "
                     f"{s['within_5pct']} | {fmt(s['optimum_below_band_to_target_pct'], 1)} | "
                     f"{fmt(s['optimum_below_band_to_edge_pct'], 1)} | "
                     f"{fmt(s['optimum_below_te_band_to_edge_pct'], 1)} |")
    fit = res["fit"]
    lines += ["", f"The cost-to-go's shape p fitted by simulation (optimizer.cost_to_go.fit_power, "
              f"its own seeded paths, TE {100 * fit['te']:g}%): p = {fit['power']:g}; simulated cost "
              "by p (bp/yr): " + ", ".join(f"{k}: {v:.2f}" for k, v in
                                            fit["cost_bp_by_power"].items()) + "."]
    chk = res["fbr_check"]
    lines += ["", f"fbr's optimiser vs the simulated objective on {res['check_samples']} random "
              f"states, max |difference| in weights: single period {chk['single_period']:.1e}, "
              f"cost-to-go {chk['cost_to_go']:.1e}, planner H = 3 vs single period at "
              f"gamma_trade / 3 {chk['planner_h3']:.1e}.",
              f"Simulation: {res['paths']} paths x {res['steps']} steps (seeded, common to all "
              f"policies); run time {res['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], out: Path) -> None:
    """Each family's Pareto frontier (simulated) and the DP optimum's (chain), log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    div = res["divs"][-1]
    pts = sorted((r["te"], r["cost_bp"]) for r in res["dp_rows"] if r["div"] == div)
    ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], "k-", lw=2.5, label="DP optimum")
    for name, rows in res["simulated"].items():
        pts = frontier([(r["te"], r["cost_bp"]) for r in rows if r["te"] > 0])
        ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], ".-", label=name, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.2, 3.0)
    ax.set_xlabel("tracking error, % per year")
    ax.set_ylabel("trading cost, bp of the base per year")
    ax.set_title("Rebalancing frontiers vs the DP optimum (BTC/ETH/SOL 50/30/20, 6 bp)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="coarse grids, fewer paths (minutes)")
    ap.add_argument("--paths", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--divs", default=None, help="grid levels, e.g. 8,16,24")
    ap.add_argument("--check-samples", type=int, default=40)
    ap.add_argument("--dp-cache", type=Path, default=None,
                    help="a pickle of the DP solutions: read when it matches, else written")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--replot", action="store_true", help="redraw the figure from the JSON")
    args = ap.parse_args()
    divs = tuple(float(x) for x in args.divs.split(",")) if args.divs else (
        (6.0, 10.0) if args.quick else DIVS)
    paths, steps = (32, 2000) if args.quick else (args.paths, args.steps)
    samples = 8 if args.quick else args.check_samples

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.replot:
        res = json.loads((RESULTS / "optimality.json").read_text())
        plot(res, RESULTS / "optimality.png")
        return 0
    model = Model()
    t0 = time.perf_counter()
    log("fbr's optimiser vs the simulated objective ...")
    check = fbr_check(model, samples)
    log(f"  {check}")
    log("DP optimum ...")
    rows, finest = cached_dp(model, divs, args.dp_cache, log)
    log(f"the cost-to-go's p fitted by simulation at TE {FIT_TE:.1%} ...")
    fit = fit_power(model.sigma, np.asarray(model.weights), np.full(3, model.cost),
                    1.0 / model.steps_per_year, FIT_TE, paths=16 if args.quick else 32,
                    steps=800 if args.quick else 2000)
    log(f"  p = {fit.power:g} ({ {k: round(v * 1e4, 3) for k, v in fit.cost_at_te.items()} } bp/yr)")
    powers = (fit.power, *(q for q in (round(fit.power - 0.1, 2), round(fit.power + 0.1, 2))
                          if 0.0 <= q <= 1.0))
    log("policies on common paths ...")
    sims = simulate_all(model, families(model, finest, powers), paths, steps, log)
    fine, coarse = dp_at(rows, divs[-1]), dp_at(rows, divs[-2])
    res: dict[str, Any] = {
        "model": dataclasses.asdict(model), "te_targets": TE_TARGETS, "lambdas": LAMBDAS,
        "divs": divs, "paths": paths, "steps": steps, "check_samples": samples,
        "fbr_check": check, "dp_rows": rows, "simulated": sims,
        "fit": {"te": FIT_TE, "power": fit.power, "kappa": CTG_KAPPA,
                "cost_bp_by_power": {f"{k:g}": v * 1e4 for k, v in fit.cost_at_te.items()}},
        "optimum": {"finest": fine, "coarser": coarse,
                    "shift_pct": {t: excess(coarse[t], fine[t]) for t in fine}},
    }
    res["matched"] = matched(sims)
    res["summary"] = summary(fine, res["matched"])
    res["seconds"] = time.perf_counter() - t0
    md = markdown(res)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        tag = "_quick" if args.quick else ""
        (RESULTS / f"optimality{tag}.json").write_text(json.dumps(res, indent=1, default=float))
        (RESULTS / f"optimality{tag}.md").write_text(md)
        plot(res, RESULTS / f"optimality{tag}.png")
    print(json.dumps(res["summary"], indent=1) if args.json else md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
