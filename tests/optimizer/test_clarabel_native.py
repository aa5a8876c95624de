"""optimizer.clarabel_native: fbr's equilibration against a dense numpy transcription of the Ruiz
passes, the scaled problem's answer in original units against Clarabel's own, one solver set up
and updated with answers that depend on nothing but the day's data, and the gap tolerances."""

from __future__ import annotations

import itertools

import clarabel
import numpy as np
import pytest
import scipy.sparse as sp

from optimizer.clarabel_native import (
    UPDATE_MIN_NNZ,
    Equilibrator,
    FreshClarabel,
    KeptSolver,
    NativeClarabel,
    Scaling,
    SegmentMax,
    bounded_scale,
    changed_values,
    clarabel_path,
    gap_tolerances,
)
from optimizer.cvxpy_adapter import clarabel_settings
from optimizer.engines import CLARABEL_SETTINGS, ClarabelEngine
from optimizer.problem import HedgeProblem
from optimizer.settings import SolverName
from tests.optimizer.test_engines import _conic_data

LO, HI = 1e-4, 1e4


def dense_ruiz(P: np.ndarray, q: np.ndarray, A: np.ndarray, passes: int,
               blocks: list[tuple[int, int]]) -> Scaling:
    """Clarabel 0.11's Ruiz passes on dense matrices (P full and symmetric), the data scaled in
    place pass after pass as Clarabel does: factors 1/sqrt(norm) (an empty row or column: 1)
    bounded so that every scale stays in [LO, HI]; the cost by 1/max(|q|_inf, mean column norm
    of P's upper triangle), bounded the same way."""
    n, m = P.shape[0], A.shape[0]
    d, e, c = np.ones(n), np.ones(m), 1.0
    Ps, As, qs = P.copy(), A.copy(), q.copy()
    for _ in range(passes):
        col = np.maximum(np.abs(Ps).max(axis=0), np.abs(As).max(axis=0))
        row = np.abs(As).max(axis=1)
        dw = np.clip(1.0 / np.sqrt(np.where(col == 0.0, 1.0, col)), LO / d, HI / d)
        ew = np.clip(1.0 / np.sqrt(np.where(row == 0.0, 1.0, row)), LO / e, HI / e)
        Ps, As, qs = dw[:, None] * Ps * dw[None, :], ew[:, None] * As * dw[None, :], dw * qs
        d, e = d * dw, e * ew
        mean_p, q_inf = np.abs(np.triu(Ps)).max(axis=0).mean(), np.abs(qs).max()
        if mean_p > 0 and q_inf > 0:
            ct = float(np.clip(1.0 / max(mean_p, q_inf), LO / c, HI / c))
            Ps, qs, c = Ps * ct, qs * ct, c * ct
    for a, b in blocks:
        e[a:b] = e[a:b].mean()
    return Scaling(d, e, c)


def _random_problem(seed: int) -> tuple[sp.csc_matrix, np.ndarray, sp.csc_matrix, np.ndarray]:
    """A badly scaled random problem: P (upper triangle of a PSD matrix), q, a sparse A, b."""
    rng = np.random.default_rng(seed)
    n, m = 6, 9
    F = rng.normal(size=(n, n)) * np.logspace(-3, 3, n)
    P = sp.csc_matrix(np.triu(F.T @ F))
    A = sp.random(m, n, density=0.5, random_state=seed, format="csc")
    A.data *= np.logspace(-2, 4, A.nnz)
    return P, rng.normal(size=n) * 1e3, A, rng.normal(size=m)


def _matched_equilibration(P: sp.csc_matrix, q: np.ndarray, A: sp.csc_matrix,
                           blocks: list[tuple[int, int]]) -> Scaling:
    """fbr's scaling of (P upper triangle, q, A), asserted equal to :func:`dense_ruiz`'s."""
    full = (P + P.T - sp.diags(P.diagonal())).toarray()
    got = Equilibrator(P, A, blocks)(P.data, q, A.data, 10, LO, HI)
    want = dense_ruiz(full, q, A.toarray(), 10, blocks)
    np.testing.assert_allclose(got.d, want.d, rtol=1e-12)
    np.testing.assert_allclose(got.e, want.e, rtol=1e-12)
    assert got.c == pytest.approx(want.c, rel=1e-12)
    return got


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equilibration_equals_the_dense_ruiz_passes(seed: int) -> None:
    P, q, A, _b = _random_problem(seed)
    blocks = [(3, 6), (6, 9)]
    got = _matched_equilibration(P, q, A, blocks)
    assert np.ptp(got.e[3:6]) == 0.0 and np.ptp(got.e[6:9]) == 0.0
    assert got.c != 1.0 and np.ptp(got.d) > 1.0  # the data was badly scaled: scales moved


