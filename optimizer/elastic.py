"""The least-violation re-solve of an infeasible hedge problem (the "elastic" problem).

Every constraint k carries a slack s_k >= 0 (in its own rows' units, weight units for most), the
helper rows of :func:`optimizer.problem.base_constraints` none. Two stages:

1. least violation (a phase-one problem):  t* = min sum_k s_k  (scaled by SLACK_WEIGHT). It
   proves what the answer claims: t* above :data:`SLACK_NOISE` means no book meets every
   constraint; t* at or below it means the book is feasible, whatever the hedge problem's solvers
   said, and nothing is named (a failed solve then stays a failure, never "infeasible").
2. the closest book:  minimise SLACK_WEIGHT * sum_k s_k + (TE^2 + costs, unscaled). Its answer
   stands unless its total slack passes t* by more than :data:`EXCESS_RTOL` and
   :data:`SLACK_NAMED` (the objective bought itself a larger violation: an objective weight far
   past any useful size did, and had feasible rows reported "relaxed"); stage 1's answer then
   stands, as it does when stage 2 gets no answer (its positions least-violating, not tuned by
   the objective).

The constraints whose slack is positive are the conflicting ones (``Conflict``, in weight units and
the user's units); the rows not relaxed whose dual exceeds :data:`OPPOSING_DUAL` hold them back
(``opposing``); the positions are the closest feasible book in that sense. Both stages are solved
through the same engines and chain as the hedge problem (Clarabel with its retries, then SCS): a
numerical failure is a status and passes on to the next solver; only an exception is a
crash (re-raised in strict mode, else recorded in ``tried``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

import cvxpy as cp
import numpy as np

from optimizer.constraint_base import Constraint
from optimizer.constraints import constraints_for
from optimizer.data import ProblemData, Structure
from optimizer.engines import OPTIMAL, OPTIMAL_INACCURATE, RawResult
from optimizer.problem import NO_ANSWER_FIX, HedgeProblem, NoAnswerError, base_constraints
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
#: The floor of a slack that is not float noise, named when no slack reaches SLACK_NAMED; a least
#: total violation (stage 1) at or below it proves the book feasible
SLACK_NOISE = 1e-12
#: how far stage 2's total slack may pass stage 1's least one, relative (and by SLACK_NAMED, absolute)
EXCESS_RTOL = 1e-3


class Stage(StrEnum):
    """LEAST: minimise the total slack alone (phase one); CLOSEST: the objective too (see the
    module doc)."""

    LEAST = "least violation"
    CLOSEST = "closest book"


def proves_feasible(least: float | None) -> bool:
    """True when a stage 1 answered and its least total slack (weight units) is at or below
    :data:`SLACK_NOISE`: some book meets every constraint."""
    return least is not None and least <= SLACK_NOISE


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
    #: True when a solver answered stage 1; otherwise ``z`` is today's book and nothing is named
    solved: bool = False
    #: stage 1's least total slack (weight units; None when unsolved): at or below SLACK_NOISE the
    #: book is feasible
    least: float | None = None

    @property
    def feasible(self) -> bool:
        """True when stage 1 proved the book feasible (nothing to relax)."""
        return proves_feasible(self.least)


class ElasticProblem(HedgeProblem):
    """The elastic problem for one :class:`Structure` and :class:`Stage`: a :class:`HedgeProblem`
    (the same context, constraints, engines and chain) whose constraints each carry a slack, with
    the total slack weighted by :data:`SLACK_WEIGHT` in the objective (stage CLOSEST: the terms
    too). Built per infeasible answer, so not counted in ``HedgeProblem.builds``."""

    def __init__(self, structure: Structure, stage: Stage = Stage.CLOSEST) -> None:
        self.structure, self.stage = structure, stage
        self.ctx = make_context(structure)
        self.terms = terms_for(structure) if stage == Stage.CLOSEST else []
        self.constraints: list[Constraint] = constraints_for(structure)
        self.slacks = [cp.Variable(nonneg=True, name=f"slack_{k}")
                       for k in range(len(self.constraints))]
        cons = base_constraints(structure, self.ctx)
        for c, sl in zip(self.constraints, self.slacks, strict=True):
            cons.extend(c.build(self.ctx, sl))
        objective = cp.sum([t.build(self.ctx) for t in self.terms]) if self.terms else None
        self._compile(staged_objective(self.slacks, objective, self.ctx.z), cons)

    def total_slack(self) -> float:
        """The total slack of the last unpacked solve (weight units)."""
        return sum(float(sl.value or 0.0) for sl in self.slacks)

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


def staged_objective(slacks: list[cp.Variable], objective: cp.Expression | None,
                     z: cp.Variable) -> cp.Expression:
    """``SLACK_WEIGHT * sum(slacks)``, plus ``objective`` (stage CLOSEST) or, in stage LEAST
    (``objective`` None), plus ``0 * sum(z)``: the positions stay in a problem whose rows may not
    hold them."""
    total = cp.sum(cp.hstack(slacks)) if slacks else cp.Constant(0.0)
    return SLACK_WEIGHT * total + (objective if objective is not None else 0.0 * cp.sum(z))


class StagedProblem(Protocol):
    """What :func:`solve_in_stages` needs of an elastic problem (single period or plan)."""

    def update(self, d: ProblemData) -> None: ...
    def default_chain(self) -> tuple[SolverName, ...]: ...
    def run_chain(self, chain: tuple[SolverName, ...]
                  ) -> tuple[RawResult | None, tuple[tuple[str, str], ...]]: ...
    def unpack(self, solver: str) -> None: ...
    def total_slack(self) -> float: ...


_P = TypeVar("_P", bound=StagedProblem)


@dataclass(frozen=True)
class Staged(Generic[_P]):
    """The stage whose answer stands (unpacked; None when stage 1 got no answer), its result, every
    solver tried in both stages, and stage 1's least total slack."""

    problem: _P | None
    result: RawResult | None
    tried: tuple[tuple[str, str], ...]
    least: float | None


