"""``fbr execute`` and ``fbr status``: send a rebalance's orders (dry run, paper or ccxt) and check
a hedged book each day (the ``status`` command lives in :mod:`fbr.status_cli`; this module
registers both).

Safety: a dry run is the default (``--exchange dry-run``; on a real exchange without ``--live`` the
plan is built against the account and shown, nothing is sent). Real orders need ``--live`` and keys
in ``FBR_<EXCHANGE>_API_KEY`` / ``FBR_<EXCHANGE>_SECRET``; notional limits per order and per plan
(USD) apply to every mode; keys never reach logs, the journal, errors or ``--json`` output. Shared
wiring (exchanges, gateway, options) is in :mod:`fbr.execute_wiring`, text output in
:mod:`fbr.execute_render`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NotRequired, TypedDict

import typer

from executor.safety import Limits, install_log_redaction
from fbr.console import CliError, err, user_errors
from fbr.execute_render import _print_result
from fbr.execute_wiring import (
    BookArg,
    ExchangeChoice,
    ExchangeOpt,
    JournalOpt,
    _emit,
    _gateway,
    _journal_path,
    _load,
    _retry,
    _venue,
    redacting,
    silence_journal,
)
from fbr.status_cli import account_silence, status
from models.errors import ExitCode

if TYPE_CHECKING:
    from executor.base import ExecutionReport
    from executor.plan import Instrument, OrderLeg, OrderPlan, PlanOptions
    from executor.plan_doc import OrderPlanDoc
    from models.book import Book
    from optimizer.solution import Solution

__all__ = ["ExecuteResult", "PlanCheck", "execute", "register"]

PlanCheck = Callable[["OrderPlan"], None]
"""A check of the plan about to be sent; it raises (an :class:`FbrError`) to stop the send."""


class ExecutedSolution(TypedDict):
    """The solution behind an executed plan (tracking errors annualised, fractions)."""

    status: str
    tracking_error_before: float
    tracking_error_after: float
    messages: list[str]


class ExecuteResult(TypedDict):
    """``fbr execute --json``'s document (without ``status`` and ``exit_code``): the plan and the
    report as their ``to_dict()``, planned vs filled contracts per contract, the journal file (None:
    none), and the solution (absent on ``--resume``)."""

    mode: str
    plan_id: str
    plan: OrderPlanDoc
    report: dict[str, Any]
    planned_vs_filled: dict[str, dict[str, float]]
    journal: str | None
    solution: NotRequired[ExecutedSolution]


def register(app: typer.Typer) -> None:
    """Add ``execute`` and ``status`` to the fbr app."""
    app.command("execute")(execute)
    app.command("status")(status)


# ---------------------------------------------------------------------------------------------
# execute


def execute(book: BookArg = None,
            exchange: ExchangeOpt = ExchangeChoice.DRY_RUN,
            live: Annotated[bool, typer.Option("--live", help="Send real orders (needs API keys).")] = False,
            resume: Annotated[str | None, typer.Option(
                "--resume", help="Finish a half-executed plan (no leg is sent twice).")] = None,
            journal: JournalOpt = None,
            max_order_usd: Annotated[float, typer.Option(help="Largest |notional| of one order, USD."
                                                         )] = Limits.max_order_usd,
            max_plan_usd: Annotated[float, typer.Option(help="Largest sum of |order notional|, USD."
                                                        )] = Limits.max_plan_usd,
            order_type: Annotated[str, typer.Option(help="market, or limit (IOC at the slippage guard)."
                                                    )] = "market",
            slippage: Annotated[float, typer.Option(help="Slippage guard of limit orders, fraction of mark."
                                                    )] = 0.005,
            as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
            ) -> None:
    """Turn a book's rebalance into orders: dry run (default), paper fills, or real orders (--live)."""

    install_log_redaction()
    with user_errors(as_json), redacting():
        from executor.plan import OrderType, PlanOptions

        try:
            otype = OrderType(order_type)
        except ValueError:
            raise CliError(f"--order-type is {order_type!r}. Fix: give market or limit") from None
        limits = Limits(max_order_usd, max_plan_usd)
        if live and resume is None and exchange != ExchangeChoice.BINANCEUSDM:
            raise CliError(f"--live sends real orders, but --exchange is {exchange.value}. Fix: drop "
                           f"--live, or give --exchange binanceusdm")
        if exchange != ExchangeChoice.DRY_RUN or resume is not None:
            from executor.journal_schema import check_journal_path

            check_journal_path(_journal_path(journal))
        if resume is not None:
            result = _resume(resume, book, exchange, live, _journal_path(journal))
        else:
            if book is None:
                raise CliError("give a book file. Fix: fbr execute BOOK.toml [--exchange ...]")
            options = PlanOptions(venue=_venue(exchange), order_type=otype, slippage_guard=slippage,
                                  limits=limits)
            result = _execute(book, exchange, live, _journal_path(journal), options)
        code = _exit_code(result)
        if as_json:
            _emit({"status": "ok" if code == ExitCode.OK else result["report"]["outcome"],
                   "exit_code": int(code), **result})
        else:
            _print_result(result)
    if code != ExitCode.OK:
        raise typer.Exit(code=int(code))


