"""Clarabel through its native API with fbr's own equilibration, so one solver object is set up
once and updated per solve while every answer stays a function of that solve's data alone.

Clarabel solves  min 1/2 x'Px + q'x  s.t.  Ax + s = b, s in K.  Its own equilibration scales the
data at setup and keeps that scaling through later data updates, so an updated solver's answer
would depend on the first day's data; a fresh setup per solve (the KKT system's ordering and
symbolic factorisation: about 40 ms at N = 1000) avoids that at a price. Here fbr computes the
scaling itself on every solve (:class:`Equilibrator`), hands Clarabel the scaled data with its
own equilibration off, and updates one solver: the solver keeps only the sparsity pattern's
ordering, which depends on nothing but the pattern (an updated solve equals a fresh one bit for
bit; ``tests/optimizer/test_clarabel_native.py`` checks it).

The scaled problem (D = diag(d) on the variables, E = diag(e) on the rows, c > 0 on the cost):

    min c (1/2 x_s' D P D x_s + q' D x_s)  s.t.  E A D x_s + s_s = E b,  s_s in K,

with x = D x_s, s = s_s / e, the original duals y = e * y_s / c and the objective obj_s / c.
E is uniform within each cone other than the orthants (a second-order, exponential, power or
PSD cone is invariant under a positive multiple, not under a general diagonal scaling), so s_s
is in K exactly when s is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from optimizer.cvxpy_adapter import clarabel_settings

__all__ = [
    "UPDATE_MIN_NNZ",
    "ClarabelPath",
    "Equilibrator",
    "FreshClarabel",
    "KeptSolver",
    "NativeAnswer",
    "NativeClarabel",
    "Scaling",
    "changed_values",
    "clarabel_path",
]


def gather(vals: np.ndarray, pos: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``vals[pos]`` written into ``out`` (positions in range). A new temporary per gather costs
    about as much as the gather itself at tens of thousands of entries (the equilibration makes
    dozens a solve), and ``np.take`` buffers an ``out`` unless told how to treat a position out of
    range: 'clip', which no position here needs."""
    return np.take(vals, pos, out=out, mode="clip")


