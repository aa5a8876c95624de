"""``fbr execute`` and ``fbr status``: send a rebalance's orders (dry run, paper or ccxt) and check
a hedged book each day.

Safety: a dry run is the default (``--exchange dry-run``; on a real exchange without ``--live`` the
plan is built against the account and shown, nothing is sent). Real orders need ``--live`` and keys
in ``FBR_<EXCHANGE>_API_KEY`` / ``FBR_<EXCHANGE>_SECRET``; notional limits per order and per plan
apply to every mode; keys never reach logs, the journal, errors or ``--json`` output.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from executor.safety import Credentials, Limits, install_log_redaction, load_credentials, redact
from models.errors import ExitCode, FbrError

DEFAULT_JOURNAL = Path(".fbr") / "journal.sqlite"


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


def _retry(paper: bool) -> Any:
    from executor.live import RetryPolicy

    return RetryPolicy(base_delay_s=BACKOFF_S,
                       reconcile_delays_s=() if paper else RECONCILE_DELAYS_S)

ExchangeOpt = Annotated[ExchangeChoice, typer.Option(
    "--exchange", help="dry-run (default: show the plan), paper (simulated fills) or binanceusdm.")]
JournalOpt = Annotated[Path | None, typer.Option(
    "--journal", help="SQLite journal (default $FBR_JOURNAL, else .fbr/journal.sqlite).")]
BookArg = Annotated[Path | None, typer.Argument(help="Book file (TOML), as `fbr solve` reads it.")]


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
    from fbr.cli import CliError

    exc = CliError(message)
    exc.exit_code = code
    return exc


def _journal_path(path: Path | None) -> Path:
    if path is not None:
        return path
    env = os.environ.get("FBR_JOURNAL")
    return Path(env) if env else DEFAULT_JOURNAL


def json_ready(obj: Any) -> Any:
    """``obj`` with every non-finite float (nan, inf, -inf; numpy floats too) replaced by None, so
    that it serialises as strict JSON (``null``, never ``NaN`` / ``Infinity``). A ``null`` where a
    number is expected means the figure has no finite value: e.g. ``margin.margin_ratio`` and
    ``margin.initial_utilisation`` are null when no collateral backs an open position (collateral
    <= 0: infinite, the book is liquidatable), ``cost`` in ``fbr status`` when the base is 0."""
    if isinstance(obj, float):  # numpy float64 is a float subclass
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # numpy scalars and arrays
        return json_ready(obj.tolist())
    return obj


def _emit(obj: dict[str, Any]) -> None:
    """Print one strict JSON object (non-finite numbers as null, see :func:`json_ready`), secrets
    scrubbed."""
    print(redact(json.dumps(json_ready(obj), indent=2, default=str, allow_nan=False)))


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
    from fbr.cli import CliError, user_errors

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
            from executor.journal import check_journal_path

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


def _exit_code(result: dict[str, Any]) -> ExitCode:
    """OK, INCOMPLETE (a contract off its target) or UNKNOWN (an order in doubt)."""
    outcome = result["report"].get("outcome", "complete")
    codes = {"incomplete": ExitCode.INCOMPLETE, "unknown": ExitCode.UNKNOWN}
    return codes.get(outcome, ExitCode.OK)


def _venue(exchange: ExchangeChoice) -> str:
    return "binanceusdm" if exchange == ExchangeChoice.DRY_RUN else exchange.value


def _load(book: Path) -> Any:
    from fbr.cli import CliError
    from fbr.config_loader import load_book_file

    if not book.exists():
        raise CliError(f"book file {book} does not exist. Fix: give the path to a TOML book "
                       f"(see examples/)")
    return load_book_file(book)


def _gateway(exchange: ExchangeChoice, live: bool = True) -> Any:
    """A ccxt gateway; keys from the environment (a dry run reads the account too)."""
    from executor.ccxt_gateway import CcxtGateway
    from executor.safety import env_names
    from fbr.cli import CliError

    names = env_names(exchange.value)
    if not live and not all(os.environ.get(n) for n in names):
        raise CliError(f"a dry run on {exchange.value} reads the account (positions and wallet), "
                       f"which needs API keys (read-only keys are enough): set {names[0]} and "
                       f"{names[1]}. Fix: export them, or plan from the book file alone with "
                       f"--exchange dry-run (no account is read)")
    creds = load_credentials(exchange.value)
    factory = EXCHANGE_FACTORIES[exchange.value]
    return CcxtGateway(factory(creds), base_delay_s=BACKOFF_S)


def _execute(book_path: Path, exchange: ExchangeChoice, live: bool, journal_path: Path,
             options: Any) -> dict[str, Any]:
    from executor.dryrun import DryRunExecutor
    from executor.journal import Journal
    from executor.live import Context, JournaledExecutor
    from executor.paper import PaperGateway, PaperStore, paper_book
    from executor.plan import book_instruments, plan_orders, with_book_settings
    from executor.workflow import orderable_solution, prepare_plan

    loaded = _load(book_path)
    options = with_book_settings(options, loaded.settings)
    if exchange == ExchangeChoice.DRY_RUN:
        instruments = book_instruments(loaded.book)
        sol = orderable_solution(loaded.book, loaded.market, loaded.risk, loaded.settings,
                                 labels=loaded.labels)
        plan = plan_orders(sol, loaded.book, loaded.market, instruments, options, risk=loaded.risk)
        report = DryRunExecutor().execute(plan)
        return _result(plan, report, None, sol)
    if exchange == ExchangeChoice.PAPER:
        with Journal(journal_path) as j:
            acc, _ = paper_book(loaded.book, j)
            store = PaperStore(j.path, loaded.book.name)
            try:
                gw: Any = PaperGateway(acc, loaded.market, daily_vol=_daily_vol(loaded),
                                       store=store)
                prep = prepare_plan(gw, acc, loaded.market, loaded.risk, loaded.settings, options,
                                    labels=loaded.labels)
                with _progress(len(prep.plan.legs)) as step:
                    ex = JournaledExecutor(gw, j, Context(prep.book, prep.market, prep.instruments,
                                                          loaded.risk), retry=_retry(True),
                                           mode="paper",
                                           on_leg=step)
                    report = ex.execute(prep.plan, str(book_path.resolve()))
            finally:
                store.close()
        return _result(prep.plan, report, journal_path, prep.solution)
    gw = _gateway(exchange, live)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, options,
                        labels=loaded.labels)
    if not live:
        return _result(prep.plan, DryRunExecutor().execute(prep.plan), None, prep.solution)
    with Journal(journal_path) as j, _progress(len(prep.plan.legs)) as step:
        ex = JournaledExecutor(gw, j, Context(prep.book, prep.market, prep.instruments,
                                              loaded.risk), retry=_retry(False), mode="live",
                               on_leg=step)
        report = ex.execute(prep.plan, str(book_path.resolve()))
    return _result(prep.plan, report, journal_path, prep.solution)


def _resume(plan_id: str, book: Path | None, exchange: ExchangeChoice, live: bool,
            journal_path: Path) -> dict[str, Any]:
    from executor.journal import Journal
    from executor.live import Context, JournaledExecutor
    from executor.paper import PaperGateway, PaperStore, paper_book
    from executor.safety import SafetyError
    from executor.workflow import account_view
    from fbr.cli import CliError

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
            gw: Any = PaperGateway(acc, loaded.market, daily_vol=_daily_vol(loaded), store=store)
            mode = "paper"
        else:
            if not live:
                raise SafetyError(f"plan {plan_id} sends real orders on {plan.venue}. Fix: add --live "
                                  f"to resume it")
            gw = _gateway(ExchangeChoice(plan.venue))
            acc = loaded.book
            mode = "live"
        del exchange
        try:
            acc_b, market, instruments = account_view(gw, acc, loaded.market)
            with _progress(len(plan.legs)) as step:
                ex = JournaledExecutor(gw, j, Context(acc_b, market, instruments, loaded.risk),
                                       retry=_retry(mode == "paper"), mode=mode, on_leg=step)
                report = ex.resume(plan_id)
        finally:
            if store is not None:
                store.close()
    return _result(plan, report, journal_path, None)


def _check_same_book(plan: Any, book: Any, path: Path) -> None:
    """A plan resumes only with the book it was made from (same name, every contract in it)."""
    from fbr.cli import CliError

    missing = sorted(set(plan.target) - set(book.contract_symbols))
    if plan.book_name != book.name or missing:
        what = (f"contracts {', '.join(missing)} are not in it" if missing else
                f"it is book {book.name!r}")
        raise CliError(f"plan {plan.plan_id} was made for book {plan.book_name!r}, but {path}: "
                       f"{what}. Fix: resume with the book file the plan was made from (or omit "
                       f"the book: the journal remembers it)")


@contextmanager
def _progress(n_legs: int) -> Iterator[Callable[[Any], None]]:
    """A rich progress bar on stderr over the plan's legs (hidden when not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from fbr.cli import err

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                  transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("orders", total=n_legs)
        seen: set[int] = set()

        def step(leg: Any) -> None:
            if seen:
                bar.advance(task)
            seen.add(leg.index)
            bar.update(task, description=f"leg {leg.index} {leg.symbol}")

        yield step
        bar.update(task, completed=n_legs)


