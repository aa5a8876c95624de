"""The JSON form of a rebalance's answer (``optimizer.solution.Solution.to_dict``, whose schema the
README documents), as typed dicts. Units as in :mod:`optimizer.solution`: USD, annualised fractions
for tracking error, fractions for weights.

``Solution.to_dict`` passes its dict through ``_clean``: tuples become lists and a non-finite number
becomes None (typed ``| None`` here where that happens: margin ratios and utilisation when no
collateral backs a position). The nested rows are the dataclasses' fields (``dataclasses.asdict``),
so a field added to one of them must be added here too.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class SolverTriedDoc(TypedDict):
    """A solver tried and the status it gave."""

    solver: str
    status: str


class TradeDoc(TypedDict):
    """A futures trade (``Trade``): signed USD notional and contracts."""

    symbol: str
    underlying: str
    notional: float
    contracts: float
    price: float


class PositionDoc(TypedDict):
    """A target futures position (``Position``)."""

    symbol: str
    underlying: str
    notional: float
    contracts: float


class CostsDoc(TypedDict):
    """``Costs`` and its ``trading`` sum (USD)."""

    fees: float
    spread: float
    impact: float
    funding_carry: float
    horizon_days: float
    trading: float


class StressDoc(TypedDict):
    """A stress scenario's margin surplus (USD)."""

    name: str
    surplus: float


class MarginDoc(TypedDict):
    """``MarginReport`` and its worst stress surplus (USD; None without scenarios)."""

    collateral: float
    initial: float
    maintenance: float
    initial_utilisation: float | None
    maintenance_ratio: float | None
    stress: list[StressDoc]
    worst_stress_surplus: float | None


class LeverageDoc(TypedDict):
    """Gross leverage and net exposure (x of the base)."""

    gross: float
    net: float


class BindingDoc(TypedDict):
    """A binding constraint (``Binding``)."""

    name: str
    dual: float
    explanation: str
    holds_back: bool


class ConflictDoc(TypedDict):
    """A constraint relaxed by the elastic re-solve (``ConflictReport``)."""

    name: str
    violation: float
    unit: str


class RoundingDoc(TypedDict):
    """Lot-rounding repairs and the rows rounding broke."""

    repairs: int
    broken: list[str]


class SpotTradeDoc(TypedDict):
    """A spot trade (``SpotTrade``)."""

    asset: str
    notional: float
    units: float
    price: float
    bought: float
    sold: float
    tax: float
    tax_optimiser: float


class SpotCostsDoc(TypedDict):
    """``SpotCosts`` and its ``trading`` sum (USD)."""

    fees: float
    spread: float
    impact: float
    tax: float
    tax_optimiser: float
    lot_method: str
    trading: float


class ScenarioReserveDoc(TypedDict):
    """A stress scenario's surplus now and the reserve that brings it to 0 (USD)."""

    name: str
    surplus_now: float
    reserve_usd: float


class ReserveDoc(TypedDict):
    """``ReserveSizing.to_dict()`` (USD; the last three keys only when the objective priced the
    reserve)."""

    reserve_usd: float
    reserve_cost_usd_per_year: float
    reserve_yield: float
    wallet_usd: float
    excess_usd: float
    binding_scenario: str | None
    scenarios: list[ScenarioReserveDoc]
    in_objective: NotRequired[bool]
    horizon_days: NotRequired[float]
    reserve_cost_usd_over_horizon: NotRequired[float]


class PlanStepDoc(TypedDict):
    """One step of the multi-period plan: positions, trades and the dated positions settled at
    expiry before the step (not trades) (USD by contract); the step's net spot trades (USD by
    asset, > 0 buys; empty without the spot leg)."""

    step: int
    positions: dict[str, float]
    trades: dict[str, float]
    settlements: dict[str, float]
    spot_trades: dict[str, float]


class MultiPeriodPlanDoc(TypedDict):
    """``Plan.to_dict()``: the planner's step length (days), H, steps and the one-line note."""

    step_days: float
    horizon: int
    steps: list[PlanStepDoc]
    note: str


class SolutionDoc(TypedDict):
    """``Solution.to_dict()``. The spot leg's, the reserve's and the planner's keys are present
    only when those are on."""

    status: str
    solver: str
    solvers_tried: list[SolverTriedDoc]
    fallbacks: int
    solve_time_ms: float
    total_time_ms: float
    nav: float
    base: float
    tracking_error_before: float
    tracking_error_after: float
    tracking_error_unrounded: float
    trades: list[TradeDoc]
    target_positions: list[PositionDoc]
    costs: CostsDoc
    margin: MarginDoc
    leverage: LeverageDoc
    effective_weights_before: dict[str, float]
    effective_weights_after: dict[str, float]
    targets: dict[str, float]
    binding_constraints: list[BindingDoc]
    conflicts: list[ConflictDoc]
    opposing_constraints: list[str]
    rounding: RoundingDoc
    messages: list[str]
    labels: list[str]
    blockers: list[str]
    spot_trades: NotRequired[list[SpotTradeDoc]]
    spot_costs: NotRequired[SpotCostsDoc]
    reserve: NotRequired[ReserveDoc]
    plan: NotRequired[MultiPeriodPlanDoc]
