"""The ``fbr`` command line: solve a book, backtest policies, run the demo.

Errors a user can cause end in one clear message on stderr (exit code 2), never a traceback;
set FBR_DEBUG=1 to see the traceback of an unexpected internal error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from fbr.backtest_table import backtest_tables
from fbr.console import (
    CliError,
    ExitCode,
    JsonOpt,
    err,
    json_ready,
    out,
    preparing,
    solution_json,
    user_errors,
    wide,
)
from fbr.execute_wiring import ExchangeChoice, HoldingsOpt, JournalOpt, solve_holdings

if TYPE_CHECKING:

    from fbr.backtest_config import BacktestConfig
    from fbr.backtest_summary import BacktestSummary
    from optimizer.solution import Solution
    from scenarios.backtest_result import BacktestResult
    from scenarios.market_path import MarketPath

__all__ = ["app", "demo_books", "main", "run_backtest_config"]

#: help text is Markdown: a docstring's line breaks are rewrapped, and TOML table names such as
#: [run] stay text (Rich markup would take them for style tags and drop them)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown",
                  help="fbr: keep a crypto spot portfolio on target with futures, sized by a convex "
                       "optimiser.")

DEMO_BOOKS = ("seed_example_1.toml", "seed_example_2.toml", "ten_assets.toml")
DEMO_BACKTEST = "backtest_demo.toml"
#: The demo's backtest: the embedded backtest file over this many synthetic days, no report.
DEMO_BACKTEST_DAYS = 180


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fbr")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        print(f"fbr {_version()}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """fbr: keep a crypto spot portfolio on target with futures, sized by a convex optimiser."""
    from fbr.console import route_warnings

    route_warnings()


def _solve_file(path: Path) -> Solution:
    from fbr.config import load_book_file
    from fbr.execute_wiring import solve_loaded

    return solve_loaded(load_book_file(path))


@app.command()
def solve(book: Annotated[Path, typer.Argument(help="Book file (TOML), see the README.")],
          as_json: JsonOpt = False,
          exchange: HoldingsOpt = ExchangeChoice.DRY_RUN,
          journal: JournalOpt = None) -> None:
    """Solve one rebalance: target futures positions, trades, risk, costs, margin, binding constraints.

    The holdings are the book file's, or with --exchange paper|binanceusdm the account's (as
    `fbr execute` reads them). An answer that may not be traded (infeasible, or positions past a
    hard margin row) is printed, then the command exits with code 3 naming the conflicting
    constraints on stderr."""
    from fbr.render import render_solution
    from optimizer.checks import blocked_message

    with user_errors(as_json):
        sol, account = solve_holdings(book, exchange, journal)
        if as_json:
            doc = {**solution_json(sol.to_dict()), "holdings_source": account.source}
            print(json.dumps(json_ready(doc), indent=2, allow_nan=False))
        else:
            out.rule(f"fbr solve {book}")
            if account.from_account:
                out.print(f"holdings: {escape(account.source)}", highlight=False, soft_wrap=True)
            render_solution(sol, out)
        if sol.blockers:  # the answer stays the one JSON object on stdout; the verdict goes to stderr
            err.print(f"[bold red]error:[/bold red] {escape(blocked_message(sol.blockers))}",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(code=int(ExitCode.INFEASIBLE))


def demo_books() -> list[tuple[str, Path]]:
    """The embedded demo books (package data)."""
    base = resources.files("fbr") / "data"
    found = []
    for name in DEMO_BOOKS:
        res = base / name
        with resources.as_file(res) as p:
            found.append((name, Path(p)))
    return found


@app.command()
def demo(as_json: JsonOpt = False) -> None:
    """Solve the seed article's books and a ten-asset book, then a short backtest of several
    policies, all on the embedded (synthetic) data."""
    from fbr.render import render_solution

    with user_errors(as_json):
        results: dict[str, Any] = {}
        for name, path in demo_books():
            sol = _solve_file(path)
            if as_json:
                results[name] = json_ready(solution_json(sol.to_dict()))
            else:
                out.rule(f"demo: {name}")
                render_solution(sol, out)
        summary = _demo_backtest(show=not as_json)
        if as_json:
            results["backtest"] = summary
            print(json.dumps({"status": "ok", **results}, indent=2, allow_nan=False))
        else:
            out.rule(f"demo: backtest, {DEMO_BACKTEST_DAYS} days")
            _print_backtest(summary, f"Policies over {DEMO_BACKTEST_DAYS} synthetic days")


# ---------------------------------------------------------------------------------------------
# backtest


def _check_backtest_outputs(cfg: BacktestConfig, report: Path | None) -> None:
    """Every path the run writes, checked before the run (a folder given as --report, ...)."""
    from fbr.backtest_work import check_output_dir, check_output_file

    check_output_file(report, "--report (or backtest.report)")
    if report is not None:
        check_output_dir(cfg.png_dir, "backtest.png_dir")


def _run_with_progress(cfg: BacktestConfig, path: MarketPath, show: bool
                       ) -> dict[str, BacktestResult]:
    """Every policy of ``cfg`` over ``path``, one progress task per policy (advanced per step)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fbr.backtest_run import run_all

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, disable=not show, transient=False) as bar:
        def start(name: str, n: int) -> Callable[[], None]:
            task = bar.add_task(escape(name), total=n)
            return lambda: bar.advance(task)

        return run_all(cfg, path, start)


