"""The one module of fbr that touches cvxpy's internals.

fbr builds its problems with cvxpy's public modelling API (Variables, Parameters, atoms,
``Problem``, ``is_dpp``, ``solve``). Its lean re-solve engines (optimizer.engines) also need what
cvxpy keeps behind that API, and every such use sits here:

- compiling a problem to a solver's standard form (``Problem.get_problem_data``) and the compiled
  ``ParamConeProg`` inside it: the parameter vector layout (``param_id_to_col``), the affine maps
  from parameters to data (``reduced_A`` / ``reduced_P`` / ``q`` and their ``problem_data_index``),
  variable offsets (``var_id_to_col``) and cone dimensions (``cone_dims``);
- cvxpy's solver interfaces (``apply``, ``solve_via_data``, ``invert``, ``parse_solver_opts``), the
  Clarabel cone list (``dims_to_solver_cones``), ``SolverInverseData`` and the reduction chain's
  ``unpack_results``;
- Parameter value writes without cvxpy's per-assignment validation (:func:`assign`) and dual value
  writes (:func:`scale_duals`).

These names are not part of cvxpy's public API and move between releases, so the module checks the
installed cvxpy against the range it was written and tested for when it is imported
(:func:`check_version`) and refuses any other version with an error naming both and the fix.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

#: the cvxpy releases this module was written and tested for: MIN_VERSION <= v < MAX_VERSION
MIN_VERSION: tuple[int, int] = (1, 9)
MAX_VERSION: tuple[int, int] = (1, 10)
#: cvxpy's column of the constant term in the parameter vector
CONSTANT_ID = -1


class CvxpyVersionError(ImportError):
    """The installed cvxpy is outside the range optimizer.cvxpy_adapter was written for."""


def _parse(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '1.9.3' or '1.10.0rc1'."""
    m = re.match(r"\s*(\d+)\.(\d+)", version)
    if m is None:
        raise CvxpyVersionError(f"cannot read the cvxpy version {version!r}")
    return int(m.group(1)), int(m.group(2))


def supported_range() -> str:
    """The supported cvxpy range as a pip requirement, e.g. ``cvxpy>=1.9,<1.10``."""
    return (f"cvxpy>={MIN_VERSION[0]}.{MIN_VERSION[1]},<{MAX_VERSION[0]}.{MAX_VERSION[1]}")


def check_version(version: str) -> None:
    """Raise :class:`CvxpyVersionError` unless ``version`` is within [MIN_VERSION, MAX_VERSION)."""
    v = _parse(version)
    if not MIN_VERSION <= v < MAX_VERSION:
        raise CvxpyVersionError(
            f"fbr's lean solver engines use cvxpy internals (optimizer/cvxpy_adapter.py) written for "
            f"{supported_range()}, but cvxpy {version} is installed. Fix: pip install "
            f"'{supported_range()}', or port optimizer/cvxpy_adapter.py to cvxpy {version} and "
            f"widen its MIN_VERSION/MAX_VERSION.")


check_version(cp.__version__)

# imported after the version check, so an unsupported cvxpy fails with the message above
from cvxpy.reductions.solvers.conic_solvers.clarabel_conif import (  # noqa: E402
    CLARABEL,
    dims_to_solver_cones,
)
from cvxpy.reductions.solvers.solver_inverse_data import SolverInverseData  # noqa: E402
from cvxpy.reductions.solvers.solving_chain import SolvingChain  # noqa: E402

#: cvxpy's key for the problem data's compiled parametrised program
PARAM_PROB = "param_prob"
OFFSET = cp.settings.OFFSET
NUM_ITERS = cp.settings.NUM_ITERS
#: Clarabel's status names -> cvxpy's status strings (cvxpy's own map for Clarabel)
CLARABEL_STATUS: dict[str, str] = dict(CLARABEL.STATUS_MAP)


