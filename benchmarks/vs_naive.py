"""The optimised overlay against naive overlays and spot-only rebalancing on real Binance data.

What is run
-----------
Book: BTC/ETH/SOL at 50/30/20, USD 1M of spot bought at the first close, on 8 h steps from
2022-07-01 to 2025-06-30 (SOL funding starts 2022-06-25, the data ends 2025-06-30), real funding
(every settlement, irregular ones included), real perp marks (BTC, ETH; SOL has no mark file and is
marked at spot), ADV = the spot files' trailing 30-day quote volume lagged one step.

- **spot-only policies** (no futures, no reserve): buy and hold, calendar spot rebalancing (1D, 7D,
  30D), band spot rebalancing (max drift 1, 2, 5 pp). Spot fee 0.10%, no spread or impact (the
  backtester has none for spot).
- **overlays** (spot never traded by the policy): a book with the same spot plus a stablecoin
  reserve of 20% of the spot value in the futures wallet (targets on the invested base = spot
  value), USD-M perpetuals BTC/ETH/SOL at 10x leverage with real Binance maintenance tiers: those of
  the tier history (``markets/binance_usdm_leverage_tiers_history_majors``) at the later of the
  path's start and its first snapshot, 2023-01-13 (the data README says the history starts 2022-02;
  the file starts 2023-01-13), or the 2026-05-07 snapshot for a symbol it lacks, lot steps from
  the 2025 contract specs, taker fee 0.05%, half spread 1 bp
  (the backtester's default), square-root impact ``k sigma |t|^1.5 / sqrt(ADV)``, collateral sweeps on
  (``CollateralPolicy(target_fraction=1/6, band=0.5)``: the wallet is kept near 20% of spot = 1/6 of
  NAV by selling or buying spot, spot fee paid; those fees count as trading cost). Liquidation
  penalty 2% of notional (Binance's liquidationFee for these symbols).
  Policies: the naive overlay on a calendar (8h, 1D, 7D, 30D) and on bands (0.25, 0.5, 1, 2, 5,
  10 pp); the optimised overlay (``OptimizedFutures``) over a grid of gamma_trade x gamma_fund with
  trading + impact + carry costs, margin constraint on, and a trailing Ledoit-Wolf risk model
  (``models.trailing_risk.TrailingRisk``: re-estimated every 30 days from 8 h spot returns up to the
  current step only, over the trailing ``--lookback`` days; the spot history before the path's
  start feeds it, so there is no warm-up and no look-ahead).

Impact coefficient: ``run_backtest`` charges the 3/2-power impact with k = 1 (it has no ``impact_k``
option). To charge k = 0.5 (the default here; ``--impact-k``), the path's ADV is multiplied by
1/k^2 = 4, which is the same cost; the optimiser sees the same ADV with ``impact_k = 1``, so it
models exactly the cost it is charged.

How it is judged
----------------
One run per policy over the whole span; metrics are computed on windows of that run (each step's
costs and each step-to-step return belong to the window of the step that ends them):
``select`` 2022-07..2023-06 (walk-forward selection), ``bear_2022H2`` 2022-07..2022-12,
``y2023_2024`` 2023-01..2024-12, ``y2025H1`` 2025-01..2025-06, ``oos`` 2023-07..2025-06 and ``full``.
Every window is also reported **ex-SOL-crash**: the steps from 2022-11-01 to 2022-12-31 (FTX and
SOL's -2%-per-settlement funding) are left out: their costs, their returns (from TE) and their
time (from the years that annualise the costs); the backtest itself still runs through them, so
positions and the wallet carry over. The windows that do not overlap Nov-Dec 2022 are unchanged.

Figures per policy and window: tracking error (annualised, realised: book PnL per unit of
invested base minus the target portfolio's return, so costs count), trading cost = exchange fees
+ spread + impact of the policy's trades + the spot fees of collateral sweeps (bp of mean NAV per
year), funding (bp/yr, > 0 paid), total cost (trading + funding + the liquidation penalties the
holder paid: ``scenarios.metrics.penalty_paid``, less what the insurance fund absorbed) and total
incl. the reserve's opportunity cost (4%/yr on the wallet), liquidations, peak margin use
(maintenance / collateral; inf at a step whose collateral was gone with positions open, as
``compute_metrics``).

Families: ``spot`` (every spot-only policy), ``naive`` (every naive overlay), ``optimised``.
A family's frontier in a window is its Pareto set of (TE, trading cost). The cost of a family
**at matched TE** T: the cheaper of its frontier points whose TE is within 5% of T and the frontier
interpolated at T between the two Pareto points around it (log cost linear in log TE: the frontier
is convex, so a straight line would overstate the family's cost); outside the frontier's TE range
and with no frontier point within 5%, no match (reported as below / above range). Funding at
matched TE is interpolated on the same segment (same weight, linear).

Walk-forward ("best parameter by tracking error at least cost"): for a TE budget B (0.5%, 1%,
2%/yr; the headline is 1%), each family's parameter is chosen on ``select`` only: its cheapest
policy whose ``select`` TE is <= 1.05 B (else its lowest-TE one). The chosen optimised setting is
then judged in every regime against the naive and spot families' frontiers *at its TE in that
regime* (those families re-tuned ex post: the strictest comparison); the naive and spot policies
chosen on ``select`` are reported beside it, as they did out of sample. The ex-SOL-crash rows use
the same rule on ``select`` ex-SOL-crash. ``bear_2022H2`` lies inside ``select``: it is in-sample.
Also reported: every optimised setting against the frontiers in every window, and the best of
them ex post (an upper bound on what tuning gamma could give, not a walk-forward figure).

Second book (``--book2``, optional): BTC ETH XRP LTC ADA BNB at equal weights from 2020-02-01
(select 2020-02..2021-01; regimes 2020-21, 2022, 2023-24, 2025H1, oos 2021-02..2025-06). BNB has
no funding file and no mark file: its perpetual is kept (Binance has listed BNBUSDT since 2020-02)
but pays no funding and is marked at spot (``MarketPath.from_data``'s rule, which warns), so the
overlays' BNB carry is understated alike for the naive and the optimised overlay; tiers: the
first history snapshot (2023-01-13).

Margin-row options of the optimised overlays: ``--margin-buffer-fraction F`` keeps a share F of
the collateral free for new margin, ``--margin-hysteresis`` lets positions already inside the hard
bound stay (optimizer.data.MarginBudget); both off by default.

Run: ``python benchmarks/vs_naive.py [--quick] [--out DIR] [--impact-k 0.5] [--lookback 180]
[--resume] [--analyse-only] [--margin-buffer-fraction F] [--margin-hysteresis]``.
Results go to ``DIR/vs_naive[_quick].json`` (raw per-policy metrics
are written after every run, so a partial run keeps its figures) and ``DIR/vs_naive[_quick]_frontier
.png``. Without the data folder (``FBR_DATA_DIR`` or ``../shared/data``) it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.book import Book  # noqa: E402
from models.data_layout import MARKETS_FOLDER, spot_folder  # noqa: E402
from models.errors import ValidationError  # noqa: E402
from models.instruments import FuturesContract, SpotAsset  # noqa: E402
from models.io import (  # noqa: E402
    default_data_dir,
    load_contract_spec,
    load_leverage_tiers,
    load_spot_closes,
)
from models.risk import RiskModel, estimate_risk, returns_from_prices  # noqa: E402
from models.trailing_risk import TrailingRisk  # noqa: E402
from optimizer.policies import (  # noqa: E402
    BandSpotRebalance,
    CalendarSpotRebalance,
    NaiveFutures,
    NoRebalance,
    OptimizedFutures,
    Policy,
)
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings  # noqa: E402
from scenarios.backtest_result import BacktestResult  # noqa: E402
from scenarios.collateral import NO_SWEEPS, CollateralPolicy  # noqa: E402
from scenarios.market_path import MarketPath  # noqa: E402
from scenarios.metrics import (  # noqa: E402
    STABLECOIN_YIELD,
    compute_metrics,
    penalty_paid,
    steps_per_year,
)
from scenarios.replay import run_backtest  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results"
ASSETS = ("BTC", "ETH", "SOL")
TARGETS = {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}
START, END = "2022-07-01", "2025-06-30T23:59:59"
STEP = "8h"
SPOT_USD = 1_000_000.0
RESERVE = 0.20  # of spot value, in the futures wallet
LEVERAGE = 10.0
TAKER_FEE = 0.0005
SPOT_FEE = 0.001
LIQ_PENALTY = 0.02
MATCH_TOL = 0.05
TIERS_HISTORY = "binance_usdm_leverage_tiers_history_majors.csv.gz"
TIERS_FIRST = "2023-01-14"  # first snapshot of the tier history
TIERS_SNAPSHOT = "binance_usdm_leverage_tiers_2026-05-07.csv.gz"
SPECS = "binance_usdm_contracts_2025-12-24.csv.gz"
SOL_CRASH = (pd.Timestamp("2022-11-01", tz="UTC"), pd.Timestamp("2023-01-01", tz="UTC"))
WINDOWS: dict[str, tuple[str, str]] = {
    "select": ("2022-07-01", "2023-07-01"),
    "bear_2022H2": ("2022-07-01", "2023-01-01"),
    "y2023_2024": ("2023-01-01", "2025-01-01"),
    "y2025H1": ("2025-01-01", "2025-07-01"),
    "oos": ("2023-07-01", "2025-07-01"),
    "full": ("2022-07-01", "2025-07-01"),
}
REGIMES = ("bear_2022H2", "y2023_2024", "y2025H1", "oos", "full")
TITLE = "BTC/ETH/SOL 50/30/20"
#: The optional second book (``--book2``): equal weights, from 2020-02 (BNB: see the docstring).
BOOK2: dict[str, Any] = {
    "ASSETS": ("BTC", "ETH", "XRP", "LTC", "ADA", "BNB"),
    "TARGETS": dict.fromkeys(("BTC", "ETH", "XRP", "LTC", "ADA", "BNB"), 1.0 / 6.0),
    "START": "2020-02-01", "END": "2025-06-30T23:59:59",
    "WINDOWS": {"select": ("2020-02-01", "2021-02-01"),
                "y2020_2021": ("2020-02-01", "2022-01-01"),
                "y2022": ("2022-01-01", "2023-01-01"),
                "y2023_2024": ("2023-01-01", "2025-01-01"),
                "y2025H1": ("2025-01-01", "2025-07-01"),
                "oos": ("2021-02-01", "2025-07-01"),
                "full": ("2020-02-01", "2025-07-01")},
    "REGIMES": ("y2020_2021", "y2022", "y2023_2024", "y2025H1", "oos", "full"),
    "TITLE": "BTC/ETH/XRP/LTC/ADA/BNB equal weights",
}


def use_book2() -> None:
    """Switch the module's book settings to the second book."""
    global ASSETS, TARGETS, START, END, WINDOWS, REGIMES, TITLE
    ASSETS, TARGETS, START, END = BOOK2["ASSETS"], BOOK2["TARGETS"], BOOK2["START"], BOOK2["END"]
    WINDOWS, REGIMES, TITLE = BOOK2["WINDOWS"], BOOK2["REGIMES"], BOOK2["TITLE"]
