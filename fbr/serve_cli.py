"""``fbr serve``: the local web dashboard (:mod:`fbr.web.app`) over the same state the CLI reads.

Binds 127.0.0.1 by default; another address needs a token (``--token`` or ``FBR_SERVE_TOKEN``).
Read-only unless started with ``--allow-execute`` (which needs a token too: one is generated and
printed once when none is given); real orders only with ``--allow-execute --live``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from executor.safety import install_log_redaction
from fbr.console import CliError, err, user_errors
from fbr.execute_wiring import ExchangeChoice, JournalOpt, _journal_path, redacting

if TYPE_CHECKING:
    from fbr.web.state import DashboardState

TOKEN_ENV = "FBR_SERVE_TOKEN"
#: The highest TCP port (ports are 1..65535; a larger one would bind its value mod 65536).
MAX_PORT = 65_535


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the fbr app."""
    app.command("serve")(serve)


def serve(book: Annotated[Path, typer.Argument(help="Book file (TOML), as `fbr solve` reads it.")],
          exchange: Annotated[ExchangeChoice, typer.Option(
              "--exchange", help="Where holdings come from: paper (the journal's paper account) "
              "or binanceusdm (the account; keys from the environment).")] = ExchangeChoice.PAPER,
          journal: JournalOpt = None,
          state_dir: Annotated[Path | None, typer.Option(
              help="fbr run's state folder (its health file).")] = None,
          reports: Annotated[Path | None, typer.Option(
              help="Folder of backtest and Monte Carlo HTML reports.")] = Path("out"),
          host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port.")] = 8765,
          token: Annotated[str | None, typer.Option(
              help=f"Access token (default ${TOKEN_ENV}); required off loopback.")] = None,
          allow_execute: Annotated[bool, typer.Option(
              "--allow-execute", help="Allow sending the plan from the page (token, CSRF, "
              "confirmation).")] = False,
          live: Annotated[bool, typer.Option("--live", help="With --allow-execute: real orders "
                                             "on binanceusdm.")] = False,
          ) -> None:
    """Serve the dashboard: the book now, history, the plan, what-if, reports, orders, the loop."""
    install_log_redaction()
    with user_errors(False), redacting():
        import uvicorn

        from fbr.web.app import create_app
        from fbr.web.security import LOOPBACK_HOSTS, check_bind, is_loopback, new_secret
        from fbr.web.state import DashboardState, ServeConfig

        _check_options(book, exchange, allow_execute, live, port)
        tok = token or os.environ.get(TOKEN_ENV) or None
        if allow_execute and tok is None:
            tok = new_secret()
            err.print(f"execution enabled: open http://{host}:{port}/login?token={tok} (this "
                      f"token is printed once)")
        check_bind(host, tok)
        config = ServeConfig(book=book, exchange=exchange, journal=_journal_path(journal),
                             state_dir=state_dir, reports=reports, allow_execute=allow_execute,
                             live=live)
        state = DashboardState(config)
        state.loaded()  # a bad book file stops here, before the server starts
        _warm_up(state)
        what = "read and execute" if allow_execute else "read-only"
        err.print(f"fbr serve: http://{host}:{port}/ ({what})")
        hosts = (*LOOPBACK_HOSTS, host) if is_loopback(host) else None  # off loopback: the token
        try:
            uvicorn.run(create_app(state, tok, hosts), host=host, port=port, log_level="warning")
        except SystemExit as exc:  # uvicorn's own exit (3 on a failed start: fbr's "infeasible")
            if exc.code in (0, None):
                raise
            raise CliError(f"the server did not start on {host}:{port} (uvicorn exit {exc.code}; "
                           f"see its error above: the port may be in use or not allowed to this "
                           f"user). Fix: give a free port with --port, or stop what listens on "
                           f"{port}") from None


def _check_options(book: Path, exchange: ExchangeChoice, allow_execute: bool, live: bool,
                   port: int) -> None:
    """The usage checks made before anything is loaded or bound (each a CliError, exit code 2)."""
    if not 1 <= port <= MAX_PORT:
        raise CliError(f"--port is {port}, outside 1..{MAX_PORT} (a TCP port). Fix: give a port "
                       f"in that range, e.g. --port 8765")
    if not book.is_file():
        raise CliError(f"book file {book} does not exist. Fix: give the path to a TOML book")
    if live and not allow_execute:
        raise CliError("--live only matters with --allow-execute. Fix: add --allow-execute, or "
                       "drop --live")
    if allow_execute and exchange == ExchangeChoice.DRY_RUN:
        raise CliError("--allow-execute with --exchange dry-run would send the plan on paper "
                       "while the page reads no account. Fix: --exchange paper (paper "
                       "orders), or --exchange binanceusdm --live (real orders)")
    if allow_execute and live != (exchange == ExchangeChoice.BINANCEUSDM):
        raise CliError(f"--allow-execute sends the plan the page shows, on the account it "
                       f"reads: --exchange {exchange.value} with{'' if live else 'out'} --live "
                       f"would read one account and trade another. Fix: --exchange paper "
                       f"(paper orders), or --exchange binanceusdm --live (real orders)")


def _warm_up(state: DashboardState) -> None:
    """Compile the book's problem before the first visitor (a first page then costs a solve,
    not a compile); an account that does not answer yet is reported, not fatal."""
    from models.errors import FbrError

    try:
        state.status()
    except FbrError as exc:
        err.print(f"warning: the first status read failed ({exc}); the pages will say why")
