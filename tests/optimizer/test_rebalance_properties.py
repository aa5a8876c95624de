"""Property tests (hypothesis) of ``Rebalancer.solve`` on random books, markets and constraint sets.

1. Every enabled constraint holds at the returned (lot-rounded) positions and at the unrounded
   optimum, re-checked with numpy from the maths (optcases.violations, independent of cvxpy and of
   optimizer.constraints), or the answer is "infeasible" with at least one conflict named (and the
   independent reference formulation agrees that it is infeasible).
2. Solving again from the returned positions trades nothing (linear costs on; with the 3/2-power
   impact the optimum legitimately keeps trading: splitting a trade is cheaper).
3. A book already exactly on target trades nothing (costs on, carry cheaper than trading).

Books use fine lots (1e-9 contracts, no minimum notional), so rounding moves a position by far less
than the 1e-6 x V tolerance of the checks.
"""

from __future__ import annotations

import math
from dataclasses import replace

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from optcases import (
    Instance,
    base_value,
    is_conic,
    maintenance,
    objective,
    random_instance,
    ref_data,
    solve_reference,
    violations,
)

from models.book import Book, TargetsBase
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.checks import LiquidatableBookError
from optimizer.prepare import prepare
from optimizer.rebalance import InsufficientCollateralError, Rebalancer
from optimizer.settings import (
    ClusterBand,
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    StressScenario,
)

T0_ON = pd.Timestamp("2025-03-01T00:00:00Z")
pytestmark = [
    # fbr's elastic re-solve and its dual explanation let these through; both are harmless here
    pytest.mark.filterwarnings("ignore:Solution may be inaccurate:UserWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered in power:RuntimeWarning"),
]
#: an interior-point "almost solved" answer still has to satisfy every property below
SOLVED = ("optimal", "optimal_inaccurate")

TOL = 1e-6  # of V (USD checks) / absolute (weights)
#: a conic re-solve's noise in trades (x V): Clarabel stops within its gap tolerance on an objective
#: that is flat along some trades (a hypothesis example traded 3.5e-5 x V with the objective 2.5e-10
#: worse than holding)
CONIC_NOISE = 1e-4
LOT = 1e-9
SLOW = (HealthCheck.too_slow,)


@st.composite
def constraint_sets(draw: st.DrawFn, inst: Instance) -> ConstraintSettings:
    """Hypothesis chooses which constraints are on and how tight they are."""
    book, market = inst.book, inst.market
    syms, cons = book.asset_symbols, book.contract_symbols
    V = base_value(book, market)
    conic_vol = inst.settings.constraints.vol_cap is not None
    n_stress = draw(st.integers(0, 2))
    ret = st.floats(-0.6, 0.8, allow_nan=False)
    stress = tuple(
        StressScenario(f"s{k}", {a: draw(ret) for a in draw(st.sets(st.sampled_from(syms)))},
                       common=draw(st.floats(-0.4, 0.4)))
        for k in range(n_stress))
    clusters: tuple[ClusterBand, ...] = ()
    if draw(st.booleans()):
        members = draw(st.lists(st.sampled_from(syms), min_size=1, max_size=4, unique=True))
        clusters = (ClusterBand("g", tuple(members), draw(st.floats(0.0, 0.05))),)
    caps: dict[str, float] = {}
    if draw(st.booleans()):
        caps = {c: draw(st.floats(0.0, 0.3)) * V for c in draw(st.sets(st.sampled_from(cons)))}
    margin = draw(st.booleans())
    return ConstraintSettings(
        margin=margin,
        margin_buffer_usd=draw(st.floats(0.0, 0.02)) * V if margin else 0.0,
        stress=stress,
        max_gross_leverage=draw(st.none() | st.floats(0.6, 2.0)),
        caps_usd=caps,
        default_cap_usd=draw(st.floats(0.01, 0.5)) * V if draw(st.booleans()) else None,
        clusters=clusters,
        vol_cap=inst.settings.constraints.vol_cap if conic_vol else None,
        funding_budget_usd=draw(st.none() | st.floats(-1e-4, 1e-3).map(lambda f: f * V)),
        trade_limit_usd=draw(st.none() | st.floats(0.01, 0.5).map(lambda f: f * V)),
        trade_limit_adv=draw(st.none() | st.floats(1e-6, 1e-3)),
        rho_min=draw(st.none() | st.floats(0.0, 0.99)))


