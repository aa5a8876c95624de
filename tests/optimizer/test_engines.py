"""optimizer.engines: the conic engine's data against cvxpy's own, its tolerance policy, Clarabel's
second try with a rescaled objective before the SCS fallback, and loud crashes."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer import engines
from optimizer.cvxpy_adapter import clarabel_settings
from optimizer.data import ProblemData
from optimizer.engines import CLARABEL_SETTINGS, ClarabelEngine, RawResult
from optimizer.prepare import prepare
from optimizer.problem import HedgeProblem
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings, SolverName

T0 = pd.Timestamp("2025-01-01", tz="UTC")


def _conic_data(rng: np.random.Generator | None = None, *, vol_cap: bool = False) -> ProblemData:
    """Two assets off target, 3/2-power impact on (conic: Clarabel serves it), margin on; with
    ``rng`` the prices, holdings, targets and ADVs are drawn (same structure)."""
    syms = ("BTC", "ETH")

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi)) if rng is not None else 1.0

    prices = {"BTC": 50_000.0 * u(0.8, 1.2), "ETH": 2_500.0 * u(0.8, 1.2)}
    cons = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-9, min_notional=0.0) for s in syms)
    w_btc = 0.5 * u(0.8, 1.2)
    book = Book(tuple(SpotAsset(s) for s in syms), cons,
                spot={"BTC": 12.0 * u(0.7, 1.3), "ETH": 160.0 * u(0.7, 1.3)},
                targets={"BTC": w_btc, "ETH": 1.0 - w_btc}, cash=2e5)
    market = MarketSnapshot(T0, spot=prices, mark={f"{s}-PERP": p for s, p in prices.items()},
                            adv={"BTC-PERP": 5e7 * u(0.5, 2.0), "ETH-PERP": 2e7 * u(0.5, 2.0)})
    risk = RiskModel.from_covariance(syms, np.array([[0.30, 0.25], [0.25, 0.49]]))
    cset = ConstraintSettings(margin=True, vol_cap=0.6) if vol_cap else ConstraintSettings(margin=True)
    settings = OptimizerSettings(costs=CostSettings(impact=True, carry=False), constraints=cset,
                                 basis_risk=False)
    return prepare(book, market, risk, settings)


def _conic_problem() -> HedgeProblem:
    d = _conic_data()
    hp = HedgeProblem(d.structure)
    hp.update(d)
    assert hp.is_conic
    return hp


def _dense(a: Any) -> np.ndarray:
    return np.asarray(a.toarray() if sp.issparse(a) else a, dtype=float)


@pytest.mark.parametrize("vol_cap", [False, True])
def test_clarabel_engine_data_equals_cvxpy_canonicalisation(vol_cap: bool) -> None:
    """The lean conic engine's standard form (upper-triangular P, q, A, b, offset, cones) is
    cvxpy's own Clarabel data for the same Parameter values, day after day, and its answer is the
    one cvxpy's Clarabel path gives."""
    rng = np.random.default_rng(5)
    d = _conic_data(rng, vol_cap=vol_cap)
    hp = HedgeProblem(d.structure)
    hp.update(d)
    eng = hp.engine(SolverName.CLARABEL)
    assert isinstance(eng, ClarabelEngine), "the lean native Clarabel path was not used"
    eng.solve()
    for _ in range(3):
        d = _conic_data(rng, vol_cap=vol_cap)
        assert d.structure == hp.structure
        hp.update(d)
        eng._prepare()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="invalid value encountered in matmul",
                                    category=RuntimeWarning)
            data, _chain, inverse = hp.problem.get_problem_data(cp.CLARABEL)
        from cvxpy.reductions.solvers.conic_solvers.clarabel_conif import dims_to_solver_cones

        theirs_p = sp.triu(data["P"]) if data.get("P") is not None else sp.csc_matrix(eng.P.shape)
        for name, mine, theirs in (("P", eng.P, theirs_p), ("q", eng.q, data["c"]),
                                   ("A", eng.A, data["A"]), ("b", eng.b, data["b"])):
            m, t = _dense(mine), _dense(theirs)
            assert m.shape == t.shape, name
            np.testing.assert_allclose(m, t, rtol=1e-12, atol=1e-12, err_msg=name)
        assert [repr(c) for c in eng.cones] == [repr(c) for c in dims_to_solver_cones(data["dims"])]
        assert eng.offset == pytest.approx(float(inverse[-1][cp.settings.OFFSET]), abs=1e-12)
        res = eng.solve()
        assert res.status == "optimal" and res.z is not None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="invalid value encountered in matmul",
                                    category=RuntimeWarning)
            hp.problem.solve(solver=cp.CLARABEL, warm_start=False, **CLARABEL_SETTINGS)
        np.testing.assert_allclose(res.z, np.asarray(hp.ctx.z.value), atol=1e-7)
        assert res.objective == pytest.approx(hp.problem.value, rel=1e-6, abs=1e-10)