def _answered(res: RawResult | None) -> bool:
    return res is not None and res.z is not None and res.status in (OPTIMAL, OPTIMAL_INACCURATE)


def solve_in_stages(make: Callable[[Stage], _P], d: ProblemData) -> Staged[_P]:
    """Stage 1 (least violation) for ``d``; when its least total slack is past
    :data:`SLACK_NOISE`, stage 2 (the closest book), whose answer stands when it has one that
    relaxes no more than stage 1's allows, else stage 1's (see the module doc)."""
    first = make(Stage.LEAST)
    first.update(d)
    res, tried = first.run_chain(first.default_chain())
    if res is None or not _answered(res):
        return Staged(None, None, tried, None)
    first.unpack(res.solver)
    least = first.total_slack()
    if proves_feasible(least):
        return Staged(first, res, tried, least)
    second = make(Stage.CLOSEST)
    second.update(d)
    res2, tried2 = second.run_chain(second.default_chain())
    if res2 is not None and _answered(res2):
        second.unpack(res2.solver)
        if second.total_slack() <= least * (1.0 + EXCESS_RTOL) + SLACK_NAMED:
            return Staged(second, res2, tried + tried2, least)
    return Staged(first, res, tried + tried2, least)  # first's values are still unpacked


def elastic_resolve(d: ProblemData) -> ElasticResult:
    """Solve :class:`ElasticProblem` for ``d`` in stages: the closest feasible book and the
    conflicts. When stage 1 gets no answer, ``z`` is today's book (``d.z0``), nothing is named, and
    ``tried`` says why; when it proves the book feasible, nothing is named either."""
    run = solve_in_stages(lambda stage: ElasticProblem(d.structure, stage), d)
    ep, res = run.problem, run.result
    if ep is None or res is None or res.z is None:
        return ElasticResult(z=np.asarray(d.z0, dtype=float), tried=run.tried)
    conflicts, opposing = ep.conflicts(d) if not proves_feasible(run.least) else ([], [])
    return ElasticResult(z=np.asarray(res.z, dtype=float), conflicts=tuple(conflicts),
                         opposing=tuple(opposing), spot=ep.spot_trades(), tried=run.tried,
                         solved=True, least=run.least)


def refute_infeasible(el: ElasticResult) -> ElasticResult:
    """``el``, the least-violation re-solve of a book the solvers answered infeasible; when its
    stage 1 proves the book feasible, :class:`NoAnswerError` instead: the verdict is a numerical
    failure, not an answer."""
    if el.feasible:
        raise NoAnswerError("the solvers answered infeasible, yet a least-violation check finds a "
                            "book that meets every constraint: a numerical failure, not an "
                            f"answer. {NO_ANSWER_FIX}")
    return el
