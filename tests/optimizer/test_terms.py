"""Every objective term's numpy ``value`` equals its cvxpy expression at random points.

The re-checks of a solution (snapping, lot rounding, the reports) trust ``Term.value``; the solve
trusts the cvxpy expression built by ``Term.build``. This file checks that the two agree, term by
term, on seeded random books with every term switched on (``terms_for`` of a structure with all
switches on), at random points: futures positions z (some at 0, some at z0: the kinks of |z| and
|z - z0|), spot buys b and sells q (the spot leg).

Points and auxiliaries: the expressions read the helper variables a >= |z| and u >= |z - z0|
(optimizer.context); the objective only equals the cost at their smallest feasible values, so a
and u are set to |z| and |z - z0|. Epigraph variables inside cvxpy atoms (max, pos, power,
sum_squares) are not variables of the expression: cvxpy evaluates the atoms numerically, so the
expression's ``value`` is the function itself.

Spot trades: the futures terms' ``value`` reads the spot weights from the data, so the point
(z, b, q) is compared with ``value(z, d')``, d' = ``after_spot(d, (b, q))`` (s' = s + b - q, what
the re-checks use after a solve). The spot-leg terms' ``value`` is 0 by design (they do not depend
on z; optimizer.terms.SpotTerm): they are checked to be 0 where b = q = 0, and their expressions
are checked against the formulas written here with numpy (fees and spread, 3/2-power impact,
the tax curves' own ``TaxCurve.value``).

Tolerance: 1e-9 relative (1e-15 absolute for values at 0); both sides are the same float maths
in another order.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from datetime import timedelta

import cvxpy as cp
import numpy as np
import pytest
from optcases import T0, random_instance

from models.errors import FbrError
from models.tax import TaxLot, TaxRates
from optimizer.context import Context
from optimizer.cvxpy_adapter import compile_problem
from optimizer.data import ProblemData, Structure
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem, set_values
from optimizer.settings import SpotLegSettings, StressScenario
from optimizer.solution_report import after_spot
from optimizer.spot_leg import SpotContext, make_context
from optimizer.terms import SpotTerm, Term, TrackingVariance, terms_for

RTOL = 1e-9
ATOL = 1e-15
SEEDS = tuple(range(8))


def _all_subclasses(cls: type) -> set[type]:
    """Every subclass of ``cls``, recursively."""
    out: set[type] = set()
    sub: type
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def full_structure(d: ProblemData) -> Structure:
    """``d``'s structure with every term's switch on (what ``terms_for`` reads)."""
    st = d.structure
    return replace(st, n_basis_factors=max(st.n_basis_factors, 1), trading=True, impact=True,
                   carry=True, spot_leg=True, spot_impact=True, tax_pieces=max(st.tax_pieces, 1),
                   futures_tax=True, reserve_cost=True, cost_to_go=True)


def _with_everything(seed: int, spot: bool) -> ProblemData | None:
    """optcases' random book ``seed`` with every cost on: basis risk (a random basis covariance
    when the book has none), trading, impact, carry, the reserve cost (a -30% scenario added), a
    cost-to-go (kappa in [0.1, 2], p in [0, 1]) and, with ``spot``, the spot leg (spot ADV of
    1e5-1e8 USD for its impact) with random lots (1-3 per asset held, bought 10-900 days before
    T0 at 30-150% of the price), tax rates, futures tax and gamma_tax in [0.2, 3]. None when
    ``prepare`` refuses the book."""
    rng = np.random.default_rng(1000 + seed)
    inst = random_instance(rng, conic=None, factor_form=bool(seed % 2))
    st = inst.settings
    costs = replace(st.costs, trading=True, impact=True, carry=True, reserve_cost=True,
                    reserve_yield=float(rng.uniform(0.01, 0.5)),
                    cost_to_go=float(rng.uniform(0.1, 2.0)),
                    cost_to_go_power=float(rng.uniform(0.0, 1.0)))
    cons = replace(st.constraints, stress=(*st.constraints.stress, StressScenario("down", {}, -0.3)))
    settings = replace(st, costs=costs, constraints=cons, basis_risk=True)
    risk = inst.risk
    if risk.basis_cov is None:  # the basis risk term needs a basis covariance
        M = len(inst.book.contracts)
        g = rng.normal(0.0, 0.1, (M, M))
        risk = replace(risk, basis_cov=g @ g.T + 0.01 * np.eye(M))
    market = inst.market
    if spot:
        # spot ADV (by asset symbol) for the spot impact
        market = replace(market, adv={**market.adv, **{
            a: float(np.exp(rng.uniform(np.log(1e5), np.log(1e8)))) for a in inst.book.spot}})
        lots: dict[str, tuple[TaxLot, ...]] = {}
        for a, q in inst.book.spot.items():
            parts = rng.dirichlet(np.ones(int(rng.integers(1, 4)))) * q
            parts[-1] = q - parts[:-1].sum()
            px = inst.market.spot[a]
            lots[a] = tuple(TaxLot(float(p), float(px * rng.uniform(0.3, 1.5)),
                                   (T0 - timedelta(days=float(rng.uniform(10, 900)))).to_pydatetime())
                            for p in parts)
        settings = replace(settings, spot=SpotLegSettings(
            enabled=True, rates=TaxRates(float(rng.uniform(0.1, 0.5)), float(rng.uniform(0.0, 0.3)),
                                         futures=float(rng.uniform(0.1, 0.4))),
            lots=lots, gamma_tax=float(rng.uniform(0.2, 3.0)), futures_tax=True,
            cash_usd=float(rng.uniform(0.0, 0.1)) * sum(
                q * inst.market.spot[a] for a, q in inst.book.spot.items())))
    try:
        return prepare(inst.book, market, risk, settings)
    except FbrError:
        return None


@functools.cache
def random_data(seed: int, spot: bool) -> ProblemData:
    """The first book from ``seed`` on (seeds step by 100) that ``prepare`` accepts, with every
    objective term on (:func:`_with_everything`)."""
    for k in range(20):
        d = _with_everything(seed + 100 * k, spot)
        if d is not None:
            return d
    raise AssertionError(f"no usable random book from seed {seed}")  # pragma: no cover


def random_point(rng: np.random.Generator, d: ProblemData) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """(z, b, q): z = z0 + N(0, 0.1) per contract, with about one in five set to 0 and one in five
    to z0 (kinks); b uniform in [0, 0.05] on half the assets; q uniform in [0, holdings]."""
    M, N = len(d.contracts), len(d.assets)
    z = d.z0 + rng.normal(0.0, 0.1, M)
    pick = rng.random(M)
    z[pick < 0.2] = 0.0
    z[(pick >= 0.2) & (pick < 0.4)] = d.z0[(pick >= 0.2) & (pick < 0.4)]
    b = rng.uniform(0.0, 0.05, N) * (rng.random(N) < 0.5)
    hold = d.spot.holdings if d.spot is not None else np.zeros(N)
    q = rng.uniform(0.0, 1.0, N) * hold * (rng.random(N) < 0.7)
    return z, b, q


def set_point(ctx: Context, z: np.ndarray, b: np.ndarray, q: np.ndarray) -> None:
    """Put (z, b, q) into the context's variables, with the epigraph helpers a = |z|,
    u = |z - z0| and the spot impact's iota = b^{3/2} + q^{3/2} at their smallest feasible values
    (z0 the Parameter's value), and the shared factor exposure (the vol cap on) at its definition
    y = F' B z (+ F' (b - q)), which its rows are then checked to hold."""
    ctx.z.value = z
    ctx.a.value = np.abs(z)
    ctx.u.value = np.abs(z - np.asarray(ctx.z0.value))
    if isinstance(ctx, SpotContext):
        ctx.buy.value = b
        ctx.sell.value = q
        if ctx.impact is not None:
            ctx.impact.value = np.abs(b) ** 1.5 + np.abs(q) ** 1.5
    set_factor(ctx, z, b - q)


def set_factor(ctx: Context, z: np.ndarray, spot: np.ndarray | None = None) -> None:
    """The shared factor exposure (a variable with the vol cap on; nothing to set otherwise) at its definition
    y = F' B z (+ F' ``spot``, the spot trade b - q), whose rows are then checked to hold."""
    f = ctx.factor
    if f is None or not f.rows:  # no exposure asked for, or the plain expression (no cap)
        return
    y = np.asarray(f.FtB.value) @ z
    if f.Ft is not None and spot is not None:
        y = y + np.asarray(f.Ft.value) @ spot
    f.y.value = y
    for row in ctx.definitions():
        assert float(np.max(row.violation())) <= 1e-12


def _spot_reference(term: Term, d: ProblemData, b: np.ndarray, q: np.ndarray) -> float:
    """A spot-leg term written with numpy from its docstring (weights, a fraction of V)."""
    sd = d.spot
    assert sd is not None
    name = term.name
    if name == "spot_trading_cost":
        return float(d.gamma_trade * sd.lin_cost @ (b + q))
    if name == "spot_impact_cost":
        return float(d.gamma_trade * sd.impact_cost @ (b**1.5 + q**1.5))
    if name == "spot_tax":
        assert sd.curves is not None
        return float(sd.settings.gamma_tax * sum(c.value(float(x)) for c, x in zip(sd.curves, q,
                                                                                   strict=True)))
    raise AssertionError(f"no numpy reference for spot term {name}")  # pragma: no cover


def _build(d: ProblemData) -> tuple[Context, list[Term], list[cp.Expression]]:
    """A fresh context, the structure's terms, their expressions; Parameters set from ``d``."""
    ctx = make_context(d.structure)
    terms = terms_for(d.structure)
    exprs = [t.build(ctx) for t in terms]
    set_values(ctx, terms, [], d)
    return ctx, terms, exprs