def _write_report(results: dict[str, BacktestResult], path: Path, title: str, labels: list[str],
                  png_dir: Path | None, reserve_yield: float) -> tuple[Path | None, str | None]:
    """Write the HTML report (scenarios.report.write_report): (the path written, no note)."""
    from scenarios.report import write_report

    path.parent.mkdir(parents=True, exist_ok=True)
    write_report(results, path, title=title, labels=labels, png_dir=png_dir,
                 reserve_yield=reserve_yield)
    return path, None


def run_backtest_config(cfg: BacktestConfig, *, report: Path | None, show_progress: bool,
                        title: str) -> tuple[dict[str, BacktestResult], BacktestSummary]:
    """Run a loaded backtest config: ({name: BacktestResult}, JSON-ready summary)."""
    import warnings

    from fbr.backtest_config import build_path
    from fbr.backtest_summary import (
        book_reserve_yield,
        dated_mark_labels,
        is_timing,
        metrics_dict,
        risk_labels,
        span_dict,
        span_notes,
        unsolved_notes,
    )

    with warnings.catch_warnings(record=True) as caught:  # data gaps etc.: notes, not tracebacks
        warnings.simplefilter("always")
        with preparing("building the market path", show_progress):
            path = build_path(cfg)
    notes: list[str] = list(dict.fromkeys(str(w.message) for w in caught))
    # the span actually replayed and the risk model's look-ahead: notes, labels (report) and JSON
    spans = span_notes(cfg, path)
    extra = [*spans, *dated_mark_labels(cfg, path), *risk_labels(cfg, path)]
    notes.extend(spans)
    results = _run_with_progress(cfg, path, show_progress)
    held = unsolved_notes(results)  # also in the report's labels: steps held are read there too
    notes.extend(held)
    reserve_yield = book_reserve_yield(cfg)  # the book's [costs] reserve_yield
    raw = {name: metrics_dict(r, reserve_yield=reserve_yield) for name, r in results.items()}
    # deterministic metrics apart from wall-clock timings (same file -> same "policies")
    metrics = {name: {k: v for k, v in m.items() if not is_timing(k)} for name, m in raw.items()}
    timings = {name: {k: v for k, v in m.items() if is_timing(k)} for name, m in raw.items()}
    labels = [*cfg.labels, *extra, *held]
    written: Path | None = None
    if report is not None:
        written, note = _write_report(results, report, title, labels, cfg.png_dir, reserve_yield)
        if note:
            notes.append(note)
    summary: BacktestSummary = {"policies": metrics, "report": str(written) if written else None,
                               "labels": labels, "span": span_dict(cfg, path),
                               "timings": timings, "notes": notes}
    return results, summary


