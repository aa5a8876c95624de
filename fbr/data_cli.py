"""``fbr data fetch``: download market history through ccxt into the shared data layout.

    fbr data fetch --exchange binanceusdm --symbols BTC,ETH,SOL --since 2024-01-01 \\
        [--until 2025-01-01] [--out data] [--interval 1d,4h] [--spot-source exchange|index]

writes ``spot_<interval>/``, ``perp_mark_4h/``, ``funding/`` and ``markets/`` under ``--out`` (see
``executor.fetch_history`` for the files and the choices behind them); ``MarketPath.from_data`` and
``models.io`` read that directory as it is (``FBR_DATA_DIR=<out>`` or a backtest file's data dir).
Public data needs no keys; leverage tiers are a signed Binance endpoint and are fetched only when
the exchange's keys are set, in the same variables ``fbr execute`` reads: ``FBR_<EXCHANGE>_API_KEY``
and ``FBR_<EXCHANGE>_SECRET`` (e.g. ``FBR_BINANCEUSDM_API_KEY``; never printed or written).
The 8 h and 4 h backtest steps need ``--interval 4h`` (spot_4h); the 1 d step needs ``1d``.
A long silence the exchange asks for (over ``MAX_RETRY_AFTER_S``) stops the fetch and is kept in the
per-user journal under the IP's key (``executor.silence.ip_scope``): a fetch started before it ends
is refused (exit code 6) without a request.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fbr.console import err, user_errors
from fbr.console import out as stdout_console
from models.errors import FbrError, RefusedError, ValidationError

if TYPE_CHECKING:  # ccxt and pandas load when the command runs
    import pandas as pd

    from executor.ccxt_wiring import ExchangeFactory
    from executor.fetch_history import FetchRequest, FetchSilenceError, FetchSummary


#: A quote / settlement asset as exchanges name it (USDT, USDC, ...).
_ASSET_RE = re.compile(r"^[A-Z0-9]{1,20}$")


class ExchangeAccessError(FbrError):
    """The exchange could not be reached or refused a request (a user-facing message)."""


def default_factory(exchange_id: str) -> Any:  # a ccxt Exchange (ccxt is untyped)
    """Real ccxt instances: keys from the environment for the derivatives exchange only."""
    from executor.ccxt_wiring import make_exchange
    from executor.fetch_history import SPOT_EXCHANGE
    from executor.safety import env_names, register_secret

    if exchange_id in SPOT_EXCHANGE.values():  # public spot klines: no keys, spot markets only
        return make_exchange(exchange_id, options={"fetchMarkets": {"types": ["spot"]},
                                                   "defaultType": "spot"})
    key_env, secret_env = env_names(exchange_id)
    key, secret = os.environ.get(key_env) or None, os.environ.get(secret_env) or None
    for value in (key, secret):
        if value:
            register_secret(value)
    return make_exchange(exchange_id, api_key=key, secret=secret)


#: The factory ``fetch`` uses (tests swap in one wired to the loopback emulator).
exchange_factory: ExchangeFactory = default_factory


def _utc(value: str | None, name: str) -> pd.Timestamp | None:
    from models.io import utc_timestamp

    return None if value is None else utc_timestamp(value, name)


def _split(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def build_request(exchange: str, symbols: str, since: str, until: str | None, out: Path,
                  interval: str, quote: str, spot_source: str, tiers: bool) -> FetchRequest:
    """Validate the command line into a :class:`FetchRequest`, --out included: every check is
    made before the first request to the exchange."""
    from executor.fetch_history import FetchRequest, SpotSource

    start = _utc(since, "since")
    assert start is not None
    try:
        source = SpotSource(spot_source)
    except ValueError:
        raise ValidationError("spot-source", f"is {spot_source!r}",
                              f"give one of {[s.value for s in SpotSource]}") from None
    quote_asset = quote.strip().upper()
    if not _ASSET_RE.match(quote_asset):
        raise ValidationError("--quote", f"is {quote!r}",
                              "give the quote / settlement asset in letters and digits, e.g. USDT")
    request = FetchRequest(exchange_id=exchange, symbols=_split(symbols.upper()), since=start,
                           until=_utc(until, "until"), intervals=_split(interval), out_dir=out,
                           quote=quote_asset, spot_source=source, tiers=tiers)
    _check_out(request)
    return request


def _check_out(request: FetchRequest) -> None:
    """--out must be a folder fbr can write (or create), and none of the layout folders the fetch
    writes into it (spot_<interval>, perp_mark_4h, funding, markets) may be a file."""
    from fbr.backtest_work import check_output_dir
    from models.data_layout import FUNDING_FOLDER, MARK_FOLDER, MARKETS_FOLDER, spot_folder

    out = request.out_dir
    check_output_dir(out, "--out")
    folders = [*(spot_folder(iv) for iv in request.intervals), MARK_FOLDER, FUNDING_FOLDER,
               MARKETS_FOLDER]
    for name in folders:
        if (out / name).exists() and not (out / name).is_dir():
            raise ValidationError("--out", f"is {str(out)!r}, where {out / name} is a file, but "
                                  f"the fetch writes the folder {name}/ there",
                                  "move that file away, or give another --out folder")


def run_fetch(request: FetchRequest, *, show_progress: bool) -> FetchSummary:
    """Fetch with a rich progress bar (one task per series); ccxt errors become one message.

    Refused (exit code 6) before any request while a silence the exchange asked of this IP during
    an earlier fetch lasts; a long silence asked now stops the fetch (FetchSilenceError, naming its
    seconds and end) and is kept for the next one (:func:`_refuse_in_silence`)."""
    import ccxt

    from executor.fetch_history import FetchSilenceError

    _refuse_in_silence(request)
    try:
        return _fetch(request, show_progress=show_progress)
    except FetchSilenceError as exc:
        _record_silence(exc)
        raise
    except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as exc:
        raise ExchangeAccessError(f"{request.exchange_id} is rate-limiting this IP ({exc}); fbr "
                                  f"waited the Retry-After it gave between retries. Fix: wait a "
                                  f"few minutes, then run the fetch again") from exc
    except ccxt.NetworkError as exc:
        raise ExchangeAccessError(f"could not reach {request.exchange_id} after retries "
                              f"({type(exc).__name__}); check the network and try again") from exc
    except ccxt.BadSymbol as exc:
        raise ExchangeAccessError(f"{request.exchange_id} does not know a symbol: {exc}") from exc
    except ccxt.BaseError as exc:
        raise ExchangeAccessError(f"{request.exchange_id} refused a request "
                              f"({type(exc).__name__}): {exc}") from exc


def _fetch(request: FetchRequest, *, show_progress: bool) -> FetchSummary:
    """:func:`executor.fetch_history.fetch_market_data`, with progress bars when asked."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from executor.fetch_history import fetch_market_data

    if not show_progress:
        return fetch_market_data(request, exchange_factory)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(label: str, done: int, expected: int | None) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=expected)
            total = max(done, expected or done)
            bar.update(tasks[label], completed=done, total=total)

        return fetch_market_data(request, exchange_factory, progress=progress)


