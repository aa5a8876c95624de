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

    def base_constraints(self) -> list[cp.Constraint]:
        """a >= |z|, u >= |z - z0| (epigraphs of the absolute values; z0 = :meth:`held`)."""
        z, a, u, z0 = self.z, self.a, self.u, self.held()
        return [a >= z, a >= -z, u >= z - z0, u >= z0 - z]

    def set_common(self, d: ProblemData) -> None:
        """Values of the shared parameters (z0 only when this step starts from today's book)."""
        if self.prev is None:
            assign(self.z0, d.z0)
        assign(self.s, d.s)
        assign(self.s_minus_w, d.s - d.w)

    def deviation(self) -> cp.Expression:
        """e - w* = s + B z - w* (N), the effective weights' distance from target."""
        return self.s_minus_w + self.B @ self.z

    def effective(self) -> cp.Expression:
        """e = s + B z (N), effective weights."""
        return self.s + self.B @ self.z