def test_clarabel_settings_accept_an_almost_solved_answer_only_within_clarabel_accept() -> None:
    """The first attempt squeezes the gap below Clarabel's default (read from Clarabel itself),
    keeps its default feasibility, and accepts a stalled ('almost solved') answer only within
    CLARABEL_ACCEPT: the default gap, a residual 10x the default and 1000x tighter than Clarabel's
    own 'almost' test."""
    import clarabel

    defaults = clarabel.DefaultSettings()
    ours = clarabel_settings(CLARABEL_SETTINGS)
    accept = engines.CLARABEL_ACCEPT
    for key in ("tol_gap_abs", "tol_gap_rel"):
        assert getattr(ours, key) < getattr(defaults, key) == accept[key]
    assert ours.tol_feas == defaults.tol_feas < accept["tol_feas"] == 10 * defaults.tol_feas
    assert accept["tol_feas"] * 1000 == pytest.approx(defaults.reduced_tol_feas)
    assert accept["tol_ktratio"] == defaults.tol_ktratio
    for key, val in accept.items():
        assert getattr(ours, f"reduced_{key}") == val
    assert engines.almost_is_accepted(CLARABEL_SETTINGS)
    assert not engines.almost_is_accepted({})
    assert not engines.almost_is_accepted({**CLARABEL_SETTINGS, "reduced_tol_feas": 1e-4})


def _raw(status: str, x: np.ndarray | None = None) -> Any:
    """A stand-in for Clarabel's solution object."""
    class Raw:
        pass

    raw = Raw()
    raw.status, raw.x, raw.obj_val, raw.iterations = status, x, 0.5, 7  # type: ignore[attr-defined]
    return raw


@pytest.mark.parametrize(("statuses", "served", "attempts"), [
    (["Solved"], "optimal", 1),
    (["AlmostSolved"], "optimal", 1),  # meets CLARABEL_ACCEPT: no second solve
    (["PrimalInfeasible"], "infeasible", 1),
    (["InsufficientProgress", "Solved"], "optimal", 2),
    (["InsufficientProgress", "NumericalError", "Solved"], "optimal", 3),
    (["InsufficientProgress", "NumericalError", "AlmostSolved"], "optimal", 3),  # careful, tight
    (["InsufficientProgress", "NumericalError", "NumericalError", "Solved"], "optimal", 4),
    (["InsufficientProgress", "AlmostSolved", "Solved"], "optimal", 3),  # rescued by the careful
    (["InsufficientProgress", "AlmostSolved"] + ["NumericalError"] * 3, "optimal_inaccurate", 5),
    (["NumericalError"] * 4 + ["Solved"], "optimal", 5),  # the objective at unit size
    (["NumericalError"] * 5, "solver_error", 5),
])
def test_the_attempt_ladder(monkeypatch: pytest.MonkeyPatch, statuses: list[str], served: str,
                            attempts: int) -> None:
    """CLARABEL_ATTEMPTS in order (tight, defaults, tight on the careful path, tight rescaled
    x RESCALE, tight at unit size) until one is optimal or infeasible; an 'almost solved'
    answer is optimal only at the tight settings (its reduced tolerances are CLARABEL_ACCEPT,
    the careful path's too), inaccurate at Clarabel's defaults, and then served only when no
    rescue attempt is optimal; the served attempt's options and scale stay for unpack."""
    hp = _conic_problem()
    eng = hp.engine(SolverName.CLARABEL)
    assert isinstance(eng, ClarabelEngine)
    seen: list[tuple[dict[str, float], float]] = []
    x = np.zeros(eng.map.n)

    def scripted(self: ClarabelEngine) -> Any:
        seen.append((dict(self.attempt_options), self.scale))
        return _raw(statuses[len(seen) - 1], x)

    monkeypatch.setattr(ClarabelEngine, "_call", scripted)
    got = eng.solve()
    assert got.status == served and got.attempts == attempts
    unit = 1.0 / max(np.abs(eng.P.data).max(), np.abs(eng.q).max())
    ladder = [(dict(o), unit if sc == engines.TO_UNIT else sc)
              for o, sc in engines.CLARABEL_ATTEMPTS]
    assert seen == ladder[:attempts]
    if served == "optimal_inaccurate":
        assert (eng.attempt_options, eng.scale) == ({}, 1.0)  # the defaults' answer is kept


