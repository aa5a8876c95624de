"""``fbr whatif BOOK.toml``: apply shocks or named scenarios to a book and report what happens.

    fbr whatif BOOK.toml --shock BTC=-30% --shock funding.ETH=+0.1%
    fbr whatif BOOK.toml --scenario alt-crash --scenario my_file.toml
    fbr whatif BOOK.toml --all --with-solution --json
    fbr whatif BOOK.toml --list

The ``--shock`` strings together form one scenario ("command line"); the grammar is in
``scenarios.shocks``. ``--scenario`` takes a TOML file or a library name (``--list`` shows them:
hypothetical, historical from the data folder, and the book's own ``[[constraints.stress]]`` as
``book:NAME``). ``--with-solution`` tests the positions ``fbr solve`` proposes instead of the
current ones.

A futures-only book (no [spot] / [spot_usd] holdings, positions in [[futures]], cash in the
wallet) is a real account: its default target base, the invested NAV (= spot value), is 0, so
weights would be undefined. ``fbr whatif`` then takes the whole NAV (wallet cash + unrealised PnL)
as the base, as ``targets_base = "nav"`` would: effective weights e_i = (B x)_i / NAV and drift
e_i - w*_i are fractions of the account's NAV, and a note says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypedDict

import typer

from fbr.console import CliError, err, out, pp, renamed, user_errors, wide
from fbr.execute_wiring import ExchangeChoice, HoldingsOpt, JournalOpt

if TYPE_CHECKING:
    from rich.console import Console

    from fbr.config_loader import LoadedBook
    from fbr.execute_wiring import AccountLoaded
    from models.book import Book
    from optimizer.rebalance import Rebalancer
    from optimizer.solution import Solution
    from scenarios.library import Library
    from scenarios.shocks import Scenario
    from scenarios.whatif_result import WhatIfDoc, WhatIfResult

ShockOpt = Annotated[list[str] | None, typer.Option(
    "--shock", "-s", help="A shock KEY=VALUE, repeatable: BTC=-30%, common=-20%, funding.ETH=+0.1%, "
    "basis.BTC-PERP=-5%, vol=x1.5, corr=0.9, spread=x3, liquidity=x0.5, horizon=21 (or 7d).")]
ScenarioOpt = Annotated[list[str] | None, typer.Option(
    "--scenario", help="A scenario file (TOML) or a library name; repeatable.")]


class ScenarioEntry(TypedDict):
    """One library scenario as ``fbr whatif --list`` shows it."""

    name: str
    description: str
    source: str
    shocks: list[str]


def _is_file_ref(ref: str) -> bool:
    return ref.endswith(".toml") or Path(ref).exists()


def _solution_summary(sol: Solution) -> dict[str, object]:
    return {"status": sol.status,
            "target_positions": [{"symbol": p.symbol, "notional": p.notional,
                                  "contracts": p.contracts} for p in sol.target_positions],
            "stress": [{"name": s.name, "surplus": s.surplus} for s in sol.margin.stress],
            "messages": list(sol.messages)}


def whatif(book: Annotated[Path, typer.Argument(help="Book file (TOML), see the README.")],
           shock: ShockOpt = None,
           scenario: ScenarioOpt = None,
           run_all: Annotated[bool, typer.Option(
               "--all", help="Every library scenario (and the book's stress scenarios).")] = False,
           with_solution: Annotated[bool, typer.Option(
               "--with-solution", help="Test the positions the optimiser proposes for this book "
               "(fbr solve) instead of the current ones.")] = False,
           no_resolve: Annotated[bool, typer.Option(
               "--no-resolve", help="Skip the optimiser's re-solve on the shocked book.")] = False,
           list_only: Annotated[bool, typer.Option(
               "--list", help="List the library's scenarios and exit.")] = False,
           as_json: Annotated[bool, typer.Option(
               "--json", help="Print one JSON object instead of tables.")] = False,
           exchange: HoldingsOpt = ExchangeChoice.DRY_RUN,
           journal: JournalOpt = None,
           ) -> None:
    """What-if: shock prices, funding, basis, volatility, correlation or liquidity; see PnL, NAV,
    weights, margin, the moves that liquidate the book, and the optimiser's next move. The holdings
    are the book file's, or with --exchange paper|binanceusdm the account's (as `fbr execute` reads
    them)."""
    with user_errors(as_json):
        from optimizer.rebalance import Rebalancer
        from optimizer.reserve import with_stress_preset
        from scenarios.library import load_library

        loaded, book_notes = load_whatif_book(book)
        # the book's stress scenarios, its preset's too (what fbr solve's stress rows use)
        stress = with_stress_preset(loaded.settings, loaded.book).constraints.stress
        library: Library | None = None

        def lib() -> Library:
            nonlocal library
            if library is None:
                library = load_library(stress=stress)
            return library

        if list_only:
            _list(lib(), as_json)
            return
        chosen = _checked(_choose(shock or [], scenario or [], run_all, lib), loaded.book)
        account = _account(loaded, exchange, journal)
        loaded = account.loaded

        rebalancer = Rebalancer()
        tested = loaded.book
        solution = None
        notes = [*book_notes, *(lib().notes if run_all else [])]
        if with_solution:
            tested, solution = _solution_book(loaded, rebalancer, notes)
        results = _run(chosen, tested, loaded, rebalancer, positions="solution" if with_solution
                       else "current", resolve=not no_resolve, show=not as_json and len(chosen) > 1,
                       console=err)
        notes.extend(liquidation_notes(results))
        if as_json:
            print(json.dumps(_whatif_json(loaded, account, with_solution, solution, results, notes),
                             indent=2, allow_nan=False))
        else:
            _print_results(results, out, book, notes, list(loaded.labels),
                           holdings=account.source if account.from_account else None)


def _checked(chosen: list[Scenario], book: Book) -> list[Scenario]:
    """``chosen``, every symbol of every scenario checked against the book before any work."""
    from scenarios.applied_shocks import resolve_shocks

    for sc in chosen:
        resolve_shocks(sc, book)
    return chosen


def _whatif_json(loaded: LoadedBook, account: AccountLoaded, with_solution: bool,
                 solution: Solution | None, results: list[WhatIfResult],
                 notes: list[str]) -> dict[str, object]:
    """``fbr whatif --json``'s document."""
    return {"status": "ok", "book": loaded.book.name,
            "positions_tested": "solution" if with_solution else "current",
            "holdings_source": account.source,
            "positions": futures_positions(loaded.book),
            "solution": _solution_summary(solution) if solution is not None else None,
            "scenarios": [scenario_json(r.to_dict()) for r in results], "notes": notes,
            "labels": list(loaded.labels)}


