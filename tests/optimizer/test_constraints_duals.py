"""Finite-difference checks of the reported duals, and of the explanations' predictions.

``Solution.binding_constraints`` reports, per binding row, ``dual`` = -d objective / d bound per
user unit of the bound (USD, x of leverage, pp), objective = the unscaled objective (TE^2 + basis
+ gamma-weighted costs / V, optimizer.terms), and an explanation predicting what a concrete
loosening does (optimizer.constraint_base.Constraint.predict).

Finite differences. The optimal objective g(t) of the problem with the row's bound moved by t
(weight units) is convex and non-increasing in t, so its one-sided difference quotients bracket
every subgradient:

    (g(0) - g(-h)) / h  <=  -lambda  <=  (g(h) - g(0)) / h,     lambda = dual / unit,

the reported dual in weight units, with the user unit's size in weight units written here
(:func:`user_unit`: 1/V per USD, 0.01 per pp, 1 per x of leverage), not read from the
constraint, so a wrong ``per_unit`` fails too. g is evaluated by re-solving the compiled problem's cvxpy
form with Clarabel at tight tolerances (1e-12, else 1e-10, else 1e-9: the first that ends
optimal) after moving the row's Parameter; h is 1e-3 of the bound (at least 1e-5). Where the
bound cannot be tightened (a non-negative bound below h) the left quotient is replaced by the
right one at h / 2 (convexity: right(h) <= right(h/2) <= -g'(0+)). The bracket is checked with a
tolerance of 1e-4 of lambda (the production duals come from PIQP/Clarabel at 1e-9 to 1e-10) plus
2 OBJ_RTOL |g(0)| / h (each re-solved objective is within OBJ_RTOL of its size, the loosest
rung). Where the bracket is narrow (no change of active set within h: width below 1% of lambda)
its midpoint must be within 1% of lambda, and most binding rows must be of that kind, so a dual
wrong by a factor fails. Rows holding a position at a kink of |z| or |z - z0| (the expiry row, a
cap of 0) have non-unique duals and are checked against the bracket's lower side only.

Predictions. Re-solving with the bound loosened by the explanation's step must lower the
objective by at most the predicted fall (convexity), and by at least 75% of it on at least 85% of
the rows (first order: the step is at most 10% of the bound and its predicted fall a quarter of
the objective's size, Constraint.predict; the rest change the active set within the step). Over
seeds 0-479 (twelve sets of 40), 64 of 947 rows fell short (6.8%; at most 10.1% in one set), so
15% leaves a set of 40 seeds about three standard deviations; a dual wrong by a factor fails
nearly every row.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import cvxpy as cp
import numpy as np
import pytest
from optcases import (
    CLARABEL_RETRIES,
    CLARABEL_TIGHT,
    CLARABEL_TIGHT_CONIC,
    Instance,
    random_instance,
)

from models.errors import FbrError
from optimizer.constraint_base import NEGLIGIBLE_SHARE, PREDICTION_SHARE, Constraint, Prediction
from optimizer.constraints import (
    ClusterBands,
    ExpiryGuard,
    FundingBudget,
    GrossLeverage,
    PositionLimit,
    TradeLimit,
    VolatilityCap,
)
from optimizer.data import ProblemData
from optimizer.margin_constraints import InitialMargin, StressMargin
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.rebalance import Rebalancer
from optimizer.reserve import with_stress_preset
from optimizer.solution import Binding

#: the ladder's last rung (the tolerance fbr's conic engine used to run at)
CLARABEL_1E9 = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}

#: relative and absolute tolerance of the bracket (see the module docstring)
BRACKET_RTOL = 1e-4
#: the re-solved objectives' relative accuracy (Clarabel's gap tolerance at the loosest rung)
OBJ_RTOL = 1e-9
#: a loosening by the explanation's step lowers the objective by at least this share of the
#: prediction
FIRST_ORDER_SHARE = 0.75
#: the share of rows allowed to fall short of it (the module docstring's measured rate and margin)
POOR_SHARE = 0.15
SEEDS = tuple(range(40))


def user_unit(c: Constraint, d: ProblemData) -> float:
    """Weight units of bound per user unit of the row (its dual's unit): 0.01 per pp for the
    cluster bands and the vol cap, 1 per x for the gross leverage, 1/V per USD otherwise."""
    if isinstance(c, ClusterBands | VolatilityCap):
        return 0.01
    if isinstance(c, GrossLeverage):
        return 1.0
    return 1.0 / d.V


def _collateral_factor(c: Constraint, d: ProblemData) -> float:
    """Budget per USD of collateral for the margin row (1 - f at a relative buffer's target,
    1 at the hard bound or while holding: optimizer.data.MarginBudget); 1 for the other rows."""
    mb = d.margin_budget
    if not isinstance(c, InitialMargin) or mb is None or mb.holding:
        return 1.0
    return mb.per_collateral


def _param(c: Constraint, row: int) -> list[tuple[cp.Parameter, int | None]]:
    """The Parameter(s) holding ``c``'s bound for ``row`` (None: a scalar Parameter)."""
    if isinstance(c, InitialMargin):
        return [(c.budget, None)]
    if isinstance(c, StressMargin):
        return [(c.coll, None)]
    if isinstance(c, GrossLeverage):
        return [(c.lmax, None)]
    if isinstance(c, VolatilityCap):
        return [(c.vmax, None)]
    if isinstance(c, FundingBudget):
        return [(c.budget, None)]
    if isinstance(c, PositionLimit):
        return [(c.cap, row)]
    if isinstance(c, ClusterBands):
        return [(c.band, row)]
    if isinstance(c, TradeLimit):
        return [(c.tau, row)]
    if isinstance(c, ExpiryGuard):  # both sides of the pair: only one of them binds
        return [(c.hi, row), (c.lo, row)]
    raise AssertionError(f"no bound Parameter known for {type(c).__name__}")  # pragma: no cover


def _bounds(c: Constraint, row: int) -> list[float]:
    """The current value of each of :func:`_param`'s Parameters at ``row`` (weight units)."""
    out = []
    for p, i in _param(c, row):
        v = np.asarray(p.value, dtype=float)
        out.append(float(v if i is None else v[i]))
    return out


@contextmanager
def moved(c: Constraint, row: int, t: float) -> Iterator[None]:
    """``c``'s bound for ``row`` moved by ``t`` (weight units), restored afterwards."""
    saved = [(p, np.array(p.value, dtype=float, copy=True)) for p, _ in _param(c, row)]
    try:
        for p, i in _param(c, row):
            v = np.array(p.value, dtype=float, copy=True)
            if i is None:
                v = v + t
            else:
                v[i] += t
            p.value = v
        yield
    finally:
        for p, v in saved:
            p.value = v


def tight_objective(hp: HedgeProblem) -> float:
    """The unscaled optimal objective of ``hp``'s cvxpy form at its current Parameter values,
    solved by Clarabel at 1e-12, else 1e-10, else 1e-9, else 1e-9 without equilibration or with
    shorter steps (the first that ends optimal: the tighter ones end "inaccurate" on some books,
    and on some conic books every default-setting rung stops with a SolverError, "insufficient
    progress", that the other two settings do not; the last rung's "inaccurate" is accepted)."""
    ladder = [CLARABEL_TIGHT, CLARABEL_TIGHT_CONIC, CLARABEL_1E9, *CLARABEL_RETRIES]
    stopped: list[str] = []
    inaccurate: float | None = None
    for opts in ladder:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="invalid value encountered in matmul",
                                    category=RuntimeWarning)
            warnings.filterwarnings("ignore", message="Solution may be inaccurate",
                                    category=UserWarning)
            try:
                hp.problem.solve(solver=cp.CLARABEL, **opts)
            except cp.SolverError as exc:
                stopped.append(f"{opts}: {exc}")
                continue
        if hp.problem.status == cp.OPTIMAL:
            return float(hp.problem.value) / hp.structure.objective_scale
        if hp.problem.status == cp.OPTIMAL_INACCURATE:
            inaccurate = float(hp.problem.value) / hp.structure.objective_scale
        stopped.append(f"{opts}: {hp.problem.status}")
    # Clarabel's "almost solved" (its reduced tolerances are 1e-5 of the gap; seen on one conic
    # book): the loosest rung's is accepted, the bracket's tolerance then decides
    assert inaccurate is not None, stopped
    return inaccurate


