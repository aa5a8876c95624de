"""``fbr status``: check a hedged book (each day): weights vs targets, tracking error, margin and
distance to liquidation, funding since the last rebalance (USD), open orders, and whether a
rebalance is due (with the plan it would send).

Reads the journal's paper account (``--exchange paper``) or a ccxt account (keys from the
environment, :mod:`fbr.execute_wiring`); text output by :mod:`fbr.execute_render`. Heavy imports
stay inside the functions.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict, cast

import typer

from executor.safety import install_log_redaction
from fbr.console import iso_utc, pp, renamed, user_errors
from fbr.execute_render import _print_status
from fbr.execute_wiring import (
    ExchangeChoice,
    JournalOpt,
    _emit,
    _gateway,
    _journal_path,
    _load,
    _venue,
    account_loaded,
    redacting,
)
from models.errors import ExitCode

if TYPE_CHECKING:
    from executor.base import ExchangeGateway
    from executor.journal import Journal
    from executor.plan_doc import OrderPlanDoc
    from executor.status import MarginViewDoc, StatusDoc, StatusReport
    from fbr.config_loader import LoadedBook
    from models.book import Book
    from optimizer.rebalance import Rebalancer


def status(book: Annotated[Path, typer.Argument(help="Book file (TOML), as `fbr solve` reads it.")],
           exchange: Annotated[ExchangeChoice, typer.Option(
               "--exchange", help="paper (the journal's paper account) or binanceusdm.")
           ] = ExchangeChoice.PAPER,
           journal: JournalOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
           exit_code: Annotated[bool, typer.Option(
               "--exit-code", help="Exit with 7 when a rebalance is due, 3 when no plan is possible "
               "(infeasible, or liquidatable now), 0 otherwise.")] = False,
           ) -> None:
    """Weights vs targets, tracking error, margin and distance to liquidation, funding since the last
    rebalance, open orders, and whether a rebalance is due (with the plan it would send)."""

    install_log_redaction()
    with user_errors(as_json), redacting():
        rep = _status(book, exchange, _journal_path(journal))
        if as_json:
            _emit({"status": "ok", **status_json(rep.to_dict())})
        else:
            _print_status(rep)
    if exit_code and rep.infeasible:
        raise typer.Exit(code=int(ExitCode.INFEASIBLE))
    if exit_code and rep.rebalance_due:
        raise typer.Exit(code=int(ExitCode.REBALANCE_DUE))


class FundingJson(TypedDict):
    """``funding`` in ``fbr status --json``: ``FundingView``'s fields, ``since`` (ISO 8601 UTC, None
    without a rebalance) for ``since_ms``."""

    since: str | None
    total: float
    by_symbol: dict[str, float]
    source: str
    plan_id: str | None
    payments: int | None
    note: str


class StatusJson(TypedDict):
    """``fbr status --json``'s document (without ``status``), :func:`status_json`."""

    venue: str
    book_name: str
    nav: float
    base: float
    weights_before: dict[str, float]
    targets: dict[str, float]
    drift_pp: dict[str, float | None]
    tracking_error: float
    margin: MarginViewDoc
    funding: FundingJson
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


def status_json(doc: StatusDoc) -> StatusJson:
    """``StatusReport.to_dict()`` in the CLI's JSON language (its keys in their order): the
    ``weights`` rows become ``weights_before`` (the book now) and ``targets`` (``{asset: fraction}``)
    and ``drift_pp`` (percentage points); ``funding.since_ms`` becomes ``funding.since`` (ISO 8601
    UTC); every other key passes as it is."""
    out: dict[str, object] = {}
    for key, value in doc.items():
        if key == "weights":
            rows = doc["weights"]
            out["weights_before"] = {w["asset"]: w["effective"] for w in rows}
            out["targets"] = {w["asset"]: w["target"] for w in rows}
            out["drift_pp"] = pp({w["asset"]: w["drift"] for w in rows})
        elif key == "funding":
            out[key] = renamed(doc["funding"], {"since_ms": "since"}) | {
                "since": iso_utc(doc["funding"]["since_ms"])}
        else:
            out[key] = value
    # the keys StatusJson names, by construction (tests/fbr/test_json_documents.py checks them)
    return cast("StatusJson", out)


