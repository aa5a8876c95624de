"""The reserve as a decision (``costs.reserve_cost``, optimizer.reserve_term / terms.ReserveCost).

- by hand: one contract, one scenario, min 0.25 (1 - h)^2 + rho 0.414 h, so the hedge h shrinks as
  the yield rises (h = 1 - 0.828 rho);
- a plain-cvxpy reference on 100 seeded random books (no Parameters, Clarabel at tight tolerance,
  the reserve rows written here from the maths: R >= 0, R >= W / V - surplus_s(z)): positions,
  trades and the reserve agree to 1e-5 of NAV;
- the report: the solution's reserve and yearly cost are the closed-form ``size_reserve`` at the
  returned positions (1e-6 of NAV), in ``fbr solve`` text and ``--json``;
- DPP: re-solves with other yields / horizons / scenario values compile nothing; off: no term.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import tomllib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
import tomli_w
from optcases import (
    CLARABEL_TIGHT,
    Instance,
    random_instance,
    ref_data,
    reference_problem,
    solve_clarabel,
)

from fbr.config import load_book_file
from fbr.config_loader import LoadedBook
from models.book import Book
from models.errors import ValidationError
from models.instruments import FuturesContract, MarginTiers, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer
from optimizer.reserve import size_reserve, with_stress_preset
from optimizer.reserve_term import reserve_rate
from optimizer.settings import (
    ConstraintSettings,
    CostSettings,
    OptimizerSettings,
    StressScenario,
)
from optimizer.terms import ReserveCost, terms_for

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
T0 = pd.Timestamp("2025-01-01T00:00:00Z")

#: positions, trades and the reserve agree to this fraction of NAV (the brief's 1e-5)
TOL = 1e-5
REFERENCE_SEEDS = tuple(range(3000, 3100))
INFEASIBLE = ("infeasible", "infeasible_inaccurate")


# ------------------------------------------------------------------------------------------------
# One contract, one scenario, by hand
# ------------------------------------------------------------------------------------------------


def _one_contract(reserve_yield: float, *, on: bool = True) -> tuple[Book, MarketSnapshot,
                                                                     RiskModel, OptimizerSettings]:
    """1 BTC at 50,000 (V = 50,000 invested), target 0, 25,000 USD cash; BTCUSDT flat mmr 1%,
    leverage 20; vol 50% (variance 0.25); one scenario BTC +40%; no trading cost, no carry;
    horizon 36.5 days, so rho = reserve_yield / 10."""
    c = FuturesContract("BTCUSDT", "BTC", tiers=MarginTiers.flat(max_leverage=20.0, mmr=0.01),
                        leverage=20.0, lot_step=1e-6, min_notional=0.0)
    book = Book(assets=(SpotAsset("BTC"),), contracts=(c,), spot={"BTC": 1.0},
                targets={"BTC": 0.0}, cash=25_000.0)
    market = MarketSnapshot(time=T0, spot={"BTC": 50_000.0}, mark={"BTCUSDT": 50_000.0},
                            funding={"BTCUSDT": 0.0})
    risk = RiskModel(("BTC",), np.array([[0.5]]), np.array([0.0]))
    settings = OptimizerSettings(
        costs=CostSettings(trading=False, carry=False, horizon_days=36.5, reserve_cost=on,
                           reserve_yield=reserve_yield),
        constraints=ConstraintSettings(stress=(StressScenario("BTC +40%", {"BTC": 0.4}),)),
        round_lots=False)
    return book, market, risk, settings


# Short h (weights) of the 1 BTC: in BTC +40% (g = 0.4) the wallet that leaves 0 surplus is
#   R(h) = -g z + mmr |z| (1 + g) = 0.4 h + 0.01 x 1.4 h = 0.414 h   (z = -h, nothing pledged)
# objective 0.25 (1 - h)^2 + rho 0.414 h  ->  h* = 1 - 0.414 rho / (2 x 0.25) = 1 - 0.828 rho,
# rho = yield x 36.5 / 365 = yield / 10. The stress row (25,000 / 50,000 >= 0.414 h) and initial
# margin (h / 20 <= 0.5) do not bind.
@pytest.mark.parametrize(("y", "short_usd"), [(0.0, 50_000.0), (0.1, 49_586.0), (0.5, 47_930.0),
                                              (1.0, 45_860.0)])
def test_one_contract_hedge_shrinks_as_the_yield_rises(y: float, short_usd: float) -> None:
    sol = Rebalancer().solve(*_one_contract(y))
    assert sol.status == "optimal"
    (pos,) = sol.target_positions
    assert pos.notional == pytest.approx(-short_usd, abs=1e-6 * 50_000)
    assert sol.reserve is not None and sol.reserve.in_objective
    # reported once the trade is paid: the default 5 bp fee and 1 bp half spread on the short
    # (charged by the exchange whether or not the objective prices them; the objective's reserve
    # term is before them)
    need = 0.414 * short_usd + 0.0006 * short_usd
    assert sol.reserve.reserve_usd == pytest.approx(need, abs=1e-6 * 50_000)
    assert sol.reserve.binding == "BTC +40%"
    assert sol.reserve.reserve_cost_usd_per_year == pytest.approx(y * need, abs=1e-3)
    assert sol.reserve.reserve_cost_usd_over_horizon == pytest.approx(
        y * need * 36.5 / 365.0, abs=1e-3)


def test_one_contract_off_is_the_full_hedge() -> None:
    """Off, the yield is irrelevant: the full hedge, no reserve reported."""
    sol = Rebalancer().solve(*_one_contract(1.0, on=False))
    assert sol.target_positions[0].notional == pytest.approx(-50_000.0, abs=1e-6 * 50_000)
    assert sol.reserve is None and "reserve" not in sol.to_dict()


# ------------------------------------------------------------------------------------------------
# Plain-cvxpy reference on random books
# ------------------------------------------------------------------------------------------------


def _reserve_instance(seed: int) -> Instance:
    """optcases' random book with the reserve priced: its stress scenarios plus 0-2 random ones and
    all assets -X and +X together (X in [10%, 40%]: a net futures position loses in one of them),
    a yearly yield log-uniform in [1%, 500%] (large enough for the term to move the hedge),
    ``costs.reserve_cost`` on. Two books in three lose their pledges and get a wallet of 5-60% of
    the spot value (pledged spot or a tiny wallet leave the reserve at 0 or pinned by the stress
    rows, so the term would rarely move the hedge)."""
    rng = np.random.default_rng(seed)
    inst = random_instance(rng, conic=True if seed % 4 == 0 else None)
    if rng.random() < 2 / 3:
        spot = sum(q * inst.market.spot[a] for a, q in inst.book.spot.items())
        inst = replace(inst, book=replace(inst.book, pledged={},
                                          cash=float(rng.uniform(0.05, 0.6)) * spot))
    st = inst.settings
    cs, cc = st.constraints, st.costs
    syms = inst.book.asset_symbols
    move = float(rng.uniform(0.1, 0.4))
    stress = (*cs.stress, *(
        StressScenario(f"r{k}", {s: float(rng.uniform(-0.5, 0.5)) for s in syms
                                 if rng.random() < 0.5},
                       common=float(rng.uniform(-0.35, 0.3)))
        for k in range(int(rng.integers(0, 3)))),
        StressScenario("all down", {}, -move), StressScenario("all up", {}, move))
    y = float(np.exp(rng.uniform(math.log(0.01), math.log(5.0))))
    return replace(inst, settings=replace(
        st, constraints=replace(cs, stress=stress),
        costs=replace(cc, reserve_cost=True, reserve_yield=y)))


@dataclass(frozen=True)
class RefReserve:
    """The reference's status, positions x (USD) and reserve R (USD)."""

    status: str
    x: np.ndarray | None
    reserve: float