@dataclass(frozen=True)
class Case:
    """One solved random book: the compiled problem, its binding rows (with the constraint and
    row index) and each row's prediction (read right after the solve)."""

    seed: int
    hp: HedgeProblem
    rows: tuple[tuple[Binding, Constraint, int, Prediction | None], ...]


def _instance(seed: int) -> Instance:
    """optcases' random book ``seed``; one in six each gets a tight gross leverage, a tight
    cluster band, the expiry row (min_days_to_expiry = 150) or tight caps (so each kind binds
    in some book)."""
    rng = np.random.default_rng(7000 + seed)
    inst = random_instance(rng, conic=None if seed % 3 else True)
    cs = inst.settings.constraints
    book = inst.book
    w = np.array([book.targets.get(a, 0.0) for a in book.asset_symbols])
    pick = seed % 6
    if pick == 1:
        cs = replace(cs, max_gross_leverage=float(rng.uniform(0.6, 0.95)) * float(np.abs(w).sum()))
    elif pick == 3 and len(book.asset_symbols) >= 2:
        syms = tuple(str(a) for a in rng.choice(book.asset_symbols, size=2, replace=False))
        from optimizer.settings import ClusterBand
        cs = replace(cs, clusters=(ClusterBand("pair", syms, float(rng.uniform(0.001, 0.01))),))
    elif pick == 4:  # random dated contracts expire in 40-200 days
        cs = replace(cs, expiry_row=True, min_days_to_expiry=150.0)
    elif pick == 5:
        V = sum(q * inst.market.spot[a] for a, q in book.spot.items())
        cs = replace(cs, caps_usd={c: float(rng.uniform(0.005, 0.05)) * V
                                   for c in book.contract_symbols})
    return replace(inst, settings=replace(inst.settings, constraints=cs))


