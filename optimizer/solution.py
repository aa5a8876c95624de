"""The answer of one rebalance: positions, trades, risk, costs, margin and why (binding constraints).

Units: USD for notionals, costs and margin; tracking error annualised as a fraction (0.01 = 1%);
duals in objective units per user unit of the constraint (USD, pp, x of leverage).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from optimizer.solution_doc import SolutionDoc


@dataclass(frozen=True)
class Trade:
    """A futures trade: signed USD notional and contracts (after lot rounding)."""

    symbol: str
    underlying: str
    notional: float
    contracts: float
    price: float


@dataclass(frozen=True)
class SpotTrade:
    """A spot trade of the spot leg: signed USD and units (buy > 0), the price (USD/unit), the
    gross buys and sells (USD, >= 0; both > 0 only when harvesting a loss), and the tax the sale
    realises (USD): ``tax`` with the book's lot method (what the books will show), ``tax_optimiser``
    the optimiser's convex ascending-tax curve (equal for single-rate HIFO and specific lots)."""

    asset: str
    notional: float
    units: float
    price: float
    bought: float
    sold: float
    tax: float
    tax_optimiser: float


@dataclass(frozen=True)
class SpotCosts:
    """The spot leg's costs (USD): fees, half spread, impact and the tax realised by the sales
    (``tax`` with ``lot_method``; ``tax_optimiser`` as priced by the optimiser)."""

    fees: float
    spread: float
    impact: float
    tax: float
    tax_optimiser: float
    lot_method: str

    @property
    def trading(self) -> float:
        """fees + spread + impact (USD)."""
        return self.fees + self.spread + self.impact


#: In a solver's ``tried`` status: its answer confirms the verdict of no solution (infeasible or
#: unbounded) the solver before it gave (optimizer.problem.HedgeProblem.run_chain): a second
#: opinion, not a fallback.
CONFIRMS = ": confirms "


def fallbacks_in(tried: Iterable[tuple[str, str]]) -> int:
    """How many solvers failed before the one that served: every try but the last, less the
    second opinions that confirmed the served verdict (:data:`CONFIRMS`)."""
    rows = list(tried)
    return max(len(rows) - 1 - sum(CONFIRMS in status for _, status in rows), 0)


@dataclass(frozen=True)
class Position:
    """A target futures position: signed USD notional and contracts."""

    symbol: str
    underlying: str
    notional: float
    contracts: float


@dataclass(frozen=True)
class Binding:
    """A binding constraint: its row name; ``dual``, the rate at which loosening its bound lowers
    the objective (objective units per user unit of the bound: USD, pp, x of leverage; the
    objective is TE^2 + gamma-weighted costs / V, optimizer.terms); and a one-line explanation of
    a concrete loosening's first-order effect on tracking error (bp) and trading cost (USD)
    (optimizer.constraint_base.Constraint.explain). ``holds_back`` is False for a row whose dual
    is at solver precision (its explanation's loosening moves the objective by less than
    ``NEGLIGIBLE_SHARE`` of its size, :meth:`optimizer.constraint_base.Constraint.holds_back`): an
    interior-point solver leaves a small positive dual on rows well inside their bounds too, so
    such a row is not reported as binding, whether it touches its bound or not."""

    name: str
    dual: float
    explanation: str
    holds_back: bool = True


@dataclass(frozen=True)
class ConflictReport:
    """A constraint relaxed by the elastic re-solve of an infeasible book."""

    name: str
    violation: float
    unit: str


@dataclass(frozen=True)
class Costs:
    """Costs of the trades (USD) and the carry of the target positions over the horizon (USD)."""

    fees: float
    spread: float
    impact: float
    funding_carry: float
    horizon_days: float

    @property
    def trading(self) -> float:
        """fees + spread + impact (USD)."""
        return self.fees + self.spread + self.impact


@dataclass(frozen=True)
class StressResult:
    """Margin surplus (USD) after a stress scenario; negative means liquidation."""

    name: str
    surplus: float


@dataclass(frozen=True)
class MarginReport:
    """Margin use at the target positions (USD) and in every stress scenario."""

    collateral: float
    initial: float
    maintenance: float
    initial_utilisation: float
    maintenance_ratio: float
    stress: tuple[StressResult, ...] = ()

    @property
    def worst_stress_surplus(self) -> float | None:
        """The smallest stress surplus (USD), None without scenarios."""
        return min((s.surplus for s in self.stress), default=None)


@dataclass(frozen=True)
class ScenarioReserve:
    """One scenario: its surplus at today's wallet and the reserve that brings it to exactly 0 (USD)."""

    name: str
    surplus_now: float
    reserve_usd: float