def _exit_code(result: ExecuteResult) -> ExitCode:
    """OK, INCOMPLETE (a contract off its target) or UNKNOWN (an order in doubt)."""
    outcome = result["report"].get("outcome", "complete")
    codes = {"incomplete": ExitCode.INCOMPLETE, "unknown": ExitCode.UNKNOWN}
    return codes.get(outcome, ExitCode.OK)


def _execute(book_path: Path, exchange: ExchangeChoice, live: bool, journal_path: Path,
             options: PlanOptions, confirm: PlanCheck | None = None) -> ExecuteResult:
    """Plan and send (or show) the book's rebalance. ``confirm``, when given, sees the plan about to
    be sent, after the last solve and before the first order, and raises to stop it (the dashboard
    checks that this is the plan the user confirmed: prices may have moved since the page)."""
    from executor.dryrun import DryRunExecutor
    from executor.journal import Journal
    from executor.live import JournaledExecutor, PlanBasis
    from executor.paper import PaperStore, paper_book
    from executor.plan import book_instruments, plan_orders, with_book_settings
    from executor.workflow import orderable_solution, prepare_plan
    from fbr.paper_prices import paper_gateway

    loaded = _load(book_path)
    options = with_book_settings(options, loaded.settings)
    if exchange == ExchangeChoice.DRY_RUN:
        instruments = book_instruments(loaded.book)
        sol = orderable_solution(loaded.book, loaded.market, loaded.risk, loaded.settings,
                                 labels=loaded.labels)
        plan = plan_orders(sol, loaded.book, loaded.market, instruments, options, risk=loaded.risk)
        _confirmed(confirm, plan)
        report = DryRunExecutor().execute(plan)
        return _result(plan, report, None, sol)
    if exchange == ExchangeChoice.PAPER:
        with Journal(journal_path) as j:
            acc, _ = paper_book(loaded.book, j)
            store = PaperStore(j.path, loaded.book.name)
            try:
                gw: Any = paper_gateway(loaded, acc, store.price_source(), store=store)
                prep = prepare_plan(gw, acc, loaded.market, loaded.risk, loaded.settings, options,
                                    labels=loaded.labels)
                _confirmed(confirm, prep.plan)
                with _progress(len(prep.plan.legs)) as step:
                    ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments,
                                                          loaded.risk), retry=_retry(True),
                                           mode="paper",
                                           on_leg=step)
                    report = ex.execute(prep.plan, str(book_path.resolve()),
                                        exact=confirm is not None)
            finally:
                store.close()
        return _result(prep.plan, report, journal_path, prep.solution)
    gw = _gateway(exchange, live, pledge_source=loaded.pledge_source)
    with silence_journal(journal_path, gw, create=live):
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, options,
                            labels=loaded.labels)
    _confirmed(confirm, prep.plan)
    if not live:
        return _result(prep.plan, DryRunExecutor().execute(prep.plan), None, prep.solution)
    with Journal(journal_path) as j, _progress(len(prep.plan.legs)) as step:
        ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments,
                                              loaded.risk), retry=_retry(False), mode="live",
                               on_leg=step, clock=gw.now_ms)
        report = ex.execute(prep.plan, str(book_path.resolve()),
                            exact=confirm is not None)
    return _result(prep.plan, report, journal_path, prep.solution)


def _confirmed(confirm: PlanCheck | None, plan: OrderPlan) -> None:
    """Run the caller's check of the plan about to be sent (it raises to stop the send)."""
    if confirm is not None:
        confirm(plan)


