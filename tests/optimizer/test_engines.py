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


def test_an_almost_solved_conic_answer_is_retried_at_the_defaults(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On the conic path an 'almost solved' answer at the tight CLARABEL_SETTINGS is solved again at
    Clarabel's defaults, and the accurate second answer serves (as on the QP fallback path)."""
    hp = _conic_problem()
    eng = hp.engine(SolverName.CLARABEL)
    assert isinstance(eng, ClarabelEngine)
    calls: list[dict[str, Any]] = []
    original = ClarabelEngine._attempt

    def almost_at_tight(self: ClarabelEngine, options: dict[str, Any], t0: float) -> RawResult:
        calls.append(dict(options))
        res = original(self, options, t0)
        if options:
            return RawResult(res.z, "optimal_inaccurate", res.solver, res.seconds, res.iterations,
                             res.objective, res.x)
        return res

    monkeypatch.setattr(ClarabelEngine, "_attempt", almost_at_tight)
    got = hp.solve()
    assert got.tried == (("CLARABEL", "optimal"),)
    assert calls == [dict(CLARABEL_SETTINGS), {}]


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

    def fails_unscaled(self: engines.ClarabelEngine, options: dict[str, Any]) -> Any:
        if self.scale == 1.0:
            raise RuntimeError("InsufficientProgress")
        return original(self, options)

    monkeypatch.setattr(engines.ClarabelEngine, "_call", fails_unscaled)
    got = hp.solve()
    assert got.tried == (("CLARABEL", "error: RuntimeError: InsufficientProgress"),
                         ("CLARABEL", "optimal"))
    assert ref.result.z is not None and got.result.z is not None
    np.testing.assert_allclose(got.result.z, ref.result.z, atol=1e-7)
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

    def fails_unscaled(self: engines.ClarabelEngine, options: dict[str, Any], t0: float) -> RawResult:
        if self.scale == 1.0:
            return RawResult(None, engines.FAILED, self.name, 0.0, 0, math.nan)
        return original(self, options, t0)

    monkeypatch.setattr(engines.ClarabelEngine, "_attempt", fails_unscaled)
    got = hp.solve()
    assert got.tried == (("CLARABEL", "optimal"),)
    assert ref.result.z is not None and got.result.z is not None
    np.testing.assert_allclose(got.result.z, ref.result.z, atol=1e-7)


@pytest.mark.solver_fallback
def test_when_the_retry_fails_too_the_chain_moves_on(monkeypatch: pytest.MonkeyPatch) -> None:
    hp = _conic_problem()

    def always_fails(self: engines.ClarabelEngine, options: dict[str, Any]) -> Any:
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

    def crashes(self: engines.ClarabelEngine, options: dict[str, Any]) -> Any:
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