FAMILIES = ("spot", "naive", "optimised")
#: Walk-forward TE budgets (annualised, on the selection window) and the one in the headline.
TE_BUDGETS = (0.005, 0.01, 0.02)
HEADLINE_BUDGET = 0.01


# ---------------------------------------------------------------------------------------------
# market, books, policies


def contracts(data: Path, as_of: str, leverage: float = LEVERAGE) -> tuple[FuturesContract, ...]:
    """USD-M perpetuals with the tiers in force at ``as_of`` and the 2025 lot steps."""
    markets = data / MARKETS_FOLDER
    out = []
    for a in ASSETS:
        sym = f"{a}/USDT:USDT"
        try:
            tiers = load_leverage_tiers(markets / TIERS_HISTORY, sym, as_of=as_of)
            print(f"  {sym}: tiers of the history snapshot at or before {as_of}")
        except ValidationError:  # symbol or date not in the history: the 2026 snapshot
            tiers = load_leverage_tiers(markets / TIERS_SNAPSHOT, sym)
            print(f"  {sym}: tiers of the 2026-05-07 snapshot (not in the history at {as_of})")
        spec = load_contract_spec(markets / SPECS, sym)
        out.append(FuturesContract(symbol=f"{a}-PERP", underlying=a, lot_step=spec.get("lot_step", 0.001),
                                   min_notional=spec.get("min_notional", 5.0), taker_fee=TAKER_FEE,
                                   leverage=leverage, tiers=tiers))
    return tuple(out)