@st.composite
def problems(draw: st.DrawFn, *, linear_costs_only: bool = False,
             trade_limits: bool = True) -> Instance:
    """A random book and market (numpy, seeded by hypothesis) with hypothesis-chosen constraints."""
    seed = draw(st.integers(0, 2**32 - 1))
    conic = draw(st.sampled_from([None, False, True]))
    inst = random_instance(np.random.default_rng(seed), conic=conic, lot_step=LOT, min_notional=0.0,
                           max_assets=8)
    cons = draw(constraint_sets(inst))
    if not trade_limits:
        cons = replace(cons, trade_limit_usd=None, trade_limit_adv=None)
    costs = inst.settings.costs
    if linear_costs_only:
        costs = replace(costs, trading=True, impact=False)
    return replace(inst, settings=replace(inst.settings, constraints=cons, costs=costs))


def _positions(sol_positions: tuple[object, ...]) -> np.ndarray:
    return np.array([p.notional for p in sol_positions])  # type: ignore[attr-defined]


def _smallest_im(inst: Instance) -> float:
    out = math.inf
    for c in inst.book.contracts:
        m = inst.market.mark[c.symbol]
        npc = c.contract_size if c.settlement == "inverse" else c.contract_size * m
        out = min(out, max(c.min_notional, c.lot_step * npc) / c.leverage)
    return out


def _named(row: str, broken: tuple[str, ...]) -> bool:
    """Is my row label among the rounding module's broken rows? (caps are labelled by their source)"""
    if row.startswith("cap["):
        sym = row[len("cap"):]
        return any(b.endswith(sym) and b.split("[")[0] in
                   ("position_cap", "tier_limit", "proxy_correlation") for b in broken)
    return row in broken


def _assert_feasible(inst: Instance, x: np.ndarray, V: float, what: str) -> None:
    bad = {k: v for k, v in violations(inst, x).items() if v > TOL * V}
    assert not bad, f"{what} breaks (USD): {bad}"


def _assert_reference_finds_no_feasible_point(inst: Instance, V: float) -> None:
    """fbr said infeasible: the independent reference must say so too, or claim a point that breaks.

    A claimed solution counts only if it satisfies every constraint (the numpy re-check, TOL x V):
    SCS, the reference's retry when the tight Clarabel stops, can return "optimal_inaccurate" on an
    infeasible problem with caps broken by percents of NAV (seen on CI's machine).
    """
    ref = solve_reference(inst)
    if ref.status == "solver_error":  # the tight Clarabel stopped: the reference's own retry
        ref = solve_reference(inst, cp.SCS, eps_abs=1e-9, eps_rel=1e-9, max_iters=200_000)
    if ref.status in ("infeasible", "infeasible_inaccurate"):
        return
    assert ref.x is not None, f"fbr says infeasible, the reference says {ref.status}"
    broken = {k: v for k, v in violations(inst, ref.x).items() if v > TOL * V}
    assert broken, f"fbr says infeasible, the reference ({ref.status}) found a feasible point"


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=SLOW)
@given(problems())
def test_solution_satisfies_every_enabled_constraint(inst: Instance) -> None:
    rb = Rebalancer()
    try:
        sol = rb.solve(inst.book, inst.market, inst.risk, inst.settings)
    except InsufficientCollateralError:
        cs = inst.settings.constraints
        coll = ref_data(inst).collateral
        assert cs.margin and coll - cs.margin_buffer_usd < _smallest_im(inst)
        return
    except LiquidatableBookError:
        assert _liquidatable_now(inst)
        return
    V = sol.base
    event(f"status {sol.status}")
    event(f"solver {sol.solver}")
    if sol.status == "infeasible":
        assert sol.conflicts, "infeasible without a named conflict"
        for conflict in sol.conflicts:
            event(f"conflict {conflict.name.split('[')[0]}")
        assert all(conflict.violation > 0 for conflict in sol.conflicts)
        _assert_reference_finds_no_feasible_point(inst, V)
        return
    assert sol.status in ("optimal", "optimal_inaccurate")
    x = _positions(sol.target_positions)
    _assert_feasible(inst, x, V, "rounded solution")
    # the rounding module's guarantee: whatever it could not repair (beyond its 1e-9 tolerance in
    # weight units) it names
    for row, v in violations(inst, x).items():
        if v > 2e-9 * V:
            assert _named(row, sol.rounding_broken), f"{row} broken by {v:.3g} USD, not reported"
    # positions are whole lots and notional = contracts x notional per contract
    for p, c in zip(sol.target_positions, inst.book.contracts, strict=True):
        lots = p.contracts / c.lot_step
        assert abs(lots - round(lots)) <= max(1e-6, 1e-12 * abs(lots))
        m = inst.market.mark[c.symbol]
        npc = c.contract_size if c.settlement == "inverse" else c.contract_size * m
        assert p.notional == pytest.approx(_exposure_after_fill(inst, c.symbol, p.contracts, npc),
                                           rel=1e-12, abs=1e-9)
    # the unrounded optimum too
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    z, _hp, solver, _ = rb.solve_z(d)
    assert solver != "infeasible"
    _assert_feasible(inst, z * d.V, d.V, "unrounded solution")
    # the report agrees with the positions
    e = np.array([sol.effective_weights_after[a] for a in inst.book.asset_symbols])
    assert sol.gross_leverage == pytest.approx(float(np.abs(e).sum()), abs=1e-12)


