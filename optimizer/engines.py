"""Lean re-solve paths: canonicalise once with cvxpy, then per solve only refresh the solver's data
from the Parameter values and call the solver directly.

cvxpy compiles a DPP problem into data that is an affine function of the stacked parameter vector p:
``values = R @ p`` for each sparse matrix (fixed sparsity pattern) and vector of the solver's standard
form. The default ``Problem.solve`` re-runs its reduction chain on every call (about 2 ms whatever the
size); these engines keep the compiled map and the solver object, so a re-solve is a few sparse
mat-vecs, a data update and the solver's own time. Every use of cvxpy's internals goes through
optimizer.cvxpy_adapter.

- :class:`PiqpEngine`: the QP path. minimise 1/2 x'Px + q'x s.t. A x = b, G x <= h, solved with PIQP's
  native ``update`` + ``solve`` (no re-setup while the pattern is unchanged).
- :class:`ClarabelEngine`: the conic path straight into Clarabel's native API (a large problem's
  data scaled by fbr per solve into one updated solver, a small one set up fresh: an answer
  never depends on earlier solves).
- :class:`CvxpyDataEngine`: any solver cvxpy supports (SCS, or Clarabel when the lean path cannot
  take the problem), through cvxpy's own solver interface, skipping the reduction chain.

Crashes are loud: an exception inside an engine is never turned into a plain failure status. It
propagates to the solver chain (optimizer.problem.HedgeProblem.solve), which records its text in
the outcome's ``tried`` list (:func:`error_status`) before it moves on; an engine's own retry after
an exception (Clarabel's next attempt) records the text in :attr:`RawResult.errors`. With
:data:`STRICT_ENV` set (the test suite sets it) every such exception is re-raised instead.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from optimizer.clarabel_native import NativeAnswer, clarabel_path
from optimizer.cvxpy_adapter import (
    Compiled,
    CompiledMap,
    clarabel_status,
    compile_problem,
    quiet_bounds,
    scale_duals,
    solution_status,
)
from optimizer.native_output import stdout_to_stderr

__all__ = ["CLARABEL_SETTINGS", "FAILED", "INFEASIBLE", "OPTIMAL", "OPTIMAL_INACCURATE",
           "PIQP_SETTINGS", "STRICT_ENV", "UNBOUNDED", "ClarabelEngine", "CvxpyDataEngine", "Engine",
           "PiqpEngine", "RawResult", "error_status", "quiet_bounds", "strict_solvers"]

#: tighter than PIQP's defaults: the objective is small in weight units and positions must match a
#: reference to 1e-5 of NAV
PIQP_SETTINGS: dict[str, float] = {"eps_abs": 1e-10, "eps_rel": 1e-10, "eps_duality_gap_abs": 1e-10,
                                   "eps_duality_gap_rel": 1e-10}
#: What a conic answer must meet to be optimal: Clarabel's default duality gap (1e-8 absolute and
#: relative) and a primal/dual residual of 1e-7 (10x Clarabel's default full test, 1000x tighter
#: than its default 'almost solved' test), in Clarabel's own (scaled) measures.
CLARABEL_ACCEPT: dict[str, float] = {"tol_gap_abs": 1e-8, "tol_gap_rel": 1e-8, "tol_feas": 1e-7,
                                     "tol_ktratio": 1e-6}
#: The first attempt: a duality gap tighter than Clarabel's default (the error in z grows with the
#: gap: at 1e-8 it reaches 5e-6 of NAV on 107 random conic books and 1.1e-5 on the hardest one
#: found, against a 1e-5 bar; at 1e-9 it stays within 3.4e-6), feasibility at Clarabel's default,
#: and Clarabel's *reduced* tolerances (its test of a solve that stalls short of the full ones:
#: 'almost solved') at :data:`CLARABEL_ACCEPT`. Squeezing the gap often stalls with the residual
#: just above 1e-8 (1e-8 .. 5e-7 seen); such an 'almost solved' answer meets CLARABEL_ACCEPT and is
#: optimal; a stall short of that is a failure, and :class:`ClarabelEngine` tries again
#: (:data:`CLARABEL_ATTEMPTS`).
CLARABEL_SETTINGS: dict[str, float] = {
    "tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9,
    **{f"reduced_{key}": val for key, val in CLARABEL_ACCEPT.items()}}
#: a rescue attempt of CLARABEL_ATTEMPTS multiplies the objective by this (ClarabelEngine.solve)
RESCALE = 100.0
#: the scale of the last rescue attempt: the objective divided by its largest coefficient
#: (:func:`unit_scale`), resolved per solve. A large book under a strong trade aversion has cost
#: coefficients of 1e4..1e5 (weight units); Clarabel can stall on such a problem at every other
#: attempt and solve it in under 20 iterations brought to unit size.
TO_UNIT = "to unit size"
#: a more careful interior-point path, added to the tight settings in a rescue attempt: more
#: equilibration passes (Clarabel's default is 10) and shorter steps (its default fraction to the
#: cone boundary is 0.99), the usual cures of a solve that stalls on a badly scaled problem
CAREFUL: dict[str, float] = {"equilibrate_max_iter": 50, "max_step_fraction": 0.95}
#: the tight settings on the careful path
CAREFUL_SETTINGS: dict[str, float] = {**CLARABEL_SETTINGS, **CAREFUL}
#: the attempts of one conic solve, in order, as (options, objective scale): the tight settings;
#: Clarabel's defaults (a different path that often solves where the tight one stalls); then,
#: when neither was optimal or proved infeasibility, the rescue attempts: the tight settings on
#: the careful path (:data:`CAREFUL`), the tight settings with the objective multiplied by
#: :data:`RESCALE`, and the tight settings with the objective brought to unit size
#: (:data:`TO_UNIT`; Clarabel's progress test depends on the objective's scale, the minimiser
#: does not). An inaccurate answer of the first two is served only when no rescue attempt is
#: optimal (a random conic book whose defaults ended 'almost solved' outside CLARABEL_ACCEPT was
#: solved to the tight tolerances by the careful path and at unit size).
CLARABEL_ATTEMPTS: tuple[tuple[dict[str, float], float | str], ...] = (
    (CLARABEL_SETTINGS, 1.0), ({}, 1.0), (CAREFUL_SETTINGS, 1.0),
    (CLARABEL_SETTINGS, RESCALE), (CLARABEL_SETTINGS, TO_UNIT))
#: environment variable: when set (not "" or "0"), an exception inside an engine is re-raised
#: instead of being recorded and answered by a retry or the next solver (the test suite sets it)
STRICT_ENV = "FBR_STRICT_SOLVERS"


def unit_scale(P: sp.csc_matrix, q: np.ndarray) -> float:
    """1 / max(max |P_ij|, max |q_i|): the factor that brings the objective 1/2 x'Px + q'x to
    largest coefficient 1 (1.0 for an objective with no nonzero coefficient)."""
    largest = max(float(np.abs(P.data).max(initial=0.0)), float(np.abs(q).max(initial=0.0)))
    return 1.0 / largest if largest > 0.0 else 1.0


def strict_solvers() -> bool:
    """True when :data:`STRICT_ENV` asks for engine exceptions to be re-raised."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def almost_is_accepted(options: dict[str, float]) -> bool:
    """True when Clarabel's 'almost solved' under ``options`` meets :data:`CLARABEL_ACCEPT`: every
    reduced tolerance set, at or below its accepted value (see :data:`CLARABEL_SETTINGS`)."""
    return all(options.get(f"reduced_{key}", math.inf) <= val
               for key, val in CLARABEL_ACCEPT.items())


