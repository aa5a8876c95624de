"""Dry run: the plan is shown (through ``show``), nothing is sent and nothing is journalled."""

from __future__ import annotations

from collections.abc import Callable

from executor.base import ExecutionReport, LegReport, OrderStatus, Outcome
from executor.plan import OrderPlan


class DryRunExecutor:
    """An executor that only shows the plan; the report's positions are the plan's start."""

    def __init__(self, show: Callable[[OrderPlan], None] | None = None) -> None:
        self._show = show

    def execute(self, plan: OrderPlan) -> ExecutionReport:
        """Show ``plan`` and report every leg as skipped."""
        if self._show is not None:
            self._show(plan)
        legs = tuple(LegReport(index=leg.index, client_id=leg.client_id, symbol=leg.symbol,
                               side=leg.side.value, planned=leg.contracts, filled=0.0, average=None,
                               fee=0.0, status=OrderStatus.SKIPPED.value, attempts=0,
                               message="dry run: not sent") for leg in plan.legs)
        return ExecutionReport(plan_id=plan.plan_id, venue=plan.venue, mode="dry-run", legs=legs,
                               positions=dict(plan.start), target=dict(plan.target),
                               tracking_error_residual=plan.tracking_error_before,
                               messages=("dry run: nothing was sent; add --live to trade",),
                               outcome=Outcome.DRY_RUN)
