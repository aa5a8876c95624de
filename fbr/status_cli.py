"""``fbr status``: check a hedged book (each day): weights vs targets, tracking error, margin and
distance to liquidation, funding since the last rebalance (USD), open orders, and whether a
rebalance is due (with the plan it would send).

Reads the journal's paper account (``--exchange paper``) or a ccxt account (keys from the
environment, :mod:`fbr.execute_wiring`); text output by :mod:`fbr.execute_render`. Heavy imports
stay inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from executor.safety import install_log_redaction
from fbr.console import iso_utc, pp, user_errors
from fbr.execute_render import _print_status
from fbr.execute_wiring import (
    ExchangeChoice,
    JournalOpt,
    _emit,
    _gateway,
    _journal_path,
    _load,
    _venue,
    redacting,
)
from models.errors import ExitCode

if TYPE_CHECKING:
    from executor.status import StatusReport


def status(book: Annotated[Path, typer.Argument(help="Book file (TOML), as `fbr solve` reads it.")],
           exchange: Annotated[ExchangeChoice, typer.Option(
               "--exchange", help="paper (the journal's paper account) or binanceusdm.")
           ] = ExchangeChoice.PAPER,
           journal: JournalOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
           exit_code: Annotated[bool, typer.Option(
               "--exit-code", help="Exit with 7 when a rebalance is due (0 when not).")] = False,
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
    if exit_code and rep.rebalance_due:
        raise typer.Exit(code=int(ExitCode.REBALANCE_DUE))


def status_json(doc: dict[str, Any]) -> dict[str, Any]:
    """``AccountStatus.to_dict()`` in the CLI's JSON language: the ``weights`` rows become
    ``weights_before`` (the book now) and ``targets`` (``{asset: fraction}``) and ``drift_pp``
    (percentage points); ``funding.since_ms`` becomes ``funding.since`` (ISO 8601 UTC)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "weights":
            rows = list(value)
            out["weights_before"] = {w["asset"]: w["effective"] for w in rows}
            out["targets"] = {w["asset"]: w["target"] for w in rows}
            out["drift_pp"] = pp({w["asset"]: w["drift"] for w in rows})
        elif key == "funding" and isinstance(value, dict):
            out[key] = {("since" if k == "since_ms" else k): (iso_utc(v) if k == "since_ms" else v)
                        for k, v in value.items()}
        else:
            out[key] = value
    return out


def _status(book_path: Path, exchange: ExchangeChoice, journal_path: Path) -> StatusReport:
    from executor.journal import Journal
    from executor.paper import PaperGateway, paper_book
    from executor.plan import PlanOptions, with_book_settings
    from executor.status import account_status
    from executor.workflow import account_view

    loaded = _load(book_path)
    options = with_book_settings(PlanOptions(venue=_venue(exchange)), loaded.settings)
    j = Journal(journal_path) if (journal_path.exists() or exchange == ExchangeChoice.PAPER) else None
    try:
        if exchange in (ExchangeChoice.PAPER, ExchangeChoice.DRY_RUN):
            acc = loaded.book
            if j is not None:
                acc, _ = paper_book(loaded.book, j)
            gw: Any = PaperGateway(acc, loaded.market)
        else:
            gw = _gateway(exchange)
            acc = loaded.book
        acc_b, market, instruments = account_view(gw, acc, loaded.market)
        return account_status(gw, acc_b, market, loaded.risk, loaded.settings, options, instruments, j)
    finally:
        if j is not None:
            j.close()
