"""Warm re-solve latency of fbr's optimiser against the solver's native API, cvxpy's default path and
the naive closed form, along a simulated daily path.

What is measured
----------------
For each size N (assets; one linear perpetual per asset, so M = N contracts) and each configuration

- ``qp``: linear trading cost (fee + half spread) and funding carry in the objective, tracking error
  with a factor risk model (full covariance form for N <= 20, K = 16 factors + idiosyncratic
  variances above), tiered initial/maintenance margin (5 Binance-like brackets, ``cum`` continuous),
  two stress-safe margin scenarios (all -30%; alts -50% with BTC -20%), per-contract caps, a gross
  leverage cap and two correlation cluster bands. Served by PIQP through fbr's lean path
  (``optimizer.engines.PiqpEngine``);
- ``conic``: the same plus the 3/2-power impact cost and a volatility cap, served by Clarabel through
  fbr's lean ``optimizer.engines.ClarabelEngine`` (from ``UPDATE_MIN_NNZ`` nonzeros, N >= 500
  here, fbr's own equilibration of each day's data and an update of one kept ``DefaultSolver``;
  below it a fresh ``DefaultSolver`` per solve; both at ``CLARABEL_SETTINGS``: a 1e-9 gap, with
  Clarabel's reduced tolerances at its full defaults so that an 'almost solved' answer meets
  them; a stall short of them is tried again at Clarabel's defaults, then on a careful path and
  rescaled: ``optimizer.engines.CLARABEL_ATTEMPTS``);
- ``hybrid``: the ``qp`` problem plus the spot leg (spot buys/sells with fee + half spread) and its
  tax term (25% rates, 3 lots per asset on day 0 with mixed gains and losses, compiled with 4 pieces
  per asset; ``--harvest-losses`` credits losses), still a QP served by PIQP through ``PiqpEngine``
  with the same native floor as ``qp``. The path books each day's spot trades into the lots (sales
  HIFO, a buy adds a lot, the two newest are merged beyond 4), so lots, prices and dates move the tax
  curves' Parameters every day,

a book is simulated for ``--days`` days: it starts near target with a margin reserve; each day prices
move by seeded synthetic returns (annual vols 50-120%, correlations 0.5-0.9 from a market + sector
factor model), funding moves a little, and the book carries the previous day's optimal positions as
its current futures (``Book.with_futures`` at the previous day's marks). Each day is therefore a real
warm re-solve: new Parameter values, same structure; the script asserts ``HedgeProblem.builds`` does
not grow after day 0.

Columns (per day, then the median over days)
--------------------------------------------
- ``fbr``: ``hp.update(d)`` + ``hp.solve(d.settings.solvers)`` (exactly what
  ``Rebalancer.solve_z`` does; the settings list one solver, PIQP or CLARABEL, so a failing solver
  is reported rather than hidden behind a slow SCS fallback) for a ``ProblemData`` ``d`` prepared
  outside the timer;
- ``native``: the solver alone on the very same standard-form data, set up once on day 0 with the
  same settings as fbr's engine. QP: ``piqp.SparseSolver.update(P, c, A, b, G, h_u)`` + ``solve()``
  on the data of ``PiqpEngine.refresh()`` (``PIQP_SETTINGS``). Conic:
  ``clarabel.DefaultSolver.update(P, q, A, b)`` + ``solve()`` on the data of cvxpy's Clarabel
  interface (``engine.compiled.apply()``, settings from ``engine.options``, the tight
  ``CLARABEL_SETTINGS``), or a fresh ``DefaultSolver`` + ``solve()`` when Clarabel refuses data
  updates (the output says which). The floor keeps the solver's equilibration from day 0 (answers
  depend on earlier days); fbr sets a small problem up afresh each solve and equilibrates a large
  one's data itself with Clarabel's equilibration off (``optimizer.clarabel_native``), so an
  update answers as a fresh set-up would: the same inputs give the same outputs;
- ``naive``: ``ProblemData.naive_z()`` (the seed rule, z = w* - s per asset through its contract);
- ``cvxpy default``: cvxpy's default path ``problem.solve(solver=..., **same options)`` on the same
  compiled problem (warm: cvxpy caches its parametrised program and the solver object);
- ``prepare``: ``optimizer.prepare.prepare(book, market, risk, settings)``, the per-day cost of turning
  a book into arrays (not part of ``fbr``);
- ``max |dz|``: the worst over days of max_j |z_fbr - z_native| and max_j |z_fbr - z_cvxpy| in
  weight units (fractions of the target base V); the bar is 1e-5. Days on which one side has no
  solution are skipped (and counted in ``inacc/fail days`` and the lines under the table);
- ``inacc/fail days``: days fbr's answer was ``optimal_inaccurate`` / days it had none (the path
  then goes on with the native or cvxpy answer, or the current book);
- ``iters``: median solver iterations of fbr's solve.

Method
------
``time.perf_counter`` around each call, garbage collection disabled while timing (as ``timeit``
does). Day 0 is a warm-up day that is not timed: it compiles the problem, sets up every solver and
runs each path a few times. On each timed day, each path runs ``reps`` times on that day's data
(2..7, about 20 ms of work per path and day) and the day's figure is the minimum of those runs (the
least-disturbed run; repeats of the same data do the same work for fbr and native, which re-send all
data every time); the table gives the median (and p90) over days. cvxpy's default path runs once
per day: its PIQP interface skips the solver update when the data did not change, so repeating it
would flatter it. ``--conic-max-days`` caps the days of conic N >= 1000 if a run must be shorter.

BLAS threads matter on a small machine: numpy's OpenBLAS starts one thread per core, and its
spinning threads compete with the single-threaded solvers. ``--blas-threads 1`` (threadpoolctl)
measures without that contention; the JSON records the BLAS configuration used.

``--profile`` adds a stage split of fbr's time (Parameter values, parameter-vector assembly, sparse
mat-vecs, scatter into the solver's matrices, solver update/setup, solver solve, result
extraction), timed stage by stage with the engine's own objects, and writes a cProfile listing per
(config, N) next to the JSON. ``--objective-scale`` overrides OptimizerSettings.objective_scale.

Run: ``python benchmarks/solve_speed.py [--sizes 3,10,20] [--days 25]
[--config qp|conic|hybrid|both|all]
[--seed 7] [--out benchmarks/results/solve_speed.json] [--blas-threads 1] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cvxpy as cp
import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.book import Book, TargetsBase
from models.instruments import FuturesContract, MarginTiers, SpotAsset, TierBracket
from models.market import MarketSnapshot
from models.risk import DAYS_PER_YEAR, RiskModel
from models.tax import (
    LotMethod,
    TaxLot,
    TaxRates,
    realised_tax,
    tax_per_unit,
    total_quantity,
)
from optimizer.cvxpy_adapter import clarabel_settings
from optimizer.data import ProblemData
from optimizer.engines import PIQP_SETTINGS, ClarabelEngine, CvxpyDataEngine, PiqpEngine, quiet_bounds
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem, SolveOutcome, SolverFailedError
from optimizer.rebalance import Rebalancer
from optimizer.settings import (
    ClusterBand,
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    SolverName,
    SpotLegSettings,
    StressScenario,
)
from optimizer.solution_report import after_spot
from optimizer.spot_leg import SpotContext

DEFAULT_SIZES = (3, 10, 20, 50, 200, 500, 1000)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "solve_speed.json"
ACCURACY_BAR = 1e-5
#: targets (ms): QP median for N <= 20, at N = 500 and N = 1000; both configs within 3x of native
QP_TARGETS_MS = {20: 0.5, 500: 15.0, 1000: 30.0}
NATIVE_RATIO_TARGET = 3.0
#: factors of the risk model above FULL_COV_MAX_N (market + sectors)
N_FACTORS = 16
FULL_COV_MAX_N = 20
SECTOR_LOADING = 0.25
#: hybrid config: tax rate (short and long term), lots per asset on day 0, most lots per asset
#: (the compiled tax term's piece count; beyond it the two newest lots are merged), spot trades
#: below this weight are solver noise and not booked, net spot buys financed by cash (fraction of V)
HYBRID_TAX_RATE = 0.25
HYBRID_LOTS = 3
HYBRID_MAX_LOTS = 4
HYBRID_SPOT_NOISE = 1e-7
HYBRID_CASH_FRACTION = 0.005


# ==============================================================================================
# synthetic market and book
# ==============================================================================================
@dataclass
class SyntheticMarket:
    """A seeded market of N coins: factor-model returns, funding, basis, spreads and ADV.

    Annual covariance Sigma = F F' + diag(idio) with F = [sigma * b, c * sigma * sector one-hot]:
    correlation b_i b_j (+ c^2 in the same sector), b in [0.72, 0.92], c = 0.25, so 0.52 .. 0.91.
    """

    symbols: tuple[str, ...]
    vol: np.ndarray
    F: np.ndarray
    idio: np.ndarray
    spot: np.ndarray
    basis: np.ndarray
    funding: np.ndarray
    half_spread: np.ndarray
    adv: np.ndarray
    rng: np.random.Generator
    time: pd.Timestamp = field(default_factory=lambda: pd.Timestamp("2025-01-01", tz="UTC"))

    @staticmethod
    def create(n: int, seed: int) -> SyntheticMarket:
        rng = np.random.default_rng([seed, n])
        names = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "LINK", "LTC"]
        symbols = tuple(names[:n]) + tuple(f"C{i:04d}" for i in range(len(names), n))
        vol = rng.uniform(0.60, 1.20, n)
        vol[0] = 0.55
        if n > 1:
            vol[1] = 0.70
        beta = rng.uniform(0.72, 0.92, n)
        beta[0] = 0.92
        n_sectors = min(n, 4) if n <= FULL_COV_MAX_N else N_FACTORS - 1
        sector = rng.integers(0, n_sectors, n)
        sector[0] = 0
        onehot = np.zeros((n, n_sectors))
        onehot[np.arange(n), sector] = 1.0
        F = np.hstack([(vol * beta)[:, None], SECTOR_LOADING * vol[:, None] * onehot])
        idio = vol**2 * (1.0 - beta**2 - SECTOR_LOADING**2)
        spot = 10 ** rng.uniform(-1.0, 3.0, n)
        spot[0] = 60_000.0
        if n > 1:
            spot[1] = 3_000.0
        adv = 10 ** rng.uniform(6.7, 8.7, n)
        adv[0] = 2e10
        if n > 1:
            adv[1] = 1e10
        half_spread = np.clip(1e-4 * np.sqrt(1e9 / adv), 0.5e-4, 2e-3)
        funding = rng.uniform(0.5e-4, 1.5e-4, n)
        basis = funding.copy()
        return SyntheticMarket(symbols, vol, F, idio, spot, basis, funding, half_spread, adv, rng)

    @property
    def contracts(self) -> tuple[str, ...]:
        return tuple(f"{s}-PERP" for s in self.symbols)

    def risk_model(self) -> RiskModel:
        """Full covariance form for N <= 20, factor form (K = 16) + idiosyncratic above."""
        if len(self.symbols) <= FULL_COV_MAX_N:
            cov = self.F @ self.F.T + np.diag(self.idio)
            return RiskModel.from_covariance(self.symbols, cov, method="synthetic-full")
        return RiskModel(self.symbols, self.F.copy(), self.idio.copy(), method="synthetic-factor")

    def step(self) -> None:
        """One day: log returns from the factor model, funding and basis drift a little."""
        n = len(self.symbols)
        shocks = self.F @ self.rng.standard_normal(self.F.shape[1]) + np.sqrt(self.idio) * \
            self.rng.standard_normal(n)
        daily = shocks / math.sqrt(DAYS_PER_YEAR)
        var = (np.sum(self.F**2, axis=1) + self.idio) / DAYS_PER_YEAR
        self.spot = self.spot * np.exp(daily - 0.5 * var)
        self.funding = np.clip(self.funding + 1e-5 * self.rng.standard_normal(n), -5e-4, 5e-4)
        self.basis = 0.8 * self.basis + 0.2 * self.funding + 2e-4 * self.rng.standard_normal(n)
        self.time = self.time + pd.Timedelta(days=1)

    def snapshot(self) -> MarketSnapshot:
        cs = self.contracts
        mark = self.spot * (1.0 + self.basis)
        return MarketSnapshot(
            time=self.time,
            spot=dict(zip(self.symbols, self.spot.tolist(), strict=True)),
            mark=dict(zip(cs, mark.tolist(), strict=True)),
            funding=dict(zip(cs, self.funding.tolist(), strict=True)),
            half_spread=dict(zip(cs, self.half_spread.tolist(), strict=True)),
            adv=dict(zip(cs, self.adv.tolist(), strict=True)),
            synthetic=True,
        )


def _tiers(edges: list[float], levs: list[float], mmrs: list[float]) -> MarginTiers:
    """Brackets [edges[k], edges[k+1]) with cum making MM continuous at every edge."""
    out: list[TierBracket] = []
    cum = 0.0
    for k, (lev, mmr) in enumerate(zip(levs, mmrs, strict=True)):
        if k:
            cum += (mmr - mmrs[k - 1]) * edges[k]
        out.append(TierBracket(edges[k], edges[k + 1], lev, mmr, cum))
    return MarginTiers(tuple(out))


#: Binance-like USD-M brackets (5 each)
MAJOR_TIERS = _tiers([0, 50e3, 250e3, 1e6, 10e6, 50e6], [125, 100, 50, 20, 10],
                     [0.004, 0.005, 0.01, 0.025, 0.05])
ALT_TIERS = _tiers([0, 10e3, 50e3, 250e3, 1e6, 5e6], [50, 25, 20, 10, 5],
                   [0.01, 0.02, 0.025, 0.05, 0.10])


def target_weights(n: int) -> np.ndarray:
    """50/30/20 for three assets; otherwise BTC 30%, ETH 15% and a Zipf tail summing to 55%."""
    if n == 3:
        return np.array([0.5, 0.3, 0.2])
    if n == 1:
        return np.array([1.0])
    w = np.zeros(n)
    w[0], w[1] = 0.30, 0.15
    tail = 1.0 / np.arange(1, n - 1) ** 0.8
    w[2:] = 0.55 * tail / tail.sum()
    return w


def base_usd(n: int) -> float:
    """Invested value V of the simulated book: $1M up to 10 assets, then $100k per asset."""
    return 1e6 * max(1.0, n / 10.0)


def make_book(mkt: SyntheticMarket, seed: int) -> Book:
    """A book near target (spot weights within a few pp), a 15% USD reserve, BTC/ETH pledged."""
    n = len(mkt.symbols)
    rng = np.random.default_rng([seed, n, 1])
    V = base_usd(n)
    w = target_weights(n)
    drift = np.clip(rng.normal(0.0, 0.06, n), -0.15, 0.15)
    spot_usd = w * V * (1.0 + drift)
    contracts = []
    for i, (sym, con) in enumerate(zip(mkt.symbols, mkt.contracts, strict=True)):
        major = i < 2
        contracts.append(FuturesContract(
            symbol=con, underlying=sym, lot_step=0.0, min_notional=0.0,
            maker_fee=0.0002, taker_fee=0.0004 if major else 0.0005,
            leverage=10.0 if major else 5.0, tiers=MAJOR_TIERS if major else ALT_TIERS))
    pledged = {mkt.symbols[0]: 0.95}
    if n > 1:
        pledged[mkt.symbols[1]] = 0.90
    return Book(
        assets=tuple(SpotAsset(s) for s in mkt.symbols), contracts=tuple(contracts),
        spot={s: float(v / p) for s, v, p in zip(mkt.symbols, spot_usd, mkt.spot, strict=True)},
        targets=dict(zip(mkt.symbols, w.tolist(), strict=True)), cash=0.15 * V,
        pledged=pledged, targets_base=TargetsBase.INVESTED, name=f"speed-{n}")


def make_settings(mkt: SyntheticMarket, conic: bool,
                  objective_scale: float | None = None,
                  spot: SpotLegSettings | None = None) -> OptimizerSettings:
    """The full constraint set; conic adds the 3/2-power impact and a volatility cap; ``spot`` (the
    hybrid config) the spot leg with its tax term."""
    n = len(mkt.symbols)
    syms = mkt.symbols
    V = base_usd(n)
    if n <= 3:
        clusters = (ClusterBand("majors", syms[:2], 0.01), ClusterBand("l1", syms[1:], 0.01))
    else:
        k = max(2, n // 5)
        clusters = (ClusterBand("l1", syms[1:1 + k], 0.01), ClusterBand("tail", syms[-k:], 0.02))
    vol_cap = None
    if conic:
        w = target_weights(n)
        cov = mkt.F @ mkt.F.T + np.diag(mkt.idio)
        vol_cap = 0.99 * float(np.sqrt(w @ cov @ w))
    cons = ConstraintSettings(
        margin=True, margin_buffer_usd=0.01 * V,
        stress=(StressScenario("all_-30%", {}, common=-0.30),
                StressScenario("alts_-50%_btc_-20%", {syms[0]: -0.20}, common=-0.50)),
        max_gross_leverage=1.10, caps_usd={mkt.contracts[0]: 0.04 * V},
        default_cap_usd=0.03 * V, clusters=clusters, vol_cap=vol_cap)
    costs = CostSettings(trading=True, impact=conic, impact_k=1.0, carry=True, horizon_days=3.0)
    solvers = (SolverName.CLARABEL,) if conic else (SolverName.PIQP,)
    extra: dict[str, Any] = {} if objective_scale is None else {"objective_scale": objective_scale}
    if spot is not None:
        extra["spot"] = spot
    return OptimizerSettings(costs=costs, constraints=cons, solvers=solvers, round_lots=False,
                             **extra)


# ==============================================================================================
# hybrid: the spot leg with tax lots
# ==============================================================================================
Lots = dict[str, tuple[TaxLot, ...]]


def initial_lots(book: Book, market: MarketSnapshot, seed: int) -> Lots:
    """HYBRID_LOTS lots per asset adding up to its spot quantity: cost bases 0.5-1.5x today's price
    (gains and losses), one lot long-term (two years old), the others 20-300 days old."""
    rng = np.random.default_rng([seed, len(book.assets), 2])
    now = market.time.to_pydatetime()
    out: Lots = {}
    for sym in book.asset_symbols:
        qty = float(book.spot[sym])
        price = market.spot_price(sym)
        frac = rng.dirichlet(np.full(HYBRID_LOTS, 3.0))
        parts = [qty * float(f) for f in frac[:-1]]
        parts.append(qty - math.fsum(parts))
        basis = price * rng.uniform(0.5, 1.5, HYBRID_LOTS)
        ages = [730.0, *rng.uniform(20.0, 300.0, HYBRID_LOTS - 1).tolist()]
        out[sym] = tuple(TaxLot(q, float(b), now - pd.Timedelta(days=a).to_pytimedelta())
                         for q, b, a in zip(parts, basis, ages, strict=True))
    return out


def hybrid_spot_settings(lots: Lots, V: float, harvest_losses: bool = False) -> SpotLegSettings:
    """The spot leg on, 25% tax on gains (short and long term), HIFO books; loss lots taxed at 0
    (the default) or credited (``harvest_losses``)."""
    return SpotLegSettings(enabled=True, rates=TaxRates(HYBRID_TAX_RATE, HYBRID_TAX_RATE),
                           lots=lots, lot_method=LotMethod.HIFO, harvest_losses=harvest_losses,
                           cash_usd=HYBRID_CASH_FRACTION * V)


def with_lots(settings: OptimizerSettings, lots: Lots) -> OptimizerSettings:
    """``settings`` with the spot leg's lots replaced."""
    return replace(settings, spot=replace(settings.spot, lots=lots))


