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
from dataclasses import dataclass, replace
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
#: Clarabel's second try after a failure multiplies the objective by this (ClarabelEngine.solve)
RESCALE = 100.0


@dataclass(frozen=True)
class RawResult:
    """What a solver returned: ``z`` (None unless a solution is present), cvxpy-style status.

    ``x`` is the solver's whole primal vector (None unless a solution is present), for callers
    that read variables other than z (a multi-period plan's later steps: :func:`var_slice`).
    """

    z: np.ndarray | None
    status: str
    solver: str
    seconds: float
    iterations: int
    objective: float
    x: np.ndarray | None = None


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


def _write(target: np.ndarray, values: np.ndarray) -> bool:
    """Copy ``values`` into ``target`` in place; True when anything changed."""
    if np.array_equal(target, values):
        return False
    target[:] = values
    return True


def var_slice(prog: Any, var: cp.Variable) -> slice:
    """Where ``var`` sits in the primal vector of the compiled program ``prog``."""
    off = _var_offset(prog, var)
    return slice(off, off + var.size)


def _var_offset(prog: Any, var: cp.Variable) -> int:
    try:
        return int(prog.var_id_to_col[var.id])
    except KeyError:  # pragma: no cover - cvxpy replaced the variable
        raise RuntimeError("cvxpy replaced the decision variable during canonicalisation") from None


class CompiledMap:
    """The affine map from cvxpy's parameter vector p to a compiled program's data, kept once.

    cvxpy stores, for the constraint matrix with its offset column, ``values = R_A @ p`` on a fixed
    sparsity pattern, and likewise for P and q. Sub-blocks of A (rows) and of P (upper triangle) are
    located once with a template whose data are entry positions, so a refresh is three mat-vecs and
    a few gathers.
    """

    def __init__(self, prog: Any) -> None:
        self.n = int(prog.x.size)
        self.pvec = _ParamVector(prog)
        red = prog.reduced_A
        red.cache(keep_zeros=False)
        if red.problem_data_index is None:
            raise RuntimeError("degenerate constraint tensor")
        indices, indptr, shape = red.problem_data_index
        n, m = self.n, int(shape[0])
        self.m = m
        self.RA = sp.csr_matrix(red.reduced_mat)
        self.nnz_a = int(indptr[n])
        self.b_rows = np.asarray(indices[self.nnz_a:indptr[n + 1]])
        self.tmpl_a = sp.csc_matrix((np.arange(1, self.nnz_a + 1, dtype=float), indices[:self.nnz_a],
                                     indptr[:n + 1]), shape=(m, n))
        self.tmpl_a.sum_duplicates()
        if self.tmpl_a.nnz != self.nnz_a:
            raise RuntimeError("constraint tensor has duplicate entries")
        self.Rq = sp.csr_matrix(prog.q)
        redp = prog.reduced_P
        redp.cache(keep_zeros=False)
        self.RP: sp.csr_matrix | None = None
        self.tmpl_p = sp.csc_matrix((n, n))
        if redp.problem_data_index is not None:
            p_idx, p_ptr, _ = redp.problem_data_index
            self.RP = sp.csr_matrix(redp.reduced_mat)
            self.tmpl_p = sp.csc_matrix((np.arange(1, len(p_idx) + 1, dtype=float), p_idx, p_ptr),
                                        shape=(n, n))
            self.tmpl_p.sum_duplicates()

    @staticmethod
    def located(tmpl: sp.csc_matrix) -> tuple[sp.csc_matrix, np.ndarray]:
        """A matrix with ``tmpl``'s pattern (values zero) and, per entry, its position in the values."""
        tmpl = sp.csc_matrix(tmpl)
        tmpl.sort_indices()
        pos = tmpl.data.astype(np.int64) - 1
        out = tmpl.copy()
        out.data[:] = 0.0
        return out, pos

    def rows(self, lo: int, hi: int) -> tuple[sp.csc_matrix, np.ndarray]:
        """Rows lo:hi of A, located."""
        return self.located(self.tmpl_a[lo:hi, :])

    def p_matrix(self, upper: bool) -> tuple[sp.csc_matrix, np.ndarray]:
        """P (or its upper triangle), located."""
        return self.located(sp.csc_matrix(sp.triu(self.tmpl_p)) if upper else self.tmpl_p)

    def values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(A values, b (m), q with the offset last (n + 1), P values or None) for the current p."""
        p = self.pvec()
        vals = self.RA @ p
        bfull = np.zeros(self.m)
        bfull[self.b_rows] = vals[self.nnz_a:]
        return vals, bfull, self.Rq @ p, (self.RP @ p if self.RP is not None else None)


def _check_no_bounds(data: dict[str, Any]) -> None:
    for key in (cp.settings.LOWER_BOUNDS, cp.settings.UPPER_BOUNDS):
        bounds = data.get(key)
        if bounds is not None and np.any(np.isfinite(bounds)):
            raise RuntimeError("variable bounds are not supported by the lean solver paths")


class PiqpEngine:
    """The QP path through PIQP's native API (see the module docstring)."""

    name = "PIQP"

    def __init__(self, problem: cp.Problem, z: cp.Variable) -> None:
        data, chain, inverse = compile_problem(problem, cp.PIQP)
        _check_no_bounds(data)
        self.problem, self.chain, self.inverse = problem, chain, inverse
        prog = data[PARAM_PROB]
        self.prog = prog
        self.map = CompiledMap(prog)
        self.n = self.map.n
        self.m_eq = int(prog.cone_dims.zero)
        off = _var_offset(prog, z)
        self.z_slice = slice(off, off + z.size)
        self.A, self.pos_eq = self.map.rows(0, self.m_eq)
        self.G, self.pos_ineq = self.map.rows(self.m_eq, self.map.m)
        self.P, self.pos_p = self.map.p_matrix(upper=False)
        self.solver: Any = None

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
        data, inv_last = self._data()
        first = self._solve_data(data, inv_last, self.options, t0)
        if first.status != OPTIMAL_INACCURATE or not self.retry_defaults:
            return first
        kept = (self.raw, self.inverse[-1])
        second = self._solve_data(data, inv_last, {}, t0)
        if second.status == OPTIMAL:
            return second
        self.raw, self.inverse[-1] = kept
        return RawResult(first.z, first.status, first.solver, time.perf_counter() - t0,
                         first.iterations, first.objective, first.x)

    def _data(self) -> tuple[dict[str, Any], Any]:
        """The solver's data for the current Parameter values, and its inverse data."""
        return self.chain.solver.apply(self.prog)

    def _call(self, data: dict[str, Any], options: dict[str, Any]) -> Any:
        """Run the solver on ``data``; returns its raw result."""
        return self.chain.solver.solve_via_data(data, self.reuse, False, options,
                                                solver_cache=self.cache if self.reuse else None)

    def _solve_data(self, data: dict[str, Any], inv_last: Any, options: dict[str, Any],
                    t0: float) -> RawResult:
        solver = self.chain.solver
        wrapped = SolverInverseData(inv_last, solver_instance=solver, solver_options=options)
        try:
            raw = self._call(data, options)
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
                             int(sol.attr.get(cp.settings.NUM_ITERS, 0) or 0), float(sol.opt_val),
                             x.copy())
        mapped = {cp.INFEASIBLE: INFEASIBLE, cp.INFEASIBLE_INACCURATE: INFEASIBLE,
                  cp.UNBOUNDED: UNBOUNDED, cp.UNBOUNDED_INACCURATE: UNBOUNDED}.get(status, FAILED)
        return RawResult(None, mapped, self.name, time.perf_counter() - t0, 0, float("nan"))

    def unpack(self) -> None:
        """Push the last result into the cvxpy problem (variable values and dual values)."""
        self.problem.unpack_results(self.raw, self.chain, self.inverse)


