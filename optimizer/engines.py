"""Lean re-solve paths: canonicalise once with cvxpy, then per solve only refresh the solver's data
from the Parameter values and call the solver directly.

cvxpy compiles a DPP problem into data that is an affine function of the stacked parameter vector p:
``values = R @ p`` for each sparse matrix (fixed sparsity pattern) and vector of the solver's standard
form. The default ``Problem.solve`` re-runs its reduction chain on every call (about 2 ms whatever the
size); these engines keep the compiled map and the solver object, so a re-solve is a few sparse
mat-vecs, a data update and the solver's own time.

- :class:`PiqpEngine`: the QP path. minimise 1/2 x'Px + q'x s.t. A x = b, G x <= h, solved with PIQP's
  native ``update`` + ``solve`` (no re-setup while the pattern is unchanged).
- :class:`CvxpyDataEngine`: any solver cvxpy supports (Clarabel, SCS), through cvxpy's own solver
  interface (``apply`` + ``solve_via_data`` with its solver cache), skipping the reduction chain.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from cvxpy.reductions.solvers.solver_inverse_data import SolverInverseData
from cvxpy.reductions.solvers.solving_chain import SolvingChain

PARAM_PROB = "param_prob"
#: tighter than PIQP's defaults: the objective is small in weight units and positions must match a
#: reference to 1e-5 of NAV
PIQP_SETTINGS: dict[str, float] = {"eps_abs": 1e-10, "eps_rel": 1e-10, "eps_duality_gap_abs": 1e-10,
                                   "eps_duality_gap_rel": 1e-10}
#: tighter than Clarabel's defaults (1e-8); 1e-10 often ends 'almost solved' on these problems
CLARABEL_SETTINGS: dict[str, float] = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}
CONSTANT_ID = -1


@dataclass(frozen=True)
class RawResult:
    """What a solver returned: ``z`` (None unless a solution is present), cvxpy-style status."""

    z: np.ndarray | None
    status: str
    solver: str
    seconds: float
    iterations: int
    objective: float


OPTIMAL = "optimal"
OPTIMAL_INACCURATE = "optimal_inaccurate"
INFEASIBLE = "infeasible"
UNBOUNDED = "unbounded"
FAILED = "solver_error"

_PIQP_STATUS = {"PIQP_SOLVED": OPTIMAL, "PIQP_PRIMAL_INFEASIBLE": INFEASIBLE,
                "PIQP_DUAL_INFEASIBLE": UNBOUNDED}


@contextmanager
def quiet_bounds() -> Iterator[None]:
    """Silence one known-harmless cvxpy warning: its bound propagation multiplies 0 by an infinite
    variable bound (0 * inf = nan) for B @ z with structural zeros in B. Nothing else is hidden."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="invalid value encountered in matmul",
                                category=RuntimeWarning, module=r"cvxpy\.utilities\.bounds")
        yield


def compile_problem(problem: cp.Problem, solver: str) -> tuple[dict[str, Any], Any, Any]:
    """``problem.get_problem_data(solver)`` under :func:`quiet_bounds`."""
    with quiet_bounds():
        return problem.get_problem_data(solver)


class _ParamVector:
    """Stacks the Parameter values into cvxpy's parameter vector p (Fortran order, constant 1 last)."""

    def __init__(self, prog: Any) -> None:
        self.vec = np.zeros(prog.total_param_size + 1)
        self.slots: list[tuple[cp.Parameter, int, int]] = []
        for pid, col in prog.param_id_to_col.items():
            if pid == CONSTANT_ID:
                self.vec[col] = 1.0
            else:
                self.slots.append((prog.id_to_param[pid], col, prog.param_id_to_size[pid]))

    def __call__(self) -> np.ndarray:
        vec = self.vec
        for param, col, size in self.slots:
            val = param.value
            vec[col:col + size] = np.ravel(val, order="F") if size > 1 else val
        return vec


def _var_offset(prog: Any, var: cp.Variable) -> int:
    try:
        return int(prog.var_id_to_col[var.id])
    except KeyError:  # pragma: no cover - cvxpy replaced the variable
        raise RuntimeError("cvxpy replaced the decision variable during canonicalisation") from None


