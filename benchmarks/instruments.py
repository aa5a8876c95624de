"""Funding-aware instruments: the optimised overlay with perpetuals only vs perpetuals plus the
current and next quarterly, on real Binance data with real quarterly marks.

What is run
-----------
Book: BTC/ETH at 50/50, USD 1M of spot bought at the first close, a stablecoin reserve of 20% of
the spot value in the futures wallet, 8 h steps over the span with quarterly data (2023-07-01 ..
2025-03-10: the last complete quarterly bars are of 2025-03-10, see ../shared/data/README.md).
Real spot, perp marks, every funding settlement, ADV = the spot files' trailing 30-day quote
volume lagged one step (``MarketPath.from_data``), impact k = 0.5 (ADV x 4, as in vs_naive.py).

Contracts: USD-M perpetuals BTC/ETH at 10x with the tier history's brackets at the path's start
and the 2025 lot steps (as vs_naive.py); the USDT quarterlies delivering 2023-09-29 .. 2025-06-27
(8 per asset, delivery 08:00 UTC), marked by ``scenarios.quarterly_basis.with_quarterly_marks``: the real
daily close where one exists (at 00:00 steps; at the 08:00 / 16:00 steps the basis of a close
under a day old carried to the step's spot; the delivery-day close at 08:00), else the basis term
structure fitted to all the real quarterlies (``b(tau) = a + slope tau``, least squares), labelled
"modelled" (e.g. the next quarter before it was listed in the files: 2023-07-01 .. 2023-08-18,
and both contracts after 2025-03-10 are outside the span). Assumed, not from data: the
quarterlies use the perpetual's tiers, taker fee 0.05%, half spread 2 bp (perps: 1 bp), ADV 10% of
the spot ADV; settlement at delivery pays the taker fee (the replay's rule).

Policies (each ``OptimizedFutures`` with trading + impact + carry costs, ``funding_forecast =
"ewma"``, horizon 1 day, gamma_trade 4, gamma_fund 1, margin row on, basis risk off unless named, a trailing
Ledoit-Wolf risk model re-estimated every 30 days on data up to t, as vs_naive.py):

- ``perps``: the perpetuals only;
- ``perps_quarterlies``: per asset the perpetual plus the *current and next* quarterly (the two
  unexpired ones delivering first), with the ``min_days_to_expiry`` row on (2 days:
  ``ConstraintSettings.expiry_row``): :class:`QuarterlyWindow` shows the optimiser that
  6-contract sub-book at each step (the compiled problem is the same all along: only the symbols
  behind the columns change at a delivery); positions still open at delivery are settled at spot
  by the replay. A step where the current contract is cut and the next one grown on the same
  asset is declared a roll (``RollTargets``);
- ``perps_quarterlies_perp_costs``: the same with the quarterlies' assumed costs set to the
  perpetual's (half spread 1 bp, full spot ADV): how much of the answer is the cost assumption;
- ``perps_basis``, ``perps_quarterlies_basis``, ``perps_quarterlies_perp_costs_basis``: the three
  with basis risk on, priced as a data book prices it (:func:`trailing_basis`: fbr.config_basis's
  estimate of the contracts shown at each monthly refresh, from the data up to it).

Figures (over the whole run; bp of mean NAV per year, TE annualised):

- ``funding_bps``: perpetual funding paid (> 0 a cost);
- ``basis_carry_bps``: the dated positions' PnL beyond their spot exposure, paid: per step and
  dated contract, ``-(q (P_t - P_{t-1}) - x_{t-1} (S_t / S_{t-1} - 1))`` with ``P_t = S_t`` at or
  after delivery (the settlement price); the convergence of the basis a long pays or a short earns;
- ``carry_bps`` = funding + basis carry; ``trading_cost_bps``: fees + spread + impact + the spot
  fees of collateral sweeps (as vs_naive.py); ``total_bps`` = carry + trading + penalties;
- ``te_bps``: realised tracking error (book PnL per unit of invested base minus the target
  portfolio's return);
- ``dated_basis_te_bps``: the part of the TE the quarterlies' basis moves make: the annualised std of
  the per-step basis PnL (``basis_carry``, per unit of invested base);
- the share of gross futures notional held in quarterlies, and of those step-contract marks that
  were real.

Run: ``python benchmarks/instruments.py [--out DIR] [--start 2023-07-01] [--end 2025-03-10]``
(about 2-4 minutes). Writes ``DIR/instruments.json``. Without ../shared/data (or FBR_DATA_DIR) with
quarterly_1d it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

import vs_naive as vn  # noqa: E402

from fbr.config_basis import BasisHistory  # noqa: E402
from models.book import Book  # noqa: E402
from models.data_layout import QUARTERLY_FOLDER  # noqa: E402
from models.instruments import ContractKind, FuturesContract, SpotAsset  # noqa: E402
from models.io import default_data_dir, quarterly_files  # noqa: E402
from models.market import MarketSnapshot  # noqa: E402
from models.risk import estimate_risk, returns_from_prices  # noqa: E402
from models.trailing_risk import TrailingRisk  # noqa: E402
from optimizer.policies import OptimizedFutures, Policy, TargetHoldings  # noqa: E402
from optimizer.settings import (  # noqa: E402
    ConstraintSettings,
    CostSettings,
    FundingForecastRule,
    OptimizerSettings,
)
from scenarios.backtest_result import BacktestResult, RollTargets  # noqa: E402
from scenarios.collateral import CollateralPolicy  # noqa: E402
from scenarios.market_path import MarketPath  # noqa: E402
from scenarios.quarterly_basis import REAL, REAL_FFILL, with_quarterly_marks  # noqa: E402
from scenarios.replay import run_backtest  # noqa: E402

ASSETS = ("BTC", "ETH")
TARGETS = {"BTC": 0.5, "ETH": 0.5}
START, END = "2023-07-01", "2025-03-10T23:59:59"
QUARTERLY_HALF_SPREAD = 2e-4
QUARTERLY_ADV_SHARE = 0.10
GAMMA_TRADE, GAMMA_FUND, HORIZON_DAYS = 4.0, 1.0, 1.0
MIN_DAYS_TO_EXPIRY = 2.0


def quarterlies(data: Path, perps: Sequence[FuturesContract]) -> tuple[FuturesContract, ...]:
    """Every quarterly with a file, per perp's underlying: the perp's spec and tiers, dated."""
    out: list[FuturesContract] = []
    for p in perps:
        for delivery in quarterly_files(data, f"{p.underlying}USDT"):
            out.append(dataclasses.replace(p, symbol=f"{p.underlying}-{delivery:%y%m%d}",
                                           kind=ContractKind.DATED,
                                           expiry=delivery.to_pydatetime()))
    return tuple(out)


def covered_until(dated: Sequence[FuturesContract]) -> pd.Timestamp | None:
    """The last time every underlying of ``dated`` still has two unexpired quarterlies (the
    second-last expiry of the chain with the fewest), None without two on some underlying."""
    chains: dict[str, list[pd.Timestamp]] = {}
    for c in dated:
        chains.setdefault(c.underlying, []).append(pd.Timestamp(c.expiry))
    ends = [sorted(e)[-2] for e in chains.values() if len(e) >= 2]
    return min(ends) if ends and len(ends) == len(chains) else None


def front_window(perps: Sequence[FuturesContract], chains: Mapping[str, Sequence[FuturesContract]],
                 t: pd.Timestamp) -> tuple[FuturesContract, ...]:
    """Per perpetual (in order): it, then the first two quarterlies of its chain unexpired at t."""
    chosen: list[FuturesContract] = []
    for p in perps:
        live = [c for c in chains[p.underlying] if pd.Timestamp(c.expiry) > t][:2]
        if len(live) < 2:
            raise ValueError(f"fewer than two unexpired quarterlies on {p.underlying} at {t}")
        chosen += [p, *live]
    return tuple(chosen)


def trailing_basis(history: BasisHistory, lookback: int, window: QuarterlyWindow | None
                   ) -> Callable[[pd.Timestamp], np.ndarray]:
    """basis(t) for a trailing risk model: fbr's data-book estimate (fbr.config_basis) over the
    ``lookback`` days up to t of the contracts shown at t (``window``'s, else the history's book):
    the perpetuals' mark-vs-spot changes and each quarterly's constant-maturity chain."""
    def basis(t: pd.Timestamp) -> np.ndarray:
        shown = history.book.contracts if window is None else window.window(t)
        sub = dataclasses.replace(history, book=dataclasses.replace(history.book, contracts=shown))
        return sub.estimate(t, lookback).cov
    return basis


class QuarterlyWindow(Policy):
    """Show ``inner`` the book with, per asset, its perpetual and the first two unexpired
    quarterlies (current and next) at t; every other contract is targeted flat. Declares a roll
    (current -> next) when the current one is cut and the next one grown on the same asset."""

    name = "perps_quarterlies"

    def __init__(self, inner: Policy, contracts: Sequence[FuturesContract]) -> None:
        self.inner = inner
        self.perps = [c for c in contracts if c.kind == ContractKind.PERPETUAL]
        self.chains = {p.underlying: sorted((c for c in contracts if c.kind == ContractKind.DATED
                                             and c.underlying == p.underlying),
                                            key=lambda c: pd.Timestamp(c.expiry))
                       for p in self.perps}
        self._subsets: dict[tuple[str, ...], tuple[FuturesContract, ...]] = {}

    def window(self, t: pd.Timestamp) -> tuple[FuturesContract, ...]:
        """Perp, current, next per asset (book order of the perps); cached per symbol set."""
        chosen = front_window(self.perps, self.chains, t)
        return self._subsets.setdefault(tuple(c.symbol for c in chosen), chosen)

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        shown = self.window(t)
        keep = {c.symbol for c in shown}
        sub = dataclasses.replace(book, contracts=shown,
                                  futures={s: p for s, p in book.futures.items() if s in keep})
        inner = self.inner(sub, market, t)
        futures = {c: 0.0 for c in book.contract_symbols}
        futures.update(inner.futures)
        x0 = dict(zip(book.contract_symbols, book.futures_notional(market).tolist(), strict=True))
        rolls: list[tuple[str, str]] = []
        for k in range(0, len(shown), 3):
            cur, nxt = shown[k + 1].symbol, shown[k + 2].symbol
            if abs(futures[cur]) < abs(x0[cur]) and abs(futures[nxt]) > abs(x0[nxt]):
                rolls.append((cur, nxt))
        return RollTargets(spot=dict(inner.spot), futures=futures, solve_time_ms=inner.solve_time_ms,
                           solver_fallbacks=inner.solver_fallbacks, rolls=tuple(rolls))


def with_costs(path: MarketPath, cons: Sequence[FuturesContract], dated_half_spread: float,
               dated_adv_share: float, impact_k: float) -> MarketPath:
    """``path`` with half spreads (perps 1 bp, quarterlies ``dated_half_spread``) and the ADV of
    the quarterlies scaled by ``dated_adv_share``, all ADV by 1 / k^2 (the replay charges k = 1)."""
    half = pd.Series({c.symbol: (dated_half_spread if c.kind == ContractKind.DATED else 1e-4)
                      for c in cons}, dtype=float)
    adv = path.adv
    if isinstance(adv, pd.DataFrame):
        adv = adv.copy()
        for c in cons:
            if c.kind == ContractKind.DATED:
                adv[c.symbol] = adv[c.symbol] * dated_adv_share
        adv = adv / impact_k ** 2
    return dataclasses.replace(path, half_spread=half, adv=adv)


def settings(expiry_row: bool, basis_risk: bool = False) -> OptimizerSettings:
    costs = CostSettings(trading=True, impact=True, impact_k=1.0, carry=True,
                         gamma_trade=GAMMA_TRADE, gamma_fund=GAMMA_FUND, horizon_days=HORIZON_DAYS,
                         funding_forecast=FundingForecastRule.EWMA)
    cons = ConstraintSettings(expiry_row=expiry_row, min_days_to_expiry=MIN_DAYS_TO_EXPIRY)
    return OptimizerSettings(costs=costs, constraints=cons, basis_risk=basis_risk)


def basis_carry(res: BacktestResult, path: MarketPath, dated: Sequence[FuturesContract]) -> np.ndarray:
    """Per step, USD paid through the dated positions beyond their spot exposure (see module doc)."""
    assert path.mark is not None
    idx = pd.DatetimeIndex(path.spot.index)
    out = np.zeros(len(idx))
    for c in dated:
        if c.symbol not in res.futures_notional.columns:
            continue
        x = res.futures_notional[c.symbol].to_numpy(dtype=float)
        s = path.spot[c.underlying].to_numpy(dtype=float)
        p = path.mark[c.symbol].to_numpy(dtype=float)
        p = np.where(idx >= pd.Timestamp(c.expiry), s, p)
        q_prev = x[:-1] / p[:-1]
        pnl = q_prev * (p[1:] - p[:-1]) - x[:-1] * (s[1:] / s[:-1] - 1.0)
        out[1:] -= pnl
    return out


def figures(res: BacktestResult, path: MarketPath, dated: Sequence[FuturesContract]) -> dict[str, Any]:
    mask = np.ones(len(res.steps), dtype=bool)
    m = vn.masked_metrics(res, mask)
    s = res.steps
    nav = s["nav"].to_numpy(dtype=float)
    scale = float(nav.mean()) * m["years"]
    basis = basis_carry(res, path, dated)
    basis_bps = float(basis[1:].sum()) / scale * 1e4
    base = s["base"].to_numpy(dtype=float)
    ppy = vn.steps_per_year(pd.DatetimeIndex(s.index))
    basis_te = float(np.std(basis[1:] / base[:-1], ddof=1) * np.sqrt(ppy)) if len(s) > 2 else 0.0
    gross = res.futures_notional.abs()
    dated_syms = [c.symbol for c in dated if c.symbol in gross.columns]
    share = float(gross[dated_syms].to_numpy().sum() / max(gross.to_numpy().sum(), 1e-12))
    held_real = None
    if path.mark_source is not None and dated_syms:
        held = gross[dated_syms].to_numpy() > 0
        src = path.mark_source[dated_syms].to_numpy()
        real = (src == REAL) | (src == REAL_FFILL)
        held_real = float(real[held].mean()) if held.any() else None
    return {
        "te_bps": m["tracking_error"] * 1e4,
        "dated_basis_te_bps": basis_te * 1e4,
        "funding_bps": m["funding_bps"],
        "basis_carry_bps": basis_bps,
        "carry_bps": m["funding_bps"] + basis_bps,
        "trading_cost_bps": m["trading_cost_bps"],
        "penalty_bps": m["penalty_bps"],
        "total_bps": m["funding_bps"] + basis_bps + m["trading_cost_bps"] + m["penalty_bps"],
        "turnover": m["turnover"],
        "liquidations": m["liquidations"],
        "peak_margin_use": m["peak_margin_use"],
        "mean_gross_futures_usd": float(gross.sum(axis=1).mean()),
        "quarterly_share_of_gross": share,
        "real_mark_share_while_held": held_real,
        "rolls": len(res.rolls),
        "settlements": int((res.trades["kind"] == "settle").sum()) if len(res.trades) else 0,
        "years": m["years"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=vn.DEFAULT_OUT, help="output folder")
    ap.add_argument("--start", default=START)
    ap.add_argument("--end", default=END)
    ap.add_argument("--impact-k", type=float, default=0.5)
    ap.add_argument("--lookback", type=int, default=180, help="risk model lookback, days")
    args = ap.parse_args()
    data = default_data_dir()
    if data is None or not (data / QUARTERLY_FOLDER).is_dir():
        print("instruments: skipped: no data folder with quarterly_1d (set FBR_DATA_DIR or "
              "provide ../shared/data)")
        return 0
    vn.ASSETS, vn.TARGETS = ASSETS, TARGETS
    start = vn.warmed_start(data, args.start, args.end, args.lookback)
    note = vn.warm_up_note(args.start, start, args.lookback)
    if note:
        print(note)
        args.start = start
    t0 = time.perf_counter()
    perps = vn.contracts(data, max(args.start, vn.TIERS_FIRST))
    dated = quarterlies(data, perps)
    last = covered_until(dated)
    if last is None or pd.Timestamp(args.end, tz="UTC") >= last:
        print(f"instruments: the quarterly files give two unexpired contracts per asset until "
              f"{'never' if last is None else f'{last:%Y-%m-%d %H:%M}'} UTC, not through --end "
              f"{args.end}: give an earlier --end (the shared data's files: 2025-03-10)")
        return 2
    cons = perps + dated
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = MarketPath.from_data(data, cons, start=args.start, end=args.end, step=vn.STEP,
                                    assets=ASSETS)
    for w in caught:
        print(f"  note: {str(w.message)[:300]}")
    path, term = with_quarterly_marks(base, cons, data)
    marked = path
    path = with_costs(marked, cons, QUARTERLY_HALF_SPREAD, QUARTERLY_ADV_SHARE, args.impact_k)
    same = with_costs(marked, cons, 1e-4, 1.0, args.impact_k)
    lb_start = (pd.Timestamp(args.start) - pd.Timedelta(days=args.lookback + 10)).strftime("%Y-%m-%d")
    hist = vn.spot_history(data, lb_start, args.end)
    first = estimate_risk(returns_from_prices(hist.loc[hist.index <= path.spot.index[0]]
                                              .tail(args.lookback * 3)),
                          "ledoit_wolf", periods_per_year=3 * 365.0)

    def risk(basis: Callable[[pd.Timestamp], np.ndarray] | None = None) -> TrailingRisk:
        return TrailingRisk(first, hist, list(ASSETS), args.lookback, "ledoit_wolf", basis=basis)

    assert path.mark_source is not None
    src = path.mark_source[[c.symbol for c in dated]]
    print(f"path {path.spot.index[0]} .. {path.spot.index[-1]}: {len(path.spot)} steps; term "
          f"structure a {term.a:.4f}/yr, slope {term.slope * 365:.4f}/yr per year of tau, "
          f"median {term.median:.4f}, rmse {term.rmse:.4f} over {term.n} closes; loaded in "
          f"{time.perf_counter() - t0:.1f} s")
    px = path.spot.iloc[0]
    spot = {a: TARGETS[a] * vn.SPOT_USD / float(px[a]) for a in ASSETS}
    assets = tuple(SpotAsset(a, fee=vn.SPOT_FEE) for a in ASSETS)
    coll = CollateralPolicy(target_fraction=vn.RESERVE / (1 + vn.RESERVE))
    runs: dict[str, dict[str, Any]] = {}
    specs: list[tuple[str, Book, Policy, MarketPath]] = [
        ("perps", Book(assets=assets, contracts=perps, spot=spot, targets=TARGETS,
                       cash=vn.RESERVE * vn.SPOT_USD, name="perps"),
         OptimizedFutures(risk(), settings(False)), path),
        ("perps_quarterlies", Book(assets=assets, contracts=cons, spot=spot, targets=TARGETS,
                                   cash=vn.RESERVE * vn.SPOT_USD, name="perps_quarterlies"),
         QuarterlyWindow(OptimizedFutures(risk(), settings(True)), cons), path),
    ]
    specs.append(("perps_quarterlies_perp_costs", specs[1][1],
                  QuarterlyWindow(OptimizedFutures(risk(), settings(True)), cons), same))
    # the same three with the basis priced as a data book prices it (fbr.config_basis)
    history = BasisHistory.load(specs[1][1], data)
    perps_only = dataclasses.replace(history, book=specs[0][1])
    specs.append(("perps_basis", specs[0][1], OptimizedFutures(
        risk(trailing_basis(perps_only, args.lookback, None)), settings(False, True)), path))
    for name, run_path in (("perps_quarterlies_basis", path), ("perps_quarterlies_perp_costs_basis", same)):
        shape = QuarterlyWindow(OptimizedFutures(risk(), settings(True)), cons)
        policy = QuarterlyWindow(OptimizedFutures(risk(trailing_basis(history, args.lookback, shape)),
                                                  settings(True, True)), cons)
        specs.append((name, specs[1][1], policy, run_path))
    for name, book, policy, run_path in specs:
        t1 = time.perf_counter()
        res = run_backtest(book, run_path, policy, liquidation_penalty=vn.LIQ_PENALTY,
                           spot_fee=vn.SPOT_FEE, collateral=coll)
        runs[name] = figures(res, path, dated) | {"seconds": time.perf_counter() - t1}
        f = runs[name]
        print(f"{name:28s} TE {f['te_bps']:7.1f} (dated basis {f['dated_basis_te_bps']:5.1f}) bp/yr  "
              f"funding {f['funding_bps']:6.2f}  basis "
              f"{f['basis_carry_bps']:6.2f}  carry {f['carry_bps']:6.2f}  trading "
              f"{f['trading_cost_bps']:6.2f}  total {f['total_bps']:6.2f} bp/yr  quarterly share "
              f"{f['quarterly_share_of_gross']:.2f}  rolls {f['rolls']}  ({f['seconds']:.0f} s)")
    counts = {str(k): int(v) for k, v in pd.Series(src.to_numpy().ravel()).value_counts().items()}
    doc = {
        "setup": {"assets": ASSETS, "targets": TARGETS, "start": str(path.spot.index[0]),
                  "end": str(path.spot.index[-1]), "steps": len(path.spot), "step": vn.STEP,
                  "spot_usd": vn.SPOT_USD, "reserve_of_spot": vn.RESERVE,
                  "gamma_trade": GAMMA_TRADE, "gamma_fund": GAMMA_FUND,
                  "horizon_days": HORIZON_DAYS, "funding_forecast": "ewma",
                  "min_days_to_expiry": MIN_DAYS_TO_EXPIRY, "impact_k": args.impact_k,
                  "quarterly_half_spread": QUARTERLY_HALF_SPREAD,
                  "quarterly_adv_share_of_spot": QUARTERLY_ADV_SHARE,
                  "risk_lookback_days": args.lookback,
                  "quarterlies": [c.symbol for c in dated],
                  "mark_sources_all_quarterlies": counts},
        "term_structure": dataclasses.asdict(term) | {"form": "b(tau) = a + slope x tau, per year, "
                                                      "tau in days (least squares, tau >= 7 days)"},
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "instruments.json"
    out.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
