"""What ``fbr execute``, ``fbr status``, ``fbr solve`` and ``fbr whatif`` share: the exchange choice
and its ccxt factories, the retry settings, the common options, loading the book, building the ccxt
gateway, reading an account's holdings into a loaded book (:func:`account_loaded`), and scrubbing
secrets from errors and JSON output.

Units: ``BACKOFF_S`` and ``RECONCILE_DELAYS_S`` in seconds. Keys come from
``FBR_<EXCHANGE>_API_KEY`` / ``FBR_<EXCHANGE>_SECRET`` and never reach logs, errors or ``--json``
output. Heavy modules (ccxt, the executor, the book loader) are imported inside the functions, so
``fbr --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from executor.safety import Credentials, load_credentials, redact
from fbr.console import CliError, default_journal, json_ready
from models.errors import ExitCode, FbrError

if TYPE_CHECKING:
    from executor.base import ExchangeGateway
    from executor.ccxt_gateway import CcxtGateway
    from executor.journal import Journal
    from executor.live import RetryPolicy
    from fbr.config_loader import LoadedBook
    from optimizer.solution import Solution


class ExchangeChoice(StrEnum):
    """Where orders go."""

    DRY_RUN = "dry-run"
    PAPER = "paper"
    BINANCEUSDM = "binanceusdm"


def _binanceusdm(creds: Credentials) -> Any:
    import ccxt

    return ccxt.binanceusdm({"apiKey": creds.api_key, "secret": creds.secret, "enableRateLimit": True,
                             "options": {"fetchCurrencies": False, "maxRetriesOnFailure": 0}})


#: ccxt exchange factories by venue (tests swap in one wired to the loopback emulator).
EXCHANGE_FACTORIES: dict[str, Callable[[Credentials], Any]] = {"binanceusdm": _binanceusdm}
#: Read retry backoff of the ccxt gateway and the executor (seconds); tests set it to 0.
BACKOFF_S = 0.5
#: Seconds between the account checks of a reconcile on a real exchange (tests set zeros). The
#: paper exchange answers at once and consistently, so its reconcile needs no window.
RECONCILE_DELAYS_S: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: The least age (seconds) of a send proven not placed on a real exchange; None is
#: executor.reconcile.SETTLE_S (tests set 0)
RECONCILE_SETTLE_S: float | None = None


def _retry(paper: bool) -> RetryPolicy:
    from executor.live import RetryPolicy
    from executor.reconcile import SETTLE_S

    settle = SETTLE_S if RECONCILE_SETTLE_S is None else RECONCILE_SETTLE_S
    return RetryPolicy(base_delay_s=BACKOFF_S, reconcile_delays_s=() if paper else RECONCILE_DELAYS_S,
                       settle_s=0.0 if paper else settle)

ExchangeOpt = Annotated[ExchangeChoice, typer.Option(
    "--exchange", help="dry-run (default: show the plan), paper (simulated fills) or binanceusdm.")]
JournalOpt = Annotated[Path | None, typer.Option(
    "--journal", help="SQLite journal (default $FBR_JOURNAL, else journal.sqlite in the per-user "
    "data directory: $FBR_DATA_HOME, or ~/.local/share/fbr on Linux).")]
BookArg = Annotated[Path | None, typer.Argument(help="Book file (TOML), as `fbr solve` reads it.")]
HoldingsOpt = Annotated[ExchangeChoice, typer.Option(
    "--exchange", help="Where the holdings (futures positions, wallet cash) come from: dry-run "
    "(default: the book file), paper (the journal's paper account) or binanceusdm (the account, "
    "keys from FBR_BINANCEUSDM_API_KEY / FBR_BINANCEUSDM_SECRET).")]


@contextmanager
def redacting() -> Iterator[None]:
    """Re-raise any error with registered secrets scrubbed from its message (inside user_errors),
    keeping its exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except (FbrError, ValueError, OSError) as exc:
        raise _scrubbed(redact(str(exc)), getattr(exc, "exit_code", ExitCode.BAD_INPUT)) from None
    except Exception as exc:
        if os.environ.get("FBR_DEBUG"):
            raise
        raise _scrubbed(f"internal error: {type(exc).__name__}: {redact(str(exc))} "
                        f"(set FBR_DEBUG=1 for the traceback)", ExitCode.INTERNAL) from None


def _scrubbed(message: str, code: ExitCode) -> FbrError:
    """A CliError carrying ``message`` (already redacted) and the original error's exit code."""
    exc = CliError(message)
    exc.exit_code = code
    return exc


def _journal_path(path: Path | None) -> Path:
    """``--journal``, else :func:`fbr.console.default_journal` (per-user data directory)."""
    return path if path is not None else default_journal()


def _emit(obj: Mapping[str, object]) -> None:
    """Print one strict JSON object (non-finite numbers as null, see :func:`json_ready`), secrets
    scrubbed."""
    print(redact(json.dumps(json_ready(obj), indent=2, default=str, allow_nan=False)))


def _venue(exchange: ExchangeChoice) -> str:
    return "binanceusdm" if exchange == ExchangeChoice.DRY_RUN else exchange.value


def _load(book: Path) -> LoadedBook:
    from fbr.config_loader import load_book_file

    if not book.exists():
        raise CliError(f"book file {book} does not exist. Fix: give the path to a TOML book "
                       f"(see examples/)")
    return load_book_file(book)