def error_status(exc: BaseException) -> str:
    """The ``tried`` status of a solver that raised: ``error: <type>: <message>``."""
    return f"error: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class RawResult:
    """What a solver returned: ``z`` (None unless a solution is present), cvxpy-style status.

    ``x`` is the solver's whole primal vector (None unless a solution is present), for callers
    that read variables other than z (a multi-period plan's later steps).
    ``errors``: :func:`error_status` texts of exceptions the engine recovered from by a retry of
    its own (``tried`` lists them ahead of this status); ``attempts``: the solves run for it.
    """

    z: np.ndarray | None
    status: str
    solver: str
    seconds: float
    iterations: int
    objective: float
    x: np.ndarray | None = None
    errors: tuple[str, ...] = ()
    attempts: int = 1


OPTIMAL = "optimal"
OPTIMAL_INACCURATE = "optimal_inaccurate"
INFEASIBLE = "infeasible"
UNBOUNDED = "unbounded"
FAILED = "solver_error"

_PIQP_STATUS = {"PIQP_SOLVED": OPTIMAL, "PIQP_PRIMAL_INFEASIBLE": INFEASIBLE,
                "PIQP_DUAL_INFEASIBLE": UNBOUNDED}
#: cvxpy's status strings -> the engines' (those with no solution map to FAILED)
_CVXPY_STATUS = {cp.OPTIMAL: OPTIMAL, cp.OPTIMAL_INACCURATE: OPTIMAL_INACCURATE,
                 cp.INFEASIBLE: INFEASIBLE, cp.INFEASIBLE_INACCURATE: INFEASIBLE,
                 cp.UNBOUNDED: UNBOUNDED, cp.UNBOUNDED_INACCURATE: UNBOUNDED}


