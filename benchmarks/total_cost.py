"""Total cost at matched tracking error: fbr (overlay-only and hybrid) against every naive policy.

Issue 11's benchmark. The book, market path, contracts, windows and metric conventions are those of
``benchmarks/vs_naive.py`` (read its docstring); this script adds the costs a holder pays besides
trading, the collateral set-ups and the tax cases.

Total cost (bp of the mean invested base a year, per window)
-------------------------------------------------------------
The invested base is the spot portfolio the targets apply to (NAV less a stablecoin reserve); the
costs of every family are put on that one base, so a reserve does not shrink them by enlarging NAV.
``trading`` (exchange fees + futures spread + impact + spot fees of collateral sweeps) + ``funding``
(> 0 paid) + ``penalty`` (liquidations) + ``financing`` (the wallet's cost: ``y x |W|`` over time,
W the stablecoin wallet after the previous step, y = the reserve yield, 4%/yr: a positive wallet
forgoes y, a negative one is borrowed at y) + ``reserve`` (pledged set-ups: ``y x R``, R the
stress-sized reserve at the run's largest hedge, see below) + ``tax`` in one of two views:

- **realised**: the tax paid in the window (spot sales by the lot method, realised futures PnL at
  the same rate with losses credited; ``scenarios.replay_tax``);
- **pv**: the present value at y, at the window's start, of the taxes paid in it plus the tax due on
  the unrealised gains at its end, less that due at its start (``tax_deferred``): deferral is worth
  the discount, never the whole tax.

Tracking error is measured on the pre-tax NAV (taxes are a cost, not a tracking miss).

Policies (families)
-------------------
- ``spot``: spot-only calendar (1D, 7D, 30D) and band (0.5, 1, 2, 5 pp) rebalancing, spot fee 0.10%;
- ``naive_reserve``: the naive overlay on calendars and bands, today's 20%-of-spot stablecoin
  reserve kept by sweeps (``CollateralPolicy(1/6, 0.5)``); the bands both band-to-target
  (parameter ``band b``: all assets back to target once any drifts past b) and band-to-edge
  (``edge b``: each asset past its band traded back to the band's edge only,
  ``optimizer.edge_bands.EdgeBandFutures``; ``vedge b``: the same with widths scaled by each
  asset's trailing 30-step realised vol, ``VolScaledEdgeBandFutures``);
- ``naive_pledged``: the same naive overlays on a book whose spot is pledged as margin (flat
  collateral ratio 1 - bidBuffer: 0.95 for BTC, ETH and BNB, 0.90 for the others; an assumption in
  the style of Binance Multi-Assets mode's ``assetIndex``), no stablecoin reserve held for
  margin: the wallet only settles PnL, kept within +-2% of NAV around 0 and reset to 0 by sweeps
  (``PLEDGED_SWEEPS``: below -2% spot is sold, above +2% spot is bought, spot fee paid; a
  negative wallet is stablecoin owed against the pledged spot and financed at y like any
  balance; sweeping at every step instead would sell spot lots every few steps, which FIFO books
  tax heavily);
- ``fbr_overlay``: ``OptimizedFutures`` on the pledged book, trading + impact + carry costs (EWMA
  funding forecast), margin and each-and-all +-40% stress rows, over a gamma_trade grid; its risk
  model is the trailing one of 8 h spot returns with the trailing covariance of the path's basis
  changes (``path_basis``: the perpetuals' mark against spot, as the replay's TE counts it);
- ``fbr_hybrid``: the same with the spot leg on: spot trades priced with fee, spread and impact
  and, at a positive tax rate, the tax of the lots they sell (the books' lot order, losses not
  harvested) and the tax of realising futures gains (``SpotLegSettings.futures_tax``, the replay's
  average-cost entries), weighted by gamma_tax in {1, 0.3, 0.1} (``GAMMA_TAX``; a tax paid now is
  partly a liability settled early, so a weight below 1 can be the better trade-off); each also
  without the futures tax priced (parameter suffix ``nf``), and as the multi-period planner
  (``h 3``: every step may trade spot and futures, so a spot trade whose impact makes it dear can be
  spread over the steps; optimizer.planner). The walk-forward picks among them all.

Pledged set-ups hold no reserve; the reserve the each-and-all +-40% scenarios would need at the
run's largest gross hedge (``optimizer.reserve.size_reserve``, pledged spot re-priced) is reported
and its cost y x R charged for the whole window.

Tax cases: ``0`` (no tax), ``25hifo`` and ``25fifo`` (25% on short and long gains and on realised
futures PnL, losses credited; the book bought at the first close, one lot per asset).

Judging: each family's Pareto frontier of (TE, total cost) per window and view; the fbr setting
chosen on ``select`` (cheapest with TE <= 1.05 budget) is compared in every regime with every other
family's frontier at its TE there (``vs_naive.at_te``: within 5% or interpolated; ex post, the
strictest comparison). "Best naive" = the cheapest of spot, naive_reserve and naive_pledged.

Run: ``python benchmarks/total_cost.py [--book2] [--nav USD] [--taxes 0,25hifo,25fifo]
[--start DATE --end DATE] [--data DIR] [--jobs N] [--quick] [--tag T] [--analyse-only]
[--verify K]``. Writes ``benchmarks/results/total_cost[_tag].json`` and ``..._frontier.png``;
``--verify K`` writes nothing: it re-runs K of the recorded runs (seeded, one per family first) and
says whether each window metric is where the recording has it (exit 1 when one moved: the
recorded tables are stale).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing as mp
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import vs_naive as vn  # noqa: E402

from models.book import Book  # noqa: E402
from models.data_layout import spot_folder  # noqa: E402
from models.instruments import FuturesContract  # noqa: E402
from models.io import default_data_dir  # noqa: E402
from models.risk import basis_covariance, estimate_risk, returns_from_prices  # noqa: E402
from models.tax import LotMethod, TaxLot, TaxRates  # noqa: E402
from models.trailing_risk import TrailingRisk  # noqa: E402
from optimizer.edge_bands import EdgeScaling, edge_band_policy  # noqa: E402
from optimizer.policies import (  # noqa: E402
    BandSpotRebalance,
    CalendarSpotRebalance,
    NaiveFutures,
    OptimizedFutures,
    Policy,
)
from optimizer.reserve import each_and_all, size_reserve  # noqa: E402
from optimizer.settings import (  # noqa: E402
    ConstraintSettings,
    CostSettings,
    FundingForecastRule,
    OptimizerSettings,
    SpotLegSettings,
)
from optimizer.te_band import TrackingErrorBandFutures  # noqa: E402
from scenarios.backtest_result import BacktestResult  # noqa: E402
from scenarios.collateral import NO_SWEEPS, CollateralPolicy  # noqa: E402
from scenarios.market_path import MarketPath  # noqa: E402
from scenarios.metrics import STABLECOIN_YIELD  # noqa: E402
from scenarios.replay import run_backtest  # noqa: E402
from scenarios.replay_inputs import market_at, read_inputs  # noqa: E402

FAMILIES = ("spot", "naive_reserve", "naive_pledged", "fbr_overlay", "fbr_hybrid")
NAIVE = ("spot", "naive_reserve", "naive_pledged")
VIEWS = ("realised", "pv")
TAX_RATE = 0.25
STRESS_MOVE = 0.40
BID_BUFFER = {"BTC": 0.05, "ETH": 0.05, "BNB": 0.05}
OTHER_BID_BUFFER = 0.10
CAL = ("1D", "7D", "30D")
BANDS = (0.0025, 0.005, 0.01, 0.02, 0.05)
GAMMAS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: band-to-edge parameter kinds of the naive overlays -> their width scaling
EDGE_KINDS = {"edge": EdgeScaling.UNIFORM, "vedge": EdgeScaling.VOL}
#: the tracking-error band's triggers (a TE a year; ``teedge``, optimizer.te_band)
TE_BANDS = (0.0025, 0.005, 0.01, 0.02, 0.04)
#: the pledged books' wallet settles PnL only: kept within +-2% of NAV around 0 and reset to 0
#: (a top-up sells spot below -2%, a sweep-out buys spot above +2%)
PLEDGED_SWEEPS = CollateralPolicy(target_fraction=0.0, width=0.02)
GAMMAS_RUN = GAMMAS  # --gammas
#: fbr_overlay's variants: the cost-to-go term (kappa, p: the shape the optimality benchmark's
#: Gaussian model favours, fixed before any run on data) and the planner's horizon
CTG_KAPPA, CTG_POWER = 30.0, 0.4
#: fewest 8 h basis changes the trailing basis estimate needs (``path_basis``; 10 days)
MIN_BASIS_STEPS = 30
PLAN_H = 3
#: the naive overlays' parameter kinds: back to target (calendars, bands) and to the band's edge
TO_TARGET, TO_EDGE = ("cal", "band"), ("edge", "vedge", "teedge")
OVERLAYS = ("naive_reserve", "naive_pledged")
FBR = ("fbr_overlay", "fbr_hybrid")
#: the hybrid's tax weights at a positive tax rate: 1 counts a dollar of tax paid now as a dollar
#: lost; deferring it is worth only the yield until it is paid, so lower weights are tried too
GAMMA_TAX = (1.0, 0.3, 0.1)


@dataclasses.dataclass
class Setup:
    """What every run shares (built once in the parent; forked workers inherit it)."""

    path: MarketPath
    spot_book: Book
    reserve_book: Book
    pledged_book: Book
    risk: Callable[[], TrailingRisk]
    start: datetime


SETUP: Setup | None = None


# ---------------------------------------------------------------------------------------------
# books, taxes, policies


def pledged_book(overlay: Book) -> Book:
    """The overlay book with its spot pledged (flat ratio 1 - bidBuffer) and no stablecoin reserve."""
    pledged = {a: 1.0 - BID_BUFFER.get(a, OTHER_BID_BUFFER) for a in overlay.asset_symbols}
    return dataclasses.replace(overlay, cash=0.0, pledged=pledged, name="pledged")


def tax_setting(case: str, book: Book, start: datetime, spot_leg: bool = False) -> SpotLegSettings | None:
    """The tax case's settings: None for ``0``; else 25% rates, one lot per asset at the first
    close, the case's lot method (``spot_leg``: the optimiser's spot leg on, pricing that tax)."""
    if case == "0":
        return SpotLegSettings(enabled=True) if spot_leg else None
    method = LotMethod.HIFO if case.endswith("hifo") else LotMethod.FIFO
    px = shared().path.spot.iloc[0]
    lots = {a: (TaxLot(float(q), float(px[a]), start),) for a, q in book.spot.items()}
    rates = TaxRates(short_term=TAX_RATE, long_term=TAX_RATE, futures=TAX_RATE)
    return SpotLegSettings(enabled=spot_leg, rates=rates, lots=lots, lot_method=method,
                           futures_tax=spot_leg)


def shared() -> Setup:
    """The setup built in main() (forked workers inherit it)."""
    assert SETUP is not None, "the benchmark's setup is built in main()"
    return SETUP


def fbr_policy(gamma: float, spot_leg: SpotLegSettings | None, *, cost_to_go: float = 0.0,
               power: float = 0.5, horizon: int = 1, gamma_fund: float = 1.0) -> Policy:
    """fbr's optimiser: trading + impact + carry (EWMA funding), margin and stress rows; optionally
    the cost-to-go term (kappa, p) and the multi-period planner (H steps)."""
    s = shared()
    costs = CostSettings(trading=True, impact=True, impact_k=1.0, carry=True, gamma_trade=gamma,
                         gamma_fund=gamma_fund, horizon_days=1.0,
                         funding_forecast=FundingForecastRule.EWMA, cost_to_go=cost_to_go,
                         cost_to_go_power=power)
    cons = ConstraintSettings(stress=each_and_all(s.pledged_book.asset_symbols, STRESS_MOVE))
    settings = OptimizerSettings(costs=costs, constraints=cons, basis_risk=True,
                                 spot=spot_leg or SpotLegSettings(), horizon=horizon)
    return OptimizedFutures(s.risk(), settings)


def grid(quick: bool, case: str) -> list[tuple[str, str]]:
    """(family, parameter) of every run of one tax case; with tax the hybrid also runs over the
    tax weight gamma_tax (``GAMMA_TAX``) and the futures tax on and off, each without and with the
    cost-to-go (as at 0% tax and for the overlay: the hybrid's settings hold the overlay's)."""
    cal = ("7D",) if quick else CAL
    bands = (0.01, 0.05) if quick else BANDS
    gammas = (1.0, 8.0) if quick else GAMMAS_RUN
    out = [("spot", f"cal {p}") for p in cal] + [("spot", f"band {b:g}") for b in bands]
    for fam in ("naive_reserve", "naive_pledged"):
        out += [(fam, f"cal {p}") for p in cal] + [(fam, f"band {b:g}") for b in bands]
        out += [(fam, f"{kind} {b:g}") for kind in EDGE_KINDS for b in bands]
        out += [(fam, f"teedge {b:g}") for b in ((0.01,) if quick else TE_BANDS)]
    out += [("fbr_overlay", f"gt {g:g}") for g in gammas]
    out += [("fbr_overlay", ctg_param(g, carry)) for g in gammas for carry in (True, False)]
    out += [("fbr_overlay", f"gt {g:g} h {PLAN_H}") for g in gammas]
    planned = [("fbr_hybrid", f"gt {g:g} h {PLAN_H}") for g in gammas]
    if case == "0":
        return out + [("fbr_hybrid", f"gt {g:g}") for g in gammas] + [
            ("fbr_hybrid", ctg_param(g)) for g in gammas] + planned
    taxed = [base + tax_suffix(x, ft) for ft in (True, False) for x in GAMMA_TAX for g in gammas
             for base in (f"gt {g:g}", ctg_param(g))]
    return out + [("fbr_hybrid", p) for p in taxed] + planned


def tax_suffix(gamma_tax: float, futures_tax: bool) -> str:
    """A taxed hybrid's parameter suffix: `` gx X`` (gamma_tax, unless 1), then `` nf`` (the
    futures tax not priced); last, after any ``key value`` pairs."""
    return ("" if gamma_tax == 1.0 else f" gx {gamma_tax:g}") + ("" if futures_tax else " nf")


def ctg_param(gamma: float, carry: bool = True) -> str:
    """The parameter of the cost-to-go variant of ``gt gamma``: with the term the deviation is
    priced about (1 + kappa) x TE^2, so every cost weight is scaled alike, gamma_trade and
    gamma_fund (``gf``; the carry is a cost like the trades: left at 1 it would weigh
    1 / (1 + kappa) of what it weighs in ``gt gamma``); ``carry`` False: ``gf 0``, carry off."""
    k = 1 + CTG_KAPPA
    return f"gt {gamma * k:g} ctg {CTG_KAPPA:g} p {CTG_POWER:g} gf {k if carry else 0:g}"


def superseded(key: str) -> bool:
    """A stored run of a grid point since re-defined: a cost-to-go variant before its carry weight
    was scaled with gamma_trade (no ``gf``); dropped from the analysis and the JSON."""
    return " ctg " in key and " gf " not in key


def naive_policy(kind: str, value: str) -> Policy:
    """A naive overlay by parameter kind: ``cal`` (period), ``band`` (band-to-target), ``edge``
    (band-to-edge, uniform widths), ``vedge`` (band-to-edge, vol-scaled widths) or ``teedge``
    (a tracking-error band to its edge, on the trailing risk model fbr's policies use)."""
    if kind == "cal":
        return NaiveFutures(period=value)
    if kind == "teedge":
        return TrackingErrorBandFutures(shared().risk(), float(value))
    if kind in EDGE_KINDS:
        return edge_band_policy(float(value), scaling=EDGE_KINDS[kind])
    return NaiveFutures(band=float(value))


def make_policy(family: str, param: str, case: str) -> Policy:
    kind, value, *_ = param.split()
    if family == "spot":
        return CalendarSpotRebalance(value) if kind == "cal" else BandSpotRebalance(float(value))
    if family.startswith("naive"):
        return naive_policy(kind, value)
    s = shared()
    fp = parse_fbr(param)
    leg = tax_setting(case, s.pledged_book, s.start, spot_leg=True) if family == "fbr_hybrid" else None
    if leg is not None and leg.rates is not None:
        leg = dataclasses.replace(leg, gamma_tax=fp.gamma_tax, futures_tax=fp.futures_tax)
    return fbr_policy(fp.gamma_trade, leg, cost_to_go=fp.cost_to_go, power=fp.power,
                      horizon=fp.horizon, gamma_fund=fp.gamma_fund)


@dataclasses.dataclass(frozen=True)
class FbrParam:
    """An fbr run's parameter string read back: ``gt G [ctg K p P gf F] [h H] [gx X] [nf]``."""

    gamma_trade: float
    cost_to_go: float = 0.0
    power: float = 0.5
    horizon: int = 1
    gamma_fund: float = 1.0
    #: the hybrid's tax weight and whether it prices the futures tax (with a tax rate only)
    gamma_tax: float = 1.0
    futures_tax: bool = True


def parse_fbr(param: str) -> FbrParam:
    """:class:`FbrParam` of ``param`` (``key value`` pairs after ``gt G``, then ``nf`` last)."""
    _, value, *extra = param.split()
    opts = dict(zip(extra[::2], extra[1::2], strict=False))
    return FbrParam(float(value), cost_to_go=float(opts.get("ctg", 0.0)),
                    power=float(opts.get("p", 0.5)), horizon=int(opts.get("h", 1)),
                    gamma_fund=float(opts.get("gf", 1.0)), gamma_tax=float(opts.get("gx", 1.0)),
                    futures_tax="nf" not in extra)


def run_one(job: tuple[str, str, str]) -> tuple[str, dict[str, Any]]:
    """One replay and its window metrics; key ``case|family|param``."""
    family, param, case = job
    s = shared()
    if family == "spot":
        book, coll = s.spot_book, NO_SWEEPS
    elif family == "naive_reserve":
        book, coll = s.reserve_book, CollateralPolicy(target_fraction=vn.RESERVE / (1 + vn.RESERVE))
    else:
        book, coll = s.pledged_book, PLEDGED_SWEEPS
    policy = make_policy(family, param, case)
    tax = tax_setting(case, book, s.start)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # solver-noise warnings of cvxpy's backends
        res = run_backtest(book, s.path, policy, liquidation_penalty=vn.LIQ_PENALTY,
                           spot_fee=vn.SPOT_FEE, collateral=coll, tax=tax)
    secs = time.perf_counter() - t0
    reserve = peak_reserve(book, res) if book is s.pledged_book else 0.0
    out = {"family": family, "param": param, "case": case, "seconds": secs,
           "trades": len(res.trades), "unsolved_steps": len(res.unsolved),
           "sized_reserve_usd": reserve,
           "windows": windows(res, reserve)}
    return f"{case}|{family}|{param}", out


def peak_reserve(book: Book, res: BacktestResult) -> float:
    """The each-and-all +-40% reserve (USD) at the step with the largest gross hedge."""
    gross = res.futures_notional.abs().sum(axis=1).to_numpy(dtype=float)
    if gross.max(initial=0.0) <= 0:
        return 0.0
    k = int(np.argmax(gross))
    s = shared()
    inputs = read_inputs(book, s.path, spot_fee=vn.SPOT_FEE, impact_k=1.0,
                         liquidation_penalty=vn.LIQ_PENALTY)
    market = market_at(inputs, k)
    px = s.path.spot.iloc[k]
    spot = {a: float(res.spot_value[a].iloc[k]) / float(px[a]) for a in book.asset_symbols}
    row = res.steps.iloc[k]
    at = dataclasses.replace(book, spot=spot, cash=float(row["wallet"]))
    x = res.futures_notional.iloc[k].to_numpy(dtype=float)
    sized = size_reserve(at, market, x, each_and_all(book.asset_symbols, STRESS_MOVE),
                         STABLECOIN_YIELD)
    return float(sized.reserve_usd)


# ---------------------------------------------------------------------------------------------
# metrics


def pre_tax(res: BacktestResult) -> BacktestResult:
    """``res`` with the taxes paid added back to NAV and wallet (TE is measured before tax)."""
    if "tax_cumulative" not in res.steps:
        return res
    st = res.steps.copy()
    st["nav"] = st["nav"] + st["tax_cumulative"]
    st["wallet"] = st["wallet"] + st["tax_cumulative"]
    return dataclasses.replace(res, steps=st)


def tax_views(res: BacktestResult, mask: np.ndarray, scale: float) -> tuple[float, float]:
    """(realised, present-value) tax in bp of ``scale`` (mean NAV x years) over ``mask``."""
    s = res.steps
    if "tax" not in s or not mask.any():
        return 0.0, 0.0
    tax = s["tax"].to_numpy(dtype=float)
    owed = s["tax_deferred"].to_numpy(dtype=float)
    t = pd.DatetimeIndex(s.index).as_unit("ns").asi8 / (365.0 * 86400e9)
    ks = np.flatnonzero(mask)
    first, last = int(ks[0]), int(ks[-1])
    disc = (1.0 + STABLECOIN_YIELD) ** (-(t - t[first]))
    before = owed[first - 1] if first > 0 else 0.0
    pv = float(tax[mask] @ disc[mask]) + owed[last] * disc[last] - before
    return float(tax[mask].sum()) / scale * 1e4, pv / scale * 1e4


def financing_bps(res: BacktestResult, mask: np.ndarray, scale: float) -> float:
    """y x |W_prev| x dt over the step pairs of ``mask``, bp of ``scale``."""
    s = res.steps
    pair = mask.copy()
    pair[0] = False
    pair[1:] &= mask[:-1]
    w_prev = np.zeros(len(s))
    w_prev[1:] = np.abs(s["wallet"].to_numpy(dtype=float)[:-1])
    dt = np.zeros(len(s))
    dt[1:] = np.diff(pd.DatetimeIndex(s.index).as_unit("ns").asi8) / (365.0 * 86400e9)
    return STABLECOIN_YIELD * float(w_prev[pair] @ dt[pair]) / scale * 1e4


def windows(res: BacktestResult, reserve_usd: float) -> dict[str, dict[str, float]]:
    """Per window (and ex-SOL-crash): vs_naive's metrics on the pre-tax NAV plus the total costs."""
    pre = pre_tax(res)
    idx = pd.DatetimeIndex(res.steps.index)
    out: dict[str, dict[str, float]] = {}
    for w, (lo, hi) in vn.WINDOWS.items():
        for ex in (False, True):
            m = vn.window_mask(idx, lo, hi, ex)
            if m.sum() < 3:
                continue
            d = vn.masked_metrics(pre, m)
            # vs_naive's figures are bp of mean NAV; here every cost is bp of the mean invested
            # base (the spot portfolio tracked), so a book that also holds a stablecoin reserve
            # is not made to look cheaper by its larger NAV
            nav = float(pre.steps["nav"].to_numpy(dtype=float)[m].mean())
            per_base = nav / float(pre.steps["base"].to_numpy(dtype=float)[m].mean())
            for k in [k for k in d if k.endswith("_bps")]:
                d[k] *= per_base
            scale = nav / per_base * d["years"]
            realised, pv = tax_views(res, m, scale)
            d["financing_bps"] = financing_bps(pre, m, scale)
            d["reserve_bps"] = STABLECOIN_YIELD * reserve_usd * d["years"] / scale * 1e4
            base = d["trading_cost_bps"] + d["funding_bps"] + d["penalty_bps"] \
                + d["financing_bps"] + d["reserve_bps"]
            d["tax_realised_bps"], d["tax_pv_bps"] = realised, pv
            d["total_realised_bps"] = base + realised
            d["total_pv_bps"] = base + pv
            out[w + ("_exsol" if ex else "")] = d
    return out


# ---------------------------------------------------------------------------------------------
# analysis


def points(raw: dict[str, Any], case: str, family: str, window: str,
           view: str) -> list[tuple[float, float, float, str]]:
    """(TE, total cost, funding, name) of a family's runs in one tax case, window and view."""
    return [(r["windows"][window]["tracking_error"], r["windows"][window][f"total_{view}_bps"],
             r["windows"][window]["funding_bps"], r["param"])
            for r in raw.values() if r["case"] == case and r["family"] == family
            and window in r["windows"]]


def choose(raw: dict[str, Any], case: str, family: str, budget: float, view: str,
           window: str) -> str:
    """The family's cheapest run with TE <= 1.05 budget on ``window``, else its lowest TE one."""
    pts = points(raw, case, family, window, view)
    ok = [p for p in pts if p[0] <= (1 + vn.MATCH_TOL) * budget]
    return (min(ok, key=lambda p: p[1]) if ok else min(pts, key=lambda p: p[0]))[3]


def verdict(fbr: float, best: float | None, rule: str) -> dict[str, Any]:
    """The goal of a row: ``half`` (fbr <= best / 2, or fbr <= best - 3 bp where best < 10 bp),
    ``not_dearer`` (fbr <= best) or ``no_more`` (fbr <= best, overlay vs spot)."""
    if best is None:
        return {"rule": "no naive match", "met": None}
    if rule == "half":
        if best < 10.0:
            return {"rule": "best < 10 bp: fbr <= best - 3 bp", "met": fbr <= best - 3.0,
                    "margin_bps": best - 3.0 - fbr}
        return {"rule": "fbr <= best / 2", "met": fbr <= best / 2, "margin_bps": best / 2 - fbr}
    return {"rule": "fbr <= best", "met": fbr <= best + 1e-9, "margin_bps": best - fbr}


def compare(raw: dict[str, Any], case: str, view: str, fam: str, budget: float, ex: str,
            against: tuple[str, ...], rule: str) -> dict[str, Any]:
    """``fam``'s setting chosen on select at ``budget`` against ``against``'s frontiers per regime."""
    if not points(raw, case, fam, "select" + ex, view):
        return {"chosen": None, "regimes": {}}
    chosen = choose(raw, case, fam, budget, view, "select" + ex)
    rows: dict[str, Any] = {}
    run = raw[f"{case}|{fam}|{chosen}"]
    for w in vn.REGIMES:
        if w + ex not in run["windows"]:
            continue
        o = run["windows"][w + ex]
        te, cost = o["tracking_error"], o[f"total_{view}_bps"]
        fronts = {f: points(raw, case, f, w + ex, view) for f in against}
        matched = {f: vn.at_te(pts, te) for f, pts in fronts.items() if pts}
        costs = [(m["cost"], f) for f, m in matched.items() if m["cost"] is not None]
        best = min(costs) if costs else None
        rows[w + ex] = {"te": te, "cost": cost, "liquidations": o["liquidations"],
                        "peak_margin_use": o["peak_margin_use"],
                        "tax_bps": o[f"tax_{view}_bps"], "funding_bps": o["funding_bps"],
                        "trading_bps": o["trading_cost_bps"], "matched": matched,
                        "best": None if best is None else {"family": best[1], "cost": best[0]},
                        "verdict": verdict(cost, None if best is None else best[0], rule)}
    return {"chosen": chosen, "select_te": run["windows"]["select" + ex]["tracking_error"],
            "regimes": rows}


def trading_points(raw: dict[str, Any], case: str, window: str,
                   kinds: tuple[str, ...]) -> list[tuple[float, float, float, str]]:
    """(TE, trading cost, funding, name) of the naive overlays' runs of parameter ``kinds``."""
    return [(r["windows"][window]["tracking_error"], r["windows"][window]["trading_cost_bps"],
             r["windows"][window]["funding_bps"], f"{r['family']} {r['param']}")
            for r in raw.values() if r["case"] == case and r["family"] in OVERLAYS
            and r["param"].split()[0] in kinds and window in r["windows"]]


def choose_trading(raw: dict[str, Any], case: str, budget: float, window: str) -> str:
    """fbr's run (overlay or hybrid, key ``family|param``) with the lowest trading cost relative to
    the naive to-target frontier at its own TE on ``window``, among runs with TE <= 1.05 budget
    (so a low-TE run is not favoured merely for trading more); else its lowest-TE run."""
    runs = [r for r in raw.values() if r["case"] == case and r["family"] in FBR
            and window in r["windows"]]
    ok = [r for r in runs if r["windows"][window]["tracking_error"] <= (1 + vn.MATCH_TOL) * budget]
    tgt = trading_points(raw, case, window, TO_TARGET)

    def ratio(r: dict[str, Any]) -> float:
        o = r["windows"][window]
        m = vn.at_te(tgt, o["tracking_error"])["cost"] if tgt else None
        return o["trading_cost_bps"] / m if m else math.inf

    best = min(ok, key=ratio) if ok else min(runs, key=lambda r: r["windows"][window]["tracking_error"])
    return f"{best['family']}|{best['param']}"


def compare_trading(raw: dict[str, Any], case: str, budget: float, ex: str) -> dict[str, Any]:
    """fbr's setting (overlay or hybrid) chosen on select by its trading cost against the naive to-target
    frontier at its own TE (``choose_trading``), against the naive overlays' trading-cost frontiers
    per regime: at least 30% below the best that trades to target, and not above the best
    band-to-edge."""
    if not any(points(raw, case, f, "select" + ex, "realised") for f in FBR):
        return {"chosen": None, "regimes": {}}
    chosen = choose_trading(raw, case, budget, "select" + ex)
    run = raw[f"{case}|{chosen}"]
    rows: dict[str, Any] = {}
    for w in vn.REGIMES:
        if w + ex not in run["windows"]:
            continue
        o = run["windows"][w + ex]
        te, cost = o["tracking_error"], o["trading_cost_bps"]
        tgt = trading_points(raw, case, w + ex, TO_TARGET)
        edge = trading_points(raw, case, w + ex, TO_EDGE)
        mt = vn.at_te(tgt, te)["cost"] if tgt else None
        me = vn.at_te(edge, te)["cost"] if edge else None
        rows[w + ex] = {"te": te, "trading_bps": cost, "to_target_bps": mt, "to_edge_bps": me,
                        "below_target_pct": None if not mt else (1 - cost / mt) * 100,
                        "met_30pct": None if mt is None else cost <= 0.7 * mt,
                        "met_edge": None if me is None else cost <= me + 1e-9,
                        "liquidations": o["liquidations"]}
    return {"chosen": chosen, "select_te": run["windows"]["select" + ex]["tracking_error"],
            "regimes": rows}


def chosen_note(c: dict[str, Any], budget: float) -> str:
    """``chosen: <setting>``, and when its TE on select is over the 1.05 x budget (no setting of
    the family was within it, so ``choose`` fell back to the lowest TE) a note saying so."""
    te = c.get("select_te")
    if te is None or te <= (1 + vn.MATCH_TOL) * budget:
        return f"chosen: {c['chosen']}"
    return (f"chosen: {c['chosen']}; no setting within the TE budget on select, the lowest TE "
            f"there, {100 * te:.2f}%")


def analyse(raw: dict[str, Any], cases: list[str], budgets: tuple[float, ...]) -> dict[str, Any]:
    """Per tax case, view, budget and ex-SOL flag: fbr hybrid vs the best naive (goal: half at 0%
    tax, not dearer at 25%), fbr overlay vs spot (no more at 0%)."""
    out: dict[str, Any] = {}
    for case in cases:
        for view in (("realised",) if case == "0" else VIEWS):
            for budget in budgets:
                for ex in ("", "_exsol"):
                    key = f"{case}|{view}|{budget:g}{ex}"
                    out[key] = {
                        "hybrid_vs_naive": compare(raw, case, view, "fbr_hybrid", budget, ex, NAIVE,
                                                   "half" if case == "0" else "not_dearer"),
                        "overlay_vs_naive": compare(raw, case, view, "fbr_overlay", budget, ex, NAIVE,
                                                    "not_dearer"),
                        "overlay_vs_spot": compare(raw, case, view, "fbr_overlay", budget, ex,
                                                   ("spot",), "no_more"),
                        "trading_vs_naive": compare_trading(raw, case, budget, ex),
                    }
    return out


def fmt(v: float | None, nd: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def print_tables(ana: dict[str, Any], budgets: tuple[float, ...]) -> None:
    for key, per in ana.items():
        case, view, rest = key.split("|")
        if rest.rstrip("_exsol") not in {f"{b:g}" for b in budgets}:
            continue
        for what in ("hybrid_vs_naive", "overlay_vs_spot"):
            c = per[what]
            print(f"\n== tax {case} / {view} / TE budget {rest}: {what} (chosen on select: "
                  f"{c['chosen']})")
            print(f"{'regime':22s} {'TE%':>6s} {'fbr':>8s} {'best':>8s} {'family':>14s} "
                  f"{'liq':>4s} {'peakMU%':>8s}  rule / met")
            for w, r in c["regimes"].items():
                b = r["best"] or {}
                v = r["verdict"]
                print(f"{w:22s} {100 * r['te']:6.2f} {fmt(r['cost']):>8s} {fmt(b.get('cost')):>8s} "
                      f"{b.get('family', '-'):>14s} {r['liquidations']:4d} "
                      f"{100 * r['peak_margin_use']:8.2f}  {v['rule']} / {v['met']}")


def markdown(ana: dict[str, Any], title: str, budget: float) -> str:
    """The headline tables (TE budget ``budget``) as markdown: per tax case and view, fbr hybrid
    against the best naive policy and fbr overlay-only against the best spot policy, per regime."""
    lines = [f"# Total cost at matched TE: {title}", "",
             f"Walk-forward: fbr's setting chosen on `select` at a TE budget of {100 * budget:g}%; "
             "costs in bp of the invested base a year; `best` is the cheapest naive frontier "
             "(spot, naive overlay with a reserve, naive overlay on pledged spot) at fbr's TE.", ""]
    for key, per in ana.items():
        case, view, rest = key.split("|")
        if rest not in (f"{budget:g}", f"{budget:g}_exsol"):
            continue
        for what, label in (("hybrid_vs_naive", "fbr hybrid vs the best naive policy"),
                            ("overlay_vs_spot", "fbr overlay-only (pledged) vs the best spot policy")):
            c = per[what]
            lines += [f"## tax {case}, {view} view{' (ex SOL crash)' if rest.endswith('exsol') else ''}: "
                      f"{label} ({chosen_note(c, budget)})", "",
                      "| regime | TE % | fbr | best | best family | rule | met | liq | peak margin % |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for w, r in c["regimes"].items():
                b, v = r["best"] or {}, r["verdict"]
                lines.append(f"| {w} | {100 * r['te']:.2f} | {fmt(r['cost'])} | {fmt(b.get('cost'))} | "
                             f"{b.get('family', '-')} | {v['rule']} | {v['met']} | {r['liquidations']} | "
                             f"{100 * r['peak_margin_use']:.1f} |")
            lines.append("")
        c = per.get("trading_vs_naive")
        if c and case == "0" and view == "realised":
            lines += [f"## trading cost{' (ex SOL crash)' if rest.endswith('exsol') else ''}: fbr "
                      f"vs the naive overlays ({chosen_note(c, budget)})", "",
                      "| regime | TE % | fbr | best to target | below % | >= 30% | best to edge | "
                      "<= edge | liq |", "|---|---|---|---|---|---|---|---|---|"]
            for w, r in c["regimes"].items():
                lines.append(f"| {w} | {100 * r['te']:.2f} | {fmt(r['trading_bps'], 2)} | "
                             f"{fmt(r['to_target_bps'], 2)} | {fmt(r['below_target_pct'])} | "
                             f"{r['met_30pct']} | {fmt(r['to_edge_bps'], 2)} | {r['met_edge']} | "
                             f"{r['liquidations']} |")
            lines.append("")
    return "\n".join(lines)


def plot(raw: dict[str, Any], out: Path, case: str, view: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = [w for w in vn.REGIMES if w != "full"]
    fig, axes = plt.subplots(1, len(regimes), figsize=(5 * len(regimes), 4.5), squeeze=False)
    for ax, w in zip(axes[0], regimes, strict=True):
        for fam in FAMILIES:
            pts = sorted(points(raw, case, fam, w, view))
            if pts:
                ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], "o-", label=fam, ms=3)
        ax.set_xscale("log")
        ax.set_title(f"{w}: tax {case}, {view}")
        ax.set_xlabel("tracking error, % a year")
        ax.set_ylabel("total cost, bp of NAV a year")
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:  # a regime with no points has no legend
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# main


def build_setup(data: Path, nav: float, lookback: int, impact_k: float) -> Setup:
    cons = vn.contracts(data, max(vn.START, vn.TIERS_FIRST))
    path = vn.market_path(data, cons, impact_k, vn.START, vn.END)
    lb_start = (pd.Timestamp(vn.START) - pd.Timedelta(days=lookback + 10)).strftime("%Y-%m-%d")
    hist = vn.spot_history(data, lb_start, vn.END)
    first = estimate_risk(returns_from_prices(hist.loc[hist.index <= path.spot.index[0]]
                                              .tail(lookback * 3)),
                          "ledoit_wolf", periods_per_year=3 * 365.0)
    vn.SPOT_USD = nav
    spot_book, overlay = vn.books(path, cons)

    basis = path_basis(path, cons, lookback)

    def risk() -> TrailingRisk:
        return TrailingRisk(first, hist, list(vn.ASSETS), lookback, "ledoit_wolf", basis=basis)

    return Setup(path=path, spot_book=spot_book, reserve_book=overlay,
                 pledged_book=pledged_book(overlay), risk=risk,
                 start=path.spot.index[0].to_pydatetime())


def path_basis(path: MarketPath, cons: Sequence[FuturesContract],
               lookback: int) -> Callable[[pd.Timestamp], np.ndarray]:
    """basis(t): the contracts' basis covariance (M x M, annualised at the path's 8 h step) from
    the path's marks against spot, b = mark / spot - 1 (models.risk.basis_covariance), over the
    trailing ``lookback`` days up to t (no look-ahead; zeros until MIN_BASIS_STEPS changes exist;
    a contract marked at spot, no mark file, has none). What fbr's risk model prices as basis
    risk, as the replay's tracking error counts it (the TE band does not read it)."""
    cols = [c.symbol for c in cons]
    marked = path.mark if path.mark is not None else pd.DataFrame(index=path.spot.index)
    spot = pd.DataFrame({c.symbol: path.spot[c.underlying] for c in cons})
    mark = pd.DataFrame({c: marked[c] if c in marked.columns else spot[c] for c in cols})
    rows = 3 * lookback + 1  # closes: one more than the changes

    def basis(t: pd.Timestamp) -> np.ndarray:
        past = mark.loc[mark.index <= t].tail(rows)
        if len(past) - 1 < MIN_BASIS_STEPS:
            return np.zeros((len(cols), len(cols)))
        return basis_covariance(past, spot.loc[past.index], periods_per_year=3 * 365.0)

    return basis


def main() -> int:
    global SETUP, GAMMAS_RUN
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--book2", action="store_true", help="the second book (vs_naive --book2)")
    ap.add_argument("--nav", type=float, default=vn.SPOT_USD, help="spot bought at the start, USD")
    ap.add_argument("--taxes", default="0,25hifo,25fifo", help="tax cases: 0, 25hifo, 25fifo")
    ap.add_argument("--start", default=None, help="first day (default: the book's)")
    ap.add_argument("--end", default=None, help="last day (default: the book's)")
    ap.add_argument("--data", type=Path, default=None, help="data folder (default ../shared/data)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--lookback", type=int, default=180, help="risk model lookback, days")
    ap.add_argument("--impact-k", type=float, default=0.5, help="square-root impact coefficient")
    ap.add_argument("--gammas", default=None, help="fbr's gamma_trade grid, comma-separated")
    ap.add_argument("--quick", action="store_true", help="reduced grid (smoke check)")
    ap.add_argument("--only", default=None, help="run only runs whose key contains this")
    ap.add_argument("--tag", default="", help="suffix of the output names")
    ap.add_argument("--out", type=Path, default=vn.DEFAULT_OUT, help="output folder")
    ap.add_argument("--analyse-only", action="store_true", help="re-analyse the JSON, no runs")
    ap.add_argument("--verify", type=int, default=0, metavar="K",
                    help="re-run K recorded runs (seeded sample) and compare; writes nothing")
    args = ap.parse_args()
    if args.book2:
        vn.use_book2()
        args.tag = "_book2" + args.tag
    if args.start or args.end:
        vn.START, vn.END = args.start or vn.START, args.end or vn.END
        vn.WINDOWS = generic_windows(vn.START, vn.END)
        vn.REGIMES = tuple(w for w in vn.WINDOWS if w != "select")
    if args.gammas:
        GAMMAS_RUN = tuple(float(g) for g in args.gammas.split(","))
    cases = args.taxes.split(",")
    bad = [c for c in cases if c not in ("0", "25hifo", "25fifo")]
    if bad:
        print(f"total_cost: --taxes: {bad} unknown; use 0, 25hifo, 25fifo")
        return 2
    stem = "total_cost" + ("_quick" if args.quick else "") + args.tag
    args.out.mkdir(parents=True, exist_ok=True)
    out_json = args.out / f"{stem}.json"
    doc: dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() else {}
    raw: dict[str, Any] = doc.get("runs", {})
    stale = sorted(k for k in raw if superseded(k))
    if stale:
        print(f"dropping {len(stale)} superseded runs ({stale[0]}, ...): their grid points were re-defined")
        raw = {k: v for k, v in raw.items() if k not in stale}
    budgets = vn.TE_BUDGETS
    if not args.analyse_only:
        data = args.data or default_data_dir()
        if data is None or not (data / spot_folder("4h")).is_dir():
            print("total_cost: skipped: no data folder (give --data, set FBR_DATA_DIR or provide "
                  "../shared/data)")
            return 0
        start = vn.warmed_start(data, vn.START, vn.END, args.lookback)
        note = vn.warm_up_note(vn.START, start, args.lookback)
        if note:
            print(note)
            vn.START = start
            vn.WINDOWS = generic_windows(vn.START, vn.END)
            vn.REGIMES = tuple(w for w in vn.WINDOWS if w != "select")
        t0 = time.perf_counter()
        SETUP = build_setup(data, args.nav, args.lookback, args.impact_k)
        jobs = [(f, p, c) for c in cases for f, p in grid(args.quick, c)]
        jobs = [j for j in jobs if f"{j[2]}|{j[0]}|{j[1]}" not in raw
                and (args.only is None or args.only in f"{j[2]}|{j[0]}|{j[1]}")]
        # the slow ones first, so the pool stays busy
        jobs.sort(key=lambda j: (not j[0].startswith("fbr"), j[0] != "fbr_hybrid"))
        if args.verify:
            return verify(doc, args.verify, args.jobs, setup_record(args, cases))
        doc["setup"] = setup_record(args, recorded_cases(doc, cases))
        print(f"{len(jobs)} runs on {args.jobs} processes; path {len(SETUP.path.spot)} steps",
              flush=True)
        with mp.get_context("fork").Pool(args.jobs) as pool:
            for n, (key, r) in enumerate(pool.imap_unordered(run_one, jobs), 1):
                raw[key] = r
                f = r["windows"]["full"]
                print(f"[{n}/{len(jobs)}] {key:32s} {r['seconds']:6.1f} s  TE "
                      f"{100 * f['tracking_error']:.2f}%  total {f['total_realised_bps']:.1f} / pv "
                      f"{f['total_pv_bps']:.1f} bp/yr  tax {f['tax_realised_bps']:.1f}  liq "
                      f"{f['liquidations']}", flush=True)
                doc["runs"] = raw
                out_json.write_text(json.dumps(doc, indent=1, default=str))
        # the time spent making the runs the JSON holds (a run adding runs adds its time)
        doc["runtime_s"] = float(doc.get("runtime_s", 0.0)) + time.perf_counter() - t0
    ana = analyse(raw, [c for c in cases if any(r["case"] == c for r in raw.values())], budgets)
    doc["runs"], doc["analysis"] = raw, ana
    out_json.write_text(json.dumps(doc, indent=1, default=str))
    print_tables(ana, (vn.HEADLINE_BUDGET,))
    title = f"{vn.TITLE}, {args.nav:,.0f} USD, {vn.START[:10]} .. {vn.END[:10]}"
    (args.out / f"{stem}.md").write_text(markdown(ana, title, vn.HEADLINE_BUDGET) + "\n")
    for case in cases:
        for view in (("realised",) if case == "0" else VIEWS):
            plot(raw, args.out / f"{stem}_{case}_{view}_frontier.png", case, view)
    print(f"\nwrote {out_json}")
    return 0


def recorded_cases(doc: dict[str, Any], cases: list[str]) -> list[str]:
    """The tax cases a JSON holds once ``cases`` are run into it: those it held and ``cases``, in
    the order 0, 25hifo, 25fifo (a run adding cases to a JSON keeps the others' record)."""
    held = set(doc.get("setup", {}).get("taxes", [])) | set(cases)
    return [c for c in ("0", "25hifo", "25fifo") if c in held]


def setup_record(args: argparse.Namespace, cases: list[str]) -> dict[str, Any]:
    """The settings a recorded JSON was made with (its ``setup``), as JSON would hold them."""
    rec = {"assets": vn.ASSETS, "targets": vn.TARGETS, "start": vn.START, "end": vn.END,
           "nav_usd": args.nav, "windows": vn.WINDOWS, "taxes": cases,
           "reserve_yield": STABLECOIN_YIELD, "tax_rate": TAX_RATE,
           "stress_move": STRESS_MOVE, "bid_buffer": BID_BUFFER,
           "other_bid_buffer": OTHER_BID_BUFFER, "impact_k": args.impact_k,
           "lookback_days": args.lookback}
    out: dict[str, Any] = json.loads(json.dumps(rec, default=str))
    return out


#: A re-run metric agrees with the recorded one within this share of max(1, |recorded|): the
#: replays are deterministic, so anything larger means the code moved since the table was made.
VERIFY_RTOL = 1e-6
#: The settings a re-run must share with the recording (the tax cases may be any subset).
VERIFY_SETUP_KEYS = ("assets", "targets", "start", "end", "nav_usd", "windows", "reserve_yield",
                     "tax_rate", "stress_move", "bid_buffer", "other_bid_buffer", "impact_k",
                     "lookback_days")


def sample_keys(raw: dict[str, Any], k: int, seed: int = 0) -> list[str]:
    """k recorded run keys, seeded: one per family first (in family order), then at random."""
    rng = np.random.default_rng(seed)
    keys = sorted(raw)
    by_family: dict[str, list[str]] = {}
    for key in keys:
        by_family.setdefault(raw[key]["family"], []).append(key)
    picked = [str(rng.choice(v)) for _, v in sorted(by_family.items())][:k]
    rest = [key for key in keys if key not in picked]
    extra = rng.choice(len(rest), size=max(0, min(k - len(picked), len(rest))), replace=False)
    return picked + [rest[int(i)] for i in extra]


def largest_gap(old: dict[str, Any], new: dict[str, Any]) -> tuple[float, str]:
    """The largest |new - old| / max(1, |old|) over every window metric both hold, and where."""
    worst, where = 0.0, "-"
    for win, metrics in old["windows"].items():
        for name, a in metrics.items():
            b = new["windows"].get(win, {}).get(name)
            if not isinstance(a, int | float) or not isinstance(b, int | float):
                continue
            x, y = float(a), float(b)
            if math.isnan(x) and math.isnan(y):
                continue
            gap = (abs(y - x) / max(1.0, abs(x)) if math.isfinite(x) and math.isfinite(y)
                   else 0.0 if x == y else math.inf)
            if gap > worst:
                worst, where = gap, f"{win}.{name}: {x:.6g} -> {y:.6g}"
    return worst, where


def verify(doc: dict[str, Any], k: int, jobs: int, setup: dict[str, Any],
           run: Callable[[tuple[str, str, str]], tuple[str, dict[str, Any]]] = run_one) -> int:
    """Re-run k recorded runs at this code (``run``, on ``jobs`` forked processes; in this one
    when ``jobs`` <= 1) and compare every window metric with the recording
    (:data:`VERIFY_RTOL`). 0 when all agree, 1 when any moved (the table is stale), 2 when the
    recording was made with other settings (the comparison would mean nothing)."""
    rec = doc.get("setup", {})
    differ = [key for key in VERIFY_SETUP_KEYS if rec.get(key) != setup.get(key)]
    if differ:
        print(f"verify: the recording was made with other settings ({', '.join(differ)}): give "
              "the options it was run with (--book2, --nav, --start/--end, --lookback, --impact-k)")
        return 2
    raw = {key: r for key, r in doc.get("runs", {}).items() if r["case"] in setup["taxes"]}
    keys = sample_keys(raw, k)
    print(f"verify: re-running {len(keys)} of {len(raw)} recorded runs on {jobs} processes")
    jobs_list = [(raw[key]["family"], raw[key]["param"], raw[key]["case"]) for key in keys]
    moved = 0
    with contextlib.ExitStack() as stack:
        results: Iterable[tuple[str, dict[str, Any]]] = map(run, jobs_list)
        if jobs > 1:
            pool = stack.enter_context(mp.get_context("fork").Pool(jobs))
            results = pool.imap_unordered(run, jobs_list)
        for key, r in results:
            gap, where = largest_gap(raw[key], r)
            ok = gap <= VERIFY_RTOL
            moved += not ok
            print(f"  {'same ' if ok else 'MOVED'} {key:40s} largest gap {gap:.1e} ({where})",
                  flush=True)
    print(f"verify: {moved} of {len(keys)} runs moved" + (": the recorded tables are stale, re-run "
          "them" if moved else f" (every metric within {VERIFY_RTOL:g} of the recording)"))
    return 1 if moved else 0


def generic_windows(start: str, end: str) -> dict[str, tuple[str, str]]:
    """select = the first year, or the first half of a span under two years (so that a short
    span, such as one year held back, still has an out-of-sample part); oos = the rest; full; and
    each calendar year after select (of at least 30 days)."""
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    sel_end = min(s + pd.DateOffset(years=1), s + (e - s) / 2)
    fmt_d = "%Y-%m-%d"
    out = {"select": (s.strftime(fmt_d), sel_end.strftime(fmt_d)),
           "oos": (sel_end.strftime(fmt_d), (e + pd.Timedelta(days=1)).strftime(fmt_d)),
           "full": (s.strftime(fmt_d), (e + pd.Timedelta(days=1)).strftime(fmt_d))}
    for y in range(sel_end.year, e.year + 1):
        lo, hi = max(sel_end, pd.Timestamp(f"{y}-01-01")), min(e, pd.Timestamp(f"{y + 1}-01-01"))
        if hi - lo >= pd.Timedelta(days=30):  # a sliver of a year is no regime
            out[f"y{y}"] = (lo.strftime(fmt_d), hi.strftime(fmt_d))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
