"""The multi-period planner: H rebalancing steps ahead in one convex problem (issue 12, build 1).

cvxportfolio's MultiPeriodOptimization is the model. Step h = 1..H (each ``costs.horizon_days``
long) has its own positions z_h (weight units, USD / V), a_h >= |z_h| and u_h >= |z_h - z_{h-1}|,
with z_0 = today's positions (the Parameter z0), and its own copy of every objective term and
constraint of the single-period problem (optimizer.terms, optimizer.constraints; each copy with
its own Parameters, set from that step's :class:`~optimizer.data.ProblemData`):

    minimise  scale * sum_h [ TE^2(z_h) + ||Gb' z_h||^2
                              + gamma_trade (lin' |t_h| + sum_j c_j |t_jh|^{3/2})
                              + gamma_fund carry_h' z_h + ... ],      t_h = z_h - z_{h-1}
    s.t.      every switched-on constraint at every step (margin and stress rows on z_h, caps,
              cluster bands, trade limits on t_h, ...)

TE^2 is annualised (as in the single-period problem) and the costs are fractions of V per step,
so each step weighs risk against its own step's costs exactly as today's problem does: with H = 1
the planner *is* the single-period problem.

Forecasts per step (:func:`step_data`): zero expected drift, so the spot weights s, the targets w,
the base V and the risk model stay as today; the carry (perpetual funding, dated basis decay, a
fraction of notional paid by a long over one step) may be given per step; the rebalancer gives
optimizer.carry.carry_path's (the EWMA funding forecast's premium decaying to its long-run level
step by step; dated basis carry constant to expiry, prorated in the step holding it and 0
after), else today's for every step. A step that starts after a dated contract's expiry holds
none of it and settles it free of cost and trade limit (optimizer.plan_expiry). Only step 1's
trade z_1 - z0 is made; the rest is re-planned at the next rebalance.

Compiled once per (Structure, H) with Parameters (DPP) and re-solved by new values through the same
lean engines as :class:`~optimizer.problem.HedgeProblem` (PIQP for a QP, Clarabel when conic),
whose output variable is step 1's z; the later steps are read from the solver's primal vector
(:meth:`PlannerProblem.plan_z`), so the hot path needs only z_1.

Rows that read today's positions through their Parameter *values* keep today's z0 at every
step: the margin budget's hysteresis (``held``), and the expiry guard at the first step a contract
is near expiry (within |x0_j|, same sign); from the next step on it bounds z_h by z_{h-1} with
today's sign (optimizer.plan_expiry: |x_h| never grows inside the window). An infeasible plan
is diagnosed by the single-period elastic re-solve on step 1's data
(optimizer.elastic.elastic_resolve). Lot rounding and the snapping of noise trades apply to step
1's positions with step 1's terms and constraints.

With the spot leg on, every step has spot trades b_h, q_h of its own with their fee, spread and
impact, and every row reads the totals through the step (the exposure
e_h = s + sum_{k<=h} (b_k - q_k) + B z_h, the fees paid, the spot sold, the financing:
optimizer.spot_leg.PlannedSpotContext), so a plan can spread a spot trade whose 3/2-power impact
makes one large trade dear. The tax of the plan's spot sales is one term on step 1, on all the
steps' sales together (optimizer.terms.SpotTax); the tax of realising futures gains
(``[tax] price_futures``) is priced on every step's reduction of a position (optimizer.terms.
FuturesTax), so a plan's reductions pay it at whichever step they are made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import cvxpy as cp
import numpy as np

from optimizer.constraint_base import Constraint
from optimizer.constraints import constraints_for
from optimizer.context import Context
from optimizer.data import ProblemData, Structure
from optimizer.engines import RawResult
from optimizer.plan_expiry import step_expiry
from optimizer.problem import HedgeProblem, base_constraints, set_values
from optimizer.settings import OptimizerSettings, SolverName, check_horizon
from optimizer.solution import Plan, PlanStep
from optimizer.spot_leg import PlannedSpotContext, SpotContext, make_context
from optimizer.terms import Term, terms_for


def planner_horizon(settings: OptimizerSettings) -> int:
    """``settings.horizon`` (the planner's H), validated (optimizer.settings.check_horizon)."""
    return check_horizon(settings.horizon)


def check_planner(horizon: int) -> None:
    """Refuse an H the planner cannot plan (a whole number >= 1)."""
    check_horizon(horizon)


def later_structure(structure: Structure) -> Structure:
    """The structure of a plan's steps after the first: the spot sales' tax off (it is one term on
    step 1 over every step's sales), the rest as step 1's (the futures tax prices each step's own
    reduction: optimizer.terms.FuturesTax)."""
    if not structure.spot_leg:
        return structure
    return replace(structure, tax_pieces=0)


@dataclass(frozen=True)
class StepProblem:
    """One step of the plan: its context (z_h, a_h, u_h; trades from ``ctx.held()``), its own
    objective terms and constraints."""

    ctx: Context
    terms: list[Term]
    constraints: list[Constraint]

    @staticmethod
    def create(structure: Structure, before: StepProblem | None) -> StepProblem:
        """The step after ``before`` (None: the first step, from today's positions z0): its trade
        starts from ``before``'s positions, and with the spot leg on its spot trades add to
        ``before``'s (optimizer.spot_leg.PlannedSpotContext)."""
        if before is None:
            ctx = make_context(structure)
        elif isinstance(before.ctx, SpotContext):
            structure = later_structure(structure)
            ctx = PlannedSpotContext.create_planned(structure, before.ctx.z, before.ctx)
        else:
            ctx = Context.create(structure, prev=before.ctx.z)
        return StepProblem(ctx, terms_for(structure), constraints_for(structure))

    def objective(self) -> cp.Expression:
        """The sum of this step's terms (unscaled)."""
        return cp.sum([t.build(self.ctx) for t in self.terms])

    def rows(self, slacks: Sequence[cp.Variable] | None = None) -> list[cp.Constraint]:
        """The helper rows (a >= |z|, u >= |z - held|, spot rows, the shared factor exposure's
        definition) and every constraint's rows; with ``slacks`` (one per constraint) each
        constraint relaxed by its slack (the elastic plan, optimizer.elastic_plan)."""
        cons = base_constraints(self.ctx.structure, self.ctx)
        for k, c in enumerate(self.constraints):
            cons.extend(c.build(self.ctx, slacks[k] if slacks is not None else None))
        return cons

    def update(self, d: ProblemData) -> None:
        """Every Parameter of this step from ``d``."""
        set_values(self.ctx, self.terms, self.constraints, d)


def step_data(d: ProblemData, horizon: int,
              carry: np.ndarray | None = None) -> tuple[ProblemData, ...]:
    """The H per-step inputs built from today's ``d``.

    Zero expected drift: every step has today's s, w, z0, V, risk model, costs and limits. Step h's
    carry is ``carry[h - 1]`` (H x M; per contract the fraction of notional a long pays over one
    step of ``costs.horizon_days``: funding rate per settlement x settlements per step for a
    perpetual) when given, else today's ``d.carry``. A later step that a dated contract does not
    live to start holds it at 0 and settles it free of cost (``d.expiry_days``:
    optimizer.plan_expiry.step_expiry). Steps with today's numbers share ``d`` itself (no copy).
    """
    arr: np.ndarray | None = None
    if carry is not None:
        arr = np.asarray(carry, dtype=float)
        if arr.shape != (horizon, len(d.contracts)) or not np.all(np.isfinite(arr)):
            raise ValueError(f"per-step carry: shape {arr.shape}, expected "
                             f"{(horizon, len(d.contracts))} of finite fractions of notional")
    steps: list[ProblemData] = []
    for h in range(horizon):
        dh = d
        if arr is not None and not np.array_equal(arr[h], d.carry):
            dh = replace(dh, carry=arr[h].copy())
        if h > 0 and d.expiry_days is not None:
            dh = step_expiry(dh, d.expiry_days[h], earlier_steps=h, prev_days=d.expiry_days[h - 1])
        steps.append(dh)
    return tuple(steps)


class PlannerProblem(HedgeProblem):
    """The compiled H-step plan for one :class:`Structure` (see the module docstring).

    A :class:`HedgeProblem` whose ``ctx``, ``terms`` and ``constraints`` are step 1's (what the
    rebalance's rounding, snapping and dual report read) and whose ``problem`` is the whole plan;
    ``solve`` (inherited: the same solver chain, fallbacks and :class:`SolveOutcome`) returns
    step 1's z. ``builds`` counts compilations (for tests).
    """

    builds: ClassVar[int] = 0

    def __init__(self, structure: Structure, horizon: int) -> None:
        PlannerProblem.builds += 1
        self._build_steps(structure, horizon)
        objective = structure.objective_scale * cp.sum([s.objective() for s in self.steps])
        cons = [row for s in self.steps for row in s.rows()]
        self._compile(objective, cons)

    def _build_steps(self, structure: Structure, horizon: int) -> None:
        """The H steps (each step's trade from the step before), step 1's context, terms and
        constraints as the problem's own (its z is the output variable)."""
        check_planner(horizon)
        self.structure = structure
        self.horizon = horizon
        self.steps: list[StepProblem] = []
        for _ in range(horizon):
            self.steps.append(StepProblem.create(structure, self.steps[-1] if self.steps else None))
        first = self.steps[0]
        last = self.steps[-1].ctx
        if isinstance(first.ctx, SpotContext) and isinstance(last, SpotContext):
            first.ctx.taxed_sell = last.spot_sold()  # the plan's sales, taxed once (SpotTax)
        self.ctx, self.terms, self.constraints = first.ctx, first.terms, first.constraints
        self.step_inputs: tuple[ProblemData, ...] = ()
        self._slices: dict[str, list[slice]] = {}

    def update(self, d: ProblemData, carry: np.ndarray | None = None) -> None:
        """Set every step's Parameters from today's ``d`` (:func:`step_data`; ``carry``: the
        optional H x M per-step carry, by default ``d.carry_steps``, the forecast per step of
        optimizer.carry.carry_path, when it has H rows)."""
        if carry is None and d.carry_steps is not None and len(d.carry_steps) == self.horizon:
            carry = d.carry_steps
        self.update_steps(step_data(d, self.horizon, carry))

    def update_steps(self, steps: Sequence[ProblemData]) -> None:
        """Set step h's Parameters from ``steps[h - 1]`` (H of them, each with this structure)."""
        if len(steps) != self.horizon:
            raise ValueError(f"{len(steps)} step inputs for a {self.horizon}-step plan")
        last: ProblemData | None = None
        for step, d in zip(self.steps, steps, strict=True):
            if d is not last:
                if d.structure != self.structure:
                    raise ValueError("ProblemData structure differs from the compiled problem's")
                last = d
            step.update(d)
        self.data = steps[0]
        self.step_inputs = tuple(steps)

    def plan_z(self, result: RawResult) -> np.ndarray:
        """The planned positions z_1..z_H (H x M, weight units) of a solve's ``result``."""
        if result.x is None:
            raise ValueError(f"no solution to read a plan from (status {result.status})")
        slices = self._slices.get(result.solver)
        if slices is None:
            eng = self.engine(SolverName(result.solver))
            slices = [eng.var_slice(s.ctx.z) for s in self.steps]
            self._slices[result.solver] = slices
        return np.vstack([result.x[sl] for sl in slices])

    def plan_spot(self, result: RawResult) -> np.ndarray | None:
        """The planned net spot trades b_h - q_h per step (H x N, weights) of a solve's
        ``result``; None without the spot leg."""
        if result.x is None or not all(isinstance(s.ctx, SpotContext) for s in self.steps):
            return None
        eng = self.engine(SolverName(result.solver))
        rows = []
        for s in self.steps:
            assert isinstance(s.ctx, SpotContext)
            rows.append(result.x[eng.var_slice(s.ctx.buy)] - result.x[eng.var_slice(s.ctx.sell)])
        return np.vstack(rows)


def plan_of(z_plan: np.ndarray, d: ProblemData, spot_plan: np.ndarray | None = None) -> Plan:
    """The plan in USD: per step h the positions x_h = z_h V and trades x_h - x_{h-1} (x_0 today's)
    by contract symbol, and the net spot trades (``spot_plan``, H x N weights, by asset; none
    when None); steps ``costs.horizon_days`` long. A dated contract settled before step h starts
    (h >= 2, ``d.expiry_days`` <= 0: optimizer.plan_expiry) is held at 0 from there, and its
    -x_{h-1} is the settlement of the first such step, not a trade."""
    V = d.V
    prev = d.z0
    dated = np.array(d.dated, dtype=bool) if d.dated else np.zeros(len(d.contracts), dtype=bool)
    steps: list[PlanStep] = []
    for h, z in enumerate(np.atleast_2d(z_plan), start=1):
        gone = _settled_at(d, dated, h) & ~_settled_at(d, dated, h - 1)
        settled = np.where(gone, -prev, 0.0) * V
        trades = (z - prev) * V - settled
        spot = ({} if spot_plan is None else
                dict(zip(d.assets, (np.atleast_2d(spot_plan)[h - 1] * V).tolist(), strict=True)))
        steps.append(PlanStep(h, dict(zip(d.contracts, (z * V).tolist(), strict=True)),
                              dict(zip(d.contracts, trades.tolist(), strict=True)),
                              {c: float(x) for c, x, g in zip(d.contracts, settled, gone, strict=True)
                               if g and x != 0.0}, spot))
        prev = z
    return Plan(step_days=d.settings.costs.horizon_days, steps=tuple(steps))


def _settled_at(d: ProblemData, dated: np.ndarray, h: int) -> np.ndarray:
    """Per contract, True when it is dated and settled before step h (1-based) starts."""
    if h < 2 or d.expiry_days is None:
        return np.zeros(len(d.contracts), dtype=bool)
    settled: np.ndarray = dated & (d.expiry_days[h - 1] <= 0)
    return settled