def market_path(data: Path, cons: tuple[FuturesContract, ...], impact_k: float,
                start: str, end: str) -> MarketPath:
    """The 8 h path; ADV scaled by 1/k^2 so the backtester's k = 1 impact charges k."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = MarketPath.from_data(data, cons, start=start, end=end, step=STEP, assets=ASSETS)
    for w in caught:
        print(f"  note: {w.message}")
    if path.adv is not None and impact_k > 0:
        path = dataclasses.replace(path, adv=path.adv / impact_k ** 2)
    elif impact_k == 0:
        path = dataclasses.replace(path, adv=None)
    return path


def spot_history(data: Path, start: str, end: str) -> pd.DataFrame:
    """8 h spot closes (bar close times) from ``start`` to ``end``: the risk model's history."""
    raw = load_spot_closes(data, list(ASSETS), interval="4h", start=start, end=end)
    raw.index = raw.index + pd.Timedelta(hours=4)
    return raw.loc[raw.index.floor(STEP) == raw.index].astype(float)


def warmed_start(data: Path, start: str, end: str, lookback: int) -> str:
    """``start``, or, when the data folder's 8 h spot history of ``ASSETS`` (all of them)
    begins less than ``lookback`` days before it, the day ``lookback`` days after that beginning:
    the trailing risk model's warm-up (a held-back folder may start where its span does)."""
    hist = spot_history(data, "2000-01-01", end).dropna()
    if hist.empty:
        raise SystemExit(f"no spot history of {', '.join(ASSETS)} in {data}")
    ready = (hist.index[0] + pd.Timedelta(days=lookback)).normalize()
    asked = pd.Timestamp(start, tz=hist.index.tz) if pd.Timestamp(start).tz is None \
        else pd.Timestamp(start)
    return start if asked >= ready else ready.strftime("%Y-%m-%d")


def warm_up_note(asked: str, start: str, lookback: int) -> str | None:
    """What a script says when :func:`warmed_start` moved its start from ``asked`` to ``start``
    (None when it did not): the risk model's warm-up of ``lookback`` days."""
    if start == asked:
        return None
    return (f"the data's spot history begins too late for a {lookback}-day risk model at "
            f"{asked[:10]}: the run starts at {start} instead (the warm-up)")


def books(path: MarketPath, cons: tuple[FuturesContract, ...]) -> tuple[Book, Book]:
    """(spot-only book, overlay book with the reserve), spot at the targets at the first close."""
    px = path.spot.iloc[0]
    spot = {a: TARGETS[a] * SPOT_USD / float(px[a]) for a in ASSETS}
    assets = tuple(SpotAsset(a, fee=SPOT_FEE) for a in ASSETS)
    spot_book = Book(assets=assets, contracts=(), spot=spot, targets=TARGETS, cash=0.0,
                     name="spot")
    overlay = Book(assets=assets, contracts=cons, spot=spot, targets=TARGETS,
                   cash=RESERVE * SPOT_USD, name="overlay")
    return spot_book, overlay


@dataclasses.dataclass(frozen=True)
class Spec:
    """One policy to run: family, label, parameter (for the frontier) and a factory."""

    family: str
    name: str
    param: str
    make: Callable[[], Policy]
    overlay: bool