@functools.cache
def case(seed: int) -> Case | None:
    """Solve book ``seed`` through ``Rebalancer.solve`` (the reported duals); None when the book
    is refused, infeasible or nothing binds."""
    inst = _instance(seed)
    rb = Rebalancer()
    try:
        sol = rb.solve(inst.book, inst.market, inst.risk, inst.settings)
    except FbrError:
        return None
    if sol.status != "optimal" or not sol.binding_constraints:
        return None
    d = prepare(inst.book, inst.market, inst.risk, with_stress_preset(inst.settings, inst.book))
    hp = rb.problem_for(d)
    assert isinstance(hp, HedgeProblem) and hp.data is not None
    rows = []
    for b in sol.binding_constraints:
        found = [(c, c.rows(hp.data).index(b.name)) for c in hp.constraints
                 if b.name in c.rows(hp.data)]
        assert len(found) == 1, b.name
        c, r = found[0]
        rows.append((b, c, r, c.predict(b.name, b.dual)))
    return Case(seed, hp, tuple(rows))


def _cases() -> list[Case]:
    return [c for s in SEEDS if (c := case(s)) is not None]


def _fd_check(cs: Case) -> list[tuple[str, float, float, float, float]]:
    """(row, lambda, right quotient, other quotient, tolerance) for every binding row of ``cs``,
    asserting the bracket. Quotients are in objective units per weight unit of bound, as -g'.
    The other quotient is the left one; where the bound cannot be tightened (a non-negative bound
    below h) it is the right one at h / 2 (convexity: right(h) <= right(h/2) <= -g'(0+))."""
    hp = cs.hp
    assert hp.data is not None
    g0 = tight_objective(hp)
    out = []
    for b, c, r, _ in cs.rows:
        lam = b.dual / user_unit(c, hp.data)  # objective per weight unit of bound
        bounds = _bounds(c, r)
        h = max(1e-3 * max(abs(v) for v in bounds), 1e-5)
        with moved(c, r, h):
            right = (g0 - tight_objective(hp)) / h  # -g'(0+) from the right
        tol = BRACKET_RTOL * abs(lam) + 2 * OBJ_RTOL * max(abs(g0), 1e-6) / h
        if min(bounds) - h >= 0 or not any(p.attributes["nonneg"] for p, _ in _param(c, r)):
            with moved(c, r, -h):
                other = (tight_objective(hp) - g0) / h  # -g'(0-) from the left
            assert lam <= other + tol, (cs.seed, b.name, lam, right, other)
        else:
            with moved(c, r, 0.5 * h):
                other = (g0 - tight_objective(hp)) / (0.5 * h)
            tol *= 2
            assert right <= other + tol, (cs.seed, b.name, right, other)  # convexity
        assert right <= lam + tol, (cs.seed, b.name, lam, right, other)
        out.append((b.name, lam, right, other, tol))
    return out


def _at_a_kink(c: Constraint, row: str, cs: Case) -> bool:
    """Rows that hold a position at a kink of the objective: the expiry guard (its bounds are
    z_j <= z0_j or z_j >= 0 on the side that binds, the kinks of |z_j - z0_j| (trading cost,
    u >= |z - z0|) and |z_j| (margin, a >= |z|)) and a position cap of 0. The row's dual is then
    determined only up to the kink rows' multipliers (any split between them is optimal) and
    the solver's choice may exceed the rate a loosening earns; the convexity bound
    lambda >= right quotient still holds and is all that is checked for them."""
    if isinstance(c, ExpiryGuard):
        return True
    if not isinstance(c, PositionLimit):
        return False
    r = next(k for b, cc, k, _ in cs.rows if b.name == row and cc is c)
    return max(abs(v) for v in _bounds(c, r)) == 0.0