def _daily_vol(loaded: Any) -> dict[str, float]:
    """Daily vol of each contract's underlying (for the paper impact term)."""
    vol = dict(zip(loaded.risk.symbols, map(float, loaded.risk.daily_vol), strict=True))
    return {c.symbol: vol.get(c.underlying, 0.0) for c in loaded.book.contracts}


def _result(plan: Any, report: Any, journal_path: Path | None, solution: Any) -> dict[str, Any]:
    from executor.base import planned_vs_filled

    out: dict[str, Any] = {"mode": report.mode, "plan_id": plan.plan_id, "plan": plan.to_dict(),
                           "report": report.to_dict(),
                           "planned_vs_filled": planned_vs_filled(report.legs),
                           "journal": str(journal_path) if journal_path else None}
    if solution is not None:
        out["solution"] = {"status": solution.status,
                           "tracking_error_before": solution.tracking_error_before,
                           "tracking_error_after": solution.tracking_error_after,
                           "messages": list(solution.messages)}
    return out


def _console() -> Any:
    """fbr's console; piped output (80 columns by default) gets room for the plan's columns."""
    from rich.console import Console

    from fbr.cli import out

    return out if out.is_terminal else Console(width=max(out.width, 160), highlight=False)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3f}%"


def _plan_table(plan: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for head in ("leg", "contract", "exchange symbol", "side", "contracts", "notional USD",
                 "reduce-only", "type", "client id"):
        t.add_column(head, justify="right" if head in ("contracts", "notional USD") else "left")
    for leg in plan["legs"]:
        t.add_row(str(leg["index"]), leg["symbol"], leg["exchange_symbol"], leg["side"],
                  f"{leg['contracts']:.10g}", f"{leg['notional']:,.2f}",
                  "yes" if leg["reduce_only"] else "", leg["order_type"]
                  + (f" @ {leg['limit_price']:.10g}" if leg["limit_price"] else ""), leg["client_id"])
    return t


def _print_plan(plan: dict[str, Any], out: Any) -> None:
    from rich.markup import escape

    out.print(_plan_table(plan, f"Plan {plan['plan_id']} ({plan['venue']})"))
    _print_warnings(plan, out)
    for d in plan["dropped"]:
        out.print(f"[yellow]dropped[/yellow] {escape(d['symbol'])} {d['contracts']:.10g} contracts "
                  f"({d['notional']:,.2f} USD): {escape(d['reason'])}; tracking error without it "
                  f"{_pct(d['tracking_error_left'])}")
    out.print(f"tracking error: now {_pct(plan['tracking_error_before'])}, at the lot-rounded target "
              f"{_pct(plan['tracking_error_solution'])}, residual after this plan "
              f"{_pct(plan['tracking_error_residual'])}; gross {plan['gross_notional']:,.2f} USD")


def _print_warnings(plan: dict[str, Any], out: Any) -> None:
    """The plan's warnings (e.g. lot rounding that removed most of the solution), one line each."""
    from rich.markup import escape

    for w in plan.get("warnings", ()):
        out.print(f"[yellow]warning:[/yellow] {escape(redact(w))}")


def _print_result(result: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = _console()
    out.rule(f"fbr execute: {result['mode']}")
    _print_plan(result["plan"], out)
    rep = result["report"]
    if result["mode"] != "dry-run":
        t = Table(title="Planned vs filled", title_justify="left")
        for head in ("leg", "contract", "side", "planned", "filled", "avg price", "fee USD", "status",
                     "sends"):
            t.add_column(head)
        for leg in rep["legs"]:
            t.add_row(str(leg["index"]), leg["symbol"], leg["side"], f"{leg['planned']:.10g}",
                      f"{leg['filled']:.10g}", "-" if leg["average"] is None else f"{leg['average']:.10g}",
                      f"{leg['fee']:.4f}", leg["status"], str(leg["attempts"]))
        out.print(t)
        out.print(f"residual tracking error at the positions reached: "
                  f"{_pct(rep['tracking_error_residual'])}")
    for m in rep["messages"]:
        out.print(f"[bold]note:[/bold] {escape(redact(m))}")
    out.print(f"plan id [bold]{escape(result['plan_id'])}[/bold]"
              + (f", journal {escape(result['journal'])}" if result["journal"] else ""))


# ---------------------------------------------------------------------------------------------
# status


def status(book: Annotated[Path, typer.Argument(help="Book file (TOML), as `fbr solve` reads it.")],
           exchange: Annotated[ExchangeChoice, typer.Option(
               "--exchange", help="paper (the journal's paper account) or binanceusdm.")
           ] = ExchangeChoice.PAPER,
           journal: JournalOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
           ) -> None:
    """Weights vs targets, tracking error, margin and distance to liquidation, funding since the last
    rebalance, open orders, and whether a rebalance is due (with the plan it would send)."""
    from fbr.cli import user_errors

    install_log_redaction()
    with user_errors(as_json), redacting():
        rep = _status(book, exchange, _journal_path(journal))
        if as_json:
            _emit({"status": "ok", **rep.to_dict()})
        else:
            _print_status(rep)


def _status(book_path: Path, exchange: ExchangeChoice, journal_path: Path) -> Any:
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


def _print_status(rep: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = _console()
    out.rule(f"fbr status: {rep.book_name} on {rep.venue}")
    for a in rep.alerts:
        out.print(f"[bold red]alert:[/bold red] {escape(redact(a))}")
    t = Table(title="Effective weights vs targets", title_justify="left")
    for head in ("asset", "effective", "target", "drift"):
        t.add_column(head, justify="right")
    for w in rep.weights:
        t.add_row(escape(w.asset), _pct(w.effective), _pct(w.target), _pct(w.drift))
    out.print(t)
    m = rep.margin
    out.print(f"NAV {rep.nav:,.2f} USD, base {rep.base:,.2f} USD, tracking error {_pct(rep.tracking_error)}")
    out.print(f"margin: collateral {m.collateral:,.2f} USD, initial {m.initial:,.2f}, maintenance "
              f"{m.maintenance:,.2f}, margin ratio {_pct(m.margin_ratio)}; liquidation at a common "
              f"move of {_pct(None if m.liquidation_move_down is None else -m.liquidation_move_down)} "
              f"down / {_pct(m.liquidation_move_up)} up ('-' = none)")
    f = rep.funding
    since = ("" if f.since_ms is None else
             f" ({datetime.fromtimestamp(f.since_ms / 1000, tz=UTC):%Y-%m-%d %H:%M} UTC)")
    count = "" if f.payments is None else f", {f.payments} payments"
    out.print(f"funding since the last rebalance{since}: {f.total:+,.4f} USD (+ = received; source: "
              f"{escape(f.source)}{count})")
    if f.note:
        out.print(f"[yellow]note:[/yellow] {escape(redact(f.note))}")
    out.print(f"open orders: {len(rep.open_orders)}")
    verdict = "[bold green]due[/bold green]" if rep.rebalance_due else "not due"
    out.print(f"rebalance {verdict}: TE² falls by {rep.benefit:.3g}, trading cost {rep.cost:.3g} "
              f"(annualised units)")
    if rep.plan.legs:
        _print_plan(rep.plan.to_dict(), out)
    else:
        _print_warnings(rep.plan.to_dict(), out)


logging.getLogger("executor").addHandler(logging.NullHandler())
