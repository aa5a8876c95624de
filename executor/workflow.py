"""From a loaded book to an order plan on one exchange: metadata, market, account, solve, plan.

1. the exchange's instruments (lot steps, contract sizes, tiers) replace the book's contract specs;
2. the exchange's marks, index prices and funding replace the book file's market where it has them,
   and a contract it does not trade now is named in it (the optimiser holds that position);
3. the exchange's positions and wallet cash replace the book file's (spot stays the book file's);
4. the optimiser solves that book; a solution that is infeasible, or whose returned positions break
   a hard margin row (maintenance, initial margin, a stress scenario; re-checked here with the
   margin engine, ``optimizer.checks``), stops here with :class:`~models.errors.InfeasibleError`
   (exit code 3) naming the conflicting constraints: no order is planned;
5. the plan rounds the target positions to the exchange's lots.
"""

from __future__ import annotations

from dataclasses import dataclass

from executor.base import ExchangeGateway
from executor.ccxt_metadata import with_instruments, with_status
from executor.plan import Instrument, OrderPlan, PlanOptions, plan_orders
from models.book import Book
from models.errors import RefusedError
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.checks import require_orderable
from optimizer.data import ProblemData
from optimizer.prepare import prepare
from optimizer.rebalance import Rebalancer
from optimizer.settings import OptimizerSettings
from optimizer.solution import Solution


@dataclass(frozen=True)
class Prepared:
    """Everything an execution needs: the account's book (exchange units), the market, the
    instruments, the optimiser's solution and the plan."""

    book: Book
    market: MarketSnapshot
    instruments: dict[str, Instrument]
    solution: Solution
    plan: OrderPlan


def account_view(gateway: ExchangeGateway, book: Book,
                 market: MarketSnapshot) -> tuple[Book, MarketSnapshot, dict[str, Instrument]]:
    """Steps 1-3: (account book in exchange units, exchange market, instruments)."""
    instruments = gateway.instruments(book)
    book_x = with_instruments(book, instruments)
    live_market = with_status(gateway.market(book_x, market), instruments)
    return gateway.account(book_x, live_market), live_market, instruments


def prepare_plan(gateway: ExchangeGateway, book: Book, market: MarketSnapshot, risk: RiskModel,
                 settings: OptimizerSettings, options: PlanOptions, *,
                 labels: tuple[str, ...] = (), plan_id: str | None = None) -> Prepared:
    """Steps 1-5 (see the module docstring); raises InfeasibleError before planning any order
    when the solution may not be traded."""
    acc, live_market, instruments = account_view(gateway, book, market)
    solution = orderable_solution(acc, live_market, risk, settings, labels=labels)
    plan = plan_orders(solution, acc, live_market, instruments, options, risk=risk, plan_id=plan_id)
    return Prepared(acc, live_market, instruments, solution, plan)


def orderable_solution(book: Book, market: MarketSnapshot, risk: RiskModel,
                       settings: OptimizerSettings, *, labels: tuple[str, ...] = (),
                       rebalancer: Rebalancer | None = None) -> Solution:
    """Step 4: the optimiser's solution for ``book`` at ``market``; raises InfeasibleError (exit
    code 3, the conflicting constraints named) when it may not be traded. Every execution path
    (the dry run from the book file alone included) goes through here before planning orders.
    ``rebalancer``: one that keeps its compiled problems between calls (a new one by default)."""
    solution = (rebalancer or Rebalancer()).solve(book, market, risk, settings, labels=labels)
    require_tradeable(solution, prepare(book, market, risk, settings))
    return solution


def require_tradeable(solution: Solution, d: ProblemData) -> None:
    """The order check of every execution path (``fbr execute``, ``fbr run``, the dashboard):
    :func:`optimizer.checks.require_orderable` on ``d`` (today's data, re-prepared by the caller)
    after the solution's spot trades, then :func:`require_futures_only`."""
    require_orderable(solution.status, solution.conflicts, d,
                      {p.symbol: p.notional for p in solution.target_positions}, solution.opposing,
                      spot={t.asset: t.notional for t in solution.spot_trades},
                      spot_gross={t.asset: t.bought + t.sold for t in solution.spot_trades})
    require_futures_only(solution)


def spot_refusal(solution: Solution) -> str | None:
    """Why a solution that also trades spot may not become orders (None when it trades none).

    The executor sends futures orders only. With the spot leg on, the solution's futures are
    sized for the book after its spot trades, so sent alone they would leave the book off target
    while the run reported success."""
    if not solution.spot_trades:
        return None
    legs = ", ".join(f"{t.asset} {t.notional:+,.2f} USD" for t in solution.spot_trades)
    return (f"the solution also trades spot ({legs}), and fbr sends futures orders only: its "
            f"futures are sized for the book after those spot trades, so alone they would miss "
            f"the targets. Fix: trade that spot yourself and update the book file, then run "
            f"again (the next solution then trades futures only), or switch [solver] spot_leg "
            f"off to execute the overlay alone")


def require_futures_only(solution: Solution) -> None:
    """Raise :class:`~models.errors.RefusedError` (exit code 6, before any order) when the
    solution also trades spot (:func:`spot_refusal`)."""
    why = spot_refusal(solution)
    if why is not None:
        raise RefusedError(why)