class PiqpEngine:
    """The QP path through PIQP's native API (see the module docstring)."""

    name = "PIQP"

    def __init__(self, problem: cp.Problem, z: cp.Variable) -> None:
        data, chain, inverse = compile_problem(problem, cp.PIQP)
        self.problem, self.chain, self.inverse = problem, chain, inverse
        prog = data[PARAM_PROB]
        for key in (cp.settings.LOWER_BOUNDS, cp.settings.UPPER_BOUNDS):
            bounds = data.get(key)
            if bounds is not None and np.any(np.isfinite(bounds)):
                raise RuntimeError("variable bounds are not supported by the lean PIQP path")
        self.prog = prog
        self.n = int(prog.x.size)
        self.m_eq = int(prog.cone_dims.zero)
        self.z_slice = slice(_var_offset(prog, z), _var_offset(prog, z) + z.size)
        self.pvec = _ParamVector(prog)
        self._compile_constraints(prog)
        self._compile_objective(prog)
        self.solver: Any = None

    def _compile_constraints(self, prog: Any) -> None:
        red = prog.reduced_A
        red.cache(keep_zeros=False)
        if red.problem_data_index is None:
            raise RuntimeError("degenerate constraint tensor")
        indices, indptr, shape = red.problem_data_index
        n, m = self.n, shape[0]
        self.RA = sp.csr_matrix(red.reduced_mat)
        nnz_a = int(indptr[n])
        self.nnz_a = nnz_a
        self.b_rows = np.asarray(indices[nnz_a:indptr[n + 1]])
        self.m = m
        # A template whose data are positions, to learn where each value lands after the split.
        tmpl = sp.csc_matrix((np.arange(1, nnz_a + 1, dtype=float), indices[:nnz_a], indptr[:n + 1]),
                             shape=(m, n))
        tmpl.sum_duplicates()
        if tmpl.nnz != nnz_a:
            raise RuntimeError("constraint tensor has duplicate entries")
        eq = sp.csc_matrix(tmpl[: self.m_eq, :])
        ineq = sp.csc_matrix(tmpl[self.m_eq:, :])
        self.pos_eq = eq.data.astype(np.int64) - 1
        self.pos_ineq = ineq.data.astype(np.int64) - 1
        self.A, self.G = eq.copy(), ineq.copy()

    def _compile_objective(self, prog: Any) -> None:
        self.Rq = sp.csr_matrix(prog.q)
        redp = prog.reduced_P
        redp.cache(keep_zeros=False)
        n = self.n
        if redp.problem_data_index is None:
            self.RP = None
            self.P = sp.csc_matrix((n, n))
            return
        indices, indptr, _shape = redp.problem_data_index
        self.RP = sp.csr_matrix(redp.reduced_mat)
        self.P = sp.csc_matrix((np.zeros(len(indices)), indices, indptr), shape=(n, n))
        self.P.has_sorted_indices = False
        self.P.sort_indices()
        order = sp.csc_matrix((np.arange(1, len(indices) + 1, dtype=float), indices, indptr),
                              shape=(n, n))
        order.sort_indices()
        self.pos_p = order.data.astype(np.int64) - 1

    def refresh(self) -> tuple[sp.csc_matrix, np.ndarray, float, sp.csc_matrix, np.ndarray,
                               sp.csc_matrix, np.ndarray]:
        """Solver data (P, q, offset, A, b, G, h) for the current Parameter values."""
        p = self.pvec()
        vals = self.RA @ p
        self.A.data[:] = vals[self.pos_eq]
        self.G.data[:] = -vals[self.pos_ineq]
        bfull = np.zeros(self.m)
        bfull[self.b_rows] = vals[self.nnz_a:]
        qfull = self.Rq @ p
        if self.RP is not None:
            self.P.data[:] = (self.RP @ p)[self.pos_p]
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
            self.solver.update(P=P, c=q, A=A, b=b, G=G, h_u=h)
        self.solver.solve()
        res = self.solver.result
        self.offset = offset
        status = _PIQP_STATUS.get(res.info.status.name, FAILED)
        z = np.array(res.x[self.z_slice]) if status == OPTIMAL else None
        return RawResult(z=z, status=status, solver=self.name, seconds=time.perf_counter() - t0,
                         iterations=int(res.info.iter), objective=float(res.info.primal_obj) + offset)

    def unpack(self) -> None:
        """Push the last result into the cvxpy problem (variable values and dual values)."""
        last = self.inverse[-1]
        target = last.inverse_data if isinstance(last, SolverInverseData) else last
        target[cp.settings.OFFSET] = self.offset
        self.problem.unpack_results(self.solver.result, self.chain, self.inverse)