def _solve_reference_with_reserve(inst: Instance) -> RefReserve:
    """optcases' plain-cvxpy problem plus the reserve, written here from the maths:

        min  obj(z) + rho R
        s.t. the problem's constraints, R >= 0,
             R >= sum_j |z_j| / L_j - sum_i c_i u_i / V (the positions' initial margin),
             R >= W / V - surplus_s(z) for each scenario s,
             surplus_s(z) = (W + sum_i c_i u_i (1 + r_si)) / V + g_s' z
                            - sum_j max(0, max_k (mmr_jk (1 + g_sj) |z_j| - cum_jk / V)),

    W = cash + uPnL (collateral less the pledged value), c_i the flat pledge ratio (u_i the spot
    value), g_s = B' r_s, rho = reserve_yield x horizon_days / 365. Constants only, no Parameters.
    """
    r = ref_data(inst)
    cc, cs = inst.settings.costs, inst.settings.constraints
    prob, z, _kinds = reference_problem(inst, r)
    V = r.V
    wallet = r.collateral - float(r.pledged_value.sum())
    rho = cc.reserve_yield * cc.horizon_days / 365.0
    R = cp.Variable(name="reserve_ref")
    rows: list[cp.Constraint] = [
        R >= 0, cp.sum(cp.multiply(1.0 / r.leverage, cp.abs(z))) - float(r.pledged_value.sum()) / V <= R]
    for k in range(len(cs.stress)):
        rr = r.stress_r[k]
        g = r.B.T @ rr
        coll = wallet + float(r.pledged_value @ (1.0 + rr))
        mm = []
        for j, (mmr, cum) in enumerate(r.tiers):
            n = (1.0 + g[j]) * cp.abs(z[j])
            mm.append(cp.maximum(0.0, *[mmr[b] * n - cum[b] / V for b in range(len(mmr))]))
        surplus = coll / V + g @ z - cp.sum(cp.hstack(mm))
        rows.append(wallet / V - surplus <= R)
    # the reference objective is 1e3 x DESIGN.md's (optcases.reference_problem)
    full = cp.Problem(cp.Minimize(prob.objective.args[0] + 1e3 * rho * R),
                      [*prob.constraints, *rows])
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            solve_clarabel(full, **CLARABEL_TIGHT)
    except cp.SolverError:
        return RefReserve("solver_error", None, math.nan)
    if full.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and z.value is not None:
        return RefReserve(full.status, np.asarray(z.value) * V, float(R.value) * V)
    return RefReserve(full.status, None, math.nan)


