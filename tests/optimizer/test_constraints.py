"""Every constraint's numpy ``violation`` equals its cvxpy rows' violation at random points.

``Constraint.violation(z, d)`` is what the re-checks (lot rounding, snapping, the order blockers)
trust; the solve obeys the cvxpy rows built by ``Constraint.build``. For a row ``lhs <= rhs``
cvxpy's ``violation()`` is max(0, lhs - rhs) in the row's own units, weight units (USD / V) for
every row here (the vol cap: annualised volatility; the gross leverage: multiples of V), so the two
must agree row by row:

- one cvxpy row per numpy row for the margin, gross leverage, position limits, vol cap, funding
  budget and trade limits;
- the two-sided rows (cluster bands |dev| <= band; the expiry guard's m z <= hi, -m z <= lo): the
  numpy row is the larger of the two cvxpy rows' violations;
- the stress rows: the surplus row C + g'z - sum(m) >= 0 with its epigraph variables m at their
  smallest feasible values m_j = max_k (coef_jk a_j - cum_jk) (floored at 0 with ``mm_floor``),
  where the tier rows m >= coef a - cum hold with 0 violation; cvxpy's violation of ``x >= 0`` is
  max(0, -x), the numpy one max(0, -surplus).

The helpers a = |z|, u = |z - z0| are set to their smallest feasible values (as in
test_terms.py), and with the spot leg the numpy side reads the data after the spot trades
(s' = s + b - q). Tolerance 1e-9 relative, 1e-13 absolute (violations are differences of numbers
of order 1 in weight units).
"""

from __future__ import annotations

import functools
from dataclasses import replace

import cvxpy as cp
import numpy as np
import pytest
from optcases import random_instance
from test_terms import random_point, set_point

from models.errors import FbrError
from optimizer.constraint_base import Constraint
from optimizer.constraints import ClusterBands, ExpiryGuard, constraints_for
from optimizer.data import ProblemData
from optimizer.margin_constraints import StressMargin
from optimizer.prepare import prepare
from optimizer.problem import set_values
from optimizer.settings import ClusterBand, SpotLegSettings, StressScenario
from optimizer.solution_report import after_spot
from optimizer.spot_leg import make_context

RTOL = 1e-9
ATOL = 1e-13
SEEDS = tuple(range(8))


def _all_subclasses(cls: type) -> set[type]:
    """Every subclass of ``cls``, recursively."""
    out: set[type] = set()
    sub: type
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def _with_every_constraint(seed: int, spot: bool) -> ProblemData | None:
    """optcases' random book with every constraint on: margin, its stress scenarios plus -30% and
    +20% ones, gross leverage (0.7-1.3 x the targets' gross), caps on half the contracts, a
    cluster band over 2-3 assets, a vol cap, a funding budget, trade limits, the expiry row
    with min_days_to_expiry = 120 (the random dated contracts expire in 40-200 days) and one
    contract the exchange does not trade (``MarketSnapshot.halted``). ``spot``:
    the spot leg on (no tax). None when ``prepare`` refuses the book."""
    rng = np.random.default_rng(2000 + seed)
    inst = random_instance(rng, conic=None, factor_form=bool(seed % 2))
    book, st = inst.book, inst.settings
    syms, cons_syms = book.asset_symbols, book.contract_symbols
    V = sum(q * inst.market.spot[a] for a, q in book.spot.items())
    w = np.array([book.targets.get(a, 0.0) for a in syms])
    members = tuple(str(a) for a in rng.choice(syms, size=min(len(syms), int(rng.integers(2, 4))),
                                               replace=False))
    cs = replace(
        st.constraints, margin=True,
        stress=(*st.constraints.stress, StressScenario("down", {}, -0.3),
                StressScenario("up", {}, 0.2)),
        max_gross_leverage=float(rng.uniform(0.7, 1.3)) * max(float(np.abs(w).sum()), 0.2),
        caps_usd={c: float(rng.uniform(0.005, 0.3)) * V for c in cons_syms if rng.random() < 0.5},
        clusters=(ClusterBand("c0", members, float(rng.uniform(0.002, 0.05))),),
        vol_cap=float(rng.uniform(0.2, 0.8)),
        funding_budget_usd=float(rng.uniform(-2e-4, 1e-3)) * V,
        trade_limit_usd=float(rng.uniform(0.01, 0.25)) * V,
        expiry_row=True, min_days_to_expiry=120.0)
    settings = replace(st, constraints=cs)
    halted = {cons_syms[int(rng.integers(len(cons_syms)))]: "SETTLING"}
    market = replace(inst.market, halted=halted)
    if spot:
        settings = replace(settings, spot=SpotLegSettings(enabled=True))
    try:
        return prepare(book, market, inst.risk, settings)
    except FbrError:
        return None


def _complete(d: ProblemData) -> bool:
    """Every constraint class is on, and some contract is near expiry."""
    st = d.structure
    return bool(st.margin and st.stress_names and st.leverage and st.capped and st.cluster_members
                and st.vol_cap and st.funding_budget and st.trade_limited and st.expiry_guarded
                and st.halted and d.near_expiry is not None and d.near_expiry.any())