def _write(target: np.ndarray, values: np.ndarray) -> bool:
    """Copy ``values`` into ``target`` in place; True when anything changed."""
    if np.array_equal(target, values):
        return False
    target[:] = values
    return True


class PiqpEngine:
    """The QP path through PIQP's native API (see the module docstring)."""

    name = "PIQP"

    def __init__(self, problem: cp.Problem, z: cp.Variable) -> None:
        self.compiled: Compiled = compile_problem(problem, cp.PIQP)
        self.compiled.check_no_bounds()
        self.map = CompiledMap(self.compiled.prog)
        self.n = self.map.n
        self.m_eq = self.compiled.m_eq
        self.z_slice = self.compiled.var_slice(z)
        self.A, self.pos_eq = self.map.rows(0, self.m_eq)
        self.G, self.pos_ineq = self.map.rows(self.m_eq, self.map.m)
        self.P, self.pos_p = self.map.p_matrix(upper=False)
        self.solver: Any = None
        self.offset = 0.0

    def var_slice(self, var: cp.Variable) -> slice:
        """Where ``var`` sits in the primal vector ``RawResult.x``."""
        return self.compiled.var_slice(var)

    def refresh(self) -> tuple[sp.csc_matrix, np.ndarray, float, sp.csc_matrix, np.ndarray,
                               sp.csc_matrix, np.ndarray]:
        """Solver data (P, q, offset, A, b, G, h) for the current Parameter values.

        ``self.changed`` records which matrices differ from the previous refresh, so the solver
        update can skip the unchanged ones (the risk model and tiers rarely change day to day).
        """
        vals, bfull, qfull, pvals = self.map.values()
        changed: dict[str, bool] = {}
        changed["A"] = _write(self.A.data, vals[self.pos_eq])
        changed["G"] = _write(self.G.data, -vals[self.pos_ineq])
        changed["P"] = pvals is not None and _write(self.P.data, pvals[self.pos_p])
        self.changed = changed
        return (self.P, qfull[: self.n], float(qfull[self.n]), self.A, -bfull[: self.m_eq],
                self.G, bfull[self.m_eq:])

    def solve(self) -> RawResult:
        """Refresh the data, update (or set up) PIQP, solve; z in weight units."""
        import piqp

        t0 = time.perf_counter()
        P, q, offset, A, b, G, h = self.refresh()
        if self.solver is None:
            self.solver = piqp.SparseSolver()
            self.solver.settings.verbose = False
            for key, val in PIQP_SETTINGS.items():
                setattr(self.solver.settings, key, val)
            self.solver.setup(P=P, c=q, A=A, b=b, G=G, h_u=h)
        else:
            mats = {k: m for k, m in (("P", P), ("A", A), ("G", G)) if self.changed[k]}
            self.solver.update(c=q, b=b, h_u=h, **mats)
        self.solver.solve()
        res = self.solver.result
        self.offset = offset
        status = _PIQP_STATUS.get(res.info.status.name, FAILED)
        x = np.array(res.x) if status == OPTIMAL else None
        z = x[self.z_slice].copy() if x is not None else None
        return RawResult(z=z, status=status, solver=self.name, seconds=time.perf_counter() - t0,
                         iterations=int(res.info.iter), objective=float(res.info.primal_obj) + offset,
                         x=x)

    def unpack(self) -> None:
        """Push the last result into the cvxpy problem (variable values and dual values)."""
        self.compiled.set_offset(self.offset)
        self.compiled.unpack(self.solver.result)


