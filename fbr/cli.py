"""The ``fbr`` command line: solve a book, run the demo.

Errors a user can cause end in one clear message on stderr (exit code 2), never a traceback;
set FBR_DEBUG=1 to see the traceback of an unexpected internal error.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from models.errors import FbrError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="fbr: keep a crypto spot portfolio on target with futures, sized by a convex "
                       "optimiser.")
out = Console()
err = Console(stderr=True)

DEMO_BOOKS = ("seed_example_1.toml", "seed_example_2.toml", "ten_assets.toml")


class CliError(FbrError):
    """A usage problem found by the CLI itself."""


@contextmanager
def user_errors(as_json: bool) -> Iterator[None]:
    """Turn fbr's own errors (and unexpected ones) into one message and exit code 2."""
    try:
        yield
    except typer.Exit:
        raise
    except (FbrError, ValueError, OSError) as exc:
        _fail(str(exc), as_json)
    except Exception as exc:  # an internal error: still no traceback unless asked
        if os.environ.get("FBR_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set FBR_DEBUG=1 for the traceback)",
              as_json)


def _fail(message: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"status": "error", "error": message}))
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _solve_file(path: Path) -> Any:
    from fbr.config import load_book_file
    from optimizer.rebalance import Rebalancer

    loaded = load_book_file(path)
    return Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings,
                              labels=loaded.labels)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


@app.command()
def solve(book: Annotated[Path, typer.Argument(help="Book file (TOML), see the README.")],
          as_json: JsonOpt = False) -> None:
    """Solve one rebalance: target futures positions, trades, risk, costs, margin, binding constraints."""
    from fbr.render import render_solution

    with user_errors(as_json):
        if not book.exists():
            raise CliError(f"book file {book} does not exist. Fix: give the path to a TOML book "
                           f"(see examples/)")
        sol = _solve_file(book)
        if as_json:
            print(json.dumps(sol.to_dict(), indent=2))
        else:
            out.rule(f"fbr solve {book}")
            render_solution(sol, out)


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
    """Solve the seed article's books and a ten-asset book on the embedded (synthetic) data."""
    from fbr.render import render_solution

    with user_errors(as_json):
        results: dict[str, Any] = {}
        for name, path in demo_books():
            sol = _solve_file(path)
            if as_json:
                results[name] = sol.to_dict()
            else:
                out.rule(f"demo: {name}")
                render_solution(sol, out)
        if as_json:
            print(json.dumps(results, indent=2))


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="fbr")


if __name__ == "__main__":  # pragma: no cover
    main()
