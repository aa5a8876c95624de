"""The least-violation re-solve of an infeasible multi-period plan.

The plan (optimizer.planner) holds every constraint at every step, so it can be infeasible only at
a later step: a dated contract, an asset's only hedge, settles inside the horizon and leaves a
cluster band that step 1 meets broken at step 3. The single-period elastic problem
(optimizer.elastic) sees step 1 only and relaxes nothing there. Here every constraint of every
step carries its own slack s_hk >= 0, solved in the same two stages (optimizer.elastic's module
doc): the least total violation t* = min sum_h sum_k s_hk first (at or below SLACK_NOISE: the plan
is feasible, nothing is named), then

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
    Conflict,
    ElasticResult,
    Stage,
    proves_feasible,
    solve_in_stages,
    solved_spot,
    staged_objective,
)
from optimizer.engines import RawResult
from optimizer.planner import PlannerProblem
from optimizer.settings import SolverName


class ElasticPlanProblem(PlannerProblem):
    """The plan of one :class:`Structure` and H with a slack on every constraint of every step (see
    the module docstring). Built per infeasible plan, so not counted in ``PlannerProblem.builds``."""

    def __init__(self, structure: Structure, horizon: int, stage: Stage = Stage.CLOSEST) -> None:
        self._build_steps(structure, horizon)
        self.slacks = [[cp.Variable(nonneg=True, name=f"slack_{h}_{k}")
                        for k in range(len(step.constraints))] for h, step in enumerate(self.steps)]
        cons = [row for step, sl in zip(self.steps, self.slacks, strict=True)
                for row in step.rows(sl)]
        steps_objective = cp.sum([s.objective() for s in self.steps])  # builds every step's terms
        objective = steps_objective if stage == Stage.CLOSEST else None
        self._compile(staged_objective([v for sl in self.slacks for v in sl], objective,
                                       self.ctx.z), cons)

    def total_slack(self) -> float:
        """The total slack over every step of the last unpacked solve (weight units)."""
        return sum(float(v.value or 0.0) for sl in self.slacks for v in sl)

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
    """Solve :class:`ElasticPlanProblem` for today's ``d`` over ``horizon`` steps in stages: step
    1's positions of the closest feasible plan and the conflicts by step. When stage 1 gets no
    answer, ``z`` is today's book and nothing is named, ``tried`` says why; when it proves the
    plan feasible, nothing is named either."""
    run = solve_in_stages(lambda stage: ElasticPlanProblem(d.structure, horizon, stage), d)
    ep, res = run.problem, run.result
    if ep is None or res is None or res.z is None:
        return ElasticResult(z=np.asarray(d.z0, dtype=float), tried=run.tried)
    conflicts = ep.conflicts() if not proves_feasible(run.least) else []
    return ElasticResult(z=np.asarray(res.z, dtype=float), conflicts=tuple(conflicts),
                         spot=solved_spot(ep.ctx, d.structure.n_assets), tried=run.tried,
                         solved=True, least=run.least)