def _merge_newest(lots: list[TaxLot]) -> list[TaxLot]:
    """Merge the two newest lots (quantity-weighted basis, the later date) until at most
    HYBRID_MAX_LOTS remain, so the compiled tax term's piece count is never exceeded."""
    while len(lots) > HYBRID_MAX_LOTS:
        order = sorted(range(len(lots)), key=lambda k: lots[k].acquired)
        i, j = order[-2], order[-1]
        a, b = lots[i], lots[j]
        q = a.quantity + b.quantity
        merged = TaxLot(q, (a.quantity * a.cost_basis + b.quantity * b.cost_basis) / q,
                        max(a.acquired, b.acquired))
        lots = [lot for k, lot in enumerate(lots) if k not in (i, j)] + [merged]
    return lots


@dataclass
class SpotStep:
    """What the spot leg did on one day: USD traded (buys + sells), tax realised (USD)."""

    traded_usd: float = 0.0
    tax_usd: float = 0.0


def advance_spot(book: Book, lots: Lots, d: ProblemData, spot: tuple[np.ndarray, np.ndarray],
                 market: MarketSnapshot) -> tuple[Book, Lots, SpotStep]:
    """Book the spot trades (weights): sales consume lots in the books' lot method (HIFO), a buy
    adds a lot at today's price; the spot quantities become the lots' sums and cash pays the net."""
    assert d.spot is not None and d.spot.rates is not None
    buy, sell = spot
    rates, method, now = d.spot.rates, d.settings.spot.lot_method, d.spot.now
    new_lots = dict(lots)
    qty = dict(book.spot)
    cash = book.cash
    step = SpotStep()
    for i, sym in enumerate(book.asset_symbols):
        price = float(d.spot.prices[i])
        cur = list(lots.get(sym, ()))
        held = total_quantity(cur)
        if sell[i] > HYBRID_SPOT_NOISE and held > 0:
            units = min(float(sell[i]) * d.V / price, held)
            tax, cur = realised_tax(cur, units, method, price, now, rates)
            # a lot left with dust (a sale a hair short of a whole lot: solver noise) is sold too;
            # dust lots make the tax curve's pieces ill-conditioned
            dust = [lot for lot in cur if lot.quantity * price < HYBRID_SPOT_NOISE * d.V]
            if dust:
                cur = [lot for lot in cur if lot not in dust]
                units += total_quantity(dust)
                tax += math.fsum(tax_per_unit(lot, price, now, rates) * lot.quantity
                                 for lot in dust)
            cash += units * price
            step.traded_usd += units * price
            step.tax_usd += tax
        if buy[i] > HYBRID_SPOT_NOISE:
            units = float(buy[i]) * d.V / price
            cur = _merge_newest([*cur, TaxLot(units, price, now)])
            cash -= units * price
            step.traded_usd += units * price
        new_lots[sym] = tuple(cur)
        qty[sym] = total_quantity(cur)
    return book.evolve(spot=qty, cash=cash), new_lots, step