@dataclass(frozen=True)
class Pair:
    """fbr's unrounded answer and the reference's on one instance."""

    inst: Instance
    x: np.ndarray
    x0: np.ndarray
    status: str
    nav: float
    term_reserve: float
    ref: RefReserve


@functools.cache
def _pair(seed: int) -> Pair:
    inst = _reserve_instance(seed)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    z, hp, status, _ = Rebalancer().solve_z(d)
    (term,) = [t for t in hp.terms if isinstance(t, ReserveCost)]
    rho = reserve_rate(d)
    term_reserve = term.value(np.asarray(z), d) / rho * d.V
    return Pair(inst, np.asarray(z) * d.V, d.z0 * d.V, status, d.nav, term_reserve,
                _solve_reference_with_reserve(inst))


@pytest.mark.parametrize("seed", REFERENCE_SEEDS)
def test_matches_plain_cvxpy_reference(seed: int) -> None:
    p = _pair(seed)
    if p.ref.status in INFEASIBLE:
        assert p.status == "infeasible", f"reference infeasible, fbr solved it with {p.status}"
        return
    assert p.ref.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE), p.ref.status
    assert p.status != "infeasible" and p.ref.x is not None
    tol = TOL * p.nav
    assert np.max(np.abs(p.x - p.ref.x)) <= tol  # positions
    assert np.max(np.abs((p.x - p.x0) - (p.ref.x - p.x0))) <= tol  # trades
    # the reserve: the reference's R, the closed form at fbr's positions, fbr's term
    cs, cc = p.inst.settings.constraints, p.inst.settings.costs
    closed = size_reserve(p.inst.book, p.inst.market, p.x, cs.stress, cc.reserve_yield)
    assert abs(closed.reserve_usd - p.ref.reserve) <= tol
    assert abs(p.term_reserve - closed.reserve_usd) <= 1e-6 * p.nav


@functools.cache
def _off_positions(seed: int) -> np.ndarray | None:
    """fbr's unrounded positions (USD) on the same book with ``costs.reserve_cost`` off."""
    inst = _reserve_instance(seed)
    off = replace(inst.settings, costs=replace(inst.settings.costs, reserve_cost=False))
    d = prepare(inst.book, inst.market, inst.risk, off)
    z, _hp, status, _ = Rebalancer().solve_z(d)
    return None if status == "infeasible" else np.asarray(z) * d.V


def test_reference_set_is_worth_something() -> None:
    """Most books solve; in many the reserve is positive and pricing it moves the hedge; some
    have pledged spot (P_s > 0), impact (conic) and the margin row."""
    pairs = {s: _pair(s) for s in REFERENCE_SEEDS}
    solved = {s: p for s, p in pairs.items() if p.ref.x is not None}
    assert len(solved) >= 70
    assert sum(p.ref.reserve > 1e-6 * p.nav for p in solved.values()) >= 40
    moved = 0
    for s, p in solved.items():
        x_off = _off_positions(s)
        assert x_off is not None
        moved += float(np.max(np.abs(x_off - p.x))) > 1e-4 * p.nav
    assert moved >= 20
    assert any(p.inst.book.pledged and p.ref.reserve > 0 for p in solved.values())
    assert any(p.inst.settings.costs.impact for p in solved.values())
    assert any(p.inst.settings.constraints.margin for p in solved.values())