def _resume(plan_id: str, book: Path | None, exchange: ExchangeChoice, live: bool,
            journal_path: Path) -> ExecuteResult:
    from executor.journal import Journal
    from executor.live import JournaledExecutor, PlanBasis
    from executor.paper import PaperStore, paper_book
    from executor.safety import SafetyError
    from executor.workflow import account_view
    from fbr.paper_prices import paper_gateway

    if not journal_path.exists():
        raise CliError(f"journal {journal_path} does not exist. Fix: give the --journal the plan "
                       f"was executed with")
    with Journal(journal_path) as j:
        plan = j.plan(plan_id)
        path = book if book is not None else Path(j.book_path(plan_id))
        loaded = _load(path)
        _check_same_book(plan, loaded.book, path)
        store = None
        if plan.venue == "paper":
            acc, _ = paper_book(loaded.book, j)
            store = PaperStore(j.path, loaded.book.name)
            gw: Any = paper_gateway(loaded, acc, store.price_source(), store=store)
            mode = "paper"
        else:
            if not live:
                raise SafetyError(f"plan {plan_id} sends real orders on {plan.venue}. Fix: add --live "
                                  f"to resume it")
            gw = _gateway(ExchangeChoice(plan.venue), pledge_source=loaded.pledge_source)
            acc = loaded.book
            mode = "live"
        del exchange
        try:
            with account_silence(gw, ExchangeChoice(plan.venue), j):
                acc_b, market, instruments = account_view(gw, acc, loaded.market)
            _check_same_instruments(plan, instruments, path)
            with _progress(len(plan.legs)) as step:
                ex = JournaledExecutor(gw, j, PlanBasis(acc_b, market, instruments, loaded.risk),
                                       retry=_retry(mode == "paper"), mode=mode, on_leg=step,
                                       clock=gw.now_ms if mode == "live" else None)
                report = ex.resume(plan_id)
        finally:
            if store is not None:
                store.close()
    return _result(plan, report, journal_path, None)


def _check_same_book(plan: OrderPlan, book: Book, path: Path) -> None:
    """A plan resumes only with the book it was made from (same name, every contract in it)."""

    missing = sorted(set(plan.target) - set(book.contract_symbols))
    if plan.book_name != book.name or missing:
        what = (f"contracts {', '.join(missing)} are not in it" if missing else
                f"it is book {book.name!r}")
        raise CliError(f"plan {plan.plan_id} was made for book {plan.book_name!r}, but {path}: "
                       f"{what}. Fix: resume with the book file the plan was made from (or omit "
                       f"the book: the journal remembers it)")


def _check_same_instruments(plan: OrderPlan, instruments: Mapping[str, Instrument], path: Path) -> None:
    """A plan resumes only on the exchange instruments its legs were sent on: a contract the book
    now maps to another one (a quarterly rolled under the same name) would be reconciled and
    traded on the wrong instrument, beside the position the plan opened."""
    moved = sorted({f"{leg.symbol} ({leg.exchange_symbol} in the plan, "
                    f"{instruments[leg.symbol].exchange_symbol} now)" for leg in plan.legs
                    if leg.symbol in instruments
                    and instruments[leg.symbol].exchange_symbol != leg.exchange_symbol})
    if moved:
        raise CliError(f"plan {plan.plan_id} was sent on other instruments than {path} names: "
                       f"{'; '.join(moved)}. Fix: resume with the book as it was when the plan was "
                       f"made, or settle the plan's contracts by hand and make a new plan")


@contextmanager
def _progress(n_legs: int) -> Iterator[Callable[[OrderLeg], None]]:
    """A rich progress bar on stderr over the plan's legs (hidden when not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn


    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                  transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("orders", total=n_legs)
        seen: set[int] = set()

        def step(leg: OrderLeg) -> None:
            if seen:
                bar.advance(task)
            seen.add(leg.index)
            bar.update(task, description=f"leg {leg.index} {leg.symbol}")

        yield step
        bar.update(task, completed=n_legs)


def _result(plan: OrderPlan, report: ExecutionReport, journal_path: Path | None,
            solution: Solution | None) -> ExecuteResult:
    from executor.base import planned_vs_filled

    out: ExecuteResult = {"mode": report.mode, "plan_id": plan.plan_id, "plan": plan.to_dict(),
                         "report": report.to_dict(),
                         "planned_vs_filled": planned_vs_filled(plan.legs, report.legs),
                         "journal": str(journal_path) if journal_path else None}
    if solution is not None:
        out["solution"] = {"status": solution.status,
                           "tracking_error_before": solution.tracking_error_before,
                           "tracking_error_after": solution.tracking_error_after,
                           "messages": list(solution.messages)}
    return out


logging.getLogger("executor").addHandler(logging.NullHandler())