def bounded_scale(norms: np.ndarray, scale: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The scales after one Ruiz pass as Clarabel takes them: ``scale`` / sqrt(norm), an empty row
    or column (norm 0) left as it is, the result kept within [lo, hi] (Clarabel clips the pass's
    factor to [lo / scale, hi / scale]: the same up to rounding). Written over ``norms``."""
    norms[norms == 0.0] = 1.0
    np.sqrt(norms, out=norms)
    np.divide(scale, norms, out=norms)
    np.clip(norms, lo, hi, out=norms)
    return norms


class SegmentMax:
    """Maximum of ``vals`` per group, for entries whose group ids (``groups``) are fixed; empty
    groups get 0. A group of k <= :attr:`SHORT` entries is read as k gathers of one column each
    (groups of equal size together, an elementwise maximum of the columns); longer groups go
    through one ``np.maximum.reduceat``. Most rows of a conic problem's A hold one or two entries,
    for which a segmented reduction pays a call per segment."""

    #: the longest group read by gathers
    SHORT = 8

    def __init__(self, groups: np.ndarray, size: int) -> None:
        order = np.argsort(groups, kind="stable")
        counts = np.bincount(groups, minlength=size)
        starts = np.cumsum(counts) - counts
        self.size = size
        #: per group size k: the groups' ids and k position arrays (the j-th entry of each group)
        self.short: list[tuple[np.ndarray, list[np.ndarray]]] = []
        for k in range(1, self.SHORT + 1):
            ids = np.flatnonzero(counts == k)
            if ids.size:
                self.short.append((ids, [order[starts[ids] + j] for j in range(k)]))
        #: per group size: two work arrays (the running maximum, the next column)
        self.work = [(np.empty(ids.size), np.empty(ids.size)) for ids, _ in self.short]
        self.long_ids = np.flatnonzero(counts > self.SHORT)
        long_counts = counts[self.long_ids]
        #: each long group's first entry in :attr:`long_pos`
        self.long_starts = np.cumsum(long_counts) - long_counts
        within = np.arange(int(long_counts.sum())) - np.repeat(self.long_starts, long_counts)
        #: the long groups' entries, group after group
        self.long_pos = order[np.repeat(starts[self.long_ids], long_counts) + within]
        self.long_vals = np.empty(self.long_pos.size)

    def __call__(self, vals: np.ndarray) -> np.ndarray:
        out = np.zeros(self.size)
        for (ids, cols), (top, nxt) in zip(self.short, self.work, strict=True):
            gather(vals, cols[0], top)
            for col in cols[1:]:
                np.maximum(top, gather(vals, col, nxt), out=top)
            out[ids] = top
        if self.long_ids.size:
            long_vals = gather(vals, self.long_pos, self.long_vals)
            out[self.long_ids] = np.maximum.reduceat(long_vals, self.long_starts)
        return out


@dataclass(frozen=True)
class Scaling:
    """d (per variable), e (per row), c (cost): see the module docstring."""

    d: np.ndarray
    e: np.ndarray
    c: float


class Equilibrator:
    """Modified Ruiz equilibration of (P, A) as Clarabel (0.7 to 0.11 at least) computes it, for a
    fixed sparsity pattern.

    Each pass takes the infinity norm of every column of the KKT matrix [P A'; A 0] (the upper
    triangle of P read symmetrically), scales variables by 1/sqrt(column norm of [P; A]) and rows
    by 1/sqrt(row norm of A), each factor bounded so that the scale it reaches stays in [lo, hi]
    (:func:`bounded_scale`), then scales the cost by 1/max(|q|_inf, mean column norm of P's upper
    triangle; Clarabel holds P as that triangle and reads these norms one-sided), that factor
    bounded so that c stays in [lo, hi]. After the passes every cone block's row scale is set to
    its mean (``blocks``: ``Compiled.cone_blocks``). ``P`` is the upper triangle. One call at a
    time: the passes share work arrays of A's length.

    The norms are taken of the original data times the scales so far, where Clarabel rescales its
    copy of the data in place: the same scaling up to rounding (``tests/optimizer/
    test_clarabel_native.py`` stops both after k iterations on random problems: the same iterate).
    """

    def __init__(self, P: sp.csc_matrix, A: sp.csc_matrix, blocks: Sequence[tuple[int, int]]) -> None:
        m, n = A.shape
        self.n, self.m = n, m
        self.p_rows = P.indices.astype(np.intp)
        self.p_cols = np.repeat(np.arange(n), np.diff(P.indptr))
        self.a_rows = A.indices.astype(np.intp)
        self.a_cols = np.repeat(np.arange(n), np.diff(A.indptr))
        self.p_by_col, self.p_by_row = SegmentMax(self.p_cols, n), SegmentMax(self.p_rows, n)
        self.a_by_col, self.a_by_row = SegmentMax(self.a_cols, n), SegmentMax(self.a_rows, m)
        #: the rows of the cone blocks and each row's block number (one mean per block)
        self.block_rows = np.concatenate([np.arange(a, z) for a, z in blocks]) if blocks \
            else np.zeros(0, dtype=np.intp)
        self.block_ids = np.repeat(np.arange(len(blocks)), [z - a for a, z in blocks])
        self.block_sizes = np.array([z - a for a, z in blocks], dtype=float)
        #: work arrays for A's scaled values (the absolute values, the column scales gathered)
        self.a_work = (np.empty(A.nnz), np.empty(A.nnz))

    def _a_abs(self, a0: np.ndarray, d: np.ndarray, e: np.ndarray) -> np.ndarray:
        """|e_i A_ij d_j| in the pattern's order, computed as (|A_ij| e_i) d_j, into a work array
        (valid until the next call)."""
        out, cols = self.a_work
        np.multiply(a0, gather(e, self.a_rows, out), out=out)
        np.multiply(out, gather(d, self.a_cols, cols), out=out)
        return out

    def _p_col_norms(self, p_abs: np.ndarray) -> np.ndarray:
        """Column norms of P from its upper triangle (each entry counts for its row too)."""
        norms: np.ndarray = np.maximum(self.p_by_col(p_abs), self.p_by_row(p_abs))
        return norms

    def __call__(self, p_data: np.ndarray, q: np.ndarray, a_data: np.ndarray, passes: int,
                 lo: float, hi: float) -> Scaling:
        """The scaling of the data (P's and A's values in the pattern's order, and q)."""
        d, e, c = np.ones(self.n), np.ones(self.m), 1.0
        p0, a0, q0 = np.abs(p_data), np.abs(a_data), np.abs(q)
        for _ in range(passes):
            p_abs = p0 * d[self.p_rows] * d[self.p_cols] * c
            a_abs = self._a_abs(a0, d, e)
            col = np.maximum(self._p_col_norms(p_abs), self.a_by_col(a_abs))
            e = bounded_scale(self.a_by_row(a_abs), e, lo, hi)
            d = bounded_scale(col, d, lo, hi)
            mean_p = float(self.p_by_col(p0 * d[self.p_rows] * d[self.p_cols] * c).mean())
            q_inf = float(np.max(q0 * d)) * c
            if mean_p != 0.0 and q_inf != 0.0:
                c *= min(max(1.0 / max(q_inf, mean_p), lo / c), hi / c)
        if self.block_rows.size:
            means = np.bincount(self.block_ids, weights=e[self.block_rows]) / self.block_sizes
            e[self.block_rows] = means[self.block_ids]
        return Scaling(d, e, c)


class NativeAnswer:
    """A Clarabel result in the original (unscaled) units, with the fields cvxpy's Clarabel
    interface reads (``status`` as Clarabel names it). x is read at once; the duals z and the
    slacks s (read only when cvxpy unpacks the duals) on first use: each read copies the whole
    vector out of the solver."""

    def __init__(self, raw: Any, sc: Scaling | None) -> None:
        self.raw, self.sc = raw, sc
        self.status = str(raw.status)
        x, obj = np.asarray(raw.x, dtype=float), float(raw.obj_val)
        self.x: np.ndarray = x if sc is None else sc.d * x
        self.obj_val = obj if sc is None else obj / sc.c
        self.iterations = int(raw.iterations)
        self.solve_time = float(raw.solve_time)

    @cached_property
    def z(self) -> np.ndarray:
        """The duals y = e y_s / c."""
        z = np.asarray(self.raw.z, dtype=float)
        return z if self.sc is None else self.sc.e * z / self.sc.c

    @cached_property
    def s(self) -> np.ndarray:
        """The slacks s = s_s / e."""
        s = np.asarray(self.raw.s, dtype=float)
        return s if self.sc is None else s / self.sc.e


def gap_tolerances(options: dict[str, float], c: float) -> dict[str, float]:
    """Clarabel's duality-gap tolerances for a cost fbr scaled by ``c``, so that a pass means the
    gap g of the original objective met ``options``.

    Clarabel measures the gap of the objective it is given, c g, and its relative gap as
    c g / max(1, c |cost|): the absolute tolerances are multiplied by c (c g < c t iff g < t),
    the relative ones by min(c, 1), enough for g / max(1, |cost|) below the tolerance at either
    side of c = 1."""
    defaults = default_gaps()
    out = {}
    for kind in ("", "reduced_"):
        for name, factor in ((f"{kind}tol_gap_abs", c), (f"{kind}tol_gap_rel", min(c, 1.0))):
            out[name] = float(options.get(name, defaults[name])) * factor
    return out


@cache
def default_gaps() -> dict[str, float]:
    """Clarabel's default duality-gap tolerances (full and reduced), read once."""
    defaults = clarabel_settings({})
    return {f"{kind}tol_gap_{which}": float(getattr(defaults, f"{kind}tol_gap_{which}"))
            for kind in ("", "reduced_") for which in ("abs", "rel")}


#: the standard form's nonzeros (A and P's upper triangle) from which :func:`clarabel_path` picks
#: :class:`NativeClarabel`: below it Clarabel's set-up costs less than the fixed numpy cost of
#: fbr's equilibration passes (``benchmarks/solve_speed.py --config conic --profile``: both cost
#: about 0.7 ms at N = 50 assets, about 3,000 nonzeros; at N = 100, 6,000, the set-up 1.5 ms
#: against 1.0 ms; at N = 200, 12,000, 3.4 ms against 1.6 ms)
UPDATE_MIN_NNZ = 5_000


class ClarabelPath(ABC):
    """How one solve's data goes into a Clarabel solver: :meth:`load` returns the solver ready to
    solve and the scaling its answer comes back through; :meth:`solve` runs it. P is the upper
    triangle; the objective is multiplied by ``cost`` and the answer is for that objective."""

    @abstractmethod
    def load(self, P: sp.csc_matrix, q: np.ndarray, A: sp.csc_matrix, b: np.ndarray,
             options: dict[str, float], cost: float) -> tuple[Any, Scaling | None]:
        """(solver, scaling; None: the data went in unscaled) for this solve's data and
        ``options`` (cvxpy's Clarabel options)."""

    def solve(self, P: sp.csc_matrix, q: np.ndarray, A: sp.csc_matrix, b: np.ndarray,
              options: dict[str, float], cost: float = 1.0) -> NativeAnswer:
        """The answer in original units (of the objective times ``cost``)."""
        solver, sc = self.load(P, q, A, b, options, cost)
        return NativeAnswer(solver.solve(), sc)


class FreshClarabel(ClarabelPath):
    """A fresh Clarabel solver per solve, with Clarabel's own equilibration (small problems)."""

    def __init__(self, cones: list[Any]) -> None:
        self.cones = cones
        self.settings: dict[tuple[tuple[str, float], ...], Any] = {}

    def load(self, P: sp.csc_matrix, q: np.ndarray, A: sp.csc_matrix, b: np.ndarray,
             options: dict[str, float], cost: float) -> tuple[Any, None]:
        """A new solver set up on the data (no scaling of fbr's)."""
        import clarabel

        key = tuple(sorted(options.items()))
        settings = self.settings.get(key)
        if settings is None:
            settings = self.settings[key] = clarabel_settings(options)
        if cost != 1.0:  # a copy of P only for a rescaled attempt (the hot path has cost 1)
            P, q = P * cost, q * cost
        return clarabel.DefaultSolver(P, q, A, b, self.cones, settings), None


def clarabel_path(P: sp.csc_matrix, A: sp.csc_matrix, cones: list[Any],
                  blocks: Sequence[tuple[int, int]]) -> ClarabelPath:
    """The kept, fbr-equilibrated solver from :data:`UPDATE_MIN_NNZ` nonzeros, else a fresh
    set-up per solve; either answers from the solve's data alone."""
    if A.nnz + P.nnz >= UPDATE_MIN_NNZ:
        return NativeClarabel(P, A, cones, blocks)
    return FreshClarabel(cones)


def changed_values(name: str, held: np.ndarray, new: np.ndarray) -> dict[str, Any]:
    """The keyword for Clarabel's ``update`` that turns a matrix's values ``held`` into ``new``:
    none when equal bit for bit, the changed entries (positions, values) when they are fewer than
    a third, else every value (Clarabel reads a changed entry about 2.5 times slower than one of a
    full vector: at N = 1000, 0.15 ms + 60 ns per changed entry against 24 ns per value). Python
    lists: Clarabel reads a list faster than a numpy array."""
    changed = np.flatnonzero(held.view(np.int64) != new.view(np.int64))
    if changed.size == 0:
        return {}
    if 3 * changed.size < new.size:
        return {name: (changed.tolist(), new[changed].tolist())}
    return {name: new.tolist()}


@dataclass
class KeptSolver:
    """A set-up Clarabel solver, its settings and the scaled values of P and A it holds."""

    settings: Any
    solver: Any
    p_data: np.ndarray
    a_data: np.ndarray

    def update(self, p_data: np.ndarray, q: np.ndarray, a_data: np.ndarray,
               b: np.ndarray) -> None:
        """Hold the new data: P and A's changed values only, q, b and the settings in full."""
        self.solver.update(q=q.tolist(), b=b.tolist(), settings=self.settings,
                           **changed_values("P", self.p_data, p_data),
                           **changed_values("A", self.a_data, a_data))
        self.p_data, self.a_data = p_data, a_data


class NativeClarabel(ClarabelPath):
    """One Clarabel solver per options, set up on first use and updated afterwards, fed data
    scaled by :class:`Equilibrator` (Clarabel's own equilibration off; the equilibration passes
    and limits are read from the options' settings). An update sends only the values of P and A
    that differ from the ones the solver holds, so the solver holds exactly this solve's data."""

    def __init__(self, P: sp.csc_matrix, A: sp.csc_matrix, cones: list[Any],
                 blocks: Sequence[tuple[int, int]]) -> None:
        self.P, self.A, self.cones = P.copy(), A.copy(), cones
        self.equilibrator = Equilibrator(P, A, blocks)
        #: the kept solver per options, once set up
        self.solvers: dict[tuple[tuple[str, float], ...], KeptSolver] = {}
        #: solver set-ups so far (one per options while Clarabel allows data updates)
        self.setups = 0

    def _settings(self, options: dict[str, float]) -> Any:
        """The kept solver's settings for ``options``, else new ones."""
        kept = self.solvers.get(tuple(sorted(options.items())))
        return kept.settings if kept is not None else clarabel_settings(options)

    def _scaled(self, P: sp.csc_matrix, q: np.ndarray, A: sp.csc_matrix, b: np.ndarray,
                sc: Scaling) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The scaled values of P and A (in the pattern's order), q and b."""
        eq = self.equilibrator
        return (P.data * sc.d[eq.p_rows] * sc.d[eq.p_cols] * sc.c, q * sc.d * sc.c,
                A.data * sc.e[eq.a_rows] * sc.d[eq.a_cols], b * sc.e)

    def equilibrate(self, P: sp.csc_matrix, q: np.ndarray, A: sp.csc_matrix,
                    options: dict[str, float]) -> Scaling:
        """fbr's scaling of this solve's data, with the options' passes and limits."""
        settings = self._settings(options)
        return self.equilibrator(P.data, q, A.data, int(settings.equilibrate_max_iter),
                                 float(settings.equilibrate_min_scaling),
                                 float(settings.equilibrate_max_scaling))

    def load_scaled(self, P: sp.csc_matrix, q: np.ndarray, A: sp.csc_matrix, b: np.ndarray,
                    options: dict[str, float], sc: Scaling, cost: float) -> Any:
        """The options' solver holding the data scaled by ``sc`` (the cost by c x cost) and the
        gap tolerances for it: set up on first use, updated afterwards."""
        import clarabel

        key = tuple(sorted(options.items()))
        kept = self.solvers.get(key)
        settings = kept.settings if kept is not None else clarabel_settings(options)
        p_data, qs, a_data, bs = self._scaled(P, q, A, b, Scaling(sc.d, sc.e, sc.c * cost))
        for name, value in gap_tolerances(options, sc.c).items():  # options: objective x cost
            setattr(settings, name, value)
        if kept is not None:
            try:
                kept.update(p_data, qs, a_data, bs)
            except BaseException:  # what the solver holds is unknown now: set up afresh next time
                del self.solvers[key]
                raise
            return kept.solver
        settings.equilibrate_enable = False
        self.P.data[:], self.A.data[:] = p_data, a_data
        solver = clarabel.DefaultSolver(self.P, qs, self.A, bs, self.cones, settings)
        self.setups += 1
        if solver.is_data_update_allowed():
            self.solvers[key] = KeptSolver(settings, solver, p_data, a_data)
        return solver

    def load(self, P: sp.csc_matrix, q: np.ndarray, A: sp.csc_matrix, b: np.ndarray,
             options: dict[str, float], cost: float) -> tuple[Any, Scaling]:
        """:meth:`equilibrate`, then :meth:`load_scaled`; the answer comes back through the
        scaling without the cost (it is the answer of the objective times cost)."""
        sc = self.equilibrate(P, q, A, options)
        return self.load_scaled(P, q, A, b, options, sc, cost), sc