#: every term class, by introspection of the factory on a structure with every switch on
TERM_CLASSES: tuple[type[Term], ...] = tuple(
    type(t) for t in terms_for(full_structure(random_data(0, True))))


def test_the_factory_covers_every_term_class() -> None:
    """A new Term subclass that ``terms_for`` cannot produce (or this test does not list) fails
    here; abstract intermediate classes (SpotTerm) are skipped."""
    concrete = {c for c in _all_subclasses(Term) if not getattr(c, "__abstractmethods__", None)}
    assert concrete == set(TERM_CLASSES), concrete ^ set(TERM_CLASSES)
    assert len(TERM_CLASSES) == len(set(TERM_CLASSES))
    # the random books really switch every term on
    on = {type(t) for s in SEEDS for t in terms_for(random_data(s, True).structure)}
    assert on == set(TERM_CLASSES), set(TERM_CLASSES) - on


def _value_checks(term_cls: type[Term], seed: int) -> int:
    """Compare ``term_cls``'s numpy value with its expression at 6 random points of book
    ``seed``; returns how many comparisons were made."""
    spot = issubclass(term_cls, SpotTerm) or term_cls.__name__ == "FuturesTax" or seed % 2 == 1
    d = random_data(seed, spot)
    ctx, terms, exprs = _build(d)
    found = [(t, e) for t, e in zip(terms, exprs, strict=True) if type(t) is term_cls]
    assert len(found) == 1, f"{term_cls.__name__} not in the book's terms"
    term, expr = found[0]
    rng = np.random.default_rng(seed)
    checks = 0
    for _ in range(6):
        z, b, q = random_point(rng, d)
        if not spot:
            b, q = np.zeros_like(b), np.zeros_like(q)
        set_point(ctx, z, b, q)
        got = expr.value
        assert got is not None
        if isinstance(term, SpotTerm):
            assert term.value(z, d) == 0.0
            want = _spot_reference(term, d, b, q)
        else:
            want = term.value(z, after_spot(d, (b, q)))
        assert float(got) == pytest.approx(want, rel=RTOL, abs=ATOL), (term.name, seed)
        checks += 1
    if isinstance(term, SpotTerm):  # no spot trade: the expression is the value, 0
        set_point(ctx, z, np.zeros_like(b), np.zeros_like(q))
        assert float(expr.value) == pytest.approx(0.0, abs=ATOL)
    return checks


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("term_cls", TERM_CLASSES, ids=lambda c: c.__name__)
def test_value_equals_the_cvxpy_expression(term_cls: type[Term], seed: int) -> None:
    assert _value_checks(term_cls, seed) == 6