@pytest.mark.parametrize("seed", REFERENCE_SEEDS)
def test_pricing_the_reserve_never_raises_it(seed: int) -> None:
    """Optimality: on minimises TE + costs + rho R, off minimises TE + costs, so R(on) <= R(off)."""
    p = _pair(seed)
    if p.ref.x is None:  # no reserve to compare: fbr must agree the book is infeasible
        assert p.status == "infeasible"
        return
    x_off = _off_positions(seed)
    assert x_off is not None
    cs, cc = p.inst.settings.constraints, p.inst.settings.costs
    r_off = size_reserve(p.inst.book, p.inst.market, x_off, cs.stress, cc.reserve_yield).reserve_usd
    r_on = size_reserve(p.inst.book, p.inst.market, p.x, cs.stress, cc.reserve_yield).reserve_usd
    assert r_on <= r_off + TOL * p.nav


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def _seed_settings(y: float = 0.5, horizon: float = 30.0) -> tuple[LoadedBook, OptimizerSettings]:
    loaded = load_book_file(SEED)
    cs = replace(loaded.settings.constraints, stress_preset="each_and_all", margin=True)
    cc = replace(loaded.settings.costs, reserve_cost=True, reserve_yield=y, horizon_days=horizon)
    return loaded, replace(loaded.settings, constraints=cs, costs=cc)


def test_solution_reserve_is_the_closed_form_at_its_positions() -> None:
    loaded, settings = _seed_settings()
    book, market = loaded.book, loaded.market
    rb = Rebalancer()
    sol = rb.solve(book, market, loaded.risk, settings)
    assert sol.status == "optimal" and sol.reserve is not None
    x = np.array([p.notional for p in sol.target_positions])
    scen = with_stress_preset(settings, book).constraints.stress
    closed = size_reserve(book, market, x, scen, 0.5, trade_cost_usd=sol.costs.trading)
    assert sol.costs.trading > 0
    assert abs(sol.reserve.reserve_usd - closed.reserve_usd) <= 1e-6 * sol.nav
    assert abs(sol.reserve.reserve_cost_usd_per_year - 0.5 * closed.reserve_usd) <= 1e-6 * sol.nav
    assert sol.reserve.horizon_days == 30.0
    assert sol.reserve.reserve_cost_usd_over_horizon == pytest.approx(
        closed.reserve_usd * 0.5 * 30.0 / 365.0)
    # the optimiser's own term at its unrounded optimum is that closed form before the costs
    dec = rb.decide(book, market, loaded.risk, settings)
    (term,) = [t for t in dec.problem.terms if isinstance(t, ReserveCost)]
    d = dec.data
    in_term = term.value(dec.z_unrounded, d) / reserve_rate(d) * d.V
    at_z = size_reserve(book, market, dec.z_unrounded * d.V, scen, 0.5).reserve_usd
    assert abs(in_term - at_z) <= 1e-6 * d.nav
    out = sol.to_dict()["reserve"]
    assert out["in_objective"] is True and out["horizon_days"] == 30.0
    assert out["reserve_cost_usd_over_horizon"] == pytest.approx(
        out["reserve_usd"] * 0.5 * 30.0 / 365.0)


def test_reported_only_has_no_objective_keys() -> None:
    """``constraints.size_reserve`` alone reports as before (no ``in_objective`` keys)."""
    loaded, settings = _seed_settings()
    cs = replace(settings.constraints, size_reserve=True)
    settings = replace(settings, constraints=cs, costs=replace(settings.costs, reserve_cost=False))
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, settings)
    assert sol.reserve is not None and not sol.reserve.in_objective
    assert "in_objective" not in sol.to_dict()["reserve"]


