"""The least-violation re-solve of an infeasible multi-period plan.

The plan (optimizer.planner) holds every constraint at every step, so it can be infeasible only at
a later step: a dated contract, an asset's only hedge, settles inside the horizon and leaves a
cluster band that step 1 meets broken at step 3. The single-period elastic problem
(optimizer.elastic) sees step 1 only and relaxes nothing there. Here every constraint of every
step carries its own slack s_hk >= 0:

    minimise  SLACK_WEIGHT * sum_h sum_k s_hk + sum_h (TE^2 + costs)_h   (unscaled)
    s.t.      constraint k of step h relaxed by s_hk, the helper rows of every step

and the constraints whose slack exceeds the naming floor are the conflicts, named with their step
("cluster_band at step 3"); the positions are step 1's of the closest feasible plan.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from optimizer.data import ProblemData, Structure
from optimizer.elastic import (
    ELASTIC_CHAIN,
    SLACK_NAMED,
    SLACK_NOISE,
    SLACK_WEIGHT,
    Conflict,
    ElasticResult,
    solved_spot,
)
from optimizer.engines import OPTIMAL, OPTIMAL_INACCURATE, RawResult
from optimizer.planner import PlannerProblem
from optimizer.settings import SolverName


class ElasticPlanProblem(PlannerProblem):
    """The plan of one :class:`Structure` and H with a slack on every constraint of every step (see
    the module docstring). Built per infeasible plan, so not counted in ``PlannerProblem.builds``."""

    def __init__(self, structure: Structure, horizon: int) -> None:
        self._build_steps(structure, horizon)
        self.slacks = [[cp.Variable(nonneg=True, name=f"slack_{h}_{k}")
                        for k in range(len(step.constraints))] for h, step in enumerate(self.steps)]
        cons = [row for step, sl in zip(self.steps, self.slacks, strict=True)
                for row in step.rows(sl)]
        every = [v for sl in self.slacks for v in sl]
        total = cp.sum(cp.hstack(every)) if every else cp.Constant(0.0)
        self._compile(SLACK_WEIGHT * total + cp.sum([s.objective() for s in self.steps]), cons)

    def default_chain(self) -> tuple[SolverName, ...]:
        return ELASTIC_CHAIN

    def breach(self, res: RawResult) -> float:
        """0: every row carries a slack (the slacks say by how much the plan breaks them)."""
        return 0.0

    def conflicts(self) -> list[Conflict]:
        """The relaxed constraints of the last unpacked solve, step by step: a slack over
        SLACK_NAMED names its constraint (over SLACK_NOISE when none does), as a row of step h > 1
        "<name> at step h" in that step's user units."""
        values = [[float(v.value or 0.0) for v in sl] for sl in self.slacks]
        floor = SLACK_NAMED if any(v > SLACK_NAMED for row in values for v in row) else SLACK_NOISE
        out: list[Conflict] = []
        for h, (step, row) in enumerate(zip(self.steps, values, strict=True)):
            d = self.step_inputs[h]
            for c, v in zip(step.constraints, row, strict=True):
                if v > floor:
                    per = c.per_unit(d)
                    name = c.name if h == 0 else f"{c.name} at step {h + 1}"
                    out.append(Conflict(name, v, v / per if per else v, c.unit))
        return out


def elastic_plan_resolve(d: ProblemData, horizon: int) -> ElasticResult:
    """Solve :class:`ElasticPlanProblem` for today's ``d`` over ``horizon`` steps: step 1's
    positions of the closest feasible plan and the conflicts by step. When no solver answers,
    ``z`` is today's book and nothing is named; ``tried`` says why."""
    ep = ElasticPlanProblem(d.structure, horizon)
    ep.update(d)
    res, tried = ep.run_chain(ep.default_chain())
    if res is None or res.z is None or res.status not in (OPTIMAL, OPTIMAL_INACCURATE):
        return ElasticResult(z=np.asarray(d.z0, dtype=float), tried=tried)
    ep.unpack(res.solver)
    return ElasticResult(z=np.asarray(res.z, dtype=float), conflicts=tuple(ep.conflicts()),
                         spot=solved_spot(ep.ctx, d.structure.n_assets), tried=tried)
