"""Shared variables and expressions of the compiled problem.

Decision variable z (M): target futures notional as a fraction of the base V.
Helper variables: a >= |z| (absolute positions) and u >= |z - z0| (absolute trades); every use of
them has a non-negative coefficient on the side that must stay small, so at the optimum they equal
|z| and |z - z0| wherever it matters.

The trade starts from :meth:`Context.held`: today's positions z0 (a Parameter) in the single-period
problem and in a plan's first step; the previous step's positions z_{h-1} (an expression of the
plan's variables, ``prev``) in a multi-period plan's step h >= 2 (optimizer.planner), so there
u >= |z_h - z_{h-1}| and every trade cost and trade limit prices that step's trade.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from optimizer.cvxpy_adapter import assign
from optimizer.data import ProblemData, Structure


@dataclass
class FactorTrade:
    """The factor exposure the trade adds, F' B z (+ F' (b - q) with the spot leg's trade b - q):
    K values, weight units, with the context's Parameters F' B and F'.

    The tracking variance and the volatility cap both read it (F' e = it + F' s for the cap,
    it + F'(s - w*) for the variance). With the cap on, ``y`` is a variable defined by K rows
    (``rows``), so the dense rows of F' B enter the problem once and the cap's second-order cone
    holds y instead of dense rows (at N = 1000 those dense rows inside the cone stalled
    Clarabel's primal residual near 2e-7, and a second attempt ran on most days); without the cap
    ``y`` is the expression itself and there are no rows (the QP the variance always built).
    """

    y: cp.Expression
    FtB: cp.Parameter
    Ft: cp.Parameter | None
    rows: list[cp.Constraint]

    def update(self, d: ProblemData) -> None:
        """F' B and F' from ``d``."""
        assign(self.FtB, d.FtB)
        if self.Ft is not None:
            assign(self.Ft, d.F.T)


@dataclass
class Context:
    """Variables, common parameters and expressions shared by terms and constraints."""

    structure: Structure
    z: cp.Variable
    a: cp.Variable
    u: cp.Variable
    z0: cp.Parameter
    s_minus_w: cp.Parameter
    s: cp.Parameter
    B: np.ndarray
    params: list[cp.Parameter] = field(default_factory=list)
    #: the positions this step's trade starts from when they are not today's (a plan's step
    #: h >= 2: z_{h-1}, weight units); None: today's positions, the Parameter ``z0``
    prev: cp.Expression | None = None
    #: the factor exposure of the trade (:meth:`factor_trade`), None until first asked for
    factor: FactorTrade | None = None

    @staticmethod
    def create(structure: Structure, prev: cp.Expression | None = None) -> Context:
        """Variables and the common parameters for a problem of this shape; ``prev`` (a plan's
        later step) replaces z0 as the positions the trade starts from (z0 is then left out)."""
        N, M = structure.n_assets, structure.n_contracts
        B = np.frombuffer(structure.exposure, dtype=np.int8).reshape(N, M).astype(float)
        ctx = Context(structure=structure, z=cp.Variable(M, name="z"), a=cp.Variable(M, name="a"),
                      u=cp.Variable(M, name="u"), z0=cp.Parameter(M, name="z0"),
                      s_minus_w=cp.Parameter(N, name="s_minus_w"), s=cp.Parameter(N, name="s"), B=B,
                      prev=prev)
        if prev is None:
            ctx.params.append(ctx.z0)
        ctx.params.extend([ctx.s_minus_w, ctx.s])
        return ctx

    def held(self) -> cp.Expression:
        """The positions before this step's trade (M, weight units): z0, or ``prev`` when set."""
        return self.z0 if self.prev is None else self.prev

    def param(self, name: str, shape: int | tuple[int, ...] | tuple[()] = (), *,
              nonneg: bool = False) -> cp.Parameter:
        """A new registered Parameter."""
        p = cp.Parameter(shape, name=name, nonneg=nonneg)
        self.params.append(p)
        return p

    def factor_trade(self, spot: cp.Expression | None) -> cp.Expression:
        """F' B z (+ F' ``spot``, the spot leg's trade b - q when on), K values (weight units): a
        variable defined by rows with the vol cap on, else the expression (:class:`FactorTrade`);
        built on the first call, the same afterwards (every caller passes this context's spot
        trade)."""
        if self.factor is None:
            st = self.structure
            FtB = self.param("FtB", (st.n_factors, st.n_contracts))
            rhs = FtB @ self.z
            Ft = None
            if spot is not None:
                Ft = self.param("Ft", (st.n_factors, st.n_assets))
                rhs = rhs + Ft @ spot
            if st.vol_cap:
                y = cp.Variable(st.n_factors, name="factor_trade")
                self.factor = FactorTrade(y, FtB, Ft, [y == rhs])
            else:
                self.factor = FactorTrade(rhs, FtB, Ft, [])
        return self.factor.y

    def definitions(self) -> list[cp.Constraint]:
        """The rows that define this context's shared variables (:meth:`factor_trade`'s; the
        problem's helper rows include them: optimizer.problem.base_constraints)."""
        return [] if self.factor is None else list(self.factor.rows)

    def base_constraints(self) -> list[cp.Constraint]:
        """a >= |z|, u >= |z - z0| (epigraphs of the absolute values; z0 = :meth:`held`)."""
        z, a, u, z0 = self.z, self.a, self.u, self.held()
        return [a >= z, a >= -z, u >= z - z0, u >= z0 - z]

    def set_common(self, d: ProblemData) -> None:
        """Values of the shared parameters (z0 only when this step starts from today's book; the
        factor exposure's when it was asked for)."""
        if self.prev is None:
            assign(self.z0, d.z0)
        if self.factor is not None:
            self.factor.update(d)
        assign(self.s, d.s)
        assign(self.s_minus_w, d.s - d.w)

    def deviation(self) -> cp.Expression:
        """e - w* = s + B z - w* (N), the effective weights' distance from target."""
        return self.s_minus_w + self.B @ self.z

    def effective(self) -> cp.Expression:
        """e = s + B z (N), effective weights."""
        return self.s + self.B @ self.z
