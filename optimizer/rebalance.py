"""One rebalance end to end: prepare -> (cached) compiled problem -> solve with fallbacks -> round and
repair -> explain. A :class:`Rebalancer` keeps one compiled problem per structure, so a sequence of
rebalances on the same instruments only updates Parameter values.

With ``OptimizerSettings.horizon`` H > 1 the compiled problem is the multi-period planner
(optimizer.planner.PlannerProblem, one per (structure, H)): step 1's positions are rounded and
traded as usual, and the decision carries the whole plan (:class:`~optimizer.solution.Plan`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from models.book import Book
from models.errors import FbrError
from models.instruments import contract_arrays
from models.market import MarketSnapshot
from models.risk import RiskModel
from models.risk import tracking_error as models_tracking_error
from models.tax import realised_tax, total_quantity
from optimizer.checks import check_not_liquidatable, order_blockers
from optimizer.constraints import Constraint
from optimizer.data import ProblemData, Structure, prepare
from optimizer.engines import INFEASIBLE, UNBOUNDED
from optimizer.planner import PlannerProblem, plan_of, planner_horizon
from optimizer.problem import HedgeProblem, UnboundedBookError, check_bounded, elastic_resolve
from optimizer.proxy import proxy_hedge_messages
from optimizer.reserve import size_reserve, with_stress_preset
from optimizer.rounding import Rounded, round_positions, snap_small_trades
from optimizer.settings import OptimizerSettings
from optimizer.solution import (
    Binding,
    ConflictReport,
    Costs,
    MarginReport,
    Plan,
    Position,
    Solution,
    SpotCosts,
    SpotTrade,
    StressResult,
    Trade,
)

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
        """Solvers that failed before the one that served."""
        return max(len(self.tried) - 1, 0)

    @property
    def post(self) -> ProblemData:
        """The data after the spot trades (s' = s + b - q): what the futures positions are checked,
        rounded and reported against. ``data`` itself without the spot leg."""
        return after_spot(self.data, self.spot)


#: spot trades below this (weights) are solver noise and dropped
SPOT_NOISE = 1e-9


def after_spot(d: ProblemData, spot: tuple[np.ndarray, np.ndarray] | None) -> ProblemData:
    """``d`` with the spot weights after the spot leg's trades, s' = s + b - q (``d`` when None)."""
    if spot is None:
        return d
    buy, sell = spot
    return replace(d, s=d.s + buy - sell)


class InsufficientCollateralError(FbrError):
    """The margin budget cannot carry even the smallest hedge the book needs."""


def tracking_error(z: np.ndarray, d: ProblemData) -> float:
    """Annualised tracking error at ``z`` (``models.risk.tracking_error``): e - w* = s + B z - w*,
    Sigma = F F' + diag(sqrt_idio^2), Sigma_basis = Gb Gb' (the problem's own risk model)."""
    cov = d.F @ d.F.T + np.diag(d.sqrt_idio ** 2)
    return models_tracking_error(d.s + d.B @ z - d.w, cov, z, d.Gb @ d.Gb.T)


def _check_collateral(d: ProblemData, book: Book) -> None:
    """Raise when margin is on, a hedge is needed and the budget cannot open the smallest lot."""
    if not d.structure.margin:
        return
    gap = np.abs(d.w - d.s - d.B @ d.z0)
    if float(gap.max(initial=0.0)) * d.V < 1.0:
        return
    arrays = contract_arrays(book.contracts)
    smallest = float(np.min(np.maximum(arrays.min_notional, arrays.lot * _npc(book, d))
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
        pieces rounded up to a power of two, so n growing lots cost O(log n) compiles. ``d`` as
        it is when the tax term is off or its own structure is cached (single solves unchanged).
        """
        sd = d.spot
        if sd is None or sd.tax_pieces == 0 or d.structure in self._problems:
            return d
        st = d.structure
        siblings = [k.tax_pieces for k in self._problems
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
        out = hp.solve(d.settings.solvers)
        _refuse_unbounded(out.result.status)
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
        outcome = hp.solve(settings.solvers)
        res = outcome.result
        _refuse_unbounded(res.status)
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
            el = elastic_resolve(d)
            spot = el.spot
            conflicts = tuple(ConflictReport(c.name, c.violation_user, c.unit) for c in el.conflicts)
            opposing = el.opposing
            names = ", ".join([c.name for c in conflicts] + list(opposing)) or "(none found)"
            messages.append(f"infeasible: these constraints conflict: {names}. The positions shown "
                            f"are the least-violation book: they still break those constraints by "
                            f"the amounts listed.")
            z_unrounded = el.z
            rounded = Rounded(contracts=el.z * d.V / _npc(book, d), z=el.z, repairs=0, broken=())
            status = "infeasible"
        else:
            if d.spot is not None and res.z is not None:
                buy, sell = hp.spot_solution(res.solver)
                spot = (np.where(buy > SPOT_NOISE, buy, 0.0), np.where(sell > SPOT_NOISE, sell, 0.0))
            if isinstance(hp, PlannerProblem) and res.x is not None:
                plan = plan_of(hp.plan_z(res), d)
            dp = after_spot(d, spot)
            z_unrounded = snap_small_trades(np.asarray(res.z), dp, cons, hp.terms,
                                            settings.noise_trade_weight, settings.noise_objective)
            rounded = (round_positions(z_unrounded, dp, book.contracts, book.contracts_vector(), cons)
                       if settings.round_lots else
                       Rounded(z_unrounded * d.V / _npc(book, d), z_unrounded, 0, ()))
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
        if d.risk_note:
            messages.append(d.risk_note)
        blockers = order_blockers(dec.status, dec.conflicts, d, dec.rounded.z * d.V, dec.opposing)
        sol = _assemble(book, d, dec.rounded, dec.z_unrounded, hp.constraints, status=dec.status,
                        solver=dec.solver, tried=dec.tried, solve_s=dec.solve_s, t0=dec.t0,
                        bindings=bindings, conflicts=dec.conflicts, messages=tuple(messages),
                        labels=labels, blockers=blockers, opposing=dec.opposing, spot=dec.spot,
                        plan=dec.plan)
        cs, cc = d.settings.constraints, d.settings.costs
        if cs.size_reserve or cc.reserve_cost:  # the reserve at the target positions (off by default)
            x = np.array([p.notional for p in sol.target_positions])
            sol = replace(sol, reserve=size_reserve(
                book, market, x, cs.stress, cc.reserve_yield,
                horizon_days=cc.horizon_days if cc.reserve_cost else None))
        return sol

    @staticmethod
    def _bindings(hp: HedgeProblem, solver: str, d: ProblemData,
                  z: np.ndarray) -> tuple[Binding, ...]:
        hp.unpack(solver)
        te = tracking_error(z, d)
        out: list[Binding] = []
        for c in hp.constraints:
            duals = c.dual_rows()
            rows = c.rows(d)
            for lab, dual in zip(rows, duals, strict=False):
                if not np.isfinite(dual) or dual <= DUAL_TOL:
                    continue
                du = float(dual) * c.per_unit(d) / d.structure.objective_scale
                line = c.explain(lab, du)
                if te > 0:
                    line += f" (about {1e4 * du / (2 * te):.3g} bp of tracking error per unit)"
                out.append(Binding(lab, du, line))
        return tuple(out)


#: Lot rounding that removes at least this share of the solution's trade notional is reported.
ROUNDING_REPORT_SHARE = 0.5


def rounding_messages(book: Book, d: ProblemData, z_unrounded: np.ndarray,
                      z_rounded: np.ndarray) -> list[str]:
    """A note when lot rounding removed most of the solution: with t = (z - z0) V (USD), the share
    1 - sum|t_rounded| / sum|t_unrounded| >= ROUNDING_REPORT_SHARE (and over 1 USD removed); it
    names the contracts whose trade rounding cut (with one lot in USD) and gives the tracking
    error (annualised) before the trade, of the unrounded solution and left after rounding."""
    V = d.V
    t_u = np.abs((z_unrounded - d.z0) * V)
    t_r = np.abs((z_rounded - d.z0) * V)
    removed = float(t_u.sum() - t_r.sum())
    if t_u.sum() <= 0 or removed < 1.0 or removed / float(t_u.sum()) < ROUNDING_REPORT_SHARE:
        return []
    npc = _npc(book, d)
    cut = [f"{c.symbol} (one lot {c.lot_step * npc[j]:,.0f} USD, wanted {t_u[j]:,.0f} USD)"
           for j, c in enumerate(book.contracts) if t_u[j] - t_r[j] > 0.5 * max(t_u[j], 1e-12)]
    whole = t_r.sum() <= 1e-9 * max(V, 1.0)
    share = 100 * removed / float(t_u.sum())
    what = "the whole solution" if whole else f"{share:.0f}% of the solution"
    te_now = 100 * tracking_error(d.z0, d)
    return [f"lot rounding removed {what}: {', '.join(cut)}; tracking error {te_now:.3f}% "
            f"now, {100 * tracking_error(z_unrounded, d):.3f}% before rounding, "
            f"{100 * tracking_error(z_rounded, d):.3f}% left after it. Fix: trade a contract with "
            f"a smaller lot, or accept the tracking error left"]


def _refuse_unbounded(status: str) -> None:
    """The solver's own unboundedness verdict (check_bounded catches the known cases first)."""
    if status == UNBOUNDED:
        raise UnboundedBookError("the solver reports the book unbounded: a position can grow without "
                                 "limit (a carry trade, or an asset with zero variance). Fix: switch "
                                 "on margin, or cap the contracts.")


def _npc(book: Book, d: ProblemData) -> np.ndarray:
    """USD notional of one contract of each of the book's contracts at the prices of ``d``."""
    return contract_arrays(book.contracts).notional_per_contract(d.prices)


def _assemble(book: Book, d: ProblemData, rounded: Rounded, z_unrounded: np.ndarray,
              cons: list[Constraint], *, status: str, solver: str,
              tried: tuple[tuple[str, str], ...], solve_s: float, t0: float,
              bindings: tuple[Binding, ...], conflicts: tuple[ConflictReport, ...],
              messages: tuple[str, ...], labels: tuple[str, ...],
              blockers: tuple[str, ...] = (), opposing: tuple[str, ...] = (),
              spot: tuple[np.ndarray, np.ndarray] | None = None,
              plan: Plan | None = None) -> Solution:
    V = d.V
    dp = after_spot(d, spot)
    x = rounded.z * V
    t = x - d.z0 * V
    q0 = book.contracts_vector()
    trades = tuple(Trade(c.symbol, c.underlying, float(t[j]), float(rounded.contracts[j] - q0[j]),
                         float(d.prices[j]))
                   for j, c in enumerate(book.contracts) if abs(t[j]) > 1e-9 * max(V, 1.0))
    positions = tuple(Position(c.symbol, c.underlying, float(x[j]), float(rounded.contracts[j]))
                      for j, c in enumerate(book.contracts))
    costs = Costs(fees=d.costs.fees(t), spread=d.costs.spread(t),
                  impact=d.costs.impact_cost(t) if d.settings.costs.impact else 0.0,
                  funding_carry=float(d.carry @ x), horizon_days=d.settings.costs.horizon_days)
    mm = d.margin_model
    stress = []
    for k, name in enumerate(d.stress_names):
        stress.append(StressResult(name, mm.stress_surplus(x, d.stress_coll[k] * V, d.stress_g[k])))
    im, maint = float(mm.initial(x).sum()), float(mm.maintenance(x).sum())
    margin = MarginReport(collateral=d.collateral, initial=im, maintenance=maint,
                          initial_utilisation=im / d.collateral if d.collateral > 0 else math.inf,
                          maintenance_ratio=maint / d.collateral if d.collateral > 0 else math.inf,
                          stress=tuple(stress))
    e_before = d.s + d.B @ d.z0
    e_after = dp.s + d.B @ rounded.z
    spot_trades, spot_costs = _spot_report(d, spot)
    return Solution(
        status=status, solver=solver, solvers_tried=tried, solve_time_ms=1e3 * solve_s,
        total_time_ms=1e3 * (time.perf_counter() - t0), nav=d.nav, base=V,
        tracking_error_before=tracking_error(d.z0, d),
        tracking_error_after=tracking_error(rounded.z, dp),
        tracking_error_unrounded=tracking_error(z_unrounded, dp),
        trades=trades, target_positions=positions, costs=costs, margin=margin,
        gross_leverage=float(np.abs(e_after).sum()), net_exposure=float(e_after.sum()),
        effective_weights_before=dict(zip(d.assets, map(float, e_before), strict=True)),
        effective_weights_after=dict(zip(d.assets, map(float, e_after), strict=True)),
        targets=dict(zip(d.assets, map(float, d.w), strict=True)),
        binding_constraints=bindings, conflicts=conflicts, rounding_repairs=rounded.repairs,
        rounding_broken=rounded.broken, messages=messages, labels=labels, blockers=blockers,
        opposing=opposing, spot_trades=spot_trades, spot_costs=spot_costs, plan=plan,
    )


def _spot_report(d: ProblemData,
                 spot: tuple[np.ndarray, np.ndarray] | None) -> tuple[tuple[SpotTrade, ...],
                                                                      SpotCosts | None]:
    """The spot leg's trades (USD, units) and costs (USD), the tax realised lot by lot with the
    book's lot method (models.tax.realised_tax) and as the optimiser's curve priced it."""
    sd = d.spot
    if sd is None:
        return (), None
    V, n = d.V, len(d.assets)
    buy, sell = spot if spot is not None else (np.zeros(n), np.zeros(n))
    bought, sold = buy * V, sell * V
    gross = bought + sold
    impact = (float(sd.impact_cost @ (buy ** 1.5 + sell ** 1.5)) * V
              if d.settings.costs.impact else 0.0)
    taxes, taxes_opt = np.zeros(n), np.zeros(n)
    if sd.rates is not None and sd.curves is not None:
        for i in np.flatnonzero(sell > 0):
            units = min(float(sold[i] / sd.prices[i]), total_quantity(sd.lots[i]))
            taxes[i] = realised_tax(sd.lots[i], units, sd.settings.lot_method, float(sd.prices[i]),
                                    sd.now, sd.rates)[0]
            curve = sd.curves[i]
            taxes_opt[i] = curve.value(min(float(sell[i]), curve.holdings)) * V
    trades = tuple(
        SpotTrade(asset=a, notional=float(bought[i] - sold[i]),
                  units=float((bought[i] - sold[i]) / sd.prices[i]), price=float(sd.prices[i]),
                  bought=float(bought[i]), sold=float(sold[i]), tax=float(taxes[i]),
                  tax_optimiser=float(taxes_opt[i]))
        for i, a in enumerate(d.assets) if gross[i] > SPOT_NOISE * V)
    costs = SpotCosts(fees=float(sd.fee @ gross), spread=float(sd.half_spread @ gross), impact=impact,
                      tax=math.fsum(taxes.tolist()), tax_optimiser=math.fsum(taxes_opt.tolist()),
                      lot_method=sd.settings.lot_method.value)
    return trades, costs


def solve_rebalance(book: Book, market: MarketSnapshot, risk: RiskModel,
                    settings: OptimizerSettings | None = None, *,
                    labels: tuple[str, ...] = ()) -> Solution:
    """Convenience: one rebalance with a fresh :class:`Rebalancer`."""
    return Rebalancer().solve(book, market, risk, settings or OptimizerSettings(), labels=labels)
