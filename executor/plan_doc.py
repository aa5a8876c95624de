"""The JSON form of an order plan (``executor.plan.OrderPlan.to_dict``), as typed dicts: the plan,
its legs and its dropped orders. Keys and their order are those of the dataclasses
(``dataclasses.asdict``) plus ``gross_notional``; units as there (contracts, USD, annualised
fractions, ISO 8601 UTC times).

``OrderPlan.to_dict`` builds the dict with ``dataclasses.asdict`` (typed ``dict[str, Any]``), so
these names mirror the dataclass fields by hand: a field added to ``OrderLeg``, ``DroppedOrder`` or
``OrderPlan`` must be added here too (tests/fbr/test_json_documents.py fails until it is).
Sequences are tuples, as ``asdict`` copies them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from executor.plan import OrderType, Side


class OrderLegDoc(TypedDict):
    """One order (``executor.plan.OrderLeg``)."""

    index: int
    client_id: str
    symbol: str
    exchange_symbol: str
    side: Side
    contracts: float
    notional: float
    price: float
    reduce_only: bool
    order_type: OrderType
    limit_price: float | None


class DroppedOrderDoc(TypedDict):
    """An order the plan cannot send (``executor.plan.DroppedOrder``)."""

    symbol: str
    contracts: float
    notional: float
    reason: str
    tracking_error_left: float | None


class LimitsDoc(TypedDict):
    """The safety limits (``executor.safety.Limits``, USD)."""

    max_order_usd: float
    max_plan_usd: float


class PlanOptionsDoc(TypedDict):
    """How the legs were priced and checked (``executor.plan.PlanOptions``)."""

    venue: str
    order_type: OrderType
    slippage_guard: float
    reduce_only_exempt: bool
    limits: LimitsDoc
    min_days_to_expiry: float
    rounding_warn_share: float


class OrderPlanDoc(TypedDict):
    """``OrderPlan.to_dict()``: the plan's fields and its gross notional (USD)."""

    plan_id: str
    venue: str
    created: str
    book_name: str
    legs: tuple[OrderLegDoc, ...]
    dropped: tuple[DroppedOrderDoc, ...]
    start: dict[str, float]
    target: dict[str, float]
    reachable: dict[str, float]
    tracking_error_before: float | None
    tracking_error_solution: float | None
    tracking_error_residual: float | None
    warnings: tuple[str, ...]
    options: PlanOptionsDoc | None
    gross_notional: float