def _with_cash_floor(inst: Instance) -> Instance:
    V = base_value(inst.book, inst.market)
    return replace(inst, book=replace(inst.book, cash=max(inst.book.cash, 0.1 * V)))


def _resolve_trades(inst: Instance) -> tuple[dict[str, float], float]:
    """Solve, hold the answer, solve again: the second solve's trades (USD) and V."""
    trades, V, _x, _held = _resolve_held(inst)
    return trades, V


def _resolve_held(inst: Instance) -> tuple[dict[str, float], float, np.ndarray, Instance]:
    """:func:`_resolve_trades`, with the second solve's positions (USD) and the instance whose book
    holds the first answer."""
    inst = _with_cash_floor(inst)
    first = Rebalancer().solve(inst.book, inst.market, inst.risk, inst.settings)
    assume(first.status in SOLVED)
    held = {p.symbol: p.contracts for p in first.target_positions}
    book2 = inst.book.with_futures(held, inst.market)
    assert book2.nav(inst.market) == pytest.approx(inst.book.nav(inst.market), rel=1e-12)
    second = Rebalancer().solve(book2, inst.market, inst.risk, inst.settings)
    assert second.status in SOLVED
    return ({t.symbol: t.notional for t in second.trades}, second.base,
            _positions(second.target_positions), replace(inst, book=book2))


# Linear trading costs are positively homogeneous, so the first solve's optimum is an optimum of the
# second (whose cost subdifferential at t = 0 is the whole box [-c, c]). The property is false by
# design with the 3/2-power impact (splitting a trade over two rebalances is cheaper) and with a
# binding trade limit (a per-rebalance limit lets the next rebalance go further): both are off here.
RESOLVE = problems(linear_costs_only=True, trade_limits=False)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=SLOW)
@given(RESOLVE)
def test_resolving_from_the_solution_makes_no_real_trade(inst: Instance) -> None:
    """Guard against structural mistakes (z0 mishandled, costs not centred on the book): nothing
    above solver noise (5e-4 x V; today's noise reaches ~1e-4 x V, see the strict test below)."""
    trades, V = _resolve_trades(inst)
    big = {k: v for k, v in trades.items() if abs(v) >= 5e-4 * V}
    assert not big, f"re-solving from the solution trades {big} (V = {V:.2f})"


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=SLOW)
@given(RESOLVE)
def test_resolving_from_the_solution_trades_nothing(inst: Instance) -> None:
    """Nothing above 1e-6 x V, but on a conic problem (vol cap: Clarabel's accuracy) nothing above
    CONIC_NOISE x V, and there only where the second answer is no better than holding by the numpy
    objective (holding is an optimum of the second problem: a gain means the first answer was not)."""
    trades, V, x2, held = _resolve_held(inst)
    big = {k: v for k, v in trades.items() if abs(v) >= TOL * V}
    if big and is_conic(inst):
        gain = objective(held, ref_data(held).x0) - objective(held, x2)
        assert gain <= 1e-9, f"the re-solve beats holding by {gain:.3g} (V = {V:.2f}): {big}"
        big = {k: v for k, v in big.items() if abs(v) >= CONIC_NOISE * V}
    assert not big, f"re-solving from the solution trades {big} (V = {V:.2f})"