# ----------------------------------------------------------------------------------------------
# Parameter and dual values
# ----------------------------------------------------------------------------------------------
def assign(param: cp.Parameter, value: np.ndarray | float) -> None:
    """Set a Parameter's value without cvxpy's per-assignment validation (about 18 us each, the
    largest fixed cost of a small re-solve). Shapes are still checked here; finiteness and signs are
    checked once in optimizer.prepare.prepare, and non-negative Parameters are checked below.
    """
    arr = np.asarray(value, dtype=float)
    if arr.shape != param.shape:
        raise ValueError(f"parameter {param.name()}: shape {arr.shape}, expected {param.shape}")
    if param.attributes["nonneg"] and arr.size and float(arr.min()) < 0:
        raise ValueError(f"parameter {param.name()} must be non-negative")
    param.save_value(arr)


def scale_duals(problem: cp.Problem, factor: float) -> None:
    """Multiply every constraint's dual value in ``problem`` by ``factor`` (in place)."""
    for c in problem.constraints:
        if c.dual_value is not None:
            c.save_dual_value(np.asarray(c.dual_value) * factor)


# ----------------------------------------------------------------------------------------------
# Compilation
# ----------------------------------------------------------------------------------------------
@contextmanager
def quiet_bounds() -> Iterator[None]:
    """Silence one known-harmless cvxpy warning: its bound propagation multiplies 0 by an infinite
    variable bound (0 * inf = nan) for B @ z with structural zeros in B. Nothing else is hidden."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="invalid value encountered in matmul",
                                category=RuntimeWarning, module=r"cvxpy\.utilities\.bounds")
        yield


@dataclass
class Compiled:
    """A problem compiled for one solver: cvxpy's problem data, solving chain and inverse data, and
    the parametrised program ``prog`` (cvxpy's ParamConeProg / ParamQuadProg)."""

    problem: cp.Problem
    data: dict[str, Any]
    chain: SolvingChain
    inverse: list[Any]
    prog: Any

    @property
    def n(self) -> int:
        """Length of the primal vector x."""
        return int(self.prog.x.size)

    @property
    def rows(self) -> int:
        """Number of constraint rows of the standard form."""
        return int(self.prog.constr_size)

    @property
    def m_eq(self) -> int:
        """Number of equality (zero-cone) rows; they come first."""
        return int(self.prog.cone_dims.zero)

    @property
    def solver(self) -> Any:
        """cvxpy's interface object for the compiled solver (``apply`` / ``solve_via_data``...)."""
        return self.chain.solver

    def var_slice(self, var: cp.Variable) -> slice:
        """Where ``var`` sits in the primal vector x."""
        try:
            off = int(self.prog.var_id_to_col[var.id])
        except KeyError:  # pragma: no cover - cvxpy replaced the variable
            raise RuntimeError("cvxpy replaced the decision variable during canonicalisation") \
                from None
        return slice(off, off + var.size)

    def check_no_bounds(self, data: dict[str, Any] | None = None) -> None:
        """Raise RuntimeError when the standard form (``data``: by default the compiled problem
        data) carries finite variable bounds (the lean paths do not pass them on)."""
        for key in (cp.settings.LOWER_BOUNDS, cp.settings.UPPER_BOUNDS):
            bounds = (self.data if data is None else data).get(key)
            if bounds is not None and np.any(np.isfinite(bounds)):
                raise RuntimeError("variable bounds are not supported by the lean solver paths")

    def clarabel_cones(self) -> list[Any]:
        """Clarabel's cone list for the standard form's cone dimensions."""
        return list(dims_to_solver_cones(self.prog.cone_dims))

    def cone_blocks(self) -> list[tuple[int, int]]:
        """Row ranges [start, stop) of the cones that take one scale factor each (all but the
        zero and nonnegative cones), in Clarabel's order: second-order, PSD triangles,
        exponential, 3-d power, n-d power."""
        dims = self.prog.cone_dims
        sizes = [int(k) for k in dims.soc] + [int(k) * (int(k) + 1) // 2 for k in dims.psd]
        sizes += [3] * int(dims.exp) + [3] * len(dims.p3d) + [len(a) + 1 for a in dims.pnd]
        start = int(dims.zero) + int(dims.nonneg)
        blocks = []
        for size in sizes:
            blocks.append((start, start + size))
            start += size
        return blocks

    # -- cvxpy's solver interface ---------------------------------------------------------------
    def apply(self) -> tuple[dict[str, Any], Any]:
        """The solver interface's data for the current Parameter values, and its inverse data."""
        data, inverse = self.chain.solver.apply(self.prog)
        return dict(data), inverse

    def solve_via_data(self, data: dict[str, Any], options: dict[str, Any]) -> Any:
        """Run the solver on ``data`` through cvxpy's interface, cold (no warm start, no solver
        cache: an answer never depends on earlier solves); the solver's raw result."""
        return self.chain.solver.solve_via_data(data, False, False, options, solver_cache=None)

    def invert(self, raw: Any, inv_last: Any, options: dict[str, Any]) -> Any:
        """cvxpy's Solution of a raw solver result (``inv_last``: the inverse data of :meth:`apply`)."""
        wrapped = SolverInverseData(inv_last, solver_instance=self.chain.solver,
                                    solver_options=options)
        return self.chain.solver.invert(raw, wrapped)

    def set_offset(self, offset: float) -> None:
        """Write the objective's constant into the last inverse data (what unpack reads)."""
        last = self.inverse[-1]
        target = last.inverse_data if isinstance(last, SolverInverseData) else last
        target[OFFSET] = offset

    def unpack(self, raw: Any) -> None:
        """Push a raw solver result into the cvxpy problem (variable values and dual values).

        cvxpy's "Solution may be inaccurate ... Try another solver" warning is not repeated: the
        engines have already tried their chain and report the status themselves
        (``RawResult.status``, the solution's ``status`` and ``tried``)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Solution may be inaccurate",
                                    category=UserWarning)
            self.problem.unpack_results(raw, self.chain, self.inverse)

    def unpack_via(self, raw: Any, inv_last: Any, options: dict[str, Any],
                   offset: float | None = None) -> None:
        """:meth:`unpack` for a result of the solver interface on data from :meth:`apply` whose
        inverse data is ``inv_last`` (with the objective's constant ``offset`` when given)."""
        if offset is not None:
            inv_last[OFFSET] = offset
        self.inverse[-1] = SolverInverseData(inv_last, solver_instance=self.chain.solver,
                                             solver_options=options)
        self.unpack(raw)


def compile_problem(problem: cp.Problem, solver: str) -> Compiled:
    """``problem.get_problem_data(solver)`` under :func:`quiet_bounds`."""
    with quiet_bounds():
        data, chain, inverse = problem.get_problem_data(solver)
    return Compiled(problem, data, chain, inverse, data[PARAM_PROB])


def solution_status(sol: Any) -> tuple[str, np.ndarray | None, int, float]:
    """(cvxpy status, primal vector x or None, iterations, objective) of a cvxpy Solution."""
    status = str(sol.status)
    x = None
    if sol.primal_vars:
        x = np.asarray(next(iter(sol.primal_vars.values())), dtype=float).ravel()
    iters = int(sol.attr.get(NUM_ITERS, 0) or 0)
    return status, x, iters, float(sol.opt_val) if sol.opt_val is not None else float("nan")


# ----------------------------------------------------------------------------------------------
# Clarabel
# ----------------------------------------------------------------------------------------------
def clarabel_settings(options: dict[str, Any]) -> Any:
    """A ``clarabel.DefaultSettings`` as cvxpy's Clarabel interface builds it from ``options``
    (verbose off)."""
    return CLARABEL.parse_solver_opts(False, options)


def clarabel_status(raw: Any) -> str:
    """cvxpy's status string for a raw Clarabel result (cvxpy's own map; unknown: solver_error)."""
    return str(CLARABEL_STATUS.get(str(raw.status), cp.SOLVER_ERROR))


# ----------------------------------------------------------------------------------------------
# The affine parameter -> data map
# ----------------------------------------------------------------------------------------------
class ParamVector:
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


class CompiledMap:
    """The affine map from cvxpy's parameter vector p to a compiled program's data, kept once.

    cvxpy stores, for the constraint matrix with its offset column, ``values = R_A @ p`` on a fixed
    sparsity pattern, and likewise for P and q. Sub-blocks of A (rows) and of P (upper triangle) are
    located once with a template whose data are entry positions, so a refresh is three mat-vecs and
    a few gathers.
    """

    def __init__(self, prog: Any) -> None:
        self.n = int(prog.x.size)
        self.pvec = ParamVector(prog)
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