class CvxpyDataEngine:
    """Any cvxpy-supported solver through cvxpy's solver interface, skipping the reduction chain.

    Every answer comes from one cold solve with ``options`` (no solver object kept: kept scaling
    and warm iterates would make an answer depend on earlier solves), so the same inputs give the
    same outputs.
    """

    def __init__(self, problem: cp.Problem, z: cp.Variable, solver: str,
                 options: dict[str, Any] | None = None) -> None:
        self.compiled: Compiled = compile_problem(problem, solver)
        self.name = solver
        self.options = dict(options or {})
        self.z_slice = self.compiled.var_slice(z)
        self.raw: Any = None
        self.inv_last: Any = None
        self.data: dict[str, Any] = {}

    def var_slice(self, var: cp.Variable) -> slice:
        """Where ``var`` sits in the primal vector ``RawResult.x``."""
        return self.compiled.var_slice(var)

    def solve(self) -> RawResult:
        """Refresh the data and solve once with ``self.options``; exceptions propagate."""
        t0 = time.perf_counter()
        self._prepare()
        return self._attempt(t0)

    def _prepare(self) -> None:
        """The solver's data for the current Parameter values (``self.data``, ``self.inv_last``)."""
        self.data, self.inv_last = self.compiled.apply()

    def _attempt(self, t0: float) -> RawResult:
        """One solve through cvxpy's interface; exceptions propagate."""
        with stdout_to_stderr():  # SCS prints from C to stdout whatever its verbosity
            raw = self.compiled.solve_via_data(self.data, self.options)
        sol = self.compiled.invert(raw, self.inv_last, self.options)
        self.raw = raw
        status, x, iters, objective = solution_status(sol)
        return self._result(status, x, iters, objective, t0)

    def _result(self, cvx_status: str, x: np.ndarray | None, iters: int, objective: float,
                t0: float) -> RawResult:
        """A RawResult from cvxpy's status string and the primal vector."""
        st = _CVXPY_STATUS.get(cvx_status, FAILED)
        if st in (OPTIMAL, OPTIMAL_INACCURATE) and x is not None:
            return RawResult(x[self.z_slice].copy(), st, self.name, time.perf_counter() - t0,
                             iters, objective, x.copy())
        st = st if st in (INFEASIBLE, UNBOUNDED) else FAILED
        return RawResult(None, st, self.name, time.perf_counter() - t0, 0, float("nan"))

    def unpack(self) -> None:
        """Push the last result into the cvxpy problem (variable values and dual values)."""
        self.compiled.unpack_via(self.raw, self.inv_last, self.options)


