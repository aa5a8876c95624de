"""The row of a contract the exchange does not trade now: its position stays where it is.

An exchange stops trading a contract while it delists a perpetual (Binance ``SETTLING``), delivers
a quarterly (``DELIVERING``) or after (``CLOSE``); every order on it is refused. The optimiser
then hedges with the other contracts around the position it cannot move, instead of planning a
trade the executor would have to drop (which left the rest of the plan sized for a leg that
never traded).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from optimizer.constraint_base import Constraint, elastic, fmt_step
from optimizer.context import Context
from optimizer.cvxpy_adapter import assign
from optimizer.data import ProblemData

__all__ = ["Halted", "halted_messages"]


class Halted(Constraint):
    """u_j <= s_j on the halted contracts H (u_j >= |z_j - z0_j|, weight units), s_j a Parameter:
    s_j = 0 normally, so z_j = z0_j, no trade. In a plan's later step z0 is the step before's
    positions (``Context.held``), so the position is held through the plan; on a later step where
    the contract has settled (``d.expired``, optimizer.plan_expiry) its move to 0 is the
    settlement, not a trade, and s_j = |z0_j| (today's position: the earlier steps held it there,
    so the settlement is exactly -z0_j; after that step z stays 0 and u_j = 0). The set H is part
    of the problem's shape (a status change rebuilds the problem, which happens when an exchange
    lists or delists, not per rebalance); s is a Parameter, so the compiled plan stays DPP."""

    name = "halted"
    unit = "USD of trade"

    def __init__(self, halted: tuple[int, ...]) -> None:
        self.idx = list(halted)

    def build(self, ctx: Context, slack: cp.Variable | None = None) -> list[cp.Constraint]:
        self._ctx = ctx
        self.settle = ctx.param("halted_settle", len(self.idx), nonneg=True)
        self.cons = [ctx.u[self.idx] <= self.settle + elastic(slack)]
        return self.cons

    def update(self, d: ProblemData) -> None:
        self._data = d
        assign(self.settle, settle_bound(d)[self.idx])

    def violation(self, z: np.ndarray, d: ProblemData) -> np.ndarray:
        result: np.ndarray = np.maximum(np.abs(z - d.z0) - settle_bound(d), 0.0)[self.idx]
        return result

    def rows(self, d: ProblemData) -> list[str]:
        return [f"halted[{d.contracts[j]}]" for j in self.idx]

    def bound(self, row: str, d: ProblemData) -> float:
        j = d.contracts.index(row[len("halted["):-1])
        return float(settle_bound(d)[j]) * d.V

    def step_phrase(self, row: str, step: float) -> str:
        return f"trading {fmt_step(step)} USD of it (were the exchange trading it)"

    def note(self, row: str) -> str:
        d = self._data
        if d is None:
            return "the exchange does not trade it now"
        j = d.contracts.index(row[len("halted["):-1])
        return f"the exchange does not trade it now: status {d.halted[j]}"


def settle_bound(d: ProblemData) -> np.ndarray:
    """Per contract, the most a halted contract's u_j may be (weight units): |z0_j| on a plan's
    later step where it has settled (``d.expired`` = 1: the settlement z_j,h-1 -> 0 with
    z_j,h-1 = z0_j, as no earlier step traded it), else 0 (no trade)."""
    if d.expired is None:
        return np.zeros(len(d.contracts))
    out: np.ndarray = np.where(np.asarray(d.expired) > 0, np.abs(d.z0), 0.0)
    return out


def halted_messages(d: ProblemData) -> list[str]:
    """One line per contract the exchange does not trade now, for the solution's messages."""
    return [f"{d.contracts[j]} is held at its position: the exchange does not trade it now "
            f"(status {d.halted[j]}); the other contracts hedge around it"
            for j in d.structure.halted]