def policy_grid(quick: bool, risk: Callable[[], Callable[[pd.Timestamp], RiskModel]],
                gammas: list[float], gamma_funds: list[float],
                constraints: ConstraintSettings | None = None) -> list[Spec]:
    """The grid (``--quick``: a reduced one); ``constraints`` for the optimised overlays (default:
    margin row on, no relative buffer, no hysteresis)."""
    cons = constraints if constraints is not None else ConstraintSettings()
    specs = [Spec("spot", "no_rebalance", "hold", NoRebalance, False)]
    for p in (("7D",) if quick else ("1D", "7D", "30D")):
        specs.append(Spec("spot", f"calendar_spot_{p}", f"cal {p}",
                          lambda p=p: CalendarSpotRebalance(p), False))
    for b in ((0.05,) if quick else (0.01, 0.02, 0.05)):
        specs.append(Spec("spot", f"band_spot_{b:g}", f"band {b:g}",
                          lambda b=b: BandSpotRebalance(b), False))
    for p in (("1D", "7D") if quick else ("8h", "1D", "7D", "30D")):
        specs.append(Spec("naive", f"naive_cal_{p}", f"cal {p}",
                          lambda p=p: NaiveFutures(period=p), True))
    for b in ((0.01, 0.05) if quick else (0.0025, 0.005, 0.01, 0.02, 0.05, 0.10)):
        specs.append(Spec("naive", f"naive_band_{b:g}", f"band {b:g}",
                          lambda b=b: NaiveFutures(band=b), True))
    for gf in gamma_funds:
        for g in gammas:
            def make(g: float = g, gf: float = gf) -> Policy:
                costs = CostSettings(trading=True, impact=True, impact_k=1.0, carry=gf > 0,
                                     gamma_trade=g, gamma_fund=gf, horizon_days=1.0)
                return OptimizedFutures(risk(), OptimizerSettings(costs=costs, constraints=cons,
                                                                  basis_risk=False),
                                        explain=False)
            specs.append(Spec("optimised", f"opt_gt{g:g}_gf{gf:g}", f"gt {g:g} gf {gf:g}", make,
                              True))
    return specs


# ---------------------------------------------------------------------------------------------
# metrics on windows


def window_mask(index: pd.DatetimeIndex, lo: str, hi: str, ex_sol: bool) -> np.ndarray:
    m = (index >= pd.Timestamp(lo, tz="UTC")) & (index < pd.Timestamp(hi, tz="UTC"))
    if ex_sol:
        m &= ~((index >= SOL_CRASH[0]) & (index < SOL_CRASH[1]))
    return np.asarray(m, dtype=bool)


def masked_metrics(res: BacktestResult, mask: np.ndarray) -> dict[str, float]:
    """``compute_metrics`` conventions on the steps in ``mask``: a step's costs count if the step
    is in it; a step's return and its time dt count if the step and the one before are in it
    (on a contiguous window this equals compute_metrics on the sliced result)."""
    s = res.steps
    idx = pd.DatetimeIndex(s.index)
    pair = mask.copy()
    pair[0] = False
    pair[1:] &= mask[:-1]
    ppy = steps_per_year(idx)
    nav = s["nav"].to_numpy(dtype=float)
    base = s["base"].to_numpy(dtype=float)
    book_r = np.full(len(s), np.nan)
    book_r[1:] = (nav[1:] - nav[:-1]) / base[:-1]
    r = res.spot_returns[list(res.targets.index)].to_numpy(dtype=float)
    ideal = r @ res.targets.to_numpy(dtype=float)
    diff = (book_r - ideal)[pair]
    dt = np.zeros(len(s))
    dt[1:] = np.diff(idx.as_unit("ns").asi8) / (365.0 * 86400e9)
    years = float(dt[pair].sum())
    mean_nav = float(nav[mask].mean())
    scale = mean_nav * years

    def bps(col: str) -> float:
        return float(s[col].to_numpy(dtype=float)[mask].sum()) / scale * 1e4

    wallet_prev = np.zeros(len(s))
    wallet_prev[1:] = s["wallet"].to_numpy(dtype=float)[:-1]
    util = np.fmax(s["margin_ratio"].to_numpy(dtype=float),
                   s["margin_ratio_end"].to_numpy(dtype=float))[mask]
    util = util[~np.isnan(util)]  # inf (collateral gone, positions open) is kept, as compute_metrics
    exch = bps("fee_spot") + bps("fee_futures")
    slip = bps("slippage_spot") + bps("slippage_futures")
    sweep = bps("sweep_fees")
    funding = bps("funding")
    # what the holder paid: the penalty less what the insurance fund absorbed (compute_metrics)
    penalty = float(penalty_paid(s).to_numpy(dtype=float)[mask].sum()) / scale * 1e4
    traded = (s["traded_spot"] + s["traded_futures"] + s["sweep_in"] + s["sweep_out"]).to_numpy(
        dtype=float)[mask].sum()
    return {
        "tracking_error": float(np.std(diff, ddof=1) * math.sqrt(ppy)),
        "active_return": float(np.mean(diff) * ppy),
        "exchange_fee_bps": exch,
        "slippage_bps": slip,
        "fees_bps": exch + slip,
        "sweep_cost_bps": sweep,
        "trading_cost_bps": exch + slip + sweep,
        "funding_bps": funding,
        "penalty_bps": penalty,
        "total_cost_bps": exch + slip + sweep + funding + penalty,
        "reserve_opportunity_cost_bps": float(STABLECOIN_YIELD * (wallet_prev[pair] @ dt[pair]))
        / scale * 1e4,
        "turnover": float(traded / scale),
        "liquidations": int(s["liquidated"].to_numpy(dtype=bool)[mask].sum()),
        "peak_margin_use": float(util.max()) if len(util) else 0.0,
        "years": years,
    }