class ClarabelEngine(CvxpyDataEngine):
    """The conic path straight into Clarabel's native API.

    The compiled map gives A, b, q and the upper triangle of P; the cones are built once. A large
    problem's attempt equilibrates the data itself and updates one Clarabel solver per attempt
    options (:class:`optimizer.clarabel_native.NativeClarabel`: no set-up per solve, and no answer
    that depends on earlier solves, as Clarabel's own kept equilibration would make it); a small
    one sets up a fresh solver (:func:`optimizer.clarabel_native.clarabel_path`). Status, x and
    objective are read from the answer in original units; cvxpy's inverse chain runs only in
    :meth:`unpack` (dual values, spot trades).
    """

    def __init__(self, problem: cp.Problem, z: cp.Variable, options: dict[str, Any]) -> None:
        super().__init__(problem, z, cp.CLARABEL, options)
        self.data, self.inv_last = self.compiled.apply()
        self.compiled.check_no_bounds(self.data)
        self.map = CompiledMap(self.compiled.prog)
        self.A, self.pos_a = self.map.rows(0, self.map.m)
        self.P, self.pos_p = self.map.p_matrix(upper=True)
        self.cones = self.compiled.clarabel_cones()
        self.q = np.zeros(self.map.n)
        self.b = np.zeros(self.map.m)
        self.offset = 0.0
        self.native = clarabel_path(self.P, self.A, self.cones, self.compiled.cone_blocks())
        #: the options and the objective's scale of the attempt being run (then of the one served)
        self.attempt_options: dict[str, float] = dict(options)
        self.scale = 1.0

    def _prepare(self) -> None:
        vals, bfull, qfull, pvals = self.map.values()
        self.A.data[:] = -vals[self.pos_a]
        if pvals is not None:
            self.P.data[:] = pvals[self.pos_p]
        self.q, self.b = qfull[: self.map.n], bfull
        self.offset = float(qfull[self.map.n])

    def _call(self) -> NativeAnswer:
        """A Clarabel solve of the current data, objective times ``self.scale``, with
        :attr:`attempt_options` (answer in the original units)."""
        return self.native.solve(self.P, self.q, self.A, self.b, self.attempt_options, self.scale)

    def _attempt(self, t0: float) -> RawResult:
        raw = self.raw = self._call()
        status = clarabel_status(raw)
        if status == cp.OPTIMAL_INACCURATE and almost_is_accepted(self.attempt_options):
            status = cp.OPTIMAL
        if status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            x = np.asarray(raw.x, dtype=float)
            objective = raw.obj_val / self.scale + self.offset
            return self._result(status, x, raw.iterations, objective, t0)
        return self._result(status, None, 0, float("nan"), t0)

    def solve(self) -> RawResult:
        """Run :data:`CLARABEL_ATTEMPTS` (with this engine's options in place of the tight
        settings) until one is optimal or proves infeasibility; else serve the first inaccurate
        answer, else the first failure. The objective is reported unscaled, and :meth:`unpack`
        divides the duals back. Exceptions of attempts are recorded in the result's ``errors``
        (re-raised in strict mode); when every attempt raised, the first exception propagates."""
        t0 = time.perf_counter()
        self._prepare()
        errors: list[str] = []
        crash: Exception | None = None
        kept: tuple[RawResult, Any, dict[str, float], float] | None = None
        for tries, (options, scale) in enumerate(self._attempts(), start=1):
            self.attempt_options, self.scale = options, scale
            try:
                res = self._attempt(t0)
            except Exception as exc:
                if strict_solvers():
                    raise
                crash = crash or exc
                errors.append(error_status(exc))
                continue
            if res.status in (OPTIMAL, INFEASIBLE, UNBOUNDED):
                return replace(res, errors=tuple(errors), attempts=tries)
            if kept is None or (kept[0].status == FAILED and res.status == OPTIMAL_INACCURATE):
                kept = (res, self.raw, options, scale)
        if kept is None:
            assert crash is not None
            raise crash
        res, self.raw, self.attempt_options, self.scale = kept
        return replace(res, seconds=time.perf_counter() - t0, errors=tuple(errors), attempts=tries)

    def _attempts(self) -> Iterator[tuple[dict[str, float], float]]:
        """:data:`CLARABEL_ATTEMPTS` with this engine's options in place of CLARABEL_SETTINGS
        (the careful attempt: this engine's options on the careful path) and :data:`TO_UNIT`
        resolved on this solve's data (:meth:`_prepare` first), one at a time: a solve served
        by its first attempt reads nothing for the later ones."""
        for opts, scale in CLARABEL_ATTEMPTS:
            yield (self.options if opts is CLARABEL_SETTINGS
                   else {**self.options, **CAREFUL} if opts is CAREFUL_SETTINGS
                   else opts,
                   unit_scale(self.P, self.q) if scale == TO_UNIT else float(scale))

    def unpack(self) -> None:
        """As the base class (with the served attempt's options and offset); duals of a rescaled
        solve are divided back by the scale."""
        self.compiled.unpack_via(self.raw, self.inv_last, self.attempt_options, self.offset)
        if self.scale != 1.0:
            scale_duals(self.compiled.problem, 1.0 / self.scale)


#: any of the engines
Engine = PiqpEngine | CvxpyDataEngine