class ClarabelEngine(CvxpyDataEngine):
    """The conic path straight into Clarabel's native API: the compiled map gives A, b, q and the
    upper triangle of P; the cones are built once. A fresh solver object per solve keeps every answer
    independent of earlier solves (Clarabel's data update keeps state, shifting answers by ~1e-7).
    """

    def __init__(self, problem: cp.Problem, z: cp.Variable, options: dict[str, Any]) -> None:
        super().__init__(problem, z, cp.CLARABEL, options, reuse=False, retry_defaults=True)
        from cvxpy.reductions.solvers.conic_solvers.clarabel_conif import dims_to_solver_cones

        data, self.inv_last = self.chain.solver.apply(self.prog)
        _check_no_bounds(data)
        self.map = CompiledMap(self.prog)
        self.A, self.pos_a = self.map.rows(0, self.map.m)
        self.P, self.pos_p = self.map.p_matrix(upper=True)
        self.cones = dims_to_solver_cones(self.prog.cone_dims)
        self.q = np.zeros(self.map.n)
        self.b = np.zeros(self.map.m)
        #: the factor the objective is multiplied by in the current solve (see :meth:`solve`)
        self.scale = 1.0

    def _data(self) -> tuple[dict[str, Any], Any]:
        vals, bfull, qfull, pvals = self.map.values()
        self.A.data[:] = -vals[self.pos_a]
        if pvals is not None:
            self.P.data[:] = pvals[self.pos_p]
        self.q, self.b = qfull[: self.map.n], bfull
        self.inv_last[cp.settings.OFFSET] = float(qfull[self.map.n])
        return {}, self.inv_last

    def _call(self, data: dict[str, Any], options: dict[str, Any]) -> Any:
        import clarabel

        settings = self.chain.solver.parse_solver_opts(False, options)
        P, q = self.P, self.q
        if self.scale != 1.0:
            P, q = P * self.scale, q * self.scale
        return clarabel.DefaultSolver(P, q, self.A, self.b, self.cones, settings).solve()

    def solve(self) -> RawResult:
        """Solve; when Clarabel fails (e.g. InsufficientProgress after a few iterations, which
        depends on the objective's scale), solve once more with the objective multiplied by
        ``RESCALE`` (the minimiser is the same) before the fallback chain moves on to SCS. The
        objective is reported unscaled, and :meth:`unpack` divides the duals back."""
        self.scale = 1.0
        first = super().solve()
        if first.status != FAILED:
            return first
        self.scale = RESCALE
        second = super().solve()
        if second.status not in (OPTIMAL, OPTIMAL_INACCURATE):
            self.scale = 1.0
            return first
        offset = float(self.inv_last[cp.settings.OFFSET])
        return replace(second, objective=(second.objective - offset) / RESCALE + offset)

    def unpack(self) -> None:
        """As the base class; duals of a rescaled solve are divided back by the scale."""
        super().unpack()
        if self.scale != 1.0:
            for c in self.problem.constraints:
                if c.dual_value is not None:
                    c.save_dual_value(np.asarray(c.dual_value) / self.scale)
