"""Shared variables and expressions of the compiled problem.

Decision variable z (M): target futures notional as a fraction of the base V.
Helper variables: a >= |z| (absolute positions) and u >= |z - z0| (absolute trades); every use of
them has a non-negative coefficient on the side that must stay small, so at the optimum they equal
|z| and |z - z0| wherever it matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from optimizer.data import ProblemData, Structure


def assign(param: cp.Parameter, value: np.ndarray | float) -> None:
    """Set a Parameter's value without cvxpy's per-assignment validation (about 18 us each, the
    largest fixed cost of a small re-solve). Shapes are still checked here; finiteness and signs are
    checked once in optimizer.data.prepare, and non-negative Parameters are checked below.
    """
    arr = np.asarray(value, dtype=float)
    if arr.shape != param.shape:
        raise ValueError(f"parameter {param.name()}: shape {arr.shape}, expected {param.shape}")
    if param.attributes["nonneg"] and arr.size and float(arr.min()) < 0:
        raise ValueError(f"parameter {param.name()} must be non-negative")
    param.save_value(arr)


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

    @staticmethod
    def create(structure: Structure) -> Context:
        """Variables and the common parameters for a problem of this shape."""
        N, M = structure.n_assets, structure.n_contracts
        B = np.frombuffer(structure.exposure, dtype=np.int8).reshape(N, M).astype(float)
        ctx = Context(structure=structure, z=cp.Variable(M, name="z"), a=cp.Variable(M, name="a"),
                      u=cp.Variable(M, name="u"), z0=cp.Parameter(M, name="z0"),
                      s_minus_w=cp.Parameter(N, name="s_minus_w"), s=cp.Parameter(N, name="s"), B=B)
        ctx.params.extend([ctx.z0, ctx.s_minus_w, ctx.s])
        return ctx

    def param(self, name: str, shape: int | tuple[int, ...] | tuple[()] = (), *,
              nonneg: bool = False) -> cp.Parameter:
        """A new registered Parameter."""
        p = cp.Parameter(shape, name=name, nonneg=nonneg)
        self.params.append(p)
        return p

    def base_constraints(self) -> list[cp.Constraint]:
        """a >= |z|, u >= |z - z0| (epigraphs of the absolute values)."""
        z, a, u = self.z, self.a, self.u
        return [a >= z, a >= -z, u >= z - self.z0, u >= self.z0 - z]

    def set_common(self, d: ProblemData) -> None:
        """Values of the shared parameters."""
        assign(self.z0, d.z0)
        assign(self.s, d.s)
        assign(self.s_minus_w, d.s - d.w)

    def deviation(self) -> cp.Expression:
        """e - w* = s + B z - w* (N), the effective weights' distance from target."""
        return self.s_minus_w + self.B @ self.z

    def effective(self) -> cp.Expression:
        """e = s + B z (N), effective weights."""
        return self.s + self.B @ self.z