def test_cli_text_and_json(tmp_path: Path) -> None:
    data = tomllib.loads(SEED.read_text())
    data["constraints"] = {**data["constraints"], "margin": True, "stress_preset": "each_and_all"}
    data["costs"] = {**data["costs"], "reserve_cost": True, "reserve_yield": "50%",
                     "horizon_days": 30.0}
    f = tmp_path / "reserve_cost.toml"
    f.write_text(tomli_w.dumps(data))
    run = [sys.executable, "-m", "fbr.cli", "solve", str(f)]
    proc = subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    res = out["reserve"]
    assert res["in_objective"] is True and res["horizon_days"] == 30.0
    assert res["reserve_cost_usd_per_year"] == pytest.approx(0.5 * res["reserve_usd"])
    loaded = load_book_file(f)
    x = np.array([p["notional"] for p in out["target_positions"]])
    scen = with_stress_preset(loaded.settings, loaded.book).constraints.stress
    closed = size_reserve(loaded.book, loaded.market, x, scen, 0.5,
                          trade_cost_usd=out["costs"]["trading"])
    assert abs(res["reserve_usd"] - closed.reserve_usd) <= 1e-6 * out["nav"]
    table = subprocess.run(run, capture_output=True, text=True, timeout=120, cwd=ROOT,
                           env={**os.environ, "COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "reserve cost in the objective over 30 d" in table.stdout
    assert "reserve opportunity cost" in table.stdout


def test_reserve_cost_needs_scenarios(tmp_path: Path) -> None:
    data = tomllib.loads(SEED.read_text())
    data["costs"] = {**data["costs"], "reserve_cost": True}
    f = tmp_path / "noscen.toml"
    f.write_text(tomli_w.dumps(data))
    with pytest.raises(ValidationError, match="reserve_cost"):
        load_book_file(f)


# ------------------------------------------------------------------------------------------------
# DPP and off
# ------------------------------------------------------------------------------------------------


def test_dpp_resolves_compile_nothing() -> None:
    """Other yields, horizons and scenario moves are Parameter values: one compile in all."""
    book, market, risk, settings = _one_contract(0.1)
    rb = Rebalancer()
    before = HedgeProblem.builds
    shorts = []
    for y, h, move in ((0.1, 36.5, 0.4), (2.0, 36.5, 0.4), (0.5, 7.0, 0.3), (0.0, 1.0, 0.2)):
        s = replace(settings, costs=replace(settings.costs, reserve_yield=y, horizon_days=h),
                    constraints=replace(settings.constraints,
                                        stress=(StressScenario("BTC +40%", {"BTC": move}),)))
        sol = rb.solve(book, market, risk, s)
        shorts.append(-sol.target_positions[0].notional)
    assert HedgeProblem.builds - before == 1
    (hp,) = rb._problems.values()
    assert hp.problem.is_dpp()
    assert hp.structure.reserve_cost
    # by hand: h = 1 - rho (g + 0.01 (1 + g)) / 0.5, rho = y h / 365
    for (y, h, g), got in zip(((0.1, 36.5, 0.4), (2.0, 36.5, 0.4), (0.5, 7.0, 0.3), (0.0, 1.0, 0.2)),
                              shorts, strict=True):
        rho = y * h / 365.0
        assert got == pytest.approx(50_000 * (1 - rho * (g + 0.01 * (1 + g)) / 0.5), abs=0.05)


def test_off_is_the_plain_structure() -> None:
    """Off (the default), or on without scenarios: the plain Structure, no reserve term."""
    for on, stress in ((False, True), (True, False)):
        book, market, risk, settings = _one_contract(0.5, on=on)
        if not stress:
            settings = replace(settings, constraints=replace(settings.constraints, stress=()))
        d = prepare(book, market, risk, settings)
        st = d.structure
        assert not st.reserve_cost
        assert not any(isinstance(t, ReserveCost) for t in terms_for(st))


def test_zero_yield_gives_the_off_positions() -> None:
    """rho = 0 prices nothing: the on and off answers agree (the term only adds a 0)."""
    loaded, settings = _seed_settings(y=0.0)
    on = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, settings)
    off_settings = replace(settings, costs=replace(settings.costs, reserve_cost=False))
    off = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, off_settings)
    for a, b in zip(on.target_positions, off.target_positions, strict=True):
        assert abs(a.notional - b.notional) <= 1e-6 * on.nav
    assert on.reserve is not None and on.reserve.reserve_cost_usd_per_year == 0.0


def test_negative_yield_is_refused() -> None:
    book, market, risk, settings = _one_contract(-0.01)
    with pytest.raises(ValidationError, match="reserve_yield"):
        Rebalancer().solve(book, market, risk, settings)