def _status(book_path: Path, exchange: ExchangeChoice, journal_path: Path) -> StatusReport:
    """``fbr status``: the journal is read only when it exists (a read-only view creates none);
    on paper the book file's holdings stand in for a paper account not there yet, and an alert
    says so in solve/whatif's words; dry-run reads the book file alone, as solve and whatif do."""
    from executor.journal import Journal

    loaded = _load(book_path)
    note = _paper_note(loaded, journal_path) if exchange == ExchangeChoice.PAPER else None
    j = Journal(journal_path) if journal_path.exists() else None
    try:
        report = status_report(loaded, exchange, j, venue=_venue(exchange))
    finally:
        if j is not None:
            j.close()
    return report if note is None else replace(report, alerts=(*report.alerts, note))


def _paper_note(loaded: LoadedBook, journal_path: Path) -> str | None:
    """``holdings: <source>`` as ``fbr solve --exchange paper`` prints it when the journal does
    not exist yet or holds no paper account for the book (the book file's holdings are used);
    None when the journal holds the account. Creates nothing (:func:`account_loaded`)."""
    account = account_loaded(loaded, ExchangeChoice.PAPER, journal_path)
    # account_loaded returns ``loaded`` itself when no paper account replaced its holdings
    return f"holdings: {account.source}" if account.loaded is loaded else None


def account_gateway(loaded: LoadedBook, exchange: ExchangeChoice, journal: Journal | None, *,
                    live: bool = True) -> tuple[ExchangeGateway, Book]:
    """The venue's gateway and the account's book: for ``paper`` a paper gateway over the
    journal's paper account at the prices it follows (:mod:`fbr.paper_prices`; the book file's
    holdings and market without a journal), for ``dry-run`` one over
    the book file's holdings (as ``fbr solve`` and ``whatif`` read them); for an exchange
    its ccxt gateway (keys from the environment; ``live=False``: missing keys are named as a read
    needs them, :func:`fbr.execute_wiring._gateway`; pledged spot read as the book's
    ``[book] pledge_source`` says) and the book file's holdings, which the gateway's account
    replaces (``account_view``)."""
    from executor.paper import PaperGateway, paper_book
    from fbr.paper_prices import followed_prices, paper_gateway

    if exchange not in (ExchangeChoice.PAPER, ExchangeChoice.DRY_RUN):
        return _gateway(exchange, live=live, pledge_source=loaded.pledge_source), loaded.book
    if exchange == ExchangeChoice.DRY_RUN or journal is None:
        return PaperGateway(loaded.book, loaded.market), loaded.book
    acc = paper_book(loaded.book, journal)[0]
    return paper_gateway(loaded, acc, followed_prices(journal, loaded.book.name)), acc


def account_silence(gw: ExchangeGateway, exchange: ExchangeChoice,
                    journal: Journal | None) -> AbstractContextManager[None]:
    """Around reads of an exchange's account: refused while the journal holds a silence the
    exchange asked for, and one met inside recorded (:func:`executor.silence.silence_kept`);
    nothing for ``paper`` and ``dry-run``, which send no request."""
    from executor.silence import silence_kept

    if exchange in (ExchangeChoice.PAPER, ExchangeChoice.DRY_RUN):
        return nullcontext()
    return silence_kept(journal, gw.account_key())


def status_report(loaded: LoadedBook, exchange: ExchangeChoice, journal: Journal | None, *,
                  venue: str | None = None, live: bool = True,
                  rebalancer: Rebalancer | None = None) -> StatusReport:
    """The status of ``exchange``'s account for the book ``loaded`` (``fbr status``, the
    dashboard's book page): the plan for ``venue`` (None: the gateway's), ``journal`` read when
    given (the caller opens and closes it), ``rebalancer`` the dashboard's compiled problems (None:
    a fresh one); ``live`` as in :func:`account_gateway`."""
    from executor.plan import PlanOptions, with_book_settings
    from executor.status import account_status
    from executor.workflow import account_view

    gw, acc = account_gateway(loaded, exchange, journal, live=live)
    with account_silence(gw, exchange, journal):
        book, market, instruments = account_view(gw, acc, loaded.market)
        options = with_book_settings(PlanOptions(venue=gw.venue if venue is None else venue),
                                     loaded.settings)
        report = account_status(gw, book, market, loaded.risk, loaded.settings, options,
                                instruments, journal, rebalancer=rebalancer)
    # a dry run reads the paper account but is not the paper venue: say what the user chose
    return replace(report, venue="dry-run") if exchange == ExchangeChoice.DRY_RUN else report