def advance_book(book: Book, d: ProblemData, z: np.ndarray, market: MarketSnapshot) -> Book:
    """The book holding positions ``z`` (weight units), traded at ``market``'s marks."""
    q = {}
    for j, c in enumerate(book.contracts):
        q[c.symbol] = float(z[j] * d.V / c.notional_per_contract(market.mark_price(c.symbol)))
    return book.with_futures(q, market)


def problem_for(rb: Rebalancer, d: ProblemData) -> HedgeProblem:
    """The compiled problem for ``d`` (built once per structure)."""
    return rb.problem_for(d)


# ==============================================================================================
# timing helpers
# ==============================================================================================
@contextmanager
def no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def best_of(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """Minimum seconds over ``reps`` calls (gc off) and the last call's return value."""
    best = math.inf
    out: Any = None
    with no_gc():
        for _ in range(max(reps, 1)):
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            best = min(best, dt)
    return best, out


def reps_for(seconds: float, budget: float = 0.02, lo: int = 2, hi: int = 7) -> int:
    """Repetitions so one day's timing of a path costs about ``budget`` seconds."""
    if seconds <= 0:
        return hi
    return int(min(hi, max(lo, budget / seconds)))


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else math.nan


# ==============================================================================================
# native floors
# ==============================================================================================
class NativePiqp:
    """piqp.SparseSolver on fbr's standard-form data, set up once with fbr's settings."""

    mode = "update+solve"

    def __init__(self) -> None:
        self.solver: Any = None
        self.data: tuple[Any, ...] = ()

    def load(self, eng: PiqpEngine) -> None:
        """Copy this day's data (P, q, A, b, G, h) out of the engine (outside the timer)."""
        P, q, _off, A, b, G, h = eng.refresh()
        self.data = (P.copy(), q.copy(), A.copy(), b.copy(), G.copy(), h.copy())
        if self.solver is None:
            import piqp

            self.solver = piqp.SparseSolver()
            self.solver.settings.verbose = False
            for key, val in PIQP_SETTINGS.items():
                setattr(self.solver.settings, key, val)
            P, q, A, b, G, h = self.data
            self.solver.setup(P=P, c=q, A=A, b=b, G=G, h_u=h)

    def run(self) -> Any:
        P, q, A, b, G, h = self.data
        self.solver.update(P=P, c=q, A=A, b=b, G=G, h_u=h)
        self.solver.solve()
        return self.solver.result

    @staticmethod
    def z(result: Any, eng: PiqpEngine) -> np.ndarray | None:
        if result.info.status.name != "PIQP_SOLVED":
            return None
        return np.array(result.x[eng.z_slice])


class NativeClarabel:
    """clarabel.DefaultSolver on the data cvxpy's Clarabel interface builds, with the options fbr's
    engine passes (``engine.options``), set up once and then updated (the floor)."""

    def __init__(self) -> None:
        self.solver: Any = None
        self.data: tuple[Any, ...] = ()
        self.cones: list[Any] = []
        self.options: dict[str, Any] = {}
        self.mode = "update+solve"

    def load(self, eng: CvxpyDataEngine) -> None:
        import clarabel

        self.options = dict(getattr(eng, "options", {}) or {})
        data, _inv = eng.compiled.apply()
        n = data["c"].size
        P = data.get("P")
        P = sp.triu(P).tocsc() if P is not None else sp.csc_matrix((n, n))
        A = sp.csc_matrix(data["A"])
        self.data = (P, np.asarray(data["c"], float).copy(), A, np.asarray(data["b"], float).copy())
        self.cones = eng.compiled.clarabel_cones()
        if self.solver is None:
            self.solver = clarabel.DefaultSolver(*self.data, self.cones, self._settings())
            if not self.solver.is_data_update_allowed():
                self.mode = "fresh setup+solve (Clarabel refuses data updates)"

    def _settings(self) -> Any:
        return clarabel_settings(self.options)

    def run(self) -> Any:
        import clarabel

        P, q, A, b = self.data
        if self.mode == "update+solve":
            self.solver.update(P=P, q=q, A=A, b=b)
            return self.solver.solve()
        solver = clarabel.DefaultSolver(P, q, A, b, self.cones, self._settings())
        return solver.solve()

    @staticmethod
    def z(result: Any, eng: CvxpyDataEngine) -> np.ndarray | None:
        if str(result.status) not in ("Solved", "AlmostSolved"):
            return None
        return np.asarray(result.x)[eng.z_slice].copy()


# ==============================================================================================
# stage split (--profile)
# ==============================================================================================
def qp_stages(hp: HedgeProblem, d: ProblemData) -> dict[str, float]:
    """fbr's QP re-solve, stage by stage, with the engine's own objects (mirrors PiqpEngine.solve)."""
    eng = hp.engine(SolverName.PIQP)
    assert isinstance(eng, PiqpEngine)
    out: dict[str, float] = {}
    t = time.perf_counter
    t0 = t()
    hp.update(d)
    t1 = t()
    p = eng.map.pvec()
    t2 = t()
    vals = eng.map.RA @ p
    qfull = eng.map.Rq @ p
    pvals = eng.map.RP @ p if eng.map.RP is not None else None
    t3 = t()
    eng.A.data[:] = vals[eng.pos_eq]
    eng.G.data[:] = -vals[eng.pos_ineq]
    bfull = np.zeros(eng.map.m)
    bfull[eng.map.b_rows] = vals[eng.map.nnz_a:]
    if pvals is not None:
        eng.P.data[:] = pvals[eng.pos_p]
    P, q, A, b, G, h = eng.P, qfull[: eng.n], eng.A, -bfull[: eng.m_eq], eng.G, bfull[eng.m_eq:]
    t4 = t()
    eng.solver.update(P=P, c=q, A=A, b=b, G=G, h_u=h)
    t5 = t()
    eng.solver.solve()
    t6 = t()
    res = eng.solver.result
    _ = (res.info.status.name, np.array(res.x[eng.z_slice]), int(res.info.iter),
         float(res.info.primal_obj))
    t7 = t()
    out["parameter values (hp.update)"] = t1 - t0
    out["param-vector assembly"] = t2 - t1
    out["sparse mat-vecs (R @ p)"] = t3 - t2
    out["scatter into P/A/G, b/h"] = t4 - t3
    out["piqp update"] = t5 - t4
    out["piqp solve"] = t6 - t5
    out["result extraction"] = t7 - t6
    return out


def conic_stages(hp: HedgeProblem, d: ProblemData) -> dict[str, float]:
    """fbr's conic re-solve stage by stage with the engine's own objects (mirrors the first
    attempt of ``ClarabelEngine.solve`` at ``CLARABEL_SETTINGS``: fbr's equilibration and an
    update of the kept solver, or a fresh set-up for a small problem; later attempts, on days the
    first stalls, are not split)."""
    from optimizer.clarabel_native import NativeAnswer, NativeClarabel, Scaling
    from optimizer.cvxpy_adapter import clarabel_status

    eng = hp.engine(SolverName.CLARABEL)
    assert isinstance(eng, ClarabelEngine)
    t = time.perf_counter
    t0 = t()
    hp.update(d)
    t1 = t()
    p = eng.map.pvec()
    t2 = t()
    vals = eng.map.RA @ p
    qfull = eng.map.Rq @ p
    pvals = eng.map.RP @ p if eng.map.RP is not None else None
    t3 = t()
    eng.A.data[:] = -vals[eng.pos_a]
    if pvals is not None:
        eng.P.data[:] = pvals[eng.pos_p]
    bfull = np.zeros(eng.map.m)
    bfull[eng.map.b_rows] = vals[eng.map.nnz_a:]
    q = qfull[: eng.map.n]
    t4 = t()
    eng.attempt_options, eng.scale = eng.options, 1.0
    nat = eng.native
    sc: Scaling | None
    if isinstance(nat, NativeClarabel):  # the kept solver: fbr's equilibration, then the update
        sc = nat.equilibrate(eng.P, q, eng.A, eng.options)
        t5 = t()
        solver = nat.load_scaled(eng.P, q, eng.A, bfull, eng.options, sc, 1.0)
    else:  # a small problem: Clarabel set up per solve
        t5 = t()
        solver, sc = nat.load(eng.P, q, eng.A, bfull, eng.options, 1.0)
    t6 = t()
    raw = solver.solve()
    t7 = t()
    ans = NativeAnswer(raw, sc)
    _ = (clarabel_status(ans), ans.x[eng.z_slice].copy(), ans.obj_val, ans.iterations)
    t8 = t()
    return {"parameter values (hp.update)": t1 - t0, "param-vector assembly": t2 - t1,
            "sparse mat-vecs (R @ p)": t3 - t2, "scatter into P/A, b": t4 - t3,
            "equilibration (fbr's Ruiz; 0 when fresh)": t5 - t4,
            "scale + update, or fresh set-up": t6 - t5, "clarabel solve": t7 - t6,
            "unscale + status + extraction": t8 - t7}


# ==============================================================================================
# one (config, N) run
# ==============================================================================================
@dataclass
class SizeResult:
    config: str
    n: int
    days: int
    n_factors: int
    variables: int
    constraints_rows: int
    compile_s: float
    fbr_ms: list[float] = field(default_factory=list)
    native_ms: list[float] = field(default_factory=list)
    naive_ms: list[float] = field(default_factory=list)
    cvxpy_ms: list[float] = field(default_factory=list)
    prepare_ms: list[float] = field(default_factory=list)
    dz_native: list[float] = field(default_factory=list)
    dz_cvxpy: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    #: cvxpy's default path: iterations on the days it answered; (fbr, cvxpy) ms per iteration
    #: on the days both answered (fbr's time counts every attempt it ran, its iterations the
    #: served one's)
    cvxpy_iterations: list[int] = field(default_factory=list)
    ms_per_iteration: list[tuple[float, float]] = field(default_factory=list)
    #: (fbr ms, cvxpy default ms, fbr iterations, cvxpy iterations) on the days both served an
    #: 'optimal' answer: the like-for-like comparison (a day one of them fails or stops short is
    #: a different amount of work)
    paired: list[tuple[float, float, int, int]] = field(default_factory=list)
    native_mode: str = ""
    inaccurate_days: list[str] = field(default_factory=list)
    failed_days: list[str] = field(default_factory=list)
    native_failed_days: int = 0
    #: days fbr's engine needed more than one attempt (Clarabel's ladder: the first stalled)
    retried_days: int = 0
    cvxpy_inaccurate_days: int = 0
    cvxpy_failed_days: int = 0
    builds_after_day0: int = 0
    builds_at_end: int = 0
    binding: dict[str, int] = field(default_factory=dict)
    stages_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""
    #: hybrid: spot USD traded per day (% of V), tax realised per day (USD), the most lots an asset
    #: held, max |fbr - cvxpy| over the spot buys and sells (weights)
    spot_traded_pct: list[float] = field(default_factory=list)
    spot_tax_usd: list[float] = field(default_factory=list)
    max_lots: int = 0
    dspot_cvxpy: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        med = float(np.median(self.fbr_ms))
        nat = float(np.median(self.native_ms))
        return {
            "config": self.config, "n": self.n, "days": self.days, "n_factors": self.n_factors,
            "variables": self.variables, "constraint_rows": self.constraints_rows,
            "compile_s": self.compile_s,
            "fbr_median_ms": med, "fbr_p90_ms": pct(self.fbr_ms, 90),
            "native_median_ms": nat, "native_p90_ms": pct(self.native_ms, 90),
            "ratio_fbr_native": med / nat if nat > 0 else math.nan,
            "naive_median_ms": float(np.median(self.naive_ms)),
            "cvxpy_default_median_ms": float(np.median(self.cvxpy_ms)),
            "cvxpy_default_p90_ms": pct(self.cvxpy_ms, 90),
            "prepare_median_ms": float(np.median(self.prepare_ms)),
            "max_dz_native": max(self.dz_native, default=math.nan),
            "max_dz_cvxpy": max(self.dz_cvxpy, default=math.nan),
            "max_dz": max(self.dz_native + self.dz_cvxpy, default=math.nan),
            "median_iterations": float(np.median(self.iterations)) if self.iterations else math.nan,
            "cvxpy_default_median_iterations": (float(np.median(self.cvxpy_iterations))
                                                if self.cvxpy_iterations else math.nan),
            "ms_per_iteration_median": ([float(v) for v in np.median(self.ms_per_iteration, axis=0)]
                                        if self.ms_per_iteration else [math.nan, math.nan]),
            **self._paired_summary(),
            "native_mode": self.native_mode, "fbr_inaccurate_days": self.inaccurate_days,
            "fbr_failed_days": self.failed_days, "native_failed_days": self.native_failed_days,
            "fbr_retried_days": self.retried_days,
            "cvxpy_default_inaccurate_days": self.cvxpy_inaccurate_days,
            "cvxpy_default_failed_days": self.cvxpy_failed_days,
            "builds_after_day0": self.builds_after_day0, "builds_at_end": self.builds_at_end,
            "binding_days": self.binding,
            "stages_median_ms": self.stages_ms, "note": self.note,
        } | (self._spot_summary() if self.config == "hybrid" else {})

    def _paired_summary(self) -> dict[str, Any]:
        """Medians over the days both fbr and cvxpy's default path answered 'optimal': their
        times, the per-day ratio fbr / cvxpy, their iterations, and the days fbr was slower."""
        if not self.paired:
            return {"paired_days": 0}
        arr = np.asarray(self.paired, dtype=float)
        return {"paired_days": len(self.paired),
                "paired_fbr_median_ms": float(np.median(arr[:, 0])),
                "paired_cvxpy_default_median_ms": float(np.median(arr[:, 1])),
                "paired_ratio_fbr_cvxpy_median": float(np.median(arr[:, 0] / arr[:, 1])),
                "paired_fbr_slower_days": int(np.count_nonzero(arr[:, 0] > arr[:, 1])),
                "paired_iterations_median": [float(np.median(arr[:, 2])),
                                             float(np.median(arr[:, 3]))]}

    def _spot_summary(self) -> dict[str, Any]:
        traded = np.asarray(self.spot_traded_pct)
        return {"spot_trade_days": int(np.count_nonzero(traded > 0)),
                "spot_traded_pct_of_V_median": float(np.median(traded)) if traded.size else 0.0,
                "spot_tax_usd_total": float(sum(self.spot_tax_usd)),
                "max_lots_per_asset": self.max_lots, "tax_pieces": HYBRID_MAX_LOTS,
                "max_dspot_cvxpy": max(self.dspot_cvxpy, default=math.nan)}


def _binding(d: ProblemData, z: np.ndarray, hp: HedgeProblem) -> list[str]:
    """Names of constraints within 1e-7 of their bound at z (numpy re-check, no duals)."""
    out = []
    for c in hp.constraints:
        name = c.name
        if name.startswith("stress"):
            slack = c.surplus(z, d)  # type: ignore[attr-defined]
        elif name == "margin":
            slack = d.im_budget - float(d.inv_lev @ np.abs(z))
        elif name == "gross_leverage":
            slack = d.max_gross - float(np.abs(d.s + d.B @ z).sum())
        elif name == "position_limit":
            slack = float(np.min(d.caps[c.idx] - np.abs(z[c.idx])))  # type: ignore[attr-defined]
        elif name == "cluster_band":
            dev = c.S @ (d.s + d.B @ z - d.w)  # type: ignore[attr-defined]
            slack = float(np.min(d.cluster_bands - np.abs(dev)))
        elif name == "vol_cap":
            e = d.s + d.B @ z
            slack = d.vol_cap - math.sqrt(float(np.sum((d.F.T @ e) ** 2)
                                                + np.sum((d.sqrt_idio * e) ** 2)))
        else:
            continue
        if slack < 1e-7:
            out.append(name)
    return out


def spot_answer(hp: HedgeProblem, d: ProblemData,
                out: SolveOutcome | None) -> tuple[np.ndarray, np.ndarray] | None:
    """fbr's spot trades (buys, sells; weights) of its last solve, or None without an answer."""
    if out is None or out.result.z is None:
        return None
    return hp.spot_solution(out.result)


def cvx_spot(hp: HedgeProblem) -> tuple[np.ndarray, np.ndarray] | None:
    """The spot trades cvxpy's default path left in the problem's variables, clipped as fbr's."""
    ctx = hp.ctx
    if not isinstance(ctx, SpotContext) or ctx.buy.value is None or ctx.sell.value is None:
        return None
    assert hp.data is not None and hp.data.spot is not None
    return (np.clip(np.asarray(ctx.buy.value, dtype=float), 0.0, None),
            np.clip(np.asarray(ctx.sell.value, dtype=float), 0.0, hp.data.spot.holdings))


def run_size(config: str, n: int, days: int, seed: int, profile: bool,
             prof_dir: Path | None, objective_scale: float | None = None,
             harvest_losses: bool = False) -> SizeResult:
    conic = config == "conic"
    hybrid = config == "hybrid"
    mkt = SyntheticMarket.create(n, seed)
    risk = mkt.risk_model()
    book = make_book(mkt, seed)
    market = mkt.snapshot()
    lots: Lots = initial_lots(book, market, seed) if hybrid else {}
    spot_cfg = hybrid_spot_settings(lots, base_usd(n), harvest_losses) if hybrid else None
    settings = make_settings(mkt, conic, objective_scale, spot_cfg)
    rb = Rebalancer()
    solver = SolverName.CLARABEL if conic else SolverName.PIQP
    cvx_solver = cp.CLARABEL if conic else cp.PIQP

    def prep(b: Book, m: MarketSnapshot, lots: Lots) -> ProblemData:
        """This day's data; hybrid: today's lots, the tax curves padded to the compiled pieces
        (``Rebalancer.fit_tax_pieces``, as ``Rebalancer.solve_z`` does)."""
        if not hybrid:
            return prepare(b, m, risk, settings)
        return rb.fit_tax_pieces(prepare(b, m, risk, with_lots(settings, lots)))

    # ---- day 0: compile, set up, warm up (not timed) ------------------------------------
    d = prep(book, market, lots)
    if hybrid:  # compile the tax term with room for HYBRID_MAX_LOTS lots per asset
        assert d.spot is not None and d.spot.tax_pieces <= HYBRID_MAX_LOTS
        d = replace(d, spot=replace(d.spot, tax_pieces=HYBRID_MAX_LOTS))
    t0 = time.perf_counter()
    hp = problem_for(rb, d)
    builds0 = HedgeProblem.builds - 1
    hp.update(d)
    chain = d.settings.solvers  # what Rebalancer.solve_z passes: (PIQP,) or (CLARABEL,)
    try:
        z0_out: SolveOutcome | None = hp.solve(chain)
    except SolverFailedError:
        z0_out = None
    compile_s = time.perf_counter() - t0
    z_day0 = z0_out.result.z if z0_out is not None else None
    eng = hp.engine(solver)
    # cvxpy's default path gets the same solver options as fbr's engine
    cvx_opts: dict[str, Any] = (dict(getattr(eng, "options", {}) or {}) if conic
                                else dict(PIQP_SETTINGS))
    native: NativePiqp | NativeClarabel = NativePiqp() if conic is False else NativeClarabel()
    native.load(eng)  # type: ignore[arg-type]
    if z_day0 is None:  # fbr's solver gave no answer on day 0: go on from the native one
        log(f"  {config} N={n}: day 0 fbr solve failed; the path starts from the native answer")
        z_day0 = native.z(native.run(), eng)  # type: ignore[arg-type]
    z = z_day0 if z_day0 is not None else d.naive_z()
    for _ in range(2):
        hp.update(d)
        with suppress(SolverFailedError):
            hp.solve(chain)
        native.run()
        d.naive_z()

    def cvx_default() -> np.ndarray | None:
        """cvxpy's default path on the same Parameters; None when the solver fails."""
        try:
            with quiet_bounds():
                hp.problem.solve(solver=cvx_solver, **cvx_opts)
        except cp.SolverError:
            return None
        if hp.problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            return None
        return np.asarray(hp.ctx.z.value, dtype=float)

    cvx_default()
    assert HedgeProblem.builds == builds0 + 1, "day 0 should compile exactly once"
    builds_after = HedgeProblem.builds
    res = SizeResult(config=config, n=n, days=days, n_factors=risk.loadings.shape[1],
                     variables=eng.compiled.n, constraints_rows=eng.compiled.rows,
                     compile_s=compile_s, native_mode=native.mode, builds_after_day0=builds_after)
    log(f"  {config} N={n}: compiled+first solve {compile_s:.2f}s, {res.variables} vars, "
        f"{res.constraints_rows} rows, K={res.n_factors}")
    spot = spot_answer(hp, d, z0_out) if hybrid else None
    book = advance_book(book, d, z, market)
    if spot is not None:
        book, lots, _ = advance_spot(book, lots, d, spot, market)

    profiler = cProfile.Profile() if (profile and prof_dir is not None) else None
    stage_rows: list[dict[str, float]] = []
    fbr_reps = nat_reps = 5
    for day in range(1, days + 1):
        mkt.step()
        market = mkt.snapshot()
        def prep_today(b: Book = book, m: MarketSnapshot = market, lt: Lots = lots) -> ProblemData:
            return prep(b, m, lt)

        t_prep, d = best_of(prep_today, 2)
        if d.structure != hp.structure:
            raise RuntimeError(f"{config} N={n} day {day}: structure changed")

        def fbr_once(d: ProblemData = d) -> SolveOutcome | None:
            hp.update(d)
            try:
                return hp.solve(chain)
            except SolverFailedError:
                return None

        t_fbr, out = best_of(fbr_once, fbr_reps)
        z_fbr = out.result.z if out is not None else None
        if out is None or z_fbr is None:
            status = "every solver failed" if out is None else out.result.status
            res.failed_days.append(f"day {day}: {status}")
        elif out.result.status != "optimal":
            res.inaccurate_days.append(f"day {day}: {out.result.solver} {out.result.status}")
        if out is not None:
            res.iterations.append(out.result.iterations)
            res.retried_days += out.result.attempts > 1
        if profiler is not None:
            profiler.enable()
            fbr_once()
            profiler.disable()
        native.load(eng)  # type: ignore[arg-type]
        t_nat, raw = best_of(native.run, nat_reps)
        z_nat = native.z(raw, eng)  # type: ignore[arg-type]
        if z_nat is None:
            res.native_failed_days += 1
        t_naive, _ = best_of(d.naive_z, 5)
        t_cvx, z_cvx = best_of(cvx_default, fbr_reps)  # as many tries as fbr's timing
        if z_cvx is None:
            res.cvxpy_failed_days += 1
        else:
            res.cvxpy_iterations.append(int(hp.problem.solver_stats.num_iters or 0))
            res.cvxpy_inaccurate_days += hp.problem.status == cp.OPTIMAL_INACCURATE
        if out is not None and z_cvx is not None and out.result.iterations:
            res.ms_per_iteration.append((1e3 * t_fbr / out.result.iterations,
                                         1e3 * t_cvx / res.cvxpy_iterations[-1]))
        if (out is not None and out.result.status == "optimal" and z_cvx is not None
                and hp.problem.status == cp.OPTIMAL):
            res.paired.append((1e3 * t_fbr, 1e3 * t_cvx, out.result.iterations,
                               res.cvxpy_iterations[-1]))
        # the path goes on with fbr's answer, or the first other answer when fbr had none
        z = next((v for v in (z_fbr, z_nat, z_cvx) if v is not None), d.z0)
        spot = None
        if hybrid:  # the spot leg's trades go with the same answer (fbr's, else cvxpy's)
            spot_cvx = cvx_spot(hp) if z_cvx is not None else None
            if z_fbr is None and z_cvx is not None:
                z = z_cvx
            spot = spot_answer(hp, d, out) if z_fbr is not None else spot_cvx
            if spot is not None and spot_cvx is not None and z_fbr is not None:
                res.dspot_cvxpy.append(float(max(np.max(np.abs(spot[0] - spot_cvx[0])),
                                                 np.max(np.abs(spot[1] - spot_cvx[1])))))
        if profile and z_fbr is not None:
            hp.update(d)
            with suppress(SolverFailedError):
                hp.solve(chain)  # leave the solver set up for this day's data, then split stages
            split = [(qp_stages if not conic else conic_stages)(hp, d) for _ in range(3)]
            stage_rows.append({k: min(s[k] for s in split) for k in split[0]})
        for name in _binding(after_spot(d, spot), z, hp):
            res.binding[name] = res.binding.get(name, 0) + 1
        res.fbr_ms.append(1e3 * t_fbr)
        res.native_ms.append(1e3 * t_nat)
        res.naive_ms.append(1e3 * t_naive)
        res.cvxpy_ms.append(1e3 * t_cvx)
        res.prepare_ms.append(1e3 * t_prep)
        if z_fbr is not None and z_nat is not None:
            res.dz_native.append(float(np.max(np.abs(z_fbr - z_nat))))
        if z_fbr is not None and z_cvx is not None:
            res.dz_cvxpy.append(float(np.max(np.abs(z_fbr - z_cvx))))
        fbr_reps, nat_reps = reps_for(t_fbr), reps_for(t_nat)
        book = advance_book(book, d, z, market)
        if spot is not None:
            book, lots, step = advance_spot(book, lots, d, spot, market)
            res.spot_traded_pct.append(100.0 * step.traded_usd / d.V)
            res.spot_tax_usd.append(step.tax_usd)
            res.max_lots = max(res.max_lots, max(len(v) for v in lots.values()))
        if HedgeProblem.builds != builds_after:
            raise AssertionError(f"{config} N={n} day {day}: HedgeProblem rebuilt "
                                 f"({builds_after} -> {HedgeProblem.builds})")
    res.builds_at_end = HedgeProblem.builds
    if stage_rows:
        keys = list(dict.fromkeys(k for r in stage_rows for k in r))
        res.stages_ms = {k: 1e3 * float(np.median([r[k] for r in stage_rows if k in r]))
                         for k in keys}
    if profiler is not None and prof_dir is not None:
        prof_dir.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(30)
        (prof_dir / f"solve_speed_profile_{config}_{n}.txt").write_text(buf.getvalue())
    return res


# ==============================================================================================
# report
# ==============================================================================================
def _fmt(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}" if x < 1 else f"{x:.2f}"


def target_for(config: str, n: int) -> float | None:
    """The fbr median target (ms) for this size, when the brief sets one (QP only)."""
    if config != "qp":
        return None
    if n <= 20:
        return QP_TARGETS_MS[20]
    return QP_TARGETS_MS.get(n)


def print_table(config: str, rows: list[dict[str, Any]]) -> list[str]:
    """Print the table (rich when available) and return the list of missed targets."""
    headers = ["N", "fbr med ms", "fbr p90", "native med ms", "fbr/native", "naive ms",
               "cvxpy default ms", "prepare ms", "max |dz|", "iters", "inacc/fail days",
               "target"]
    misses: list[str] = []
    body: list[list[str]] = []
    for r in rows:
        tgt = target_for(config, r["n"])
        flags = []
        if tgt is not None:
            ok = r["fbr_median_ms"] <= tgt
            flags.append(f"<= {tgt:g} ms {'ok' if ok else 'MISS'}")
            if not ok:
                misses.append(f"{config} N={r['n']}: fbr median {r['fbr_median_ms']:.3g} ms "
                              f"> {tgt:g} ms")
        ok_ratio = r["ratio_fbr_native"] <= NATIVE_RATIO_TARGET
        flags.append(f"<= 3x {'ok' if ok_ratio else 'MISS'}")
        if not ok_ratio:
            misses.append(f"{config} N={r['n']}: fbr/native {r['ratio_fbr_native']:.2f}x > 3x")
        if r["max_dz"] > ACCURACY_BAR:
            flags.append("dz MISS")
            misses.append(f"{config} N={r['n']}: max |dz| {r['max_dz']:.2e} > {ACCURACY_BAR:g}")
        body.append([str(r["n"]), _fmt(r["fbr_median_ms"]), _fmt(r["fbr_p90_ms"]),
                     _fmt(r["native_median_ms"]), f"{r['ratio_fbr_native']:.2f}",
                     _fmt(r["naive_median_ms"]), _fmt(r["cvxpy_default_median_ms"]),
                     _fmt(r["prepare_median_ms"]), f"{r['max_dz']:.1e}",
                     f"{r['median_iterations']:.0f}",
                     f"{len(r['fbr_inaccurate_days'])}/{len(r['fbr_failed_days'])}",
                     ", ".join(flags)])
    solver = "Clarabel via ClarabelEngine" if config == "conic" else "PIQP via PiqpEngine"
    if config == "hybrid":
        solver += f"; spot leg + tax term, {HYBRID_MAX_LOTS} pieces"
    title = f"{config.upper()} ({solver}); days={rows[0]['days'] if rows else 0}"
    modes = sorted({r["native_mode"] for r in rows})
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, caption=f"native: {', '.join(modes)}")
        for h in headers:
            table.add_column(h, justify="right" if h != "target" else "left")
        for row in body:
            table.add_row(*row)
        Console(width=200).print(table)
    except ImportError:  # pragma: no cover - rich is a dependency, but plain text is fine too
        print(title)
        widths = [max(len(h), *(len(r[k]) for r in body)) for k, h in enumerate(headers)]
        print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
        for row in body:
            print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        print(f"native: {', '.join(modes)}")
    for r in rows:
        groups: dict[str, list[int]] = {}
        for line in r["fbr_inaccurate_days"] + r["fbr_failed_days"]:
            day, _, what = line.partition(": ")
            groups.setdefault(what, []).append(int(day.split()[-1]))
        for what, days in groups.items():
            print(f"  fbr {config} N={r['n']}: {what} on {len(days)} day(s) ({_ranges(days)})")
        if r["native_failed_days"]:
            print(f"  native {config} N={r['n']}: no solution on {r['native_failed_days']} day(s)")
        if r.get("fbr_retried_days"):
            print(f"  fbr {config} N={r['n']}: first attempt short of the accepted tolerances on "
                  f"{r['fbr_retried_days']} of {r['days']} day(s) (answered by a later attempt)")
        fbr_it, cvx_it = r["ms_per_iteration_median"]
        print(f"  {config} N={r['n']}: median iterations fbr {r['median_iterations']:.1f}, cvxpy "
              f"default {r['cvxpy_default_median_iterations']:.1f}; ms per iteration fbr "
              f"{_fmt(fbr_it)}, cvxpy default {_fmt(cvx_it)} (median over the days both "
              "answered)")
        if r.get("paired_days"):
            fi, ci = r["paired_iterations_median"]
            print(f"  {config} N={r['n']}: on the {r['paired_days']} day(s) both answered 'optimal': "
                  f"fbr {_fmt(r['paired_fbr_median_ms'])} ms, cvxpy default "
                  f"{_fmt(r['paired_cvxpy_default_median_ms'])} ms (median ratio "
                  f"{r['paired_ratio_fbr_cvxpy_median']:.3f}, fbr slower on "
                  f"{r['paired_fbr_slower_days']}), iterations {fi:.1f} / {ci:.1f}")
        if r["cvxpy_default_inaccurate_days"] or r["cvxpy_default_failed_days"]:
            print(f"  cvxpy default {config} N={r['n']}: optimal_inaccurate on "
                  f"{r['cvxpy_default_inaccurate_days']} day(s), failed on "
                  f"{r['cvxpy_default_failed_days']} day(s) (max |dz| skips the failed ones)")
        if "spot_trade_days" in r:
            print(f"  spot leg {config} N={r['n']}: traded on {r['spot_trade_days']}/{r['days']} "
                  f"days (median {r['spot_traded_pct_of_V_median']:.2f}% of V), realised tax "
                  f"{r['spot_tax_usd_total']:,.0f} USD, up to {r['max_lots_per_asset']} lots per "
                  f"asset, max |spot fbr - cvxpy| {r['max_dspot_cvxpy']:.1e}")
        if r["note"]:
            print(f"  note: {r['note']}")
    return misses