def _print_backtest(summary: BacktestSummary, title: str) -> None:
    from rich.panel import Panel
    from rich.text import Text

    notes = summary.get("notes", [])
    labels = [x for x in summary["labels"] if x not in notes]  # a span note is printed below
    if labels:
        out.print(Panel(Text(" / ".join(labels)), title="data", style="yellow"))
    # piped output is 80 columns wide by default: let the table keep its columns readable
    console = wide(out, 140)
    for table in backtest_tables(summary["policies"], title, console.width):
        console.print(table)
    for note in notes:
        out.print(f"[bold]note:[/bold] {escape(note)}")
    if summary["report"]:
        out.print(f"report written to [bold]{escape(summary['report'])}[/bold]")


@app.command()
def backtest(config: Annotated[Path, typer.Argument(help="Backtest file (TOML), see "
                                                    "examples/backtest_demo.toml.")],
             as_json: JsonOpt = False,
             report: Annotated[Path | None, typer.Option(
                 "--report", help="HTML report path (default: the file's backtest.report).")] = None,
             no_report: Annotated[bool, typer.Option("--no-report",
                                                     help="Do not write the HTML report.")] = False,
             force: Annotated[bool, typer.Option(
                 "--force", help="Run even when the estimated work is above the limit.")] = False,
             ) -> None:
    """Run every policy of a backtest file over the same market path and compare them."""
    from fbr.backtest_config import load_backtest_file
    from fbr.backtest_work import estimate_backtest

    with user_errors(as_json):
        if not config.exists():
            raise CliError(f"backtest file {config} does not exist. Fix: give the path to a TOML "
                           f"backtest file (see examples/backtest_demo.toml)")
        cfg = load_backtest_file(config)
        target = None if no_report else (report if report is not None else cfg.report)
        _check_backtest_outputs(cfg, target)
        estimate_backtest(cfg).check(force)
        title = f"fbr backtest {config.name}"
        show = not as_json or err.is_terminal  # progress on stderr: not in the way of --json
        _, summary = run_backtest_config(cfg, report=target, show_progress=show, title=title)
        if as_json:
            print(json.dumps({"status": "ok", **summary}, indent=2, allow_nan=False))
        else:
            out.rule(title)
            _print_backtest(summary, "Policies over the same path")


def _demo_backtest(show: bool) -> BacktestSummary:
    """The embedded backtest file over ``DEMO_BACKTEST_DAYS`` days, no report written."""
    import dataclasses

    from fbr.backtest_config import load_backtest_file

    res = resources.files("fbr") / "data" / DEMO_BACKTEST
    with resources.as_file(res) as p:
        cfg = load_backtest_file(Path(p))
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, days=DEMO_BACKTEST_DAYS),
                                  report=None)
        _, summary = run_backtest_config(cfg, report=None, show_progress=show,
                                         title="fbr demo backtest")
    summary["days"] = DEMO_BACKTEST_DAYS
    return summary


#: Command modules that add their commands to ``app`` through ``register(app)`` (one per feature,
#: so each stays small): what-if and Monte Carlo, execution and status, market data.
COMMAND_MODULES = ("fbr.whatif_cli", "fbr.montecarlo_cli", "fbr.execute_cli", "fbr.data_cli",
                   "fbr.run_cli", "fbr.account_cli", "fbr.serve_cli")


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # not built yet
            raise
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console entry point. With ``--json`` among the arguments a usage error (missing argument,
    bad option value, unknown option or command: exit code 2) is the README's one JSON line on
    stdout, ``{"status": "error", "exit_code": 2, "error": ...}``, and one line on stderr, instead
    of click's boxed message (kept without ``--json``)."""
    args = list(argv if argv is not None else sys.argv[1:])
    if "--json" not in args:
        app(args=args, prog_name="fbr")
        return
    try:
        rv = app(args=args, prog_name="fbr", standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors (and other click errors)
        code = int(getattr(exc, "exit_code", ExitCode.BAD_INPUT))
        print(json.dumps({"status": "error", "exit_code": code, "error": exc.format_message()}))
        err.print(f"[bold red]error:[/bold red] {escape(exc.format_message())}", highlight=False,
                  soft_wrap=True)
        sys.exit(code)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    # as in click's standalone mode: a command that returns exits 0, typer.Exit(n) exits n
    # (returned here as n in place of the command's result)
    sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