class CvxpyDataEngine:
    """Any cvxpy-supported solver through cvxpy's solver interface, skipping the reduction chain."""

    def __init__(self, problem: cp.Problem, z: cp.Variable, solver: str,
                 options: dict[str, Any] | None = None, *, reuse: bool = False,
                 retry_defaults: bool = False) -> None:
        data, chain, inverse = compile_problem(problem, solver)
        self.problem, self.inverse = problem, inverse
        self.chain: SolvingChain = chain
        self.prog = data[PARAM_PROB]
        self.name = solver
        self.options = dict(options or {})
        # Reusing the solver object (cvxpy's solver cache) makes an answer depend on earlier solves
        # (kept scaling, warm iterates); fbr wants same inputs -> same outputs, so it is off by default.
        self.reuse = reuse
        self.retry_defaults = retry_defaults
        self.cache: dict[str, Any] = {}
        off = _var_offset(self.prog, z)
        self.z_slice = slice(off, off + z.size)
        self.raw: Any = None

    def solve(self) -> RawResult:
        """Apply parameters and solve via the solver interface; when the tight options end
        inaccurate, retry once with the solver's defaults and keep an accurate answer if it gives one.
        """
        t0 = time.perf_counter()
        data, inv_last = self.chain.solver.apply(self.prog)
        first = self._solve_data(data, inv_last, self.options, t0)
        if first.status != OPTIMAL_INACCURATE or not self.retry_defaults:
            return first
        kept = (self.raw, self.inverse[-1])
        second = self._solve_data(data, inv_last, {}, t0)
        if second.status == OPTIMAL:
            return second
        self.raw, self.inverse[-1] = kept
        return RawResult(first.z, first.status, first.solver, time.perf_counter() - t0,
                         first.iterations, first.objective)

    def _solve_data(self, data: dict[str, Any], inv_last: Any, options: dict[str, Any],
                    t0: float) -> RawResult:
        solver = self.chain.solver
        wrapped = SolverInverseData(inv_last, solver_instance=solver, solver_options=options)
        try:
            raw = solver.solve_via_data(data, self.reuse, False, options,
                                        solver_cache=self.cache if self.reuse else None)
            sol = solver.invert(raw, wrapped)
        except Exception:  # solver crashed: a failure the fallback chain handles
            return RawResult(None, FAILED, self.name, time.perf_counter() - t0, 0, float("nan"))
        self.raw = raw
        self.inverse[-1] = wrapped
        status = str(sol.status)
        if status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and sol.primal_vars:
            x = np.asarray(next(iter(sol.primal_vars.values()))).ravel()
            st = OPTIMAL if status == cp.OPTIMAL else OPTIMAL_INACCURATE
            return RawResult(x[self.z_slice].copy(), st, self.name, time.perf_counter() - t0,
                             int(sol.attr.get(cp.settings.NUM_ITERS, 0) or 0), float(sol.opt_val))
        mapped = {cp.INFEASIBLE: INFEASIBLE, cp.INFEASIBLE_INACCURATE: INFEASIBLE,
                  cp.UNBOUNDED: UNBOUNDED, cp.UNBOUNDED_INACCURATE: UNBOUNDED}.get(status, FAILED)
        return RawResult(None, mapped, self.name, time.perf_counter() - t0, 0, float("nan"))

    def unpack(self) -> None:
        """Push the last result into the cvxpy problem (variable values and dual values)."""
        self.problem.unpack_results(self.raw, self.chain, self.inverse)