def _gateway(exchange: ExchangeChoice, live: bool = True, *,
             pledge_source: str = "multi_assets") -> CcxtGateway:
    """A ccxt gateway; keys from the environment (a dry run reads the account too);
    ``pledge_source`` is the book's ``[book] pledge_source`` (``LoadedBook.pledge_source``: how the
    account's pledged spot is read, :mod:`executor.ccxt_collateral`)."""
    from executor.ccxt_gateway import CcxtGateway
    from executor.safety import env_names

    names = env_names(exchange.value)
    if not live and not all(os.environ.get(n) for n in names):
        raise CliError(f"a dry run on {exchange.value} reads the account (positions and wallet), "
                       f"which needs API keys (read-only keys are enough): set {names[0]} and "
                       f"{names[1]}. Fix: export them, or plan from the book file alone with "
                       f"--exchange dry-run (no account is read)")
    creds = load_credentials(exchange.value)
    factory = EXCHANGE_FACTORIES[exchange.value]
    return CcxtGateway(factory(creds), base_delay_s=BACKOFF_S, pledge_source=pledge_source)


@dataclass(frozen=True)
class AccountLoaded:
    """A loaded book whose holdings come from an account: ``loaded`` has the account's book
    (futures positions in contracts, wallet cash in USD; spot stays the book file's) and market;
    ``source`` says where the holdings came from, for reports ("book file", "paper account
    (journal J)", "binanceusdm account")."""

    loaded: LoadedBook
    source: str

    @property
    def from_account(self) -> bool:
        """True when an account (paper or exchange) supplied the holdings."""
        return self.source != BOOK_FILE_SOURCE


#: ``AccountLoaded.source`` of the book file alone (``--exchange dry-run``).
BOOK_FILE_SOURCE = "book file"


def account_loaded(loaded: LoadedBook, exchange: ExchangeChoice,
                   journal_path: Path | None = None) -> AccountLoaded:
    """``loaded`` with the holdings of ``exchange``'s account, as ``fbr execute`` plans from them.

    - ``dry-run``: the book file alone (``loaded`` unchanged);
    - ``paper``: the journal's paper account (positions, cash; the book file's when the journal or
      its paper account does not exist yet). Nothing is written: no journal is created;
    - ``binanceusdm``: the exchange's instruments (lot steps, contract sizes, tiers), market (marks,
      funding) and account (positions, wallet cash; pledged spot read as the book's
      ``[book] pledge_source`` says), keys from the environment.
    Spot holdings, targets, the risk model and the settings stay the book file's.
    """
    if exchange == ExchangeChoice.DRY_RUN:
        return AccountLoaded(loaded, BOOK_FILE_SOURCE)
    if exchange == ExchangeChoice.PAPER:
        return _paper_loaded(loaded, _journal_path(journal_path))
    from executor.workflow import account_view

    gw = _gateway(exchange, live=False, pledge_source=loaded.pledge_source)
    with silence_journal(_journal_path(journal_path), gw, create=False):
        book, market, _ = account_view(gw, loaded.book, loaded.market)
    return AccountLoaded(dataclasses.replace(loaded, book=book, market=market),
                         f"{exchange.value} account")


@contextmanager
def silence_journal(journal_path: Path, gw: ExchangeGateway, *,
                    create: bool) -> Iterator[Journal | None]:
    """The journal at ``journal_path`` (made when ``create``, else None when there is none) with
    the account's silence kept around the block (executor.silence: refused before the first
    request while the exchange's asked-for silence lasts; one met inside is recorded)."""
    from executor.journal import Journal
    from executor.silence import silence_kept

    if not (create or journal_path.exists()):
        yield None
        return
    with Journal(journal_path) as j, silence_kept(j, gw.account_key()):
        yield j


def _paper_loaded(loaded: LoadedBook, journal_path: Path) -> AccountLoaded:
    """The paper account of ``journal_path`` (see :func:`account_loaded`) at the market it follows
    (:mod:`fbr.paper_prices`: the book file's, or the exchange's live prices an ``fbr run`` loop
    follows it on); a missing journal is not created."""
    from executor.journal import Journal
    from executor.journal_schema import check_journal_path
    from executor.paper import paper_book
    from executor.paper_store import BOOK_PRICES
    from fbr.paper_prices import followed_prices, paper_gateway

    check_journal_path(journal_path)
    if not journal_path.is_file():
        return AccountLoaded(loaded, f"paper account (journal {journal_path} does not exist yet: "
                                     f"the book file's holdings)")
    with Journal(journal_path) as j:
        book, found = paper_book(loaded.book, j)
        prices = followed_prices(j, loaded.book.name)
    if not found:
        return AccountLoaded(loaded, f"paper account (journal {journal_path} has none for book "
                                     f"{loaded.book.name!r} yet: the book file's holdings)")
    if prices == BOOK_PRICES:
        return AccountLoaded(dataclasses.replace(loaded, book=book),
                             f"paper account (journal {journal_path})")
    market = paper_gateway(loaded, book, prices).market(book, loaded.market)
    return AccountLoaded(dataclasses.replace(loaded, book=book, market=market),
                         f"paper account (journal {journal_path}) at {prices} prices")


def solve_loaded(loaded: LoadedBook) -> Solution:
    """The rebalance of a loaded book (book, market, risk, settings as given)."""
    from optimizer.rebalance import Rebalancer

    return Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings,
                              labels=loaded.labels)


def solve_holdings(book: Path, exchange: ExchangeChoice, journal: Path | None
                   ) -> tuple[Solution, AccountLoaded]:
    """``fbr solve``: the book file's rebalance from the holdings of ``exchange``'s account
    (:func:`account_loaded`; ``dry-run``: the book file alone)."""
    from executor.safety import install_log_redaction

    loaded = _load(book)
    if exchange == ExchangeChoice.BINANCEUSDM:
        install_log_redaction()
    with redacting():
        account = account_loaded(loaded, exchange, journal)
    return solve_loaded(account.loaded), account