@dataclass(frozen=True)
class ReserveSizing:
    """The smallest wallet reserve (USD) that opens the positions (their initial margin: the row
    "initial margin" of ``scenarios``) and keeps every stress scenario's margin surplus >= 0.

    ``wallet_now``: today's wallet (stablecoin cash + uPnL); ``binding``: the scenario that sets the
    reserve (None when no scenario needs any reserve, or without scenarios). ``horizon_days``: the
    cost horizon when the objective priced the reserve (``costs.reserve_cost``), else None.
    """

    reserve_usd: float
    reserve_yield: float
    wallet_now: float
    binding: str | None
    scenarios: tuple[ScenarioReserve, ...]
    horizon_days: float | None = None

    @property
    def in_objective(self) -> bool:
        """True when the solve priced the reserve (``costs.reserve_cost``)."""
        return self.horizon_days is not None

    @property
    def reserve_cost_usd_over_horizon(self) -> float:
        """What the objective paid for it: reserve x yield x horizon_days / 365 (USD; 0 when the
        reserve was only reported)."""
        if self.horizon_days is None:
            return 0.0
        return self.reserve_cost_usd_per_year * self.horizon_days / 365.0  # models.risk.DAYS_PER_YEAR

    @property
    def reserve_cost_usd_per_year(self) -> float:
        """Opportunity cost: reserve x yearly yield (USD a year)."""
        return self.reserve_usd * self.reserve_yield

    @property
    def excess_usd(self) -> float:
        """Wallet above the smallest safe wallet (USD; negative: the wallet is short of it). That
        is the reserve, except for a wallet already in debt (negative, against pledged spot): it
        is compared with the unfloored need max(R_IM, max_s R_s), which can be below 0 too (a debt
        of 5,000 where 34,044 would still be safe is 29,044 above it, not 5,000 short)."""
        if self.wallet_now >= 0:
            return self.wallet_now - self.reserve_usd
        need = max((s.reserve_usd for s in self.scenarios), default=0.0)
        return self.wallet_now - need

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: reserve, cost, yield, wallet, excess, binding scenario, per scenario."""
        return {"reserve_usd": self.reserve_usd,
                "reserve_cost_usd_per_year": self.reserve_cost_usd_per_year,
                "reserve_yield": self.reserve_yield, "wallet_usd": self.wallet_now,
                "excess_usd": self.excess_usd, "binding_scenario": self.binding,
                "scenarios": [asdict(s) for s in self.scenarios],
                # costs.reserve_cost: the reserve was priced in the objective over the horizon
                **({"in_objective": True, "horizon_days": self.horizon_days,
                    "reserve_cost_usd_over_horizon": self.reserve_cost_usd_over_horizon}
                   if self.in_objective else {})}


@dataclass(frozen=True)
class PlanStep:
    """One step of a multi-period plan (optimizer.planner): the futures positions planned at the
    end of step ``step`` (1 = now), the trades that step makes and the dated positions that settle
    at their expiry before it starts (not trades: no order, no cost; signed, -the position), USD
    notional by contract (unrounded; step 1's positions are the solution's before lot rounding);
    with the spot leg on, the step's net spot trades b_h - q_h, USD by asset (> 0 buys; step 1's
    as solved, before the solution nets and snaps them)."""

    step: int
    positions: dict[str, float]
    trades: dict[str, float]
    settlements: dict[str, float] = field(default_factory=dict)
    spot_trades: dict[str, float] = field(default_factory=dict)


def _summed(per_step: Iterable[dict[str, float]]) -> dict[str, float]:
    """Key by key sums of the steps' USD figures."""
    out: dict[str, float] = {}
    for figures in per_step:
        for key, v in figures.items():
            out[key] = out.get(key, 0.0) + v
    return out