def _ranges(days: list[int]) -> str:
    """1,2,3,5 -> '1-3,5'."""
    out: list[str] = []
    for d in sorted(days):
        if out and "-" not in out[-1].split(",")[-1] and int(out[-1]) == d - 1:
            out[-1] = f"{out[-1]}-{d}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == d - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{d}"
        else:
            out.append(str(d))
    return ",".join(out)


def print_stages(config: str, rows: list[dict[str, Any]]) -> None:
    with_stages = [r for r in rows if r["stages_median_ms"]]
    if not with_stages:
        return
    keys = list(dict.fromkeys(k for r in with_stages for k in r["stages_median_ms"]))
    print(f"\n{config.upper()} stage split of fbr's re-solve (median ms over days):")
    print("  " + "stage".ljust(56) + "".join(f"N={r['n']}".rjust(11) for r in with_stages))
    for k in keys:
        print("  " + k.ljust(56) + "".join(_fmt(r["stages_median_ms"].get(k, math.nan)).rjust(11)
                                           for r in with_stages))
    print("  " + "sum of stages".ljust(56)
          + "".join(_fmt(sum(r["stages_median_ms"].values())).rjust(11) for r in with_stages))
    print("  " + "fbr median (timed whole)".ljust(56)
          + "".join(_fmt(r["fbr_median_ms"]).rjust(11) for r in with_stages))