@pytest.mark.parametrize("case", ["no cones", "no P (an LP)", "no q"])
def test_equilibration_edge_cases_equal_the_dense_passes(case: str) -> None:
    """No cone block (rows scaled one by one), a zero P and a zero q (no cost scaling: c = 1)."""
    P, q, A, _b = _random_problem(7)
    blocks = [] if case == "no cones" else [(5, 9)]
    if case == "no P (an LP)":
        P = sp.csc_matrix(P.shape)
    if case == "no q":
        q = np.zeros_like(q)
    got = _matched_equilibration(P, q, A, blocks)
    assert (got.c == 1.0) == (case != "no cones")


def test_the_bounds_on_the_scales_bind_as_in_the_dense_passes() -> None:
    """Entries of A from 1e-12 to 1e12 and a column of 1e-12 only (P diagonal): some row and
    column scales end at LO or HI exactly, the tiny column's at HI."""
    _P, q, A, _b = _random_problem(4)
    A.data = np.logspace(-12, 12, A.nnz)[np.random.default_rng(4).permutation(A.nnz)]
    A.data[A.indptr[0]:A.indptr[1]] = 1e-12
    P = sp.csc_matrix(np.diag(np.r_[1e-12, np.ones(A.shape[1] - 1)]))
    got = _matched_equilibration(P, q, A, [(5, 9)])
    assert got.d[0] == HI and {LO, HI} <= set(got.e) | set(got.d[1:])


@pytest.mark.parametrize("case", ["P's norms above |q|", "a tiny objective"])
def test_the_cost_scale_follows_the_dense_passes(case: str) -> None:
    """The cost scale taken from the mean column norm of P when it exceeds |q|_inf; for an
    objective of 1e-9 the scale that would reach 1e9 stops at HI."""
    P, q, A, _b = _random_problem(5)
    if case == "P's norms above |q|":
        q = q * 1e-7
    else:
        P, q = P * 1e-9, q * 1e-9
    got = _matched_equilibration(P, q, A, [(5, 9)])
    assert (got.c == HI) == (case == "a tiny objective")


def test_a_badly_scaled_qp_solves_as_clarabels_own() -> None:
    """A random QP with entries over seven orders of magnitude (orthant rows only), through the
    kept solver at Clarabel's defaults and at an objective times 3: x as Clarabel's own tight
    solve, the objective times 3 and the duals times 3 in the second."""
    P, q, A, _ = _random_problem(3)
    rng = np.random.default_rng(3)
    b = A @ rng.normal(size=A.shape[1]) + rng.uniform(0.1, 1.0, size=A.shape[0])
    cones = [clarabel.NonnegativeConeT(A.shape[0])]
    ref = clarabel.DefaultSolver(P, q, A, b, cones, clarabel_settings(
        {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12})).solve()
    nat = NativeClarabel(P, A, cones, [])
    one = nat.solve(P, q, A, b, {})
    three = nat.solve(P, q, A, b, {}, cost=3.0)
    scale = max(1.0, float(np.abs(ref.x).max()))
    assert one.status == "Solved" and three.status == "Solved"
    np.testing.assert_allclose(one.x, np.asarray(ref.x), atol=1e-6 * scale)
    np.testing.assert_allclose(three.x, one.x, atol=1e-6 * scale)
    assert one.obj_val == pytest.approx(ref.obj_val, rel=1e-6)
    assert three.obj_val == pytest.approx(3.0 * one.obj_val, rel=1e-6)
    np.testing.assert_allclose(three.z, 3.0 * one.z, rtol=1e-4, atol=1e-6 * np.abs(one.z).max())
    assert isinstance(one.iterations, int) and one.iterations > 0 and one.solve_time > 0.0


