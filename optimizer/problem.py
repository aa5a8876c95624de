"""The hedge problem: built once per structure with cvxpy Parameters (DPP), re-solved by updating values.

minimise  scale * (TE^2 + basis risk + gamma_trade * trading cost + gamma_fund * carry
                  [+ kappa (e - w*)' Q_p (e - w*), the cost-to-go: optimizer.terms.CostToGo])
s.t.      the switched-on constraints (optimizer.constraints), a >= |z|, u >= |z - z0|

Solvers: PIQP (native, lean path) when the problem is a QP; Clarabel when it is conic; SCS last.
A failing solver falls through to the next; the result says which one served and which failed. A
solver that raises is recorded in ``tried`` with the exception's type and message ("error: ...")
before the chain moves on, or re-raised when strict mode is on (optimizer.engines.STRICT_ENV).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import cvxpy as cp
import numpy as np

from models.errors import FbrError
from optimizer.constraint_base import Constraint
from optimizer.constraints import constraints_for
from optimizer.context import Context
from optimizer.data import ProblemData, Structure
from optimizer.engines import (
    CLARABEL_SETTINGS,
    INFEASIBLE,
    OPTIMAL,
    OPTIMAL_INACCURATE,
    UNBOUNDED,
    ClarabelEngine,
    CvxpyDataEngine,
    Engine,
    PiqpEngine,
    RawResult,
    error_status,
    strict_solvers,
)
from optimizer.settings import SolverName
from optimizer.solution import CONFIRMS, fallbacks_in
from optimizer.spot_leg import (
    SpotContext,
    after_spot_trade,
    make_context,
    spot_trade,
)
from optimizer.terms import Term, terms_for

#: an inaccurate answer that breaks a constraint by more than this (weight units: 1 USD per
#: million of base) on the numpy re-check is refused, not served (HedgeProblem.run_chain): far
#: above what an interior-point solver's 'almost solved' answer breaks (<= 1e-7), far below what a
#: first-order solver's answer that stopped short does (SCS: 0.1 and more seen)
INACCURATE_TOL = 1e-6


class SolverFailedError(FbrError):
    """No solver can answer: none of the chain takes the problem, or all of it failed."""


class NoAnswerError(SolverFailedError):
    """Every solver in the chain ran and failed (numerical trouble, not infeasibility): this
    problem has no answer today, though the set-up is sound (a replay holds the book there)."""


class UnboundedBookError(FbrError):
    """The book admits a riskless carry trade with no bound: refuse rather than return nonsense."""


#: what to try when no solver answers a sound book
NO_ANSWER_FIX = ("Fix: look for a value many orders of magnitude off the others (a cost weight, a "
                 "buffer, a cap or a bound), move [solver] objective_scale (default 1e4) by a "
                 "factor of 10 either way, or try another order of [solver] solvers")


@dataclass(frozen=True)
class SolveOutcome:
    """A raw solve plus the fallback record: ``tried`` lists (solver, status) in order."""

    result: RawResult
    tried: tuple[tuple[str, str], ...] = ()

    @property
    def fallbacks(self) -> int:
        """How many solvers failed before the one that served (optimizer.solution.fallbacks_in)."""
        return fallbacks_in(self.tried)


def check_bounded(d: ProblemData) -> None:
    """Refuse a riskless, unbounded carry trade.

    Two contracts j, k on one asset with different carry, no basis risk, and neither bounded by
    initial margin, a cap, a trade limit or impact costs: going long the cheap one and short the dear
    one changes no exposure and earns carry without limit.
    """
    st = d.structure
    # margin (IM) and stress scenarios (tiered MM, mmr > 0) bound every position
    if st.margin or st.stress_names or st.impact or not st.carry or d.gamma_fund == 0:
        return
    bounded = set(st.capped) | set(st.trade_limited) | set(st.halted)
    basis_rows = np.abs(d.Gb).sum(axis=1) > 0 if d.Gb.size else np.zeros(len(d.contracts), bool)
    for i, asset in enumerate(d.assets):
        js = [j for j in np.flatnonzero(d.B[i]) if j not in bounded and not basis_rows[j]]
        for j, k in itertools.combinations(js, 2):
            spread = abs(d.carry[j] - d.carry[k]) * d.gamma_fund
            lin = (d.lin_cost[j] + d.lin_cost[k]) * d.gamma_trade if st.trading else 0.0
            if spread > lin:
                raise UnboundedBookError(
                    f"unbounded book: {d.contracts[j]} and {d.contracts[k]} both track {asset} with "
                    f"different funding/carry ({d.carry[j]:.4%} vs {d.carry[k]:.4%} per horizon) and "
                    f"nothing bounds them, so a long/short pair earns carry risk-free without limit. "
                    f"Fix: switch on the margin constraint, set caps_usd or a trade limit for one of "
                    f"them, or give the basis risk model.")


def bounded_reason(d: ProblemData) -> str | None:
    """Why the objective is bounded below on the feasible set, when the structure alone shows it;
    else None. Every term but the carry is non-negative (TE^2, basis risk, cost-to-go: quadratic
    forms; trading, impact, futures tax, reserve: costs) or a function of the spot trades alone,
    which the spot rows bound (0 <= q <= holdings, sum(b) - sum(q) <= cash); the carry
    gamma_fund r'z is linear in the positions z. So the objective is bounded below when the
    carry is off or zero (today's and, in a plan, every step's), or when every position is
    bounded: by the initial-margin row, by the stress scenarios' maintenance rows (tiered,
    mmr > 0), or by a cap, a trade limit or a halt on each contract."""
    st = d.structure
    no_carry = not np.any(d.carry) and (d.carry_steps is None or not np.any(d.carry_steps))
    if not st.carry or d.gamma_fund == 0 or no_carry:
        return "no term of the objective pays without limit (the carry is off or zero)"
    if st.margin:
        return "the initial-margin row bounds every position"
    if st.stress_names:
        return "the stress scenarios' maintenance rows bound every position"
    if set(st.capped) | set(st.trade_limited) | set(st.halted) >= set(range(st.n_contracts)):
        return "a cap, a trade limit or a halt bounds every position"
    return None


def refuse_unbounded(status: str, d: ProblemData) -> None:
    """The solver's own unboundedness verdict (check_bounded catches the known cases first):
    :class:`UnboundedBookError`, or :class:`NoAnswerError` when :func:`bounded_reason` shows the
    objective bounded below (the verdict is then a numerical failure, not an answer)."""
    if status != UNBOUNDED:
        return
    reason = bounded_reason(d)
    if reason is not None:
        raise NoAnswerError(f"the solver reports the book unbounded, yet {reason}: a numerical "
                            f"failure, not an answer. {NO_ANSWER_FIX}")
    raise UnboundedBookError("the solver reports the book unbounded: a position can grow without "
                             "limit (a carry trade, or an asset with zero variance). Fix: switch "
                             "on margin, or cap the contracts.")


def base_constraints(st: Structure, ctx: Context) -> list[cp.Constraint]:
    """The helper rows of one (step's) context: a >= |z| when a position bound reads a (else a = 0),
    u >= |z - z0| with z0 = ``ctx.held()`` when a trade cost or limit reads u (else u = 0), and
    the spot leg's rows (b >= 0, 0 <= q <= holdings, financing), and with the vol cap on the rows
    defining the factor exposure the cap and the tracking variance share
    (optimizer.context.FactorTrade; created here if no term or constraint asked for it yet, so
    every problem built from this context has them exactly once)."""
    cons: list[cp.Constraint] = []
    if st.margin or st.stress_names or st.capped:
        cons += [ctx.a >= ctx.z, ctx.a >= -ctx.z]
    else:
        cons += [ctx.a == 0]
    if st.trading or st.impact or st.trade_limited or st.halted:
        z0 = ctx.held()
        cons += [ctx.u >= ctx.z - z0, ctx.u >= z0 - ctx.z]
    else:
        cons += [ctx.u == 0]
    if isinstance(ctx, SpotContext):
        cons += ctx.spot_constraints()
    if st.vol_cap:
        ctx.factor_trade(spot_trade(ctx))
        cons += ctx.definitions()
    return cons


def set_values(ctx: Context, terms: list[Term], constraints: list[Constraint],
               d: ProblemData) -> None:
    """Every Parameter of one (step's) problem from ``d``: the shared ones, the spot leg's, each
    term's and each constraint's."""
    ctx.set_common(d)
    if isinstance(ctx, SpotContext):
        ctx.set_spot(d)
    for t in terms:
        t.update(d)
    for c in constraints:
        c.update(d)


class HedgeProblem:
    """The compiled problem for one :class:`Structure`. ``builds`` counts compilations (for tests)."""

    builds: ClassVar[int] = 0

    def __init__(self, structure: Structure) -> None:
        HedgeProblem.builds += 1
        self.structure = structure
        self.ctx: Context = make_context(structure)
        self.terms: list[Term] = terms_for(structure)
        self.constraints: list[Constraint] = constraints_for(structure)
        objective = structure.objective_scale * cp.sum([t.build(self.ctx) for t in self.terms])
        cons = self._base_constraints()
        for c in self.constraints:
            cons.extend(c.build(self.ctx))
        self._compile(objective, cons)

    def _compile(self, objective: cp.Expression, cons: list[cp.Constraint]) -> None:
        """The cvxpy problem (checked DPP) and the empty engine cache; no data yet."""
        st = self.structure
        self.problem = cp.Problem(cp.Minimize(objective), cons)
        if not self.problem.is_dpp():  # pragma: no cover - a programming error, caught by tests
            raise RuntimeError("the hedge problem is not DPP")
        self.is_conic = st.impact or st.vol_cap or st.spot_impact
        self._engines: dict[str, Engine] = {}
        self.data: ProblemData | None = None

    def _base_constraints(self) -> list[cp.Constraint]:
        return base_constraints(self.structure, self.ctx)

    # ------------------------------------------------------------------------------------------
    def update(self, d: ProblemData) -> None:
        """Set every Parameter from ``d`` (which must have this problem's structure)."""
        if d.structure != self.structure:
            raise ValueError("ProblemData structure differs from the compiled problem's")
        set_values(self.ctx, self.terms, self.constraints, d)
        self.data = d

    def default_chain(self) -> tuple[SolverName, ...]:
        """PIQP -> Clarabel -> SCS for a QP; Clarabel -> SCS when conic (PIQP cannot take cones)."""
        if self.is_conic:
            return (SolverName.CLARABEL, SolverName.SCS)
        return (SolverName.PIQP, SolverName.CLARABEL, SolverName.SCS)

    def engine(self, solver: SolverName) -> Engine:
        """The (cached) lean engine for ``solver``: PIQP's native API for a QP, Clarabel's (the
        conic hot path, and the QP's fallback) at CLARABEL_SETTINGS, SCS through cvxpy's interface."""
        eng: Engine | None = self._engines.get(solver)
        if eng is None:
            if solver == SolverName.PIQP:
                if self.is_conic:
                    raise ValueError("PIQP cannot solve the conic problem (impact or vol cap on)")
                try:
                    eng = PiqpEngine(self.problem, self.ctx.z)
                except RuntimeError:
                    eng = CvxpyDataEngine(self.problem, self.ctx.z, cp.PIQP)
            elif solver == SolverName.SCS:
                eng = CvxpyDataEngine(self.problem, self.ctx.z, cp.SCS,
                                      {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000})
            else:
                try:
                    eng = ClarabelEngine(self.problem, self.ctx.z, dict(CLARABEL_SETTINGS))
                except RuntimeError:
                    eng = CvxpyDataEngine(self.problem, self.ctx.z, solver.value,
                                          dict(CLARABEL_SETTINGS))
            self._engines[solver] = eng
        return eng

    def solve(self, solvers: tuple[SolverName, ...] = ()) -> SolveOutcome:
        """Solve with the first solver of the chain that succeeds (infeasible/unbounded are answers)."""
        asked = solvers or self.default_chain()
        chain = tuple(s for s in asked if not (self.is_conic and s == SolverName.PIQP))
        if not chain:
            raise SolverFailedError(
                "PIQP cannot solve this problem: the 3/2-power impact cost or the vol cap makes it "
                "conic. Fix: list CLARABEL or SCS in [solver] solvers, or switch those off.")
        res, tried = self.run_chain(chain)
        if res is not None:
            return SolveOutcome(res, tried)
        detail = ", ".join(f"{n}: {st}" for n, st in tried)
        raise NoAnswerError(f"every solver failed ({detail}). {NO_ANSWER_FIX}")

    def run_chain(self, chain: tuple[SolverName, ...]
                  ) -> tuple[RawResult | None, tuple[tuple[str, str], ...]]:
        """Try ``chain`` in order: the first optimal or inaccurate answer (an interior-point
        solver's is served at once; SCS's only when no later solver does better; one that breaks
        a constraint by more than :data:`INACCURATE_TOL` is refused, :meth:`breach`), or a verdict
        of no solution, else None; with (solver, status) of every try. A verdict of no solution
        (infeasible, unbounded) is put to the next solver of the chain, when there is one: an
        answer there refutes it (noted in ``tried``), the same verdict confirms it
        (``CONFIRMS``), and without a second opinion it stands. A numerical failure is a status
        and passes on; an exception is a crash: re-raised in strict mode, else recorded as
        ``error: ...`` and passed on."""
        tried: list[tuple[str, str]] = []
        inaccurate: RawResult | None = None
        verdict: tuple[RawResult, int] | None = None  # a first "no solution", its row in tried
        for i, s in enumerate(chain):
            try:
                res = self.engine(s).solve()
            except Exception as exc:  # a crash: loud in strict mode, else recorded and passed on
                if strict_solvers():
                    raise
                tried.append((s.value, error_status(exc)))
                continue
            tried.extend((s.value, err) for err in res.errors)
            tried.append((s.value, res.status))
            if res.status == OPTIMAL_INACCURATE:
                breach = self.breach(res)
                if breach > INACCURATE_TOL:  # not an answer: the next solver, else a failure
                    tried[-1] = (s.value, f"{res.status}, rows broken by {breach:.3g}: refused")
                    continue
            if res.status in (INFEASIBLE, UNBOUNDED):
                if verdict is None and i < len(chain) - 1:
                    verdict = (res, len(tried) - 1)  # asks the next solver
                    continue
                if verdict is not None:
                    also = CONFIRMS if res.status == verdict[0].status else ": disagrees with "
                    tried[-1] = (s.value, f"{res.status}{also}{verdict[0].solver}")
                    return verdict[0], tuple(tried)
                return res, tuple(tried)
            if res.status == OPTIMAL or (res.status == OPTIMAL_INACCURATE and s != SolverName.SCS):
                if verdict is not None:
                    first, row = verdict
                    tried[row] = (first.solver, f"{first.status}: refuted by {s.value}")
                return res, tuple(tried)
            if res.status == OPTIMAL_INACCURATE:
                inaccurate = inaccurate or res
        if verdict is not None:  # no second opinion could be had (SCS's inaccurate one is none)
            return verdict[0], tuple(tried)
        return inaccurate, tuple(tried)

    def breach(self, res: RawResult) -> float:
        """The largest violation of this problem's constraints at ``res``'s answer, re-checked in
        numpy (weight units; with the spot leg, after its trades): what an inaccurate answer may
        break before it is refused (:data:`INACCURATE_TOL`). 0 without an answer or data."""
        d = self.data
        if res.z is None or d is None:
            return 0.0
        if d.spot is not None:
            buy, sell = self.spot_solution(res)
            d = after_spot_trade(d, buy - sell, buy + sell)
        return max((float(np.max(c.violation(res.z, d), initial=0.0)) for c in self.constraints),
                   default=0.0)

    def unpack(self, solver: str) -> None:
        """Load the last solve of ``solver`` into the cvxpy problem, for dual values."""
        self._engines[SolverName(solver)].unpack()

    def spot_solution(self, res: RawResult) -> tuple[np.ndarray, np.ndarray]:
        """(buys, sells) in weights of the answer ``res`` (spot leg on), clipped to [0, holdings]:
        read from its primal vector ``res.x`` where the answering engine placed the variables (no
        unpacking of the cvxpy problem)."""
        ctx = self.ctx
        if not isinstance(ctx, SpotContext) or self.data is None or self.data.spot is None:
            raise ValueError("the spot leg is off in this problem")
        if res.x is None:
            raise SolverFailedError("the solver returned no spot trades")
        engine = self._engines[SolverName(res.solver)]
        buy = np.clip(res.x[engine.var_slice(ctx.buy)], 0.0, None)
        sell = np.clip(res.x[engine.var_slice(ctx.sell)], 0.0, self.data.spot.holdings)
        return buy, sell