@dataclass(frozen=True)
class Plan:
    """The planner's H steps ahead, each ``step_days`` long. Only step 1 is traded now; the
    later steps are what the optimiser expects to do next if nothing changes (re-planned at every
    rebalance). The trades and settlements of all steps add up to the last step's positions minus
    today's."""

    step_days: float
    steps: tuple[PlanStep, ...]

    @property
    def horizon(self) -> int:
        """H, the number of steps planned."""
        return len(self.steps)

    def total_trades(self) -> dict[str, float]:
        """USD traded per contract over the whole plan (signed sum of the steps' trades)."""
        return _summed(st.trades for st in self.steps)

    def total_spot_trades(self) -> dict[str, float]:
        """Net USD of spot traded per asset over the whole plan (signed sum of the steps')."""
        return _summed(st.spot_trades for st in self.steps)

    def note(self) -> str:
        """Why today's trade is what it is, in one sentence (:func:`optimizer.plan_note.plan_note`)."""
        from optimizer.plan_note import plan_note

        return plan_note(self)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: step length, H, per step the positions and trades (USD), and the note."""
        return {"step_days": self.step_days, "horizon": self.horizon,
                "steps": [asdict(s) for s in self.steps], "note": self.note()}


@dataclass(frozen=True)
class Solution:
    """Everything a rebalance returns. ``status``: optimal | infeasible | optimal_inaccurate."""

    status: str
    solver: str
    solvers_tried: tuple[tuple[str, str], ...]
    solve_time_ms: float
    total_time_ms: float
    nav: float
    base: float
    tracking_error_before: float
    tracking_error_after: float
    tracking_error_unrounded: float
    trades: tuple[Trade, ...]
    target_positions: tuple[Position, ...]
    costs: Costs
    margin: MarginReport
    gross_leverage: float
    net_exposure: float
    effective_weights_before: dict[str, float]
    effective_weights_after: dict[str, float]
    targets: dict[str, float]
    binding_constraints: tuple[Binding, ...] = ()
    conflicts: tuple[ConflictReport, ...] = ()
    rounding_repairs: int = 0
    rounding_broken: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    labels: tuple[str, ...] = field(default_factory=tuple)
    #: why these positions must not become orders (optimizer.checks.order_blockers): an infeasible
    #: status naming the conflicting constraints, and every hard margin / stress row the returned
    #: positions break; empty when the solution may be traded
    blockers: tuple[str, ...] = ()
    #: rows the relaxed ``conflicts`` conflict with (binding in the elastic re-solve, not relaxed)
    opposing: tuple[str, ...] = ()
    #: the spot leg's trades (one per asset traded) and costs; None/() with the spot leg off
    spot_trades: tuple[SpotTrade, ...] = ()
    spot_costs: SpotCosts | None = None
    #: the sized stablecoin reserve and its opportunity cost (optimizer.reserve); None unless
    #: ``constraints.size_reserve`` or ``costs.reserve_cost`` is on
    reserve: ReserveSizing | None = None
    #: the multi-period plan (``OptimizerSettings.horizon`` > 1; optimizer.planner): positions and
    #: trades planned for each step ahead; None for the single-period problem
    plan: Plan | None = None

    @property
    def orderable(self) -> bool:
        """True when nothing blocks turning this solution into orders."""
        return not self.blockers

    @property
    def fallbacks(self) -> int:
        """Solvers that failed before the one that served (:func:`fallbacks_in`)."""
        return fallbacks_in(self.solvers_tried)

    def trade_vector(self) -> dict[str, float]:
        """Trades as symbol -> USD notional."""
        return {t.symbol: t.notional for t in self.trades}

    def to_dict(self) -> SolutionDoc:
        """A JSON-ready dict (the schema is documented in the README)."""
        out: dict[str, Any] = {
            "status": self.status,
            "solver": self.solver,
            "solvers_tried": [{"solver": s, "status": st} for s, st in self.solvers_tried],
            "fallbacks": self.fallbacks,
            "solve_time_ms": self.solve_time_ms,
            "total_time_ms": self.total_time_ms,
            "nav": self.nav,
            "base": self.base,
            "tracking_error_before": self.tracking_error_before,
            "tracking_error_after": self.tracking_error_after,
            "tracking_error_unrounded": self.tracking_error_unrounded,
            "trades": [asdict(t) for t in self.trades],
            "target_positions": [asdict(p) for p in self.target_positions],
            "costs": {**asdict(self.costs), "trading": self.costs.trading},
            "margin": {**asdict(self.margin),
                       "stress": [asdict(s) for s in self.margin.stress],
                       "worst_stress_surplus": self.margin.worst_stress_surplus},
            "leverage": {"gross": self.gross_leverage, "net": self.net_exposure},
            "effective_weights_before": self.effective_weights_before,
            "effective_weights_after": self.effective_weights_after,
            "targets": self.targets,
            "binding_constraints": [asdict(b) for b in self.binding_constraints],
            "conflicts": [asdict(c) for c in self.conflicts],
            "opposing_constraints": list(self.opposing),
            "rounding": {"repairs": self.rounding_repairs, "broken": list(self.rounding_broken)},
            "messages": list(self.messages),
            "labels": list(self.labels),
            "blockers": list(self.blockers),
        }
        if self.spot_costs is not None:  # the spot leg: keys only when it is on
            out["spot_trades"] = [asdict(t) for t in self.spot_trades]
            out["spot_costs"] = {**asdict(self.spot_costs), "trading": self.spot_costs.trading}
        if self.reserve is not None:  # the reserve sizing: keys only when it is on
            out["reserve"] = self.reserve.to_dict()
        if self.plan is not None:  # the multi-period planner: keys only when it is on
            out["plan"] = self.plan.to_dict()
        result: SolutionDoc = _clean(out)
        return result


def _clean(obj: Any) -> Any:
    """Replace non-finite floats by None so the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj
