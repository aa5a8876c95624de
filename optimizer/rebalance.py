"""One rebalance end to end: prepare -> (cached) compiled problem -> solve with fallbacks -> round and
repair -> explain. A :class:`Rebalancer` keeps one compiled problem per structure, so a sequence of
rebalances on the same instruments only updates Parameter values.

With ``OptimizerSettings.horizon`` H > 1 the compiled problem is the multi-period planner
(optimizer.planner.PlannerProblem, one per (structure, H)): step 1's positions are rounded and
traded as usual, and the decision carries the whole plan (:class:`~optimizer.solution.Plan`).

The report itself (trades, costs, margin, tracking errors, the spot leg) is assembled by
optimizer.solution_report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from models.book import Book
from models.errors import FbrError
from models.instruments import contract_arrays
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.checks import check_not_liquidatable, order_blockers
from optimizer.constraint_base import Constraint
from optimizer.data import ProblemData, Structure
from optimizer.elastic import ElasticResult, elastic_resolve, refute_infeasible
from optimizer.elastic_plan import elastic_plan_resolve
from optimizer.engines import INFEASIBLE, RawResult
from optimizer.halted import halted_messages
from optimizer.planner import PlannerProblem, plan_of, planner_horizon
from optimizer.prepare import prepare, unlimited_by_adv
from optimizer.problem import (
    HedgeProblem,
    SolveOutcome,
    SolverFailedError,
    check_bounded,
    refuse_unbounded,
)
from optimizer.proxy import proxy_hedge_messages
from optimizer.reserve import with_reserve, with_stress_preset
from optimizer.rounding import Rounded, contracts_of, round_positions, snap_small_trades
from optimizer.settings import OptimizerSettings, SolverName
from optimizer.solution import (
    Binding,
    ConflictReport,
    Plan,
    Solution,
    fallbacks_in,
)
from optimizer.solution_report import (
    SPOT_NOISE,
    after_spot,
    assemble_solution,
    notional_per_contract,
    rounding_messages,
)
from optimizer.spot_leg import net_trades
from optimizer.spot_lots import absorb_spot_gap, round_spot_lots

DUAL_TOL = 1e-9


@dataclass(frozen=True)
class Decision:
    """One rebalance's outcome before the report: the data, the compiled problem, the solver's
    status, the unrounded optimum and the lot-rounded positions (``rounded.contracts``, signed
    contracts; ``rounded.z`` weight units, x = z V USD)."""

    data: ProblemData
    problem: HedgeProblem
    status: str
    solver: str
    tried: tuple[tuple[str, str], ...]
    solve_s: float
    t0: float
    z_unrounded: np.ndarray
    rounded: Rounded
    conflicts: tuple[ConflictReport, ...]
    messages: tuple[str, ...]
    #: rows the relaxed constraints conflict with (not relaxed themselves; infeasible books only)
    opposing: tuple[str, ...] = ()
    #: the spot leg's (buys, sells) in weights (USD / V); None with the spot leg off
    spot: tuple[np.ndarray, np.ndarray] | None = None
    #: the multi-period plan (horizon H > 1, unrounded USD per step); None for H = 1 or no solution
    plan: Plan | None = None

    @property
    def fallbacks(self) -> int:
        """Solvers that failed before the one that served (optimizer.solution.fallbacks_in)."""
        return fallbacks_in(self.tried)

    @property
    def post(self) -> ProblemData:
        """The data after the spot trades (s' = s + b - q): what the futures positions are checked,
        rounded and reported against. ``data`` itself without the spot leg."""
        return after_spot(self.data, self.spot)


class InsufficientCollateralError(FbrError):
    """The margin budget cannot carry even the smallest hedge the book needs."""


def solve_or_diagnose(hp: HedgeProblem, d: ProblemData, solvers: tuple[SolverName, ...]
                      ) -> tuple[SolveOutcome, ElasticResult | None]:
    """``hp.solve(solvers)``; when no solver answers, the elastic re-solve (every row with a
    slack, always feasible) decides: a least total violation past float noise proves the book
    cannot meet its constraints, an answer (status infeasible, with that elastic result for the
    caller to name the conflicts from); none (the book is feasible: said in the error), or no
    answer there either, and the failure stands (:class:`SolverFailedError`). Interior-point
    solvers can stall on an infeasible problem without proving it. The elastic result is None
    when a solver answered."""
    try:
        return hp.solve(solvers), None
    except SolverFailedError as exc:
        el = diagnose(hp, d)
        if el.feasible:
            raise type(exc)(f"{exc}. A least-violation check finds a book that meets every "
                            "constraint: the book is feasible and the solvers failed on it") from exc
        if not el.conflicts:
            raise
        failed = RawResult(None, INFEASIBLE, "elastic", 0.0, 0, float("nan"))
        return SolveOutcome(failed, (("solvers", str(exc)), ("elastic", INFEASIBLE))), el


def diagnose(hp: HedgeProblem, d: ProblemData) -> ElasticResult:
    """The least-violation re-solve of ``hp``'s problem: over every step of a plan (H > 1,
    optimizer.elastic_plan: a plan may break a row only at a later step), else the single-period
    one (optimizer.elastic)."""
    if isinstance(hp, PlannerProblem) and hp.horizon > 1:
        return elastic_plan_resolve(d, hp.horizon)
    return elastic_resolve(d)


def _infeasible_messages(el: ElasticResult, conflicts: tuple[ConflictReport, ...]) -> list[str]:
    """What an infeasible answer says: the conflicting constraints (and, when the least-violation
    re-solve itself failed, which solvers failed and that the positions are today's)."""
    names = ", ".join([c.name for c in conflicts] + list(el.opposing)) or "(none found)"
    out: list[str] = []
    if not el.solved:
        tried = ", ".join(f"{s} ({st})" for s, st in el.tried) or "none"
        out.append(f"the least-violation re-solve failed ({tried}): the conflicting constraints are "
                   f"unknown and the positions shown are today's")
    later = bool(conflicts) and all(" at step " in c.name for c in conflicts)
    out.append(f"infeasible: these constraints conflict: {names}. " + (
        "The plan breaks them only at those later steps: the positions shown are step 1's of the "
        "least-violation plan." if later else
        "The positions shown are the least-violation book: they still break those constraints "
        "by the amounts listed."))
    return out


def _check_collateral(d: ProblemData, book: Book) -> None:
    """Raise when margin is on, a hedge is needed and the budget cannot open the smallest lot.
    Not with the spot leg on: spot trades may rebalance without a hedge, or raise the collateral
    (a sale of spot into the wallet), so the solve itself decides (infeasible is its answer)."""
    if not d.structure.margin or d.spot is not None:
        return
    gap = np.abs(d.w - d.s - d.B @ d.z0)
    if float(gap.max(initial=0.0)) * d.V < 1.0:
        return
    arrays = contract_arrays(book.contracts)
    smallest = float(np.min(np.maximum(arrays.min_notional, arrays.lot * notional_per_contract(book, d))
                            / arrays.leverage))
    budget = d.im_budget * d.V
    if budget < smallest:
        raise InsufficientCollateralError(
            f"collateral too small for any hedge: margin budget {budget:,.2f} USD (collateral "
            f"{d.collateral:,.2f} less buffer) but the smallest position needs {smallest:,.2f} USD of "
            f"initial margin. Fix: add stablecoin collateral ([book] cash), pledge spot ([pledged]), "
            f"lower margin_buffer_usd / margin_buffer_fraction or raise the contracts' leverage.")


class Rebalancer:
    """Solves rebalances, compiling each problem structure once and re-using it."""

    def __init__(self) -> None:
        self._problems: dict[Structure, HedgeProblem] = {}
        self._planners: dict[tuple[Structure, int], PlannerProblem] = {}

    def fit_tax_pieces(self, d: ProblemData) -> ProblemData:
        """``d`` with its tax curves padded to a compiled problem's piece count, so lots that come
        and go (a replay adds a lot per spot buy) re-use one compiled problem: only Parameter
        values change (padding repeats a curve's last piece, which leaves the tax unchanged).

        The smallest cached problem of the same structure with at least ``d``'s pieces serves;
        with none, but one with fewer pieces (the lots grew), the new problem is built with the
        pieces rounded up to a power of two, so n growing lots cost O(log n) compiles. With
        ``settings.horizon`` H > 1 the cached problems are the planners of that H (the plan's
        tax is on step 1, whose structure keys the planner). ``d`` as it is when the tax term is
        off or its own structure is cached (single solves unchanged).
        """
        sd = d.spot
        if sd is None or sd.tax_pieces == 0:
            return d
        horizon = planner_horizon(d.settings)
        cached = (list(self._problems) if horizon == 1 else
                  [k for k, h in self._planners if h == horizon])
        st = d.structure
        if st in cached:
            return d
        siblings = [k.tax_pieces for k in cached
                    if k.tax_pieces > 0 and replace(k, tax_pieces=st.tax_pieces) == st]
        larger = [k for k in siblings if k > sd.tax_pieces]
        if larger:
            pieces = min(larger)
        elif siblings:
            pieces = 1 << (sd.tax_pieces - 1).bit_length()
        else:
            return d
        return replace(d, spot=replace(sd, tax_pieces=pieces))

    def problem_for(self, d: ProblemData) -> HedgeProblem:
        """The compiled problem for ``d``'s structure (built on first use): the multi-period
        :class:`PlannerProblem` when ``d.settings.horizon`` > 1 (one per structure and H)."""
        st = d.structure
        horizon = planner_horizon(d.settings)
        if horizon > 1:
            pp = self._planners.get((st, horizon))
            if pp is None:
                pp = PlannerProblem(st, horizon)
                self._planners[(st, horizon)] = pp
            return pp
        hp = self._problems.get(st)
        if hp is None:
            hp = HedgeProblem(st)
            self._problems[st] = hp
        return hp

    def solve_z(self, d: ProblemData) -> tuple[np.ndarray, HedgeProblem, str, float]:
        """The lean path: optimal z (weight units, unrounded), the problem, solver, seconds."""
        d = self.fit_tax_pieces(d)
        hp = self.problem_for(d)
        hp.update(d)
        out, _ = solve_or_diagnose(hp, d, d.settings.solvers)
        refuse_unbounded(out.result.status, d)
        if out.result.z is None:
            return d.z0.copy(), hp, out.result.status, out.result.seconds
        return out.result.z, hp, out.result.solver, out.result.seconds

    def decide(self, book: Book, market: MarketSnapshot, risk: RiskModel,
               settings: OptimizerSettings) -> Decision:
        """Prepare, solve with fallbacks, snap solver noise and round to lots: the positions to hold,
        without the report (:meth:`solve` adds it). An infeasible book gives the elastic re-solve's
        least-violation positions, unrounded, with the conflicting constraints named."""
        t0 = time.perf_counter()
        settings = with_stress_preset(settings, book)
        d = prepare(book, market, risk, settings)
        check_not_liquidatable(d, book)
        check_bounded(d)
        _check_collateral(d, book)
        d = self.fit_tax_pieces(d)
        hp = self.problem_for(d)
        hp.update(d)
        outcome, diagnosed = solve_or_diagnose(hp, d, settings.solvers)
        res = outcome.result
        refuse_unbounded(res.status, d)
        cons = hp.constraints
        messages: list[str] = []
        if outcome.fallbacks:
            failed = ", ".join(f"{s} ({st})" for s, st in outcome.tried[:-1])
            messages.append(f"solver fallback: {failed} failed; {res.solver} served")
        conflicts: tuple[ConflictReport, ...] = ()
        opposing: tuple[str, ...] = ()
        spot: tuple[np.ndarray, np.ndarray] | None = None
        plan: Plan | None = None
        if res.status == INFEASIBLE:
            el = refute_infeasible(diagnosed or diagnose(hp, d))
            spot, opposing = el.spot, el.opposing
            conflicts = tuple(ConflictReport(c.name, c.violation_user, c.unit) for c in el.conflicts)
            messages += _infeasible_messages(el, conflicts)
            z_unrounded = el.z
            rounded = Rounded(contracts=contracts_of(el.z, d, notional_per_contract(book, d),
                                                  book.contracts_vector()), z=el.z,
                              repairs=0, broken=())
            status = "infeasible"
        else:
            if d.spot is not None and res.z is not None:
                spot = _spot_trades(hp, res, d, book, settings.round_lots)
            if isinstance(hp, PlannerProblem) and res.x is not None:
                plan = plan_of(hp.plan_z(res), d, hp.plan_spot(res))
            dp = after_spot(d, spot)
            noise = settings.noise_trade_weight, settings.noise_objective, settings.noise_objective_flat
            z_unrounded = snap_small_trades(np.asarray(res.z), dp, cons, hp.terms, *noise)
            if spot is not None:  # the futures take up what the spot rounding left out
                z_unrounded = absorb_spot_gap(z_unrounded, dp, _spot_gap(hp, res, spot), cons,
                                              hp.terms, settings.noise_trade_weight)
            rounded = (round_positions(z_unrounded, dp, book.contracts, book.contracts_vector(), cons,
                                       hp.terms)
                       if settings.round_lots else
                       Rounded(contracts_of(z_unrounded, d, notional_per_contract(book, d),
                                            book.contracts_vector()),
                               z_unrounded, 0, ()))
            if rounded.broken:
                messages.append("after lot rounding these still break: " + ", ".join(rounded.broken))
            status = res.status
        return Decision(data=d, problem=hp, status=status, solver=res.solver, tried=outcome.tried,
                        solve_s=res.seconds, t0=t0, z_unrounded=z_unrounded, rounded=rounded,
                        conflicts=conflicts, messages=tuple(messages), opposing=opposing, spot=spot,
                        plan=plan)

    def solve(self, book: Book, market: MarketSnapshot, risk: RiskModel,
              settings: OptimizerSettings, *, explain: bool = True,
              labels: tuple[str, ...] = ()) -> Solution:
        """Solve one rebalance and build the full :class:`Solution`."""
        dec = self.decide(book, market, risk, settings)
        d, hp = dec.data, dec.problem
        messages = list(dec.messages)
        bindings: tuple[Binding, ...] = ()
        if explain and dec.status != "infeasible":
            try:
                bindings = self._bindings(hp, dec.solver, dec.post, dec.z_unrounded)
            except Exception as exc:  # duals explain; they never fail the solve
                messages.append(f"binding constraints unavailable ({type(exc).__name__}: {exc})")
        messages += rounding_messages(book, dec.post, dec.z_unrounded, dec.rounded.z)
        messages += proxy_hedge_messages(d, dec.rounded.z)
        messages += halted_messages(d) + unlimited_by_adv(book, market, settings.constraints)
        if d.risk_note:
            messages.append(d.risk_note)
        # the margin rows on the collateral after the spot trades (dec.post)
        blockers = order_blockers(dec.status, dec.conflicts, dec.post, dec.rounded.z * d.V,
                                  dec.opposing)
        sol = assemble_solution(book, d, dec.rounded, dec.z_unrounded, hp.constraints, status=dec.status,
                        solver=dec.solver, tried=dec.tried, solve_s=dec.solve_s, t0=dec.t0,
                        bindings=bindings, conflicts=dec.conflicts, messages=tuple(messages),
                        labels=labels, blockers=blockers, opposing=dec.opposing, spot=dec.spot,
                        plan=dec.plan)
        return with_reserve(sol, book, market, d.settings)  # and the stress rows once paid

    @staticmethod
    def _bindings(hp: HedgeProblem, solver: str, d: ProblemData,
                  z: np.ndarray) -> tuple[Binding, ...]:
        hp.unpack(solver)
        out: list[Binding] = []
        for c in hp.constraints:
            duals = c.dual_rows()
            rows = c.rows(d)
            for lab, dual in zip(rows, duals, strict=False):
                if not np.isfinite(dual) or dual <= DUAL_TOL:
                    continue
                du = float(dual) * c.per_unit(d) / d.structure.objective_scale
                out.append(Binding(lab, du, _plan_explanation(hp, c, lab, du)
                                   or c.explain(lab, du), c.holds_back(lab, du)))
        return tuple(out)


def _spot_trades(hp: HedgeProblem, res: RawResult, d: ProblemData, book: Book,
                 round_lots: bool) -> tuple[np.ndarray, np.ndarray]:
    """The solved spot (buys, sells) in weights: netted per asset unless losses are harvested (no
    wash trades, ``net_trades``), on each asset's quantity step when lots are rounded
    (``optimizer.spot_lots``), solver noise (under ``SPOT_NOISE``) dropped."""
    assert d.spot is not None
    buy, sell = hp.spot_solution(res)
    if not d.spot.settings.harvest_losses:
        buy, sell = net_trades(buy, sell)
    if round_lots:
        buy, sell = round_spot_lots(buy, sell, d.spot.prices, d.spot.quantities,
                                    np.array([a.lot_step for a in book.assets]), d.V)
    return np.where(buy > SPOT_NOISE, buy, 0.0), np.where(sell > SPOT_NOISE, sell, 0.0)


def _spot_gap(hp: HedgeProblem, res: RawResult, spot: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The net spot trade solved less the one kept (N, weights): what the lot rounding and the
    noise floor took off each asset (``optimizer.spot_lots.absorb_spot_gap``)."""
    buy, sell = hp.spot_solution(res)
    gap: np.ndarray = (buy - sell) - (spot[0] - spot[1])
    return gap


def _plan_explanation(hp: HedgeProblem, c: Constraint, row: str, dual_user: float) -> str | None:
    """For an H-step plan (H > 1) the dual prices the whole plan's objective (H periods of risk
    and costs), so it is stated as that, per unit of the row: a single period's tracking error
    or cost would misread it (step 1's rows are the ones explained); a dual whose step's effect
    is below NEGLIGIBLE_SHARE of step 1's objective holds nothing back. None for one period."""
    if not isinstance(hp, PlannerProblem) or hp.horizon <= 1:
        return None
    where = f"at step 1 of the {hp.horizon}-step plan"
    if not c.holds_back(row, dual_user):
        return f"{row} holds nothing back {where} (its dual is at solver precision)"
    return (f"{row} binds {where}: loosening it lowers the plan's objective (risk and costs over "
            f"all {hp.horizon} steps) by {dual_user:.3g} per {c.unit} (first order)")


def solve_rebalance(book: Book, market: MarketSnapshot, risk: RiskModel,
                    settings: OptimizerSettings | None = None, *,
                    labels: tuple[str, ...] = ()) -> Solution:
    """Convenience: one rebalance with a fresh :class:`Rebalancer`."""
    return Rebalancer().solve(book, market, risk, settings or OptimizerSettings(), labels=labels)