def test_reported_duals_match_finite_differences() -> None:
    """Every binding row of the random books: the reported dual lies in the finite-difference
    bracket, and where the bracket is narrow its midpoint is within 1% of it (one-sided rows:
    where right(h) and right(h/2) agree, right(h/2) is within 1% of it). Rows holding a position
    at a kink are checked against the lower side only (:func:`_at_a_kink`)."""
    kinds: set[str] = set()
    narrow = total = significant = 0
    for cs in _cases():
        for (name, lam, right, other, tol), (_, c, _, _) in zip(_fd_check(cs), cs.rows,
                                                                 strict=True):
            kinds.add(type(c).__name__)
            total += 1
            if _at_a_kink(c, name, cs):
                continue  # the kink of |z_j| at 0: only the bracket's lower side holds
            if abs(other - right) <= 1e-2 * abs(lam) + tol:
                narrow += 1
                assert abs(0.5 * (other + right) - lam) <= 1e-2 * abs(lam) + tol, (cs.seed, name)
                significant += int(abs(lam) > 100 * tol)
    # not vacuous: many rows, most of them checked tightly, the common kinds among them
    assert total >= 20, total
    assert narrow >= 0.7 * total, (narrow, total)
    assert significant >= 40, significant  # duals well above the tolerance, checked to 1%
    assert {"InitialMargin", "StressMargin", "GrossLeverage", "PositionLimit", "ClusterBands",
            "VolatilityCap", "FundingBudget", "TradeLimit", "ExpiryGuard"} <= kinds, kinds


def test_explanations_predict_a_concrete_loosening() -> None:
    """Loosening each binding row by its explanation's step lowers the re-solved objective by at
    most the printed first-order fall (convexity: always), and by at least 75% of it for at least
    85% of the rows (first order is exact until the loosening changes which rows bind or moves a
    position through 0, the kink of |z|, which a small step rarely does). The fall is at most a
    quarter of the objective's size, and the text prints it, the step and the tracking errors.
    Rows whose fall is below NEGLIGIBLE_SHARE of the objective (a dual at solver precision) are
    explained as holding nothing back; rows at a kink (:func:`_at_a_kink`) are held to the
    convexity bound only."""
    checked = 0
    poor: list[tuple[int, str, float]] = []
    for cs in _cases():
        hp = cs.hp
        assert hp.data is not None
        g0 = tight_objective(hp)
        for b, c, r, p in cs.rows:
            assert p is not None, b.name
            fall = -p.objective_change
            assert 0 < fall <= PREDICTION_SHARE * p.objective_size * (1 + 1e-12)
            assert c.step_phrase(b.name, p.step) in b.explanation, b.explanation
            assert b.holds_back == (fall >= NEGLIGIBLE_SHARE * p.objective_size), b
            if fall < NEGLIGIBLE_SHARE * p.objective_size:
                assert "holds nothing back" in b.explanation, b.explanation
                continue
            assert f"{fall:.3g}" in b.explanation, b.explanation
            if p.tracking_error_after is not None:
                assert p.tracking_error_after ** 2 == pytest.approx(
                    p.tracking_error ** 2 - fall, rel=1e-9, abs=1e-15)
                assert f"{p.tracking_error_after:.3%}" in b.explanation
            step_weight = p.step * user_unit(c, hp.data) * _collateral_factor(c, hp.data)
            assert step_weight == pytest.approx(p.step_weight, rel=1e-12)
            with moved(c, r, step_weight):
                actual = g0 - tight_objective(hp)
            tol = 1e-4 * fall + 2 * OBJ_RTOL * max(abs(g0), 1e-6)
            assert actual <= fall + tol, (cs.seed, b.name, actual, fall)
            if _at_a_kink(c, b.name, cs):  # the dual may exceed the rate (see _at_a_kink)
                continue
            if actual < FIRST_ORDER_SHARE * fall - tol:
                poor.append((cs.seed, b.name, actual / fall))
            checked += 1
    assert checked >= 40, checked
    assert len(poor) <= POOR_SHARE * checked, (poor, checked)


def test_the_ten_asset_example_explains_its_band_in_bp_and_usd() -> None:
    """examples/ten_assets.toml: the alt band binds; its explanation loosens it by 0.1 pp (10% of
    the 1 pp band) and says what that is worth in tracking error (bp) and trading cost (USD)."""
    from pathlib import Path

    from fbr.config_loader import load_book_file

    lb = load_book_file(Path(__file__).resolve().parents[2] / "examples" / "ten_assets.toml")
    sol = Rebalancer().solve(lb.book, lb.market, lb.risk, lb.settings)
    (b,) = [b for b in sol.binding_constraints if b.name == "cluster_band[alts]"]
    assert "widening the band by 0.1 pp would lower the objective by at most" in b.explanation
    assert " bp) at the same costs" in b.explanation and "USD less trading cost" in b.explanation
