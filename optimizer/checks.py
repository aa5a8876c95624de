"""Checks that stand between an answer and orders: the book must not be liquidatable before a solve,
and a solution is turned into orders only when it is feasible and its returned positions keep the
hard margin rows.

Units: USD. x (M) is the signed futures notional per contract, C the collateral (margin balance).
The rows re-checked with :mod:`models.margin` (the one margin engine), independently of the solver:

- maintenance: with a position open, C > sum_j MM_j(|x_j|) (equality liquidates);
- initial margin (when the margin constraint is on): sum_j |x_j| / L_j <= C - margin_buffer_usd;
- stress scenario s: C_s + g_s' x - sum_j MM_j(|x_j| (1 + g_sj)) >= 0 (no liquidation).

Each row is allowed a tolerance of ``TOL_FRACTION`` x max(V, 1) USD (solver accuracy).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from models.book import Book
from models.errors import InfeasibleError
from models.instruments import contract_arrays
from models.margin import liquidation_gap, margin_state
from optimizer.data import ProblemData
from optimizer.solution import ConflictReport
from optimizer.spot_leg import after_spot_trade, spot_trade_weights

#: Tolerance of the re-checks as a fraction of the target base V (1e-6: one cent per 10,000 USD).
TOL_FRACTION = 1e-6


class LiquidatableBookError(InfeasibleError):
    """The book is at or past liquidation now (C <= MM at current marks): the optimiser refuses it."""


def check_not_liquidatable(d: ProblemData, book: Book) -> None:
    """Raise :class:`LiquidatableBookError` when the current positions are liquidatable at the
    current marks (``models.margin.MarginState.liquidated``: a position open and C <= MM), saying by
    how much collateral must rise (USD) or each position fall (contracts and USD notional)."""
    x0 = d.held_notional()  # the exchange's notional (inverse: face), not the exposure z0 V
    if not margin_state(d.margin_model, x0, d.collateral).liquidated:
        return
    raise LiquidatableBookError(liquidation_message(d, book))


def liquidation_message(d: ProblemData, book: Book) -> str:
    """The error text for a liquidatable book (see :func:`models.margin.liquidation_gap`)."""
    x0 = d.held_notional()  # the exchange's notional (inverse: face), not the exposure z0 V
    gap = liquidation_gap(d.margin_model, x0, d.collateral)
    npc = contract_arrays(book.contracts).notional_per_contract(d.prices)
    cuts = [f"{sym} by more than {gap.reduce_notional[j] / npc[j]:,.8g} contracts "
            f"({gap.reduce_notional[j]:,.2f} USD notional, to below {gap.max_notional[j]:,.2f} USD)"
            for j, sym in enumerate(d.contracts)
            if x0[j] != 0 and np.isfinite(gap.reduce_notional[j])]
    reduce = ("; or reduce " + " or ".join(cuts) if cuts else
              "; no single position reduction is enough (the margin balance is not above the other "
              "positions' maintenance)")
    return (f"book: is liquidatable now: margin balance {gap.collateral:,.2f} USD <= maintenance "
            f"margin {gap.maintenance:,.2f} USD at current marks (equality liquidates), so no "
            f"rebalance is solved. Fix: add more than {gap.shortfall:,.2f} USD of collateral "
            f"([book] cash or pledged spot){reduce}.")


def position_breaches(d: ProblemData, x: np.ndarray) -> tuple[str, ...]:
    """The hard margin rows (module docstring) that positions ``x`` (USD, ``d.contracts`` order)
    break, each as one line with the USD figures; empty when none is broken."""
    tol = TOL_FRACTION * max(d.V, 1.0)
    model = d.margin_model
    state = margin_state(model, x, d.collateral)
    out: list[str] = []
    if state.liquidated:
        out.append(f"maintenance: the target positions need {state.maintenance:,.2f} USD of "
                   f"maintenance margin, at or above the {state.collateral:,.2f} USD margin balance "
                   f"(liquidation)")
    if d.settings.constraints.margin and d.margin_budget is not None:
        limit = d.margin_budget.hard * d.V
        if state.initial > limit + tol:
            out.append(f"margin: the target positions need {state.initial:,.2f} USD of initial "
                       f"margin, above the {limit:,.2f} USD available (collateral less buffer)")
    for k, name in enumerate(d.stress_names):
        surplus = model.stress_surplus(x, float(d.stress_coll[k]) * d.V, d.stress_g[k])
        if surplus < -tol:
            out.append(f"stress[{name}]: margin surplus {surplus:,.2f} USD after the shock "
                       f"(liquidation in that scenario)")
    return tuple(out)


def hard_row_gaps(d: ProblemData, x: np.ndarray) -> dict[str, float]:
    """The USD by which positions ``x`` (USD, ``d.contracts`` order) break each hard margin row of
    the module docstring (> 0: broken by that much; <= 0: kept with that much to spare), by row
    label: ``maintenance`` = sum_j MM_j(|x_j|) - C (only with a position open), ``margin`` =
    sum_j IM_j(|x_j|) - (the hard initial-margin budget x V) (only when the margin row is on),
    ``stress[name]`` = - the scenario's margin surplus."""
    model = d.margin_model
    state = margin_state(model, x, d.collateral)
    gaps: dict[str, float] = {}
    if np.any(x != 0):
        gaps["maintenance"] = state.maintenance - state.collateral
    if d.settings.constraints.margin and d.margin_budget is not None:
        gaps["margin"] = state.initial - d.margin_budget.hard * d.V
    for k, name in enumerate(d.stress_names):
        gaps[f"stress[{name}]"] = -model.stress_surplus(x, float(d.stress_coll[k]) * d.V,
                                                        d.stress_g[k])
    return gaps