def all_windows(res: BacktestResult) -> dict[str, dict[str, float]]:
    idx = pd.DatetimeIndex(res.steps.index)
    out: dict[str, dict[str, float]] = {}
    for w, (lo, hi) in WINDOWS.items():
        for ex in (False, True):
            m = window_mask(idx, lo, hi, ex)
            if m.sum() < 3:
                continue
            d = masked_metrics(res, m)
            d["total_incl_reserve_bps"] = d["total_cost_bps"] + d["reserve_opportunity_cost_bps"]
            out[w + ("_exsol" if ex else "")] = d
    return out


def relative_gap(a: float, b: float) -> float:
    """|a - b| / |a| (|a| at least 1e-12); two equal values (both inf, or both NaN) have none, an
    infinite or NaN value against a different one an infinite gap."""
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), 1e-12)


def check_against_compute_metrics(res: BacktestResult) -> float:
    """Largest relative gap (:func:`relative_gap`) between masked_metrics on the full span and
    compute_metrics."""
    m = compute_metrics(res)
    mine = masked_metrics(res, np.ones(len(res.steps), dtype=bool))
    pairs = [(m.tracking_error, mine["tracking_error"]), (m.fees_bps, mine["fees_bps"]),
             (m.funding_bps, mine["funding_bps"]), (m.penalty_bps, mine["penalty_bps"]),
             (m.total_cost_bps, mine["total_cost_bps"]),
             (m.reserve_opportunity_cost_bps, mine["reserve_opportunity_cost_bps"]),
             (m.peak_margin_ratio, mine["peak_margin_use"]),
             (float(m.liquidations), float(mine["liquidations"]))]
    return max(relative_gap(a, b) for a, b in pairs)


# ---------------------------------------------------------------------------------------------
# frontiers and matching


def pareto(points: list[tuple[float, float, float, str]]) -> list[tuple[float, float, float, str]]:
    """(te, cost, funding, name) points on the lower-left frontier, by increasing TE."""
    out: list[tuple[float, float, float, str]] = []
    for p in sorted(points, key=lambda q: (q[0], q[1])):
        if not out or p[1] < out[-1][1]:
            out.append(p)
    return out


def at_te(points: list[tuple[float, float, float, str]], te: float) -> dict[str, Any]:
    """A family's trading cost and funding at tracking error ``te`` (see the module docstring):
    the cheaper of its frontier points within 5% of ``te`` and the frontier interpolated at ``te``;
    no match below or above the frontier's TE range (unless a frontier point is within 5%)."""
    front = pareto(points)
    cands: list[dict[str, Any]] = [
        {"how": "within 5%", "te": p[0], "cost": p[1], "funding": p[2], "policy": p[3]}
        for p in front if abs(p[0] / te - 1.0) <= MATCH_TOL]
    for a, b in itertools.pairwise(front):
        if a[0] <= te <= b[0]:
            f = (te - a[0]) / (b[0] - a[0])
            cost = a[1] + f * (b[1] - a[1])
            if a[1] > 0 and b[1] > 0 and a[0] > 0:  # log-log: the frontier is convex
                f = math.log(te / a[0]) / math.log(b[0] / a[0])
                cost = math.exp((1 - f) * math.log(a[1]) + f * math.log(b[1]))
            cands.append({"how": "interpolated", "te": te, "cost": cost,
                          "funding": a[2] + f * (b[2] - a[2]), "policy": f"{a[3]} .. {b[3]}"})
    if cands:
        return min(cands, key=lambda c: c["cost"])
    edge = front[0] if te < front[0][0] else front[-1]
    return {"how": "below range" if te < front[0][0] else "above range", "te": edge[0],
            "cost": None, "funding": None, "policy": edge[3]}


def reduction(cost: float, other: float | None) -> float | None:
    """1 - cost / other (None without a positive match)."""
    return 1.0 - cost / other if other is not None and other > 0 else None


def family_points(raw: dict[str, Any], family: str, window: str) -> list[tuple[float, float, float, str]]:
    return [(r["windows"][window]["tracking_error"], r["windows"][window]["trading_cost_bps"],
             r["windows"][window]["funding_bps"], name)
            for name, r in raw.items() if r["family"] == family and window in r["windows"]]


def choose_in_sample(raw: dict[str, Any], family: str, budget: float, window: str) -> str:
    """The family's cheapest policy with TE <= 1.05 x budget on ``window``, else its lowest TE."""
    pts = family_points(raw, family, window)
    ok = [p for p in pts if p[0] <= (1 + MATCH_TOL) * budget]
    return (min(ok, key=lambda p: p[1]) if ok else min(pts, key=lambda p: p[0]))[3]