def test_the_conic_engine_is_deterministic_and_accurate() -> None:
    """Each solve is scaled from its own data into an updated solver (no kept equilibration), so
    the answer to day A is bit-identical whether or not day B was solved in between, and it agrees
    with a 1e-10-tolerance solve to 1e-7 (weight units)."""
    import clarabel

    rng = np.random.default_rng(11)
    day_a, day_b = _conic_data(rng), _conic_data(rng)
    hp = HedgeProblem(day_a.structure)
    answers = []
    for d in (day_a, day_b, day_a):
        hp.update(d)
        answers.append(hp.solve())
    first, _, again = answers
    assert first.tried == (("CLARABEL", "optimal"),)
    assert first.result.z is not None and again.result.z is not None
    assert np.array_equal(first.result.z, again.result.z)
    assert first.result.objective == again.result.objective
    eng = hp.engine(SolverName.CLARABEL)
    assert isinstance(eng, ClarabelEngine)
    tight = clarabel.DefaultSolver(eng.P, eng.q, eng.A, eng.b, eng.cones, clarabel_settings(
        {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10})).solve()
    assert str(tight.status) == "Solved"
    np.testing.assert_allclose(first.result.z, np.asarray(tight.x)[eng.z_slice], atol=1e-7)


@pytest.mark.solver_fallback
def test_a_crashed_clarabel_solve_is_retried_rescaled_before_scs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Clarabel crashing at the objective's own scale: the engine's second try (objective x
    RESCALE) serves the same minimiser and the unscaled objective, the duals come back unscaled,
    SCS is never asked, and the crash is in the tried list."""
    hp = _conic_problem()
    ref = hp.solve()
    assert ref.tried == (("CLARABEL", "optimal"),)
    hp.unpack("CLARABEL")
    ref_duals = [np.asarray(c.dual_value, dtype=float).copy() for c in hp.problem.constraints]

    original = engines.ClarabelEngine._call

    def fails_unscaled(self: engines.ClarabelEngine) -> Any:
        if self.scale == 1.0:
            raise RuntimeError("InsufficientProgress")
        return original(self)

    monkeypatch.setattr(engines.ClarabelEngine, "_call", fails_unscaled)
    got = hp.solve()
    crash = ("CLARABEL", "error: RuntimeError: InsufficientProgress")
    assert got.tried == (crash, crash, crash, ("CLARABEL", "optimal"))
    # tight, defaults, careful (all crash), rescaled
    assert ref.result.z is not None and got.result.z is not None
    np.testing.assert_allclose(got.result.z, ref.result.z, atol=1e-6)  # two solves, gap 1e-9
    assert got.result.objective == pytest.approx(ref.result.objective, rel=1e-6, abs=1e-12)
    hp.unpack("CLARABEL")
    for c, dual in zip(hp.problem.constraints, ref_duals, strict=True):
        np.testing.assert_allclose(np.asarray(c.dual_value, dtype=float), dual, rtol=1e-4,
                                   atol=1e-8)


def test_a_failed_status_is_retried_rescaled(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure *status* (not a crash) at scale 1 is retried rescaled in strict mode too."""
    hp = _conic_problem()
    ref = hp.solve()
    original = engines.ClarabelEngine._attempt

    def fails_unscaled(self: engines.ClarabelEngine, t0: float) -> RawResult:
        if self.scale == 1.0:
            return RawResult(None, engines.FAILED, self.name, 0.0, 0, math.nan)
        return original(self, t0)

    monkeypatch.setattr(engines.ClarabelEngine, "_attempt", fails_unscaled)
    got = hp.solve()
    assert got.tried == (("CLARABEL", "optimal"),)
    assert ref.result.z is not None and got.result.z is not None
    np.testing.assert_allclose(got.result.z, ref.result.z, atol=1e-6)  # two solves, gap 1e-9