def _account(loaded: LoadedBook, exchange: ExchangeChoice, journal: Path | None) -> AccountLoaded:
    """The holdings of ``exchange``'s account in ``loaded`` (:func:`fbr.execute_wiring.
    account_loaded`; ``dry-run``: the book file alone), secrets scrubbed from any error."""
    from executor.safety import install_log_redaction
    from fbr.execute_wiring import account_loaded, redacting

    if exchange == ExchangeChoice.BINANCEUSDM:
        install_log_redaction()
    with redacting():
        return account_loaded(loaded, exchange, journal)


def futures_positions(book: Book) -> dict[str, float]:
    """The book's current futures positions: signed contracts by contract symbol (long > 0),
    open positions only."""
    return {s: p.contracts for s, p in book.futures.items() if p.contracts != 0}


def _solution_book(loaded: LoadedBook, rebalancer: Rebalancer, notes: list[str]
                   ) -> tuple[Book, Solution]:
    """``--with-solution``: the book at the positions ``fbr solve`` proposes, and the solution (a
    note in ``notes`` when the book is infeasible)."""
    from scenarios.whatif import apply_solution

    solution = rebalancer.solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
    if solution.status == "infeasible":
        notes.append("the optimiser found the book infeasible: the positions tested are its "
                     "least-violation book")
    return apply_solution(loaded.book, loaded.market, solution), solution


def _list(library: Library, as_json: bool) -> None:
    """``--list``: the library's scenarios, as JSON or a table."""
    listing: list[ScenarioEntry] = [{"name": s.name, "description": s.description, "source": s.source,
                "shocks": s.shock_texts} for s in library.scenarios]
    if as_json:
        print(json.dumps({"status": "ok", "scenarios": listing, "notes": list(library.notes)},
                         indent=2))
    else:
        _print_listing(listing, list(library.notes))


def _choose(shock: list[str], scenario: list[str], run_all: bool,
            lib: Callable[[], Library]) -> list[Scenario]:
    """The scenarios asked for: the --shock strings as one, each --scenario, then --all's."""
    from scenarios.library import load_scenario_file
    from scenarios.shocks import parse_scenario

    chosen: list[Scenario] = []
    if shock:
        chosen.append(parse_scenario("command line", shock, source="--shock"))
    for ref in scenario:
        chosen.extend(load_scenario_file(ref) if _is_file_ref(ref) else [lib().find(ref)])
    if run_all:
        chosen.extend(s for s in lib().scenarios if s.name not in {c.name for c in chosen})
    if not chosen:
        raise CliError("no scenario given. Fix: add --shock KEY=VALUE (e.g. --shock BTC=-30%), "
                       "--scenario FILE|NAME or --all (--list shows the library)")
    return chosen


def scenario_json(doc: WhatIfDoc) -> dict[str, object]:
    """One scenario's ``WhatIfResult.to_dict()`` in the CLI's JSON language (the keys in their
    order): ``drift_pp`` (percentage points) for the fractional ``drift``, ``next.margin_ratio``
    for ``next.maintenance_ratio``."""
    out_doc = renamed(doc, {"drift": "drift_pp"})
    out_doc["drift_pp"] = pp(doc["drift"])
    nxt = doc["next"]
    if nxt is not None:
        out_doc["next"] = renamed(nxt, {"maintenance_ratio": "margin_ratio"})
    return out_doc