def regime_row(raw: dict[str, Any], opt: str, w: str, chosen: dict[str, str]) -> dict[str, Any]:
    """The optimised setting ``opt`` against each family's frontier at its TE in window ``w``."""
    o = raw[opt]["windows"][w]
    row: dict[str, Any] = {"optimised": {"policy": opt, **{k: o[k] for k in (
        "tracking_error", "trading_cost_bps", "funding_bps", "total_cost_bps",
        "reserve_opportunity_cost_bps", "total_incl_reserve_bps", "liquidations",
        "peak_margin_use")}}}
    for fam in ("naive", "spot"):
        m = at_te(family_points(raw, fam, w), o["tracking_error"])
        wf = raw[chosen[fam]]["windows"][w]
        row[fam] = {"matched": m, "cost_reduction": reduction(o["trading_cost_bps"], m["cost"]),
                    "walk_forward": {"policy": chosen[fam], "tracking_error": wf["tracking_error"],
                                     "trading_cost_bps": wf["trading_cost_bps"],
                                     "funding_bps": wf["funding_bps"],
                                     "total_incl_reserve_bps": wf["total_incl_reserve_bps"]}}
    nv = row["naive"]["matched"]
    rn, rs = row["naive"]["cost_reduction"], row["spot"]["cost_reduction"]
    row["goals"] = {
        "trading_cost_40pct_below_naive": rn is not None and rn >= 0.40,
        "trading_cost_60pct_below_spot": rs is not None and rs >= 0.60,
        "funding_not_worse_than_naive": nv["funding"] is not None
        and o["funding_bps"] <= nv["funding"] + 1e-9,
        "zero_liquidations": o["liquidations"] == 0,
        "peak_margin_le_50pct": o["peak_margin_use"] <= 0.5,
    }
    return row


def analyse(raw: dict[str, Any], budgets: tuple[float, ...] = TE_BUDGETS) -> dict[str, Any]:
    """Walk-forward selection at each TE budget, the matched-TE comparison per regime (and
    ex-SOL-crash, selected on ``select_exsol``), every optimised setting's savings, goal checks."""
    opts = [n for n, r in raw.items() if r["family"] == "optimised"]
    if not opts or not any(r["family"] == "naive" for r in raw.values()) \
            or not any(r["family"] == "spot" for r in raw.values()):
        return {"note": "not every family has run yet"}
    out: dict[str, Any] = {"te_budgets": list(budgets), "headline_budget": HEADLINE_BUDGET,
                           "by_budget": {}}
    for budget in budgets:
        per: dict[str, Any] = {}
        for ex in ("", "_exsol"):
            sel = "select" + ex
            chosen = {fam: choose_in_sample(raw, fam, budget, sel) for fam in FAMILIES}
            rows = {}
            for w in REGIMES:
                if w + ex in raw[chosen["optimised"]]["windows"]:
                    rows[w + ex] = regime_row(raw, chosen["optimised"], w + ex, chosen)
            per["chosen" + ex] = chosen
            per["regimes" + ex] = rows
        out["by_budget"][f"{budget:g}"] = per
    settings: dict[str, Any] = {}
    for n in opts:
        settings[n] = {}
        for w in raw[n]["windows"]:
            o = raw[n]["windows"][w]
            mn = at_te(family_points(raw, "naive", w), o["tracking_error"])
            ms = at_te(family_points(raw, "spot", w), o["tracking_error"])
            settings[n][w] = {
                "te": o["tracking_error"], "cost": o["trading_cost_bps"], "funding": o["funding_bps"],
                "naive_cost": mn["cost"], "naive_funding": mn["funding"], "naive_how": mn["how"],
                "spot_cost": ms["cost"], "spot_how": ms["how"],
                "vs_naive": reduction(o["trading_cost_bps"], mn["cost"]),
                "vs_spot": reduction(o["trading_cost_bps"], ms["cost"])}
    out["optimised_settings"] = settings
    best: dict[str, Any] = {}
    for w in raw[opts[0]]["windows"]:
        cand = [(settings[n][w]["vs_naive"], n) for n in opts if settings[n][w]["vs_naive"] is not None]
        cand_s = [(settings[n][w]["vs_spot"], n) for n in opts if settings[n][w]["vs_spot"] is not None]
        best[w] = {"best_vs_naive": max(cand) if cand else None,
                   "best_vs_spot": max(cand_s) if cand_s else None}
    out["best_ex_post"] = best
    return out


# ---------------------------------------------------------------------------------------------
# output


