"""The least-violation re-solve of an infeasible hedge problem (the "elastic" problem).

minimise  1e6 * sum_k s_k + (TE^2 + costs, unscaled)
s.t.      constraint k relaxed by its slack s_k >= 0, the helper rows of
          :func:`optimizer.problem.base_constraints`

The constraints whose slack is positive are the conflicting ones (``Conflict``, in weight units and
the user's units); the rows not relaxed whose dual exceeds :data:`OPPOSING_DUAL` hold them back
(``opposing``); the positions are the closest feasible book in that sense. It is solved through the
same engines and chain as the hedge problem (Clarabel with its retries, then SCS): a numerical
failure is a status and passes on to the next solver; only an exception is a crash (re-raised in
strict mode, else recorded in ``tried``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from optimizer.constraint_base import Constraint
from optimizer.constraints import constraints_for
from optimizer.data import ProblemData, Structure
from optimizer.engines import OPTIMAL, OPTIMAL_INACCURATE, RawResult
from optimizer.problem import HedgeProblem, base_constraints
from optimizer.settings import SolverName
from optimizer.spot_leg import SpotContext, make_context
from optimizer.terms import terms_for

#: the weight of total slack against the objective (TE^2 and costs are O(1e-4) in weight units)
SLACK_WEIGHT = 1e6
#: A dual (objective per weight unit) above this marks a row the elastic re-solve pushes against: the
#: slack weight is 1e6, while rows bound only by the objective (TE^2 and costs) have duals of O(1).
OPPOSING_DUAL = 1e3
#: the solvers of the elastic problem, in order (it may be conic: no PIQP)
ELASTIC_CHAIN = (SolverName.CLARABEL, SolverName.SCS)
#: A slack (weight units) that names its constraint as relaxed (1e-7 of the base: 1 cent a 100k USD)
SLACK_NAMED = 1e-7
#: The floor of a slack that is not float noise, named when no slack reaches SLACK_NAMED
SLACK_NOISE = 1e-12


@dataclass(frozen=True)
class Conflict:
    """A constraint the elastic re-solve had to relax, and by how much (weight units and user units)."""

    name: str
    violation: float
    violation_user: float
    unit: str


@dataclass(frozen=True)
class ElasticResult:
    """The closest feasible book: positions z and the relaxed constraints."""

    z: np.ndarray
    conflicts: tuple[Conflict, ...] = field(default_factory=tuple)
    #: rows not relaxed that hold the relaxed ones back: zero slack, dual above ``OPPOSING_DUAL``
    opposing: tuple[str, ...] = field(default_factory=tuple)
    #: (buys, sells) in weights with the spot leg on, else None
    spot: tuple[np.ndarray, np.ndarray] | None = None
    #: (solver, status) of every solver tried, in order (a crash: ``error: <type>: <message>``)
    tried: tuple[tuple[str, str], ...] = ()

    @property
    def solved(self) -> bool:
        """True when a solver answered; otherwise ``z`` is today's book and nothing was relaxed."""
        return bool(self.tried) and self.tried[-1][1] in (OPTIMAL, OPTIMAL_INACCURATE)


class ElasticProblem(HedgeProblem):
    """The elastic problem for one :class:`Structure`: a :class:`HedgeProblem` (the same context,
    terms, constraints, engines and chain) whose constraints each carry a slack, with the total
    slack weighted by :data:`SLACK_WEIGHT` in the objective. Built per infeasible answer, so not
    counted in ``HedgeProblem.builds``."""

    def __init__(self, structure: Structure) -> None:
        self.structure = structure
        self.ctx = make_context(structure)
        self.terms = terms_for(structure)
        self.constraints: list[Constraint] = constraints_for(structure)
        self.slacks = [cp.Variable(nonneg=True, name=f"slack_{k}")
                       for k in range(len(self.constraints))]
        cons = base_constraints(structure, self.ctx)
        for c, sl in zip(self.constraints, self.slacks, strict=True):
            cons.extend(c.build(self.ctx, sl))
        total = cp.sum(cp.hstack(self.slacks)) if self.slacks else cp.Constant(0.0)
        self._compile(SLACK_WEIGHT * total + cp.sum([t.build(self.ctx) for t in self.terms]), cons)

    def default_chain(self) -> tuple[SolverName, ...]:
        return ELASTIC_CHAIN

    def breach(self, res: RawResult) -> float:
        """0: every row here carries a slack, so an answer of a book that cannot meet its
        constraints breaks them by design (the slacks say by how much)."""
        return 0.0

    def conflicts(self, d: ProblemData) -> tuple[list[Conflict], list[str]]:
        """The relaxed constraints and the opposing rows of the last unpacked solve: a slack over
        :data:`SLACK_NAMED` relaxes its constraint; when none is (the book misses feasibility by
        less, yet the hedge problem was infeasible), those over :data:`SLACK_NOISE` do, so an
        infeasible answer always names what it relaxed when the re-solve relaxed anything."""
        slack = [float(sl.value or 0.0) for sl in self.slacks]
        floor = SLACK_NAMED if any(v > SLACK_NAMED for v in slack) else SLACK_NOISE
        conflicts: list[Conflict] = []
        opposing: list[str] = []
        for c, v in zip(self.constraints, slack, strict=True):
            if v > floor:
                per = c.per_unit(d)
                conflicts.append(Conflict(c.name, v, v / per if per else v, c.unit))
            elif c.cons[0].dual_value is not None:
                opposing += [row for row, dual in zip(c.rows(d), c.dual_rows(), strict=False)
                             if np.isfinite(dual) and dual > OPPOSING_DUAL]
        return conflicts, opposing

    def spot_trades(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(buys, sells) in weights of the last unpacked solve (clipped at 0), spot leg on; else None."""
        return solved_spot(self.ctx, self.structure.n_assets)


def solved_spot(ctx: object, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(buys, sells) in weights of ``ctx``'s last unpacked values (clipped at 0) when it is a spot
    leg's context; else None."""
    if not isinstance(ctx, SpotContext):
        return None
    return (np.clip(np.asarray(ctx.buy.value if ctx.buy.value is not None else np.zeros(n)),
                    0.0, None),
            np.clip(np.asarray(ctx.sell.value if ctx.sell.value is not None else np.zeros(n)),
                    0.0, None))


def elastic_resolve(d: ProblemData) -> ElasticResult:
    """Solve :class:`ElasticProblem` for ``d``: the closest feasible book and the conflicts. When no
    solver answers, ``z`` is today's book (``d.z0``), nothing is named, and ``tried`` says why."""
    ep = ElasticProblem(d.structure)
    ep.update(d)
    res, tried = ep.run_chain(ep.default_chain())
    if res is None or res.z is None or res.status not in (OPTIMAL, OPTIMAL_INACCURATE):
        return ElasticResult(z=np.asarray(d.z0, dtype=float), tried=tried)
    ep.unpack(res.solver)
    conflicts, opposing = ep.conflicts(d)
    return ElasticResult(z=np.asarray(res.z, dtype=float), conflicts=tuple(conflicts),
                         opposing=tuple(opposing), spot=ep.spot_trades(), tried=tried)