@pytest.mark.parametrize("seed", SEEDS[:4])
@pytest.mark.parametrize("spot", [False, True])
def test_tracking_variance_through_the_shared_factor_exposure(seed: int, spot: bool) -> None:
    """With the vol cap on, the tracking variance reads the context's factor exposure
    y = F' B z (+ F' (b - q) with the spot leg; optimizer.context.FactorTrade) instead of F' B of
    its own; with y at its definition its expression equals the numpy value, as without the cap."""
    d0 = random_data(seed, spot)
    d = replace(d0, vol_cap=1.0)
    assert d.structure.vol_cap
    ctx, terms, exprs = _build(d)
    te, expr = next((t, e) for t, e in zip(terms, exprs, strict=True)
                    if isinstance(t, TrackingVariance))
    assert ctx.factor is not None and isinstance(ctx.factor.y, cp.Variable)
    assert (ctx.factor.Ft is not None) == spot and len(ctx.definitions()) == 1
    rng = np.random.default_rng(70 + seed)
    for _ in range(4):
        z, b, q = random_point(rng, d)
        if not spot:
            b, q = np.zeros_like(b), np.zeros_like(q)
        set_point(ctx, z, b, q)
        want = te.value(z, after_spot(d, (b, q)))
        assert float(expr.value) == pytest.approx(want, rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("seed", SEEDS[:4])
@pytest.mark.parametrize("spot", [False, True])
def test_compiled_objective_is_the_sum_of_the_values(seed: int, spot: bool) -> None:
    """The compiled problem's objective (HedgeProblem, scaled) at a random point equals
    objective_scale x the sum of the terms' values (the spot terms by their numpy formulas)."""
    d = random_data(seed, spot)
    hp = HedgeProblem(d.structure)
    hp.update(d)
    rng = np.random.default_rng(50 + seed)
    z, b, q = random_point(rng, d)
    if not spot:
        b, q = np.zeros_like(b), np.zeros_like(q)
    set_point(hp.ctx, z, b, q)
    dp = after_spot(d, (b, q))
    want = sum(_spot_reference(t, d, b, q) if isinstance(t, SpotTerm) else t.value(z, dp)
               for t in hp.terms)
    got = float(hp.problem.objective.value) / d.structure.objective_scale
    assert got == pytest.approx(want, rel=RTOL, abs=ATOL)
    assert math.isfinite(got)



def test_the_impact_terms_compile_to_power_cones() -> None:
    """Each futures trade's and each spot buy's and sale's 3/2-power impact is one 3-d power cone
    (``cp.power(..., approx=False)``): cvxpy's default (``approx=True``) writes |t|^{3/2} as
    second-order cones instead, measured slower on this problem (benchmarks/README.md,
    vs_cvxportfolio: "the SOC form of |t|^{3/2}, 3.1 ms per period, slower")."""
    d = random_data(SEEDS[0], True)
    assert d.structure.impact and d.structure.spot_impact
    hp = HedgeProblem(d.structure)
    dims = compile_problem(hp.problem, cp.CLARABEL).prog.cone_dims
    assert len(dims.p3d) == len(d.contracts) + 2 * len(d.assets)
    assert all(float(a) == pytest.approx(2.0 / 3.0) for a in dims.p3d)
    assert int(sum(dims.soc)) == 0