def test_unit_scale_by_hand() -> None:
    """1 / the largest |coefficient| of P and q; 1 when the objective has none."""
    P = sp.csc_matrix(np.array([[2.0, -3.0], [-3.0, 0.5]]))
    assert engines.unit_scale(P, np.array([1.0, -0.25])) == 1.0 / 3.0
    assert engines.unit_scale(P, np.array([-40.0, 0.0])) == 1.0 / 40.0
    assert engines.unit_scale(sp.csc_matrix((2, 2)), np.zeros(2)) == 1.0


def test_a_large_objective_stalling_everywhere_else_is_solved_at_unit_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The objective x 1e5 (a large book's cost coefficients), and every attempt but the one at
    unit size failing: the last attempt serves the minimiser of the unscaled problem (same z as
    a plain solve, 1e5 x its objective), and its duals come back in the problem's units."""
    hp = _conic_problem()
    ref = hp.solve()
    assert ref.result.z is not None
    big = hp.engine(SolverName.CLARABEL)
    assert isinstance(big, ClarabelEngine)
    original_prepare, original_attempt = ClarabelEngine._prepare, ClarabelEngine._attempt

    def prepare_big(self: ClarabelEngine) -> None:
        original_prepare(self)
        self.P.data *= 1e5
        self.q, self.offset = self.q * 1e5, self.offset * 1e5

    def only_at_unit(self: ClarabelEngine, t0: float) -> RawResult:
        if self.scale != engines.unit_scale(self.P, self.q):
            return RawResult(None, engines.FAILED, self.name, 0.0, 0, math.nan)
        return original_attempt(self, t0)

    monkeypatch.setattr(ClarabelEngine, "_prepare", prepare_big)
    monkeypatch.setattr(ClarabelEngine, "_attempt", only_at_unit)
    got = big.solve()
    assert got.status == engines.OPTIMAL
    assert big.scale == engines.unit_scale(big.P, big.q)
    assert got.z is not None
    np.testing.assert_allclose(got.z, ref.result.z, atol=1e-6)
    assert got.objective == pytest.approx(1e5 * ref.result.objective, rel=1e-6)


@pytest.mark.solver_fallback
def test_when_the_retry_fails_too_the_chain_moves_on(monkeypatch: pytest.MonkeyPatch) -> None:
    hp = _conic_problem()

    def always_fails(self: engines.ClarabelEngine) -> Any:
        raise RuntimeError("InsufficientProgress")

    monkeypatch.setattr(engines.ClarabelEngine, "_call", always_fails)
    got = hp.solve()
    assert got.tried[0] == ("CLARABEL", "error: RuntimeError: InsufficientProgress")
    assert got.tried[-1][0] == "SCS"


def test_strict_mode_reraises_an_engine_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test suite runs strict (tests/conftest.py): a crash is raised, not answered by SCS."""
    assert os.environ.get(engines.STRICT_ENV) == "1"
    assert engines.STRICT_ENV == "FBR_STRICT_SOLVERS"  # the name tests/conftest.py spells out
    hp = _conic_problem()

    def crashes(self: engines.ClarabelEngine) -> Any:
        raise ValueError("bad data")

    monkeypatch.setattr(engines.ClarabelEngine, "_call", crashes)
    with pytest.raises(ValueError, match="bad data"):
        hp.solve()


@pytest.mark.solver_fallback
def test_a_crash_is_recorded_and_answered_by_the_next_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside strict mode a crash goes into ``tried`` with its type and message."""
    assert engines.STRICT_ENV not in os.environ
    hp = _conic_problem()

    def crashes(self: engines.ClarabelEngine) -> RawResult:
        raise ValueError("bad data")

    monkeypatch.setattr(engines.ClarabelEngine, "solve", crashes)
    got = hp.solve()
    assert got.tried[0] == ("CLARABEL", "error: ValueError: bad data")
    assert got.tried[-1] == ("SCS", "optimal") or got.tried[-1][0] == "SCS"
    assert got.fallbacks == 1