@functools.cache
def constraint_data(seed: int, spot: bool) -> ProblemData:
    """The first book from ``seed`` on (seeds step by 100) with every constraint class on."""
    for k in range(60):
        d = _with_every_constraint(seed + 100 * k, spot)
        if d is not None and _complete(d):
            return d
    raise AssertionError(f"no complete random book from seed {seed}")  # pragma: no cover




#: every constraint class, by introspection of the factory on a book with all of them on
CONSTRAINT_CLASSES: tuple[type[Constraint], ...] = tuple(
    dict.fromkeys(type(c) for c in constraints_for(constraint_data(0, False).structure)))


def test_the_factory_covers_every_constraint_class() -> None:
    concrete = {c for c in _all_subclasses(Constraint) if not getattr(c, "__abstractmethods__", None)}
    assert concrete == set(CONSTRAINT_CLASSES), concrete ^ set(CONSTRAINT_CLASSES)


def _leading_rows(c: Constraint) -> int:
    """How many of ``c.cons`` are the rows ``violation`` reports (the rest define epigraph
    variables): two for the two-sided rows, one otherwise."""
    return 2 if isinstance(c, ClusterBands | ExpiryGuard) else 1


def _set_stress_epigraph(c: StressMargin) -> None:
    """m at its smallest feasible value: max_k (coef_jk a_j - cum_jk), floored at 0 when the
    problem has the m >= 0 row."""
    m = next(v for v in c.cons[0].variables() if v.name().startswith("mm_"))
    a = next(v for v in c.cons[1].variables() if v.name() == "a")
    val = np.max(np.asarray(c.coef.value) * np.asarray(a.value)[:, None] - np.asarray(c.cum.value),
                 axis=1)
    if len(c.cons) > 2:
        val = np.maximum(val, 0.0)
    m.value = val


def _cvxpy_violation(c: Constraint) -> np.ndarray:
    """The row violations cvxpy reports for ``c``'s rows (max over a two-sided pair)."""
    rows = [np.atleast_1d(np.asarray(k.violation(), dtype=float)) for k in c.cons[:_leading_rows(c)]]
    worst: np.ndarray = np.maximum.reduce(rows)
    return worst


@pytest.mark.parametrize("spot", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cls", CONSTRAINT_CLASSES, ids=lambda c: c.__name__)
def test_violation_equals_the_cvxpy_rows(cls: type[Constraint], seed: int, spot: bool) -> None:
    d = constraint_data(seed, spot)
    ctx = make_context(d.structure)
    cons = [c for c in constraints_for(d.structure) if type(c) is cls]
    assert cons, f"{cls.__name__} is off in book {seed}"
    for c in cons:
        c.build(ctx)
    set_values(ctx, [], cons, d)
    rng = np.random.default_rng(300 + seed)
    for k in range(8):
        z, b, q = random_point(rng, d)
        z = d.z0 + (z - d.z0) * (0.01, 0.1, 1.0, 3.0)[k % 4]  # small moves keep rows satisfied
        if not spot:
            b, q = np.zeros_like(b), np.zeros_like(q)
        set_point(ctx, z, b, q)
        dp = after_spot(d, (b, q))
        for c in cons:
            if isinstance(c, StressMargin):
                _set_stress_epigraph(c)
                for extra in c.cons[1:]:  # the epigraph rows hold at the smallest m
                    assert float(np.max(extra.violation())) <= ATOL
            want = _cvxpy_violation(c)
            got = c.violation(z, dp)
            assert got.shape == want.shape == (len(c.rows(d)),)
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{c.name}, book {seed}, point {k}")


def test_points_break_and_keep_every_constraint() -> None:
    """Not vacuous: across the books and points each class is both broken and satisfied."""
    broken: dict[str, int] = {}
    kept: dict[str, int] = {}
    for seed in SEEDS:
        d = constraint_data(seed, False)
        rng = np.random.default_rng(300 + seed)
        cons = constraints_for(d.structure)
        ctx = make_context(d.structure)
        for c in cons:
            c.build(ctx)
        set_values(ctx, [], cons, d)
        for k in range(8):
            z, _, _ = random_point(rng, d)
            z = d.z0 + (z - d.z0) * (0.01, 0.1, 1.0, 3.0)[k % 4]
            for c in cons:
                v = c.violation(z, d)
                key = type(c).__name__
                broken[key] = broken.get(key, 0) + int((v > 0).sum())
                kept[key] = kept.get(key, 0) + int((v == 0).sum())
    names = {c.__name__ for c in CONSTRAINT_CLASSES}
    assert {k for k, n in broken.items() if n} == names, broken
    assert {k for k, n in kept.items() if n} == names, kept


def test_cvxpy_violation_is_max_of_zero_and_lhs_minus_rhs() -> None:
    """The convention this file relies on, on cvxpy itself."""
    x = cp.Variable(2)
    x.value = np.array([1.0, -1.0])
    np.testing.assert_allclose((x <= 0.5).violation(), [0.5, 0.0])
    np.testing.assert_allclose((x >= 0).violation(), [0.0, 1.0])