@pytest.mark.parametrize("seed", range(6))
def test_segment_max_equals_a_loop_over_the_entries(seed: int) -> None:
    """Groups of every size from 0 (empty: 0) to past SegmentMax.SHORT, ids unsorted or sorted."""
    rng = np.random.default_rng(seed)
    size = 40
    sizes = rng.integers(0, 2 * SegmentMax.SHORT + 3, size)
    sizes[:3] = (0, 1, SegmentMax.SHORT + 1)
    groups = np.repeat(np.arange(size), sizes)
    if seed % 2 == 0:
        groups = rng.permutation(groups)
    vals = rng.uniform(0.0, 5.0, groups.size)
    want = np.zeros(size)
    for g, v in zip(groups, vals, strict=True):
        want[g] = max(want[g], v)
    np.testing.assert_array_equal(SegmentMax(groups, size)(vals), want)


def test_changed_values_sends_what_differs_bit_for_bit() -> None:
    """Nothing when equal; the changed positions when fewer than a third changed (-0.0 against
    0.0 counts: the solver must hold the very bits); every value otherwise."""
    held = np.array([1.0, 2.0, 0.0, 4.0, 5.0])
    assert changed_values("A", held, held.copy()) == {}
    few = held.copy()
    few[2] = -0.0
    assert changed_values("A", held, few) == {"A": ([2], [-0.0])}
    two = held.copy()
    two[[0, 4]] = 7.0  # two of five: not fewer than a third
    assert changed_values("P", held, two) == {"P": two.tolist()}
    six = np.arange(6.0)
    third = six.copy()
    third[[1, 2]] = -1.0  # exactly a third: every value
    assert changed_values("A", six, third) == {"A": third.tolist()}


def test_an_update_that_fails_drops_the_kept_solver() -> None:
    """After an exception in an update, what the solver holds is unknown: the next solve sets up
    a new one (and the exception reaches the caller)."""
    eng = _engine(5)
    nat = NativeClarabel(eng.P, eng.A, eng.cones, eng.compiled.cone_blocks())
    opts = dict(CLARABEL_SETTINGS)
    before = nat.solve(eng.P, eng.q, eng.A, eng.b, opts)
    kept = next(iter(nat.solvers.values()))

    class Broken:
        def update(self, **_: object) -> None:
            raise RuntimeError("panic in update")

    nat.solvers = {k: KeptSolver(v.settings, Broken(), v.p_data, v.a_data)
                   for k, v in nat.solvers.items()}
    with pytest.raises(RuntimeError, match="panic in update"):
        nat.solve(eng.P, eng.q, eng.A, eng.b, opts)
    assert nat.solvers == {}
    again = nat.solve(eng.P, eng.q, eng.A, eng.b, opts)
    assert nat.setups == 2 and kept.solver is not next(iter(nat.solvers.values())).solver
    np.testing.assert_array_equal(again.x, before.x)