def _holds_spot(data: Mapping[str, object]) -> bool:
    """Any positive amount in [spot] or [spot_usd] (non-numbers: let the loader say what is wrong)."""
    for section in ("spot", "spot_usd"):
        table = data.get(section, {})
        if not isinstance(table, dict):
            return True
        for v in table.values():
            if not isinstance(v, int | float) or isinstance(v, bool) or v != 0:
                return True
    return False


def load_whatif_book(path: Path) -> tuple[LoadedBook, list[str]]:
    """The book file, and notes. A futures-only book (no spot, [[futures]] listed, targets on the
    invested base) is loaded with ``targets_base = "nav"`` (see the module docstring)."""
    from fbr.config_loader import load_book_file, parse_book
    from models.toml_file import read_toml

    if not path.exists():
        return load_book_file(path), []  # the loader's own message
    data = dict(read_toml(path, "book", "examples/ for complete ones"))
    head = data.get("book", {})
    base = head.get("targets_base", "invested") if isinstance(head, dict) else "invested"
    if _holds_spot(data) or not data.get("futures") or str(base).lower() == "nav":
        return load_book_file(path), []
    data["book"] = {**(head if isinstance(head, dict) else {}), "targets_base": "nav"}
    loaded = parse_book(data, source=str(path), base_dir=path.resolve().parent)
    return loaded, ["futures-only book (no spot): weights and drift are fractions of the NAV "
                    "(wallet cash + unrealised PnL), as with book.targets_base = \"nav\"; the "
                    "invested base (spot value) is 0"]


def settlements_paid(r: WhatIfResult) -> str:
    """The funding settlements paid of those asked, per contract (counts): one figure when every
    contract that settles has the same, e.g. "30 of 100 funding settlements paid per contract",
    else each contract's, e.g. "funding settlements paid: BTC-PERP 10 of 33, ETH-PERP 30 of 100"."""
    pairs = {c: (r.settlements.get(c, 0.0), n) for c, n in r.settlements_asked.items() if n > 0}
    def n(v: float) -> str:
        return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"

    if not pairs:
        return "no funding settlement asked"
    if len(set(pairs.values())) == 1:
        paid, asked = next(iter(pairs.values()))
        return f"{n(paid)} of {n(asked)} funding settlements paid per contract"
    return "funding settlements paid: " + ", ".join(
        f"{c} {n(paid)} of {n(asked)}" for c, (paid, asked) in pairs.items())


def liquidation_notes(results: list[WhatIfResult]) -> list[str]:
    """One note per scenario whose funding was cut short by the liquidation."""
    notes = []
    for r in results:
        hours = getattr(r, "liquidated_after_h", None)
        if hours is None:
            continue
        when = "by the price move, before any funding" if hours == 0 else (
            f"{hours:g} h after the shock ({settlements_paid(r)})")
        notes.append(f"{r.scenario.name}: the wallet is liquidated {when}; losses stop there")
    return notes


def _run(chosen: list[Scenario], book: Book, loaded: LoadedBook, rebalancer: Rebalancer, *,
         positions: str, resolve: bool, show: bool, console: Console) -> list[WhatIfResult]:
    """Every scenario, with a progress bar when there are several."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scenarios.whatif import run_whatif

    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=not show, transient=True) as bar:
        task = bar.add_task("what-if", total=len(chosen))
        for sc in chosen:
            bar.update(task, description=escape(f"what-if: {sc.name}"))
            results.append(run_whatif(book, loaded.market, loaded.risk, sc, loaded.settings,
                                      resolve=resolve, positions=positions, rebalancer=rebalancer))
            bar.advance(task)
    return results


def _print_results(results: list[WhatIfResult], console: Console, book: Path, notes: list[str],
                   labels: list[str], holdings: str | None = None) -> None:
    """The scenarios' tables; ``holdings`` names an account the holdings came from (None: the
    book file, not printed)."""
    from rich.markup import escape

    from fbr.whatif_render import overview_table, render_result

    wide_out = wide(console, 140)
    wide_out.rule(escape(f"fbr whatif {book}"))
    if holdings is not None:
        wide_out.print(f"holdings: {escape(holdings)}", highlight=False, soft_wrap=True)
    if labels:
        wide_out.print(f"data: {escape(' / '.join(labels))}")
    for r in results:
        wide_out.rule()
        render_result(r, wide_out)
    if len(results) > 1:
        wide_out.rule()
        wide_out.print(overview_table(results))
    for note in notes:
        wide_out.print(f"[bold]note:[/bold] {escape(note)}")


def _print_listing(listing: list[ScenarioEntry], notes: list[str]) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="what-if scenarios", title_justify="left")
    for head in ("name", "source", "shocks", "description"):
        t.add_column(head, overflow="fold")
    for s in listing:
        t.add_row(escape(s["name"]), s["source"], escape(", ".join(s["shocks"][:6])
                                                         + (" ..." if len(s["shocks"]) > 6 else "")),
                  escape(s["description"]))
    console = wide(out, 160)
    console.print(t)
    for note in notes:
        console.print(f"[bold]note:[/bold] {escape(note)}")


def register(app: typer.Typer) -> None:
    """Add ``whatif`` to the ``fbr`` app."""
    app.command("whatif")(whatif)