# ==============================================================================================
# main
# ==============================================================================================
def _blas_info() -> str:
    """BLAS library and thread count as threadpoolctl sees them (or 'unknown')."""
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-untyped]
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    np.ones((2, 2)) @ np.ones((2, 2))  # make sure numpy's BLAS is loaded
    libs = [f"{i.get('internal_api')} {i.get('version')} x{i.get('num_threads')} threads"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(libs) or "unknown"


def _git_state() -> str:
    """HEAD and whether optimizer/ or models/ had uncommitted changes (the code measured)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "optimizer", "models"], cwd=root,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in optimizer/ or models/" if dirty else "")


def log(msg: str) -> None:
    """Progress to stderr (the tables go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                    help="comma-separated N (assets = contracts)")
    ap.add_argument("--days", type=int, default=25, help="timed days (after a day-0 warm-up)")
    ap.add_argument("--config", choices=("qp", "conic", "hybrid", "both", "all"), default="both",
                    help="both = qp + conic; all = qp + conic + hybrid")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="limit BLAS (OpenBLAS) threads with threadpoolctl; default: leave as is")
    ap.add_argument("--conic-max-days", type=int, default=25,
                    help="cap on timed days for conic N >= 1000 (time budget)")
    ap.add_argument("--objective-scale", type=float, default=None,
                    help="OptimizerSettings.objective_scale (default: fbr's default)")
    ap.add_argument("--harvest-losses", action="store_true",
                    help="hybrid: credit loss lots (SpotLegSettings.harvest_losses); default off")
    ap.add_argument("--profile", action="store_true",
                    help="add a per-stage split of fbr's time and cProfile listings")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    configs = {"both": ["qp", "conic"], "all": ["qp", "conic", "hybrid"]}.get(args.config,
                                                                            [args.config])
    blas = _blas_info()
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads)
        blas = _blas_info()
    log(f"  BLAS: {blas}")
    warnings.filterwarnings("ignore", message="Solution may be inaccurate", category=UserWarning)
    t_start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    misses: list[str] = []
    prof_dir = args.out.parent if args.profile else None
    for config in configs:
        rows = []
        for n in sizes:
            days = args.days
            note = ""
            if config == "conic" and n >= 1000 and args.days > args.conic_max_days:
                days = args.conic_max_days
                note = f"conic N={n}: {days} timed days instead of {args.days} (time budget)"
                log("  " + note)
            r = run_size(config, n, days, args.seed, args.profile, prof_dir,
                         args.objective_scale, args.harvest_losses)
            r.note = note
            rows.append(r.summary())
        results[config] = rows
        misses += print_table(config, rows)
        print_stages(config, rows)
    elapsed = time.perf_counter() - t_start
    print(f"\ntargets: QP fbr median <= 0.5 ms for N <= 20, <= 15 ms at N = 500, <= 30 ms at "
          f"N = 1000; both configs within {NATIVE_RATIO_TARGET:g}x of the native floor; "
          f"max |dz| <= {ACCURACY_BAR:g} (weight units)")
    if misses:
        print("missed:")
        for m in misses:
            print("  - " + m)
    else:
        print("all targets met")
    print(f"BLAS: {blas}; total wall time {elapsed:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "sizes": sizes, "days": args.days, "seed": args.seed, "configs": configs,
            "objective_scale": args.objective_scale, "harvest_losses": args.harvest_losses,
            "blas": blas, "cpu_count": os.cpu_count(), "loadavg_end": os.getloadavg(),
            "git": _git_state(),

            "python": sys.version.split()[0], "cvxpy": cp.__version__, "numpy": np.__version__,
            "wall_s": elapsed, "targets": {"qp_ms": {str(k): v for k, v in QP_TARGETS_MS.items()},
                                           "native_ratio": NATIVE_RATIO_TARGET,
                                           "accuracy": ACCURACY_BAR},
            "misses": misses}
    try:
        import clarabel
        import piqp

        meta["piqp"], meta["clarabel"] = piqp.__version__, clarabel.__version__
    except (ImportError, AttributeError):
        pass
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=float))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
