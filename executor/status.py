"""The daily view of a hedged book: weights vs targets, tracking error, margin, funding, open orders,
and whether a rebalance is due (with the plan it would send).

- effective weights e = (spot + B x) / V and drift e - w* (fractions of the base V);
- tracking error sqrt(d' Sigma d (+ basis)), annualised;
- margin ratio MM / collateral (liquidation at 1; ``inf`` when collateral <= 0 with a position
  open, as is the initial utilisation: ``null`` in ``fbr status --json``, whose non-finite numbers
  all become ``null``) and the distance to liquidation: the smallest common move r of every
  asset (down and up) at which the margin surplus collateral(r) - sum_j MM_j(|x_j(r)|) falls
  below zero, at any size (the what-if's exact root, models.liquidation_distance);
- funding paid and received since the last rebalance (USD, > 0 received). The last rebalance is
  the journal's latest plan for this venue and book (its completion time when done, else
  its creation time). Sources, first that answers (``FundingView.source`` says which):
  1. the exchange's income history (real settlements; each row is also written to the journal,
     once per contract and settlement time);
  2. the journal's funding rows (written by earlier exchange reads);
  3. a model: - x_j r_j n_j per contract, x_j its notional at mark now (USD, signed), r_j its
     current funding rate, n_j = floor(hours since the rebalance / funding interval) settlements;
- a rebalance is due when the plan has legs and its fall in TE^2 beats its trading cost in the
  optimiser's units: TE_before^2 - TE_after^2 > gamma_trade x trading cost / V, TE_after the TE
  the plan's lot-rounded orders reach (the solution's own when the plan has no risk model); or
  when the positions break a hard margin row (maintenance, initial margin, a stress scenario) and
  the plan mends more of that shortfall (USD) than it costs (:mod:`executor.repair`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypedDict, cast

from executor.base import ExchangeGateway
from executor.journal import Journal, now_ms
from executor.plan import Instrument, OrderPlan, PlanOptions, plan_orders, tracking_error_of
from executor.plan_doc import OrderPlanDoc
from executor.repair import Repair, repair_of
from executor.safety import SafetyError, redact
from executor.workflow import require_tradeable
from models.book import Book
from models.errors import FbrError, InfeasibleError, RefusedError
from models.liquidation_distance import liquidation_move as exact_liquidation_move
from models.margin import MarginModel, margin_state
from models.market import MarketSnapshot, settlements_between
from models.risk import RiskModel
from optimizer.prepare import prepare
from optimizer.rebalance import Rebalancer
from optimizer.settings import OptimizerSettings
from optimizer.solution import Solution


@dataclass(frozen=True)
class WeightRow:
    """One asset: effective weight, target and drift (fractions of the base)."""

    asset: str
    effective: float
    target: float
    drift: float


@dataclass(frozen=True)
class MarginView:
    """Margin now (USD) and the common asset return (signed fraction: down < 0, up > 0) nearest
    zero that would liquidate, each way (:func:`liquidation_move`; None: no fall short of -100%,
    or no rise at all)."""

    collateral: float
    initial: float
    maintenance: float
    margin_ratio: float
    initial_utilisation: float
    liquidation_move_down: float | None
    liquidation_move_up: float | None


class FundingSource(StrEnum):
    """Where a funding figure comes from (see the module docstring)."""

    NO_REBALANCE = "no rebalance in the journal"
    EXCHANGE = "exchange income history"
    JOURNAL = "journal"
    MODEL = "model: current positions x current funding rate per settlement"


@dataclass(frozen=True)
class FundingView:
    """Funding since ``since_ms`` (USD, > 0 received), by contract; ``source`` says where from.
    ``plan_id`` is the last rebalance's plan, ``payments`` the number of settlement rows summed
    (None for the model), ``note`` why an earlier source was not used (e.g. the exchange failed)."""

    since_ms: int | None
    total: float
    by_symbol: dict[str, float]
    source: str
    plan_id: str | None = None
    payments: int | None = None
    note: str = ""


@dataclass(frozen=True)
class StatusReport:
    """See the module docstring. ``plan`` is the plan a rebalance would send now."""

    venue: str
    book_name: str
    nav: float
    base: float
    weights: tuple[WeightRow, ...]
    tracking_error: float
    margin: MarginView
    funding: FundingView
    open_orders: tuple[dict[str, Any], ...]
    rebalance_due: bool
    benefit: float
    cost: float
    tracking_error_after: float | None
    trading_cost_usd: float
    plan: OrderPlan
    positions: dict[str, float] = field(default_factory=dict)
    alerts: tuple[str, ...] = ()
    #: no plan is possible: the constraints cannot all hold, or the book is liquidatable now
    infeasible: bool = False
    #: the hard margin rows the positions break that make the rebalance due (``DueTest.repairs``)
    repairs: tuple[str, ...] = ()

    def to_dict(self) -> StatusDoc:
        """JSON-ready dict."""
        d = asdict(self)
        d["plan"] = self.plan.to_dict()
        return cast("StatusDoc", d)  # asdict is typed dict[str, Any]; StatusDoc mirrors the fields
        # (tests/fbr/test_json_documents.py checks real documents against it)


# --- the JSON form (StatusReport.to_dict): the dataclasses' fields, in their order --------------

class WeightRowDoc(TypedDict):
    """:class:`WeightRow` as a dict."""

    asset: str
    effective: float
    target: float
    drift: float


class MarginViewDoc(TypedDict):
    """:class:`MarginView` as a dict."""

    collateral: float
    initial: float
    maintenance: float
    margin_ratio: float
    initial_utilisation: float
    liquidation_move_down: float | None
    liquidation_move_up: float | None


class FundingViewDoc(TypedDict):
    """:class:`FundingView` as a dict."""

    since_ms: int | None
    total: float
    by_symbol: dict[str, float]
    source: str
    plan_id: str | None
    payments: int | None
    note: str


class StatusDoc(TypedDict):
    """``StatusReport.to_dict()`` (``dataclasses.asdict``, sequences as tuples; ``plan`` is
    ``OrderPlan.to_dict()``). A field added to :class:`StatusReport` must be added here."""

    venue: str
    book_name: str
    nav: float
    base: float
    weights: tuple[WeightRowDoc, ...]
    tracking_error: float
    margin: MarginViewDoc
    funding: FundingViewDoc
    open_orders: tuple[dict[str, Any], ...]
    rebalance_due: bool
    benefit: float
    cost: float
    tracking_error_after: float | None
    trading_cost_usd: float
    plan: OrderPlanDoc
    positions: dict[str, float]
    alerts: tuple[str, ...]
    infeasible: bool
    repairs: tuple[str, ...]


def liquidation_move(book: Book, market: MarketSnapshot, direction: float) -> float | None:
    """The common return r (a signed fraction, of the sign of ``direction``: down < 0, up > 0)
    nearest zero at which a move of every asset liquidates the book; None when no move in that
    direction does (down: none above -100%; up: none at all). The what-if's exact root of the
    margin surplus, the same number as its book-wide ``down`` / ``up``
    (``models.liquidation_distance.liquidation_move``); 0.0 when the book is liquidated already."""
    move = exact_liquidation_move(book, market)
    return move.down if direction < 0 else move.up


def margin_view(book: Book, market: MarketSnapshot) -> MarginView:
    """Margin use at mark plus the distance to liquidation (see :func:`liquidation_move`)."""
    model = MarginModel.from_contracts(book.contracts)
    st = margin_state(model, book.futures_notional(market), book.collateral(market))
    move = exact_liquidation_move(book, market)
    return MarginView(collateral=st.collateral, initial=st.initial, maintenance=st.maintenance,
                      margin_ratio=st.margin_ratio, initial_utilisation=st.initial_utilisation,
                      liquidation_move_down=move.down, liquidation_move_up=move.up)


def funding_view(book: Book, market: MarketSnapshot, gateway: ExchangeGateway,
                 journal: Journal | None, instruments: Mapping[str, Instrument]) -> FundingView:
    """Funding since the last rebalance of this venue and book (see the module docstring)."""
    last = journal.last_rebalance(gateway.venue, book.name) if journal is not None else None
    if journal is None or last is None:
        return FundingView(None, 0.0, {}, FundingSource.NO_REBALANCE)
    since, venue = last.time_ms, gateway.venue
    note = ""
    try:
        rows = gateway.funding_since(since, instruments)
    except FbrError as exc:
        rows = None
        note = f"exchange income history failed: {redact(str(exc))}"
    if rows is not None:
        by: dict[str, float] = {}
        for r in rows:
            if r.contract is None:  # funding_since names only the book's contracts
                continue
            by[r.contract] = by.get(r.contract, 0.0) + r.amount
            journal.record_funding_once(venue, book.name, r.contract, r.amount, r.time_ms)
        return FundingView(since, float(sum(by.values())), by, FundingSource.EXCHANGE, last.plan_id,
                           len(rows), note)
    stored = journal.funding_since(venue, book.name, since)
    if stored:
        return FundingView(since, float(sum(stored.values())), stored, FundingSource.JOURNAL,
                           last.plan_id, None, note)
    x = book.futures_notional(market)
    by = {}
    t0, t1 = (datetime.fromtimestamp(ms / 1000.0, UTC) for ms in (since, now_ms()))
    for j, c in enumerate(book.contracts):
        n = settlements_between(t0, t1, c.funding_interval_h)
        if x[j] != 0 and n > 0:
            by[c.symbol] = -float(x[j]) * market.funding_rate(c.symbol) * n
    return FundingView(since, float(sum(by.values())), by, FundingSource.MODEL, last.plan_id, None,
                       note)


@dataclass(frozen=True)
class DueTest:
    """Whether a rebalance is due (see the module docstring): ``benefit`` = TE_before^2 -
    TE_after^2 and ``cost`` = gamma_trade x trading cost / V (squared annualised fractions);
    ``tracking_error_after`` the TE the plan reaches (annualised fraction, None when nothing is
    planned) and ``trading_cost_usd`` the trading cost (fees, spread, impact of the futures and
    spot trades, USD) the rule weighs."""

    due: bool
    benefit: float
    cost: float
    tracking_error_after: float | None
    trading_cost_usd: float
    #: the solve found no point meeting every hard constraint (a book liquidatable now included)
    infeasible: bool = False
    #: the hard margin rows the positions break now, when the plan mends more of that shortfall
    #: than it costs (``executor.repair``): due for safety, whatever the TE rule says
    repairs: tuple[str, ...] = ()


#: the test of a book that plans nothing (infeasible): nothing is due
NOTHING_DUE = DueTest(False, 0.0, 0.0, None, 0.0, infeasible=True)


def due(solution: Solution, plan: OrderPlan, gamma_trade: float,
        repair: Repair | None = None) -> DueTest:
    """The due test of ``plan`` (the spot leg's trades' cost counts too): see the module
    docstring. The fall is to the TE the plan reaches (lot-rounded, after dropped orders) when the
    plan knows it, else to the solution's: a plan whose lots cannot get nearer the target than
    the book is now is not due, however far the unrounded solution would go. A plan that mends a
    broken hard margin row by more than it costs (``repair``, :mod:`executor.repair`) is due too."""
    reached = plan.tracking_error_residual
    after = solution.tracking_error_after if reached is None else reached
    benefit = solution.tracking_error_before ** 2 - after ** 2
    spot = solution.spot_costs.trading if solution.spot_costs is not None else 0.0
    trading = solution.costs.trading + spot
    cost = gamma_trade * trading / solution.base if solution.base > 0 else math.inf
    repairs = repair.broken if repair is not None and repair.due else ()
    return DueTest(bool(plan.legs) and (benefit > cost or bool(repairs)), benefit, cost, after,
                   trading, repairs=repairs if plan.legs else ())


def account_status(gateway: ExchangeGateway, book: Book, market: MarketSnapshot, risk: RiskModel,
                   settings: OptimizerSettings, options: PlanOptions,
                   instruments: Mapping[str, Instrument], journal: Journal | None, *,
                   rebalancer: Rebalancer | None = None) -> StatusReport:
    """The status of ``book`` (already the account's view, exchange units) at ``market``;
    ``rebalancer`` keeps compiled problems between calls (the dashboard's)."""
    e = book.effective_weights(market)
    w = book.target_vector()
    weights = tuple(WeightRow(a, float(e[i]), float(w[i]), float(e[i] - w[i]))
                    for i, a in enumerate(book.asset_symbols))
    q = dict(zip(book.contract_symbols, map(float, book.contracts_vector()), strict=True))
    plan, test, alerts = rebalance_now(book, market, risk, settings, options, instruments, q,
                                       rebalancer)
    return StatusReport(venue=gateway.venue, book_name=book.name, nav=book.nav(market),
                        base=book.base(market), weights=weights,
                        tracking_error=tracking_error_of(book, market, risk, q),
                        margin=margin_view(book, market),
                        funding=funding_view(book, market, gateway, journal, instruments),
                        open_orders=tuple(gateway.open_orders(instruments)),
                        rebalance_due=test.due, benefit=test.benefit, cost=test.cost,
                        tracking_error_after=test.tracking_error_after,
                        trading_cost_usd=test.trading_cost_usd, plan=plan, positions=q,
                        alerts=alerts, infeasible=test.infeasible, repairs=test.repairs)


def rebalance_now(book: Book, market: MarketSnapshot, risk: RiskModel, settings: OptimizerSettings,
                  options: PlanOptions, instruments: Mapping[str, Instrument],
                  positions: Mapping[str, float], rebalancer: Rebalancer | None
                  ) -> tuple[OrderPlan, DueTest, tuple[str, ...]]:
    """(plan, due test, alerts) of a rebalance now: the plan ``fbr execute`` would send.
    A liquidatable or infeasible book plans nothing and says why. A solution that also trades
    spot plans nothing either (fbr sends futures orders only): the alert names the spot trades to
    make by hand, and the rebalance is due when its benefit beats its cost or it mends a broken
    hard row (``--exit-code`` 7); so does a plan above a safety limit (per order, per plan): the
    alert names the limit."""
    try:
        solution = (rebalancer or Rebalancer()).solve(book, market, risk, settings)
        data = prepare(book, market, risk, settings)
        require_tradeable(solution, data)
        plan = plan_orders(solution, book, market, instruments, options, risk=risk)
    except InfeasibleError as exc:
        return no_plan(book, options.venue, positions), NOTHING_DUE, (redact(str(exc)),)
    except (RefusedError, SafetyError) as exc:  # fbr execute would refuse it: shown, not sent
        shown = no_plan(book, options.venue, positions)
        target = {p.symbol: p.contracts for p in solution.target_positions}
        repair = repair_of(data, book, market, positions, target, solution.costs.trading)
        test = due(solution, shown, settings.costs.gamma_trade)
        repairs = repair.broken if repair.due else ()  # the solution's repair, as its TE fall
        return shown, replace(test, due=test.benefit > test.cost or bool(repairs),
                              repairs=repairs), (redact(str(exc)),)
    trading = solution.costs.trading
    repair = repair_of(data, book, market, plan.start, plan.reachable, trading)
    return plan, due(solution, plan, settings.costs.gamma_trade, repair), ()


def no_plan(book: Book, venue: str, positions: Mapping[str, float]) -> OrderPlan:
    """An empty plan at the current positions (contracts): nothing may be sent."""
    now = dict(positions)
    return OrderPlan(plan_id="", venue=venue, created=datetime.now(UTC).isoformat(),
                     book_name=book.name, legs=(), dropped=(), start=now, target=now,
                     reachable=now, tracking_error_before=None, tracking_error_solution=None,
                     tracking_error_residual=None)