def plot(raw: dict[str, Any], out: Path, headline: dict[str, str]) -> None:
    """TE vs trading cost per family (log-log; a zero cost is drawn at 0.1 bp) per window; the
    circled point is the optimised setting chosen on the selection window at the headline budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    overlap = [w for w, (lo, hi) in WINDOWS.items() if w not in ("full", "oos")
               and pd.Timestamp(lo, tz="UTC") < SOL_CRASH[1] and pd.Timestamp(hi, tz="UTC") > SOL_CRASH[0]]
    wanted = [w for w in WINDOWS if w != "full"] + [w + "_exsol" for w in overlap if w != "select"]
    panels = [w for w in wanted if any(w in r["windows"] for r in raw.values())]
    ncol = 3
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.2 * nrow), squeeze=False)
    style = {"spot": ("tab:blue", "s"), "naive": ("tab:orange", "o"), "optimised": ("tab:green", "^")}
    for ax, w in zip(axes.flat, panels, strict=False):
        for fam in FAMILIES:
            pts = family_points(raw, fam, w)
            if not pts:
                continue
            c, mk = style[fam]
            ax.scatter([100 * p[0] for p in pts], [max(p[1], 0.1) for p in pts], color=c, marker=mk,
                       label=fam, alpha=0.8)
            fr = pareto(pts)
            ax.plot([100 * p[0] for p in fr], [max(p[1], 0.1) for p in fr], color=c, lw=1)
            head = headline.get("exsol" if w.endswith("_exsol") else "")
            if head and fam == "optimised":
                h = [p for p in pts if p[3] == head]
                if h:
                    ax.scatter([100 * h[0][0]], [max(h[0][1], 0.1)], s=140, facecolors="none",
                               edgecolors="k", label="headline")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(w)
        ax.set_xlabel("tracking error, % / yr")
        ax.set_ylabel("trading cost, bp of NAV / yr")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{TITLE}, 8 h steps, real funding: TE vs trading cost per family "
                 f"(circled: walk-forward choice at the {100 * HEADLINE_BUDGET:g}% TE budget)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}%" if pct else f"{v:.1f}"


def print_tables(raw: dict[str, Any], ana: dict[str, Any]) -> None:
    for w in [*REGIMES, "bear_2022H2_exsol", "full_exsol"]:
        print(f"\n== {w}: TE %/yr | trading bp/yr | funding | total | total+reserve | liq | peak margin")
        for n, r in raw.items():
            if w not in r["windows"]:
                continue
            m = r["windows"][w]
            print(f"  {n:24s} {100 * m['tracking_error']:6.2f} {m['trading_cost_bps']:8.1f} "
                  f"{m['funding_bps']:8.1f} {m['total_cost_bps']:8.1f} "
                  f"{m['total_incl_reserve_bps']:8.1f} {m['liquidations']:3d} "
                  f"{100 * m['peak_margin_use']:6.2f}%")
    if "by_budget" not in ana:
        return
    for budget, per in ana["by_budget"].items():
        for ex in ("", "_exsol"):
            print(f"\n-- TE budget {100 * float(budget):g}% on select{ex}: chosen {per['chosen' + ex]}")
            print("  regime              opt TE  opt cost | naive@TE (how)  -%  | spot@TE (how) -% "
                  "| opt fund naive fund@TE | WF naive TE/cost | WF spot TE/cost | goals")
            for w, row in per["regimes" + ex].items():
                o, nv, sp = row["optimised"], row["naive"], row["spot"]
                nm, sm = nv["matched"], sp["matched"]
                print(f"  {w:18s} {fmt(o['tracking_error'], True):>7s} {o['trading_cost_bps']:7.1f} | "
                      f"{fmt(nm['cost'])} ({nm['how']}) {fmt(nv['cost_reduction'], True)} | "
                      f"{fmt(sm['cost'])} ({sm['how']}) {fmt(sp['cost_reduction'], True)} | "
                      f"{o['funding_bps']:7.1f} {fmt(nm['funding'])} | "
                      f"{fmt(nv['walk_forward']['tracking_error'], True)}/"
                      f"{nv['walk_forward']['trading_cost_bps']:.1f} | "
                      f"{fmt(sp['walk_forward']['tracking_error'], True)}/"
                      f"{sp['walk_forward']['trading_cost_bps']:.1f} | "
                      f"{sum(row['goals'].values())}/5")
    print("\nbest optimised setting ex post per window (saving vs naive / vs spot frontier at matched TE):")
    for w, b in ana["best_ex_post"].items():
        bn, bs = b["best_vs_naive"], b["best_vs_spot"]
        print(f"  {w:20s} naive: {fmt(bn[0], True) if bn else 'n/a'} ({bn[1] if bn else ''})  "
              f"spot: {fmt(bs[0], True) if bs else 'n/a'} ({bs[1] if bs else ''})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced grid (smoke check)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--impact-k", type=float, default=0.5, help="square-root impact coefficient")
    ap.add_argument("--lookback", type=int, default=180, help="risk model lookback, days")
    ap.add_argument("--leverage", type=float, default=LEVERAGE,
                    help="leverage set on every contract (initial margin |x| / L; the tiers cap "
                    "the notional allowed at it)")
    ap.add_argument("--gammas", default=None, help="gamma_trade values, comma-separated")
    ap.add_argument("--gamma-funds", default="0,1", help="gamma_fund values, comma-separated")
    ap.add_argument("--only", default=None, help="run only policies whose name contains this")
    ap.add_argument("--resume", action="store_true", help="skip policies already in the JSON")
    ap.add_argument("--analyse-only", action="store_true", help="re-analyse the JSON, no runs")
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument("--margin-buffer-fraction", type=float, default=0.0,
                    help="optimised overlays: share of collateral the margin row keeps free "
                    "(ConstraintSettings.margin_buffer_fraction)")
    ap.add_argument("--margin-hysteresis", action="store_true",
                    help="optimised overlays: positions already inside the hard margin bound need "
                    "not be cut to the relative buffer's target (ConstraintSettings.margin_hysteresis)")
    ap.add_argument("--book2", action="store_true",
                    help="the second book (BTC ETH XRP LTC ADA BNB, equal weights, from 2020-02)")
    args = ap.parse_args()
    if args.book2:
        use_book2()
        args.tag = "_book2" + args.tag

    stem = "vs_naive" + ("_quick" if args.quick else "") + args.tag
    args.out.mkdir(parents=True, exist_ok=True)
    out_json = args.out / f"{stem}.json"
    out_png = args.out / f"{stem}_frontier.png"
    doc: dict[str, Any] = {}
    if (args.resume or args.analyse_only) and out_json.is_file():
        doc = json.loads(out_json.read_text())
    raw: dict[str, Any] = doc.get("policies", {})

    if not args.analyse_only:
        data = default_data_dir()
        if data is None or not (data / spot_folder("4h")).is_dir():
            print("vs_naive: skipped: no data folder (set FBR_DATA_DIR or provide ../shared/data)")
            return 0
        gammas = ([float(g) for g in args.gammas.split(",")] if args.gammas
                  else ([1.0, 16.0] if args.quick else [0.25, 1.0, 4.0, 16.0]))
        gfs = [float(g) for g in args.gamma_funds.split(",")] if not args.quick else [1.0]
        t0 = time.perf_counter()
        cons = contracts(data, max(START, TIERS_FIRST), args.leverage)
        path = market_path(data, cons, args.impact_k, START, END)
        lb_start = (pd.Timestamp(START) - pd.Timedelta(days=args.lookback + 10)).strftime("%Y-%m-%d")
        hist = spot_history(data, lb_start, END)
        first_risk = estimate_risk(returns_from_prices(hist.loc[hist.index <= path.spot.index[0]]
                                                       .tail(args.lookback * 3)),
                                   "ledoit_wolf", periods_per_year=3 * 365.0)

        def risk() -> TrailingRisk:
            return TrailingRisk(first_risk, hist, list(ASSETS), args.lookback, "ledoit_wolf")

        spot_book, overlay = books(path, cons)
        print(f"path {path.spot.index[0]} .. {path.spot.index[-1]}: {len(path.spot)} steps of {STEP}; "
              f"impact k = {args.impact_k} (ADV x {1 / args.impact_k ** 2:g}); loaded in "
              f"{time.perf_counter() - t0:.1f} s")
        print("tiers: " + ", ".join(
            f"{c.symbol} mmr0 {c.tiers.brackets[0].mmr:.4f}" for c in cons))
        opt_cons = ConstraintSettings(margin_buffer_fraction=args.margin_buffer_fraction,
                                      margin_hysteresis=args.margin_hysteresis)
        specs = policy_grid(args.quick, risk, gammas, gfs, opt_cons)
        if args.only:
            specs = [s for s in specs if args.only in s.name]
        doc["setup"] = {
            "assets": ASSETS, "targets": TARGETS, "start": str(path.spot.index[0]),
            "end": str(path.spot.index[-1]), "steps": len(path.spot), "step": STEP,
            "spot_usd": SPOT_USD, "reserve_of_spot": RESERVE, "leverage": args.leverage,
            "taker_fee": TAKER_FEE, "spot_fee": SPOT_FEE, "half_spread": "1 bp (backtester default)",
            "impact_k": args.impact_k, "risk_lookback_days": args.lookback,
            "risk_reestimate_days": 30, "liquidation_penalty": LIQ_PENALTY,
            "stablecoin_yield": STABLECOIN_YIELD, "windows": WINDOWS,
            "sol_crash_excluded": [str(SOL_CRASH[0]), str(SOL_CRASH[1])], "quick": args.quick,
            "margin_buffer_fraction": args.margin_buffer_fraction,
            "margin_hysteresis": args.margin_hysteresis}
        for k, spec in enumerate(specs, 1):
            if args.resume and spec.name in raw:
                print(f"[{k}/{len(specs)}] {spec.name}: already done, skipped")
                continue
            book = overlay if spec.overlay else spot_book
            coll = CollateralPolicy(target_fraction=RESERVE / (1 + RESERVE)) if spec.overlay else NO_SWEEPS
            t1 = time.perf_counter()
            res = run_backtest(book, path, spec.make(), liquidation_penalty=LIQ_PENALTY,
                               spot_fee=SPOT_FEE, collateral=coll)
            secs = time.perf_counter() - t1
            gap = check_against_compute_metrics(res)
            if gap > 1e-6:
                print(f"  WARNING: masked metrics differ from compute_metrics by {gap:.2e}")
            raw[spec.name] = {"family": spec.family, "param": spec.param, "seconds": secs,
                              "trades": len(res.trades), "windows": all_windows(res)}
            f = raw[spec.name]["windows"]["full"]
            print(f"[{k}/{len(specs)}] {spec.name:24s} {secs:6.1f} s  full: TE "
                  f"{100 * f['tracking_error']:.2f}%  trading {f['trading_cost_bps']:.1f} bp/yr  "
                  f"funding {f['funding_bps']:.1f}  liq {f['liquidations']}  peak margin "
                  f"{100 * f['peak_margin_use']:.1f}%", flush=True)
            doc["policies"] = raw
            out_json.write_text(json.dumps(doc, indent=1, default=str))
        doc["runtime_s"] = time.perf_counter() - t0
    ana = analyse(raw)
    doc["policies"] = raw
    doc["analysis"] = ana
    out_json.write_text(json.dumps(doc, indent=1, default=str))
    print_tables(raw, ana)
    per = ana.get("by_budget", {}).get(f"{HEADLINE_BUDGET:g}", {})
    plot(raw, out_png, {"": per.get("chosen", {}).get("optimised"),
                        "exsol": per.get("chosen_exsol", {}).get("optimised")})
    print(f"\nwrote {out_json} and {out_png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