def order_blockers(status: str, conflicts: tuple[ConflictReport, ...], d: ProblemData,
                   x: np.ndarray, opposing: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Why a solution must not become orders: an infeasible status (naming the conflicting
    constraints: those relaxed and the ``opposing`` rows they conflict with) and every hard margin
    row its positions ``x`` (USD) break."""
    out: list[str] = []
    if status == "infeasible":
        named = [f"{c.name} (relaxed by {c.violation:.6g} {c.unit})" for c in conflicts]
        named += [f"{row} (binding against them)" for row in opposing]
        out.append(f"infeasible: these constraints conflict: {', '.join(named) or '(none identified)'}")
    return (*out, *position_breaches(d, x))


def positions_vector(d: ProblemData, positions: Mapping[str, float]) -> np.ndarray:
    """Target notionals by contract symbol (USD) as a vector in ``d.contracts`` order (0 if absent)."""
    return np.array([float(positions.get(c, 0.0)) for c in d.contracts])


def blocked_message(blockers: tuple[str, ...]) -> str:
    """The error text when a solution may not be traded (exit code INFEASIBLE)."""
    return ("the solution may not be traded, no order was planned: " + "; ".join(blockers)
            + ". Fix: loosen or switch off one of the conflicting constraints in [constraints], add "
              "collateral ([book] cash or pledged spot), or lower the targets' demands.")


def require_orderable(status: str, conflicts: tuple[ConflictReport, ...], d: ProblemData,
                      positions: Mapping[str, float], opposing: tuple[str, ...] = (),
                      spot: Mapping[str, float] | None = None,
                      spot_gross: Mapping[str, float] | None = None) -> None:
    """Raise :class:`~models.errors.InfeasibleError` when :func:`order_blockers` finds anything.
    ``spot``: the solution's net spot trades (USD by asset; ``spot_gross`` the USD traded, when a
    sale and a buy-back of one asset make it more than |net|): the margin rows are re-checked on
    the collateral after them (``optimizer.spot_leg.after_spot_trade``), as the optimiser priced
    them."""
    if spot and d.spot is not None:
        gross = spot_trade_weights(d, spot_gross) if spot_gross is not None else None
        d = after_spot_trade(d, spot_trade_weights(d, spot), gross)
    blockers = order_blockers(status, conflicts, d, positions_vector(d, positions), opposing)
    if blockers:
        raise InfeasibleError(blocked_message(blockers))