@st.composite
def on_target_books(draw: st.DrawFn) -> Instance:
    """A book whose spot sits exactly at its target weights, no futures, costs on."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    N = draw(st.integers(2, 8))
    syms = [f"B{i}" for i in range(N)]
    nav_base = draw(st.booleans())
    w = rng.dirichlet(np.ones(N))
    w[rng.random(N) < 0.2] = 0.0
    w = w / max(w.sum(), 1e-12) if w.sum() > 0 else np.eye(N)[0]
    if nav_base:
        w = w * draw(st.floats(0.5, 0.95))
    V = float(np.exp(rng.uniform(np.log(1e4), np.log(1e7))))
    prices = np.exp(rng.uniform(np.log(0.5), np.log(8e4), N))
    contracts: list[FuturesContract] = []
    mark: dict[str, float] = {}
    funding: dict[str, float] = {}
    for i, s in enumerate(syms):
        for k in range(draw(st.integers(0, 2))):
            sym = f"{s}-{k}"
            contracts.append(FuturesContract(sym, s, lot_step=LOT, min_notional=0.0,
                                             kind=ContractKind.PERPETUAL,
                                             taker_fee=draw(st.floats(2e-4, 8e-4))))
            mark[sym] = float(prices[i] * (1 + rng.normal(0, 1e-4)))
            # carry per day (3 settlements) stays below the cheapest trading cost (2 bp + spread)
            funding[sym] = draw(st.floats(-5e-5, 5e-5))
    assume(contracts)
    spot = {s: float(w[i] * V / prices[i]) for i, s in enumerate(syms) if w[i] > 0}
    cash = (1.0 - float(w.sum())) * V if nav_base else draw(st.floats(0.05, 0.5)) * V
    book = Book(assets=tuple(SpotAsset(s) for s in syms), contracts=tuple(contracts), spot=spot,
                targets={s: float(w[i]) for i, s in enumerate(syms)}, cash=cash,
                targets_base=TargetsBase.NAV if nav_base else TargetsBase.INVESTED)
    market = MarketSnapshot(time=T0_ON, spot=dict(zip(syms, map(float, prices), strict=True)),
                            mark=mark, funding=funding)
    A = rng.normal(0, 0.5, (N, N))
    M = len(contracts)
    Q, _ = np.linalg.qr(rng.standard_normal((M, M)))
    risk = replace(RiskModel.from_covariance(syms, A @ A.T + np.diag(rng.uniform(0.05, 0.3, N))),
                   basis_cov=(Q * rng.uniform(0.005, 0.05, M)) @ Q.T)
    costs = CostSettings(trading=True, impact=draw(st.booleans()), carry=draw(st.booleans()))
    cons = ConstraintSettings(
        margin=draw(st.booleans()),
        stress=(StressScenario("crash", {}, draw(st.floats(-0.7, 0.0))),) if draw(st.booleans())
        else (),
        max_gross_leverage=float(w.sum()) + draw(st.floats(0.0, 1.0)) if draw(st.booleans())
        else None,
        clusters=(ClusterBand("all", tuple(syms), 0.0),) if draw(st.booleans()) else (),
        funding_budget_usd=0.0 if draw(st.booleans()) else None,
        trade_limit_usd=draw(st.floats(0.0, 0.1)) * V if draw(st.booleans()) else None)
    return Instance(book, market, risk,
                    OptimizerSettings(costs=costs, constraints=cons, basis_risk=True))




@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=SLOW)
@given(on_target_books())
def test_book_on_target_trades_nothing(inst: Instance) -> None:
    sol = Rebalancer().solve(inst.book, inst.market, inst.risk, inst.settings)
    assert sol.status in SOLVED
    V = sol.base
    big = {t.symbol: t.notional for t in sol.trades if abs(t.notional) >= TOL * V}
    assert not big, f"a book on target trades {big}"
    assert sol.tracking_error_after == pytest.approx(0.0, abs=1e-6)


def _exposure_after_fill(inst: Instance, symbol: str, q: float, npc: float) -> float:
    """USD exposure of ``q`` contracts after the trade by the exchange's fill rule, by hand: q npc,
    except an inverse position held at entry E away from the mark (exposure x0 = q0 npc mark / E),
    which keeps x0 when untraded, adds npc a contract when it grows, scales x0 by q / q0 when it
    shrinks (the entry is kept) and re-opens at the mark past a flip."""
    c = next(k for k in inst.book.contracts if k.symbol == symbol)
    pos = inst.book.futures.get(symbol)
    if c.settlement != "inverse" or pos is None or pos.contracts == 0:
        return q * npc
    q0 = pos.contracts
    x0 = q0 * npc * inst.market.mark[symbol] / pos.entry_price
    if q == 0 or (q > 0) != (q0 > 0):
        return q * npc
    return float(x0 + (q - q0) * npc if abs(q) >= abs(q0) else x0 * q / q0)


def _liquidatable_now(inst: Instance) -> bool:
    """The reference's margin balance at or below the held positions' maintenance margin (USD,
    each on the exchange's notional: q x size x mark linear, the face q x size inverse)."""
    r = ref_data(inst)
    mm = 0.0
    for c, (mmr, cum) in zip(inst.book.contracts, r.tiers, strict=True):
        pos = inst.book.futures.get(c.symbol)
        if pos is not None and pos.contracts != 0:
            npc = (c.contract_size if c.settlement == "inverse"
                   else c.contract_size * inst.market.mark[c.symbol])
            mm += maintenance(mmr, cum, abs(pos.contracts) * npc)
    return bool(r.collateral <= mm * (1 + 1e-9))