def _refuse_in_silence(request: FetchRequest) -> None:
    """RefusedError (exit code 6), before any request, while the per-user journal
    (:func:`fbr.console.default_journal`) holds an IP-level silence not yet over of one of the
    exchanges the fetch would call (``executor.silence.ip_scope``). Best effort: without a journal,
    or one that cannot be opened, the fetch goes ahead."""
    from executor.fetch_history import exchanges_of, silence_message
    from executor.journal import Journal
    from executor.silence import ip_scope, wall_ms
    from fbr.console import default_journal

    path = default_journal()
    if not path.is_file():
        return
    ends: dict[str, int | None] = {}
    try:
        with Journal(path) as j:
            ends = {ex: j.silence_until(ip_scope(ex)) for ex in exchanges_of(request)}
    except (FbrError, OSError, sqlite3.Error) as exc:
        warnings.warn(f"the journal {path} could not be read for a rate-limit silence kept by an "
                      f"earlier fetch ({type(exc).__name__}: {exc}); fetching anyway", stacklevel=2)
    now = wall_ms()
    for ex, until in ends.items():
        if until is not None and now < until:
            raise RefusedError(silence_message(ex, (until - now) / 1000, until, cause=None))


def _record_silence(exc: FetchSilenceError) -> None:
    """Keep the end of the silence ``exc`` asked for in the per-user journal (created when
    missing), under the IP-level key of its exchange; a later end already kept stays. Best effort:
    the message of ``exc`` names the end anyway."""
    from executor.journal import Journal
    from executor.silence import ip_scope
    from fbr.console import default_journal

    key = ip_scope(exc.exchange_id)
    path = default_journal()
    try:
        with Journal(path) as j:
            j.set_silence(key, max(exc.until_ms, j.silence_until(key) or 0))
    except (FbrError, OSError, sqlite3.Error) as err:
        warnings.warn(f"the silence could not be kept in the journal {path} ({type(err).__name__}: "
                      f"{err}): wait until the time named below before the next fetch", stacklevel=2)


def fetch(
    symbols: Annotated[str, typer.Option("--symbols", help="Base assets, comma separated: "
                                         "BTC,ETH,SOL.")],
    since: Annotated[str, typer.Option("--since", help="First bar (UTC date), e.g. 2024-01-01.")],
    exchange: Annotated[str, typer.Option("--exchange", help="ccxt exchange id of the "
                                          "perpetuals.")] = "binanceusdm",
    until: Annotated[str | None, typer.Option("--until", help="End (UTC, exclusive); default: "
                                              "now (closed bars only).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output data directory.")] = Path("data"),
    interval: Annotated[str, typer.Option("--interval", help="Spot bar intervals, comma "
                                          "separated: 1d, 4h, ...")] = "1d",
    quote: Annotated[str, typer.Option("--quote", help="Quote / settlement asset.")] = "USDT",
    spot_source: Annotated[str, typer.Option("--spot-source", help="'exchange' (spot klines) "
                                             "or 'index' (the perp's index price).")] = "exchange",
    tiers: Annotated[bool, typer.Option("--tiers/--no-tiers", help="Fetch leverage tiers "
                                        "(needs API keys in the environment).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of "
                                          "tables.")] = False,
) -> None:
    """Fetch spot klines, perp marks, funding and contract specs into the shared data layout."""
    from rich.table import Table

    console = stdout_console  # ``out`` is the --out option here
    with user_errors(as_json):
        request = build_request(exchange, symbols, since, until, out, interval, quote,
                                spot_source, tiers)
        summary = run_fetch(request, show_progress=not as_json)
        if as_json:
            print(json.dumps({"status": "ok", "exchange": request.exchange_id,
                              "out": str(request.out_dir), **summary.as_dict()}))
            return
        table = Table(title=f"fbr data fetch: {request.exchange_id} -> {request.out_dir}")
        for col in ("file", "rows", "first", "last"):
            table.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
        for f in summary.files:
            try:
                name = str(f.path.relative_to(request.out_dir))
            except ValueError:
                name = str(f.path)
            table.add_row(name, str(f.rows), f.first or "", f.last or "")
        console.print(table)
        for note in summary.notes:
            console.print(f"note: {note}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group (``fbr data fetch``) to the fbr CLI."""
    data = typer.Typer(no_args_is_help=True, help="Market data: fetch history into the shared "
                       "layout.")
    data.command("fetch")(fetch)
    app.add_typer(data, name="data")
