"""fbr's optimiser against a separately written reference formulation (tests/optimizer/optcases.py).

The reference is plain cvxpy with constants only (no Parameters), written from DESIGN.md in weight
units z = x / V from the Book / MarketSnapshot / RiskModel numbers: dense Sigma through its Cholesky
factor, cp.abs for costs, margin and limits, cp.maximum over the tier brackets for the maintenance
margin. It is solved with Clarabel at tight tolerances and, on QP instances, cross-checked with PIQP
through cvxpy's ordinary path. fbr is run through ``Rebalancer.solve_z`` on ``prepare()``'s data (the
unrounded optimum). Every instance is strictly convex in z (see ``optcases.random_instance``), so the
optimum is unique and positions must agree: max_j |x_fbr - x_ref| / V <= 1e-5.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections import Counter
from dataclasses import dataclass
from unittest import mock

import cvxpy as cp
import numpy as np
import pytest
from optcases import (
    PIQP_TIGHT,
    Instance,
    RefResult,
    is_conic,
    objective,
    random_instance,
    ref_data,
    solve_reference,
    violations,
)

from optimizer import clarabel_native
from optimizer.clarabel_native import UPDATE_MIN_NNZ
from optimizer.data import ProblemData
from optimizer.prepare import prepare
from optimizer.rebalance import Rebalancer

POSITION_TOL = 1e-5  # of V
INFEASIBLE = ("infeasible", "infeasible_inaccurate")

#: mixed instances (QP and conic, roughly 2:1) and instances forced conic (impact and/or vol cap)
MIXED_SEEDS = tuple(range(70))
CONIC_SEEDS = tuple(range(1000, 1025))


@dataclass(frozen=True)
class Outcome:
    """fbr's and the reference's answers on one instance."""

    inst: Instance
    z: np.ndarray
    fbr_status: str
    V: float
    ref: RefResult


def _instance(seed: int) -> Instance:
    return random_instance(np.random.default_rng(seed), conic=True if seed >= 1000 else None)


def _solve(d: ProblemData, kept: bool) -> tuple[np.ndarray, str]:
    """fbr's z and status; ``kept``: every conic problem on Clarabel's kept, fbr-equilibrated
    solver (optimizer.clarabel_native), whatever its size."""
    real = clarabel_native.NativeClarabel.solve
    with mock.patch.object(clarabel_native, "UPDATE_MIN_NNZ", 0 if kept else UPDATE_MIN_NNZ), \
            mock.patch.object(clarabel_native.NativeClarabel, "solve", autospec=True,
                              side_effect=real) as spy:
        z, _hp, status, _ = Rebalancer().solve_z(d)  # status is the solver's name when solved
    assert spy.called == (kept and status != "PIQP"), "the kept path was (not) used"
    return np.asarray(z), status


@functools.cache
def _outcome(seed: int, kept: bool = False) -> Outcome:
    inst = _instance(seed)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    z, status = _solve(d, kept)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "solution may be inaccurate": checked below
        ref = solve_reference(inst)
    return Outcome(inst, np.asarray(z), status, d.V, ref)


def _check(seed: int, kept: bool = False) -> None:
    out = _outcome(seed, kept)
    if out.ref.status in INFEASIBLE:
        assert out.fbr_status == "infeasible", (
            f"reference says infeasible, fbr solved it with {out.fbr_status}")
        return
    assert out.ref.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE), out.ref.status
    assert out.fbr_status != "infeasible", "fbr says infeasible, the reference solved it"
    assert out.ref.x is not None
    err = float(np.max(np.abs(out.z * out.V - out.ref.x))) / out.V
    assert err <= POSITION_TOL, f"positions differ by {err:.3g} of V (fbr {out.fbr_status})"
    # the objective (DESIGN.md's, in numpy) agrees too
    f_fbr, f_ref = objective(out.inst, out.z * out.V), objective(out.inst, out.ref.x)
    assert f_fbr == pytest.approx(f_ref, rel=1e-7, abs=1e-9)
    # both answers are feasible for the independent numpy re-check (USD; 1e-6 of V slack: SCS, the
    # last resort, serves some conic instances and is a first-order method)
    for who, x in (("fbr", out.z * out.V), ("reference", out.ref.x)):
        bad = {k: v for k, v in violations(out.inst, x).items() if v > 1e-6 * out.V}
        assert not bad, f"{who} breaks {bad}"


@pytest.mark.parametrize("seed", MIXED_SEEDS)
def test_matches_reference_mixed(seed: int) -> None:
    _check(seed)


@pytest.mark.parametrize("seed", CONIC_SEEDS)
def test_matches_reference_conic(seed: int) -> None:
    _check(seed)


@pytest.mark.parametrize("seed", [*CONIC_SEEDS, *(s for s in MIXED_SEEDS if is_conic(_instance(s)))])
def test_matches_reference_on_the_kept_clarabel_path(seed: int) -> None:
    """The conic instances again, each on the kept solver with fbr's own equilibration (the path
    of problems from UPDATE_MIN_NNZ nonzeros, too large to build here by the hundred)."""
    _check(seed, kept=True)


@pytest.mark.parametrize("seed", [s for s in MIXED_SEEDS[::2] if not is_conic(_instance(s))])
def test_reference_second_opinion_on_qps(seed: int) -> None:
    """The reference itself, solved by PIQP through cvxpy's usual chain, agrees with Clarabel."""
    out = _outcome(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        other = solve_reference(out.inst, cp.PIQP, **PIQP_TIGHT)
    if out.ref.x is None:  # an instance infeasible by construction: PIQP must say so too
        assert other.x is None and "infeasible" in other.status, other.status
        return
    assert other.x is not None, other.status
    assert float(np.max(np.abs(other.x - out.ref.x))) / out.V <= 1e-6


def test_instance_set_covers_the_problem() -> None:
    """The random set is worth something: enough solved and infeasible instances, QP and conic,
    every constraint kind binding somewhere, costs and carry both on and off, several contracts per
    asset and assets without contracts, existing positions, both target bases."""
    seeds = MIXED_SEEDS + CONIC_SEEDS
    outs = [_outcome(s) for s in seeds]
    solved = [o for o in outs if o.ref.x is not None]
    assert len(solved) >= 50
    assert sum(o.ref.status in INFEASIBLE for o in outs) >= 3
    assert sum(is_conic(o.inst) for o in solved) >= 20
    assert sum(not is_conic(o.inst) for o in solved) >= 30
    binding = Counter(k for o in solved for k in o.ref.binding)
    for kind in ("margin", "stress", "gross_leverage", "cap", "cluster_band", "vol_cap",
                 "funding_budget", "trade_limit"):
        assert binding[kind] >= 1, f"{kind} never binds: {binding}"
    costs = [o.inst.settings.costs for o in solved]
    assert any(c.trading for c in costs) and any(not c.trading for c in costs)
    assert any(c.carry for c in costs) and any(not c.carry for c in costs)
    assert any(c.impact for c in costs)
    books = [o.inst.book for o in solved]
    assert any(len(b.contracts) > len({c.underlying for c in b.contracts}) for b in books)
    assert any(len({c.underlying for c in b.contracts}) < len(b.assets) for b in books)
    assert any(b.futures for b in books)
    assert {b.targets_base for b in books} == {"nav", "invested"}
    assert any(len(b.assets) >= 10 for b in books) and any(len(b.assets) <= 3 for b in books)
    assert any(o.inst.settings.basis_risk for o in solved)
    assert any(not o.inst.settings.basis_risk for o in solved)
    assert any(any(len(c.tiers.brackets) >= 3 for c in b.contracts) for b in books)


def test_prepare_numbers_match_the_reference_inputs() -> None:
    """prepare()'s base, collateral, positions and carry equal the reference's own valuation."""
    for seed in MIXED_SEEDS[:20]:
        inst = _instance(seed)
        d = prepare(inst.book, inst.market, inst.risk, inst.settings)
        r = ref_data(inst)
        base = d.V
        assert base == pytest.approx(r.V, rel=1e-12)
        assert d.collateral == pytest.approx(r.collateral, rel=1e-12, abs=1e-9)
        np.testing.assert_allclose(d.z0 * d.V, r.x0, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(d.carry, r.carry, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(d.s, r.s, rtol=1e-12)


@pytest.mark.parametrize("seed", [3, 1001])
def test_matches_reference_factor_form_risk(seed: int) -> None:
    inst = random_instance(np.random.default_rng(seed), conic=True if seed >= 1000 else None,
                           factor_form=True)
    assert np.all(inst.risk.idio > 0)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    z, _hp, status, _ = Rebalancer().solve_z(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = solve_reference(inst)
    assert ref.x is not None and status != "infeasible"
    assert float(np.max(np.abs(z * d.V - ref.x))) / d.V <= POSITION_TOL


def test_conic_path_accuracy_on_hard_instances() -> None:
    # seeds found by scanning: mixed generator 195 (vol cap + impact), conic generator 1181 (vol cap)
    errs = []
    for (seed, conic), kept in itertools.product(((195, None), (1181, True)), (False, True)):
        inst = random_instance(np.random.default_rng(seed), conic=conic)
        d = prepare(inst.book, inst.market, inst.risk, inst.settings)
        z, status = _solve(d, kept)
        ref = solve_reference(inst)
        assert ref.x is not None and status == "CLARABEL"
        errs.append(float(np.max(np.abs(z * d.V - ref.x))) / d.V)
    assert max(errs) <= POSITION_TOL, errs


def test_same_data_twice_gives_the_same_answer() -> None:
    inst = _instance(7)
    d = prepare(inst.book, inst.market, inst.risk, inst.settings)
    rb = Rebalancer()
    z1, _, s1, _ = rb.solve_z(d)
    z1 = z1.copy()
    z2, _, s2, _ = rb.solve_z(d)
    assert s1 == s2
    assert np.array_equal(z1, z2)