def test_bounded_scale_leaves_empty_rows_alone_and_keeps_scales_in_bounds() -> None:
    """scale / sqrt(norm): an empty row keeps its scale; a tiny norm's large step and a large
    norm's small one stop at the bounds (by hand: 100 / sqrt(1e-6) = 1e5 -> 1e4; 1 / sqrt(1e10)
    = 1e-5 -> 1e-4; 1 / sqrt(1e-6) = 1e3 and 2 / sqrt(4) = 1 inside)."""
    norms = np.array([0.0, 1e-6, 1e-6, 4.0, 1e10])
    scale = np.array([3.0, 1.0, 100.0, 2.0, 1.0])
    got = bounded_scale(norms.copy(), scale, LO, HI)
    np.testing.assert_allclose(got, [3.0, 1e3, 1e4, 1.0, 1e-4], rtol=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_the_scaled_solve_walks_clarabels_own_path(seed: int) -> None:
    """fbr's scaling fed to Clarabel with its equilibration off walks Clarabel's own path: after
    the same number of iterations (Clarabel stopped there by ``max_iter``) x equals the iterate of
    Clarabel equilibrating the data itself, on random problems with entries over six orders of
    magnitude (past the norms an older rule clipped) and a second-order cone block. (Where each
    stops may differ: Clarabel measures its residuals in the units of the data it was given.)"""
    rng = np.random.default_rng(seed)
    n, m = 8, 12
    F = rng.normal(size=(n, n)) * np.logspace(-2, 2, n)
    P = sp.csc_matrix(np.triu(F.T @ F))
    A = sp.random(m, n, density=0.4, random_state=seed, format="csc")
    A.data *= np.logspace(-3, 3, A.nnz)[rng.permutation(A.nnz)]
    b = A @ rng.normal(size=n) + np.r_[rng.uniform(0.1, 1.0, m - 4), 10.0, 0.0, 0.0, 0.0]
    cones = [clarabel.NonnegativeConeT(m - 4), clarabel.SecondOrderConeT(4)]
    q = rng.normal(size=n) * 1e2
    for k in (3, 6, 10):
        own = clarabel.DefaultSolver(P, q, A, b, cones, clarabel_settings({"max_iter": k})).solve()
        ours = NativeClarabel(P, A, cones, [(m - 4, m)]).solve(P, q, A, b, {"max_iter": k})
        assert own.iterations == ours.iterations == k
        scale = max(1.0, float(np.abs(own.x).max()))
        np.testing.assert_allclose(ours.x, np.asarray(own.x), rtol=0, atol=1e-9 * scale)


def test_gap_tolerances_mean_the_original_objective() -> None:
    """Absolute gaps times c; relative ones times min(c, 1); options missing: Clarabel's defaults."""
    base = clarabel_settings({})
    small = gap_tolerances({"tol_gap_abs": 1e-9, "tol_gap_rel": 2e-9}, 0.01)
    assert small["tol_gap_abs"] == pytest.approx(1e-11)
    assert small["tol_gap_rel"] == pytest.approx(2e-11)
    assert small["reduced_tol_gap_abs"] == pytest.approx(base.reduced_tol_gap_abs * 0.01)
    large = gap_tolerances({"tol_gap_abs": 1e-9, "tol_gap_rel": 2e-9}, 5.0)
    assert large["tol_gap_abs"] == pytest.approx(5e-9)
    assert large["tol_gap_rel"] == pytest.approx(2e-9)


def _engine(seed: int) -> ClarabelEngine:
    d = _conic_data(np.random.default_rng(seed), vol_cap=True)
    hp = HedgeProblem(d.structure)
    hp.update(d)
    eng = hp.engine(SolverName.CLARABEL)
    assert isinstance(eng, ClarabelEngine)
    eng._prepare()
    return eng


def test_an_answer_in_original_units_matches_clarabels_own() -> None:
    """The unscaled answer of the scaled problem solves the original one: the trades z as
    Clarabel's own 1e-11 solve to 1e-7 (helper variables with no cost need not be unique), the
    primal residual Ax + s - b tiny, s and the duals in their cones where
    they are orthants, the duals' complementarity s'z and the objective as Clarabel's."""
    eng = _engine(3)
    P, q, A, b = eng.P, eng.q, eng.A, eng.b
    nat = NativeClarabel(P, A, eng.cones, eng.compiled.cone_blocks())
    ans = nat.solve(P, q, A, b, dict(CLARABEL_SETTINGS))
    ref = clarabel.DefaultSolver(P, q, A, b, eng.cones, clarabel_settings(
        {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11})).solve()
    assert ans.status == "Solved" and str(ref.status) == "Solved"
    np.testing.assert_allclose(ans.x[eng.z_slice], np.asarray(ref.x)[eng.z_slice], atol=1e-7)
    assert ans.obj_val == pytest.approx(ref.obj_val, rel=1e-7)
    assert np.max(np.abs(A @ ans.x + ans.s - b)) < 1e-8
    orthant = slice(eng.compiled.m_eq, eng.compiled.m_eq + eng.compiled.prog.cone_dims.nonneg)
    assert ans.s[orthant].min() > -1e-9 and ans.z[orthant].min() > -1e-9
    assert abs(float(ans.s @ ans.z)) < 1e-7
    np.testing.assert_allclose(ans.z, np.asarray(ref.z), atol=1e-5 * max(1.0, np.abs(ref.z).max()))


def test_the_kept_path_is_as_accurate_as_a_tight_solve_on_random_books() -> None:
    """Ten random conic books through the kept solver at the engine's tight settings: z within
    1e-7 of a 1e-12 solve on every one (weight units; the gap tolerances must mean the original
    objective's gap for this: Clarabel's measure on the scaled cost is c times smaller)."""
    worst = 0.0
    for seed in range(10):
        d = _conic_data(np.random.default_rng(seed))
        hp = HedgeProblem(d.structure)
        hp.update(d)
        eng = hp.engine(SolverName.CLARABEL)
        assert isinstance(eng, ClarabelEngine)
        eng._prepare()
        P, q, A, b = eng.P, eng.q, eng.A, eng.b
        ans = NativeClarabel(P, A, eng.cones, eng.compiled.cone_blocks()).solve(
            P, q, A, b, dict(CLARABEL_SETTINGS))
        ref = clarabel.DefaultSolver(P, q, A, b, eng.cones, clarabel_settings(
            {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12})).solve()
        worst = max(worst, float(np.max(np.abs(ans.x[eng.z_slice]
                                                - np.asarray(ref.x)[eng.z_slice]))))
    assert worst < 1e-7


def test_one_solver_is_updated_and_answers_as_a_fresh_one() -> None:
    """Day A, then day B on the same object: one set-up, and B's answer bit for bit the answer a
    new object gives B (no history); so is A's when solved again."""
    a, b_day = _engine(1), _engine(2)
    nat = NativeClarabel(a.P, a.A, a.cones, a.compiled.cone_blocks())
    opts = dict(CLARABEL_SETTINGS)
    first = nat.solve(a.P, a.q, a.A, a.b, opts)
    second = nat.solve(b_day.P, b_day.q, b_day.A, b_day.b, opts)
    again = nat.solve(a.P, a.q, a.A, a.b, opts)
    assert nat.setups == 1
    fresh = NativeClarabel(a.P, a.A, a.cones, a.compiled.cone_blocks())
    alone = fresh.solve(b_day.P, b_day.q, b_day.A, b_day.b, opts)
    np.testing.assert_array_equal(second.x, alone.x)
    np.testing.assert_array_equal(second.z, alone.z)
    assert second.obj_val == alone.obj_val and second.iterations == alone.iterations
    np.testing.assert_array_equal(first.x, again.x)
    assert not np.array_equal(first.x, second.x)
    # a day whose cost is 1000 times larger: fbr's cost scale absorbs it, so its gap tolerances
    # (times c) must be re-sent to the kept solver, or it answers as if it were day A
    big = nat.solve(a.P * 1e3, a.q * 1e3, a.A, a.b, opts)
    big_alone = NativeClarabel(a.P, a.A, a.cones, a.compiled.cone_blocks()).solve(
        a.P * 1e3, a.q * 1e3, a.A, a.b, opts)
    np.testing.assert_array_equal(big.x, big_alone.x)
    assert big.iterations == big_alone.iterations
    nat.solve(a.P, a.q, a.A, a.b, {})  # other options: a solver of their own
    assert nat.setups == 2


@pytest.mark.parametrize("changed_columns", [1, "all"])
def test_an_update_of_some_values_answers_as_a_fresh_solver(changed_columns: int | str,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """Day B is day A with q, b and the values of A in some columns changed: the kept solver
    receives only the changed values of A (positions and values; or all of them when most
    changed) and answers bit for bit as a solver set up on day B alone."""
    a = _engine(6)
    rng = np.random.default_rng(6)
    A_b = a.A.copy()
    cols = [a.z_slice.start] if changed_columns == 1 else range(A_b.shape[1])
    for j in cols:
        A_b.data[A_b.indptr[j]:A_b.indptr[j + 1]] *= rng.uniform(0.8, 1.2)
    q_b, b_b = a.q * rng.uniform(0.9, 1.1, a.q.size), a.b * 1.01
    nat = NativeClarabel(a.P, a.A, a.cones, a.compiled.cone_blocks())
    opts = dict(CLARABEL_SETTINGS)
    nat.solve(a.P, a.q, a.A, a.b, opts)
    sent: list[dict[str, object]] = []
    solver = next(iter(nat.solvers.values())).solver
    real_update = solver.update

    def spy(**kw: object) -> None:
        sent.append(kw)
        real_update(**kw)

    monkeypatch.setattr(next(iter(nat.solvers.values())), "solver", _Spy(solver, spy))
    got = nat.solve(a.P, q_b, A_b, b_b, opts)
    alone = NativeClarabel(a.P, a.A, a.cones, a.compiled.cone_blocks()).solve(
        a.P, q_b, A_b, b_b, opts)
    np.testing.assert_array_equal(got.x, alone.x)
    np.testing.assert_array_equal(got.z, alone.z)
    assert got.iterations == alone.iterations and got.status == "Solved"
    (kw,) = sent
    assert isinstance(kw["q"], list) and isinstance(kw["b"], list)
    if changed_columns == 1:
        assert isinstance(kw["A"], tuple) and 0 < 3 * len(kw["A"][0]) < A_b.nnz
    else:
        assert isinstance(kw["A"], list) and len(kw["A"]) == A_b.nnz


class _Spy:
    """A Clarabel solver whose ``update`` goes through ``update`` (solve and the rest unchanged)."""

    def __init__(self, solver: object, update: object) -> None:
        self._solver, self.update = solver, update

    def __getattr__(self, name: str) -> object:
        return getattr(self._solver, name)


def test_the_cone_blocks_follow_the_cone_dimensions() -> None:
    """Second-order cones of the vol cap and 3-d power cones of the impact, after the orthants."""
    eng = _engine(0)
    dims = eng.compiled.prog.cone_dims
    blocks = eng.compiled.cone_blocks()
    start = dims.zero + dims.nonneg
    sizes = [int(k) for k in dims.soc] + [3] * len(dims.p3d)
    assert dims.soc and dims.p3d and not dims.psd and not dims.exp
    assert [b - a for a, b in blocks] == sizes
    assert blocks[0][0] == start and blocks[-1][1] == eng.compiled.rows
    assert all(b0[1] == b1[0] for b0, b1 in itertools.pairwise(blocks))


def test_the_path_follows_the_problem_size() -> None:
    """A fresh set-up below UPDATE_MIN_NNZ nonzeros of A and P together, the kept solver from
    there (with the cones it was given)."""
    eng = _engine(4)
    assert isinstance(clarabel_path(eng.P, eng.A, eng.cones, []), FreshClarabel)
    n = 10
    P = sp.identity(n, format="csc")
    A = sp.csc_matrix(np.ones((UPDATE_MIN_NNZ // n - 1, n)))  # n short of the threshold
    assert A.nnz + P.nnz == UPDATE_MIN_NNZ
    cones = [clarabel.NonnegativeConeT(A.shape[0])]
    kept = clarabel_path(P, A, cones, [])
    assert isinstance(kept, NativeClarabel) and kept.cones is cones
    A_less = sp.csc_matrix(np.ones((UPDATE_MIN_NNZ // n - 2, n)))
    assert isinstance(clarabel_path(P, A_less, cones, []), FreshClarabel)


def test_the_fresh_path_is_clarabels_own_for_each_options() -> None:
    """Two options on one fresh path, the objective times cost or not: each answer is Clarabel's
    own set-up with those options, bit for bit."""
    eng = _engine(4)
    fresh = FreshClarabel(eng.cones)
    for opts, cost in (({}, 3.0), (dict(CLARABEL_SETTINGS), 1.0), ({}, 1.0), ({}, 2.0)):
        got = fresh.solve(eng.P, eng.q, eng.A, eng.b, opts, cost=cost) if cost != 1.0 \
            else fresh.solve(eng.P, eng.q, eng.A, eng.b, opts)
        own = clarabel.DefaultSolver(eng.P * cost, eng.q * cost, eng.A, eng.b, eng.cones,
                                     clarabel_settings(opts)).solve()
        np.testing.assert_array_equal(got.x, np.asarray(own.x))
        assert got.obj_val == own.obj_val and got.iterations == own.iterations
