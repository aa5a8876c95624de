"""Console helpers shared by every ``fbr`` command: the two consoles, JSON output, error messages
and exit codes, warnings as one line, progress spinners.

Command modules import these from here, never from :mod:`fbr.cli` (which imports the command
modules to register them). Only light modules are imported at the top (typer, rich's console):
``fbr --help`` must stay fast.

Exit codes (:class:`~models.errors.ExitCode`): 0 OK, 1 internal error, 2 bad input, 3 infeasible,
4 incomplete, 5 unknown, 6 refused.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from models.errors import ExitCode, FbrError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from optimizer.solution_doc import SolutionDoc

__all__ = ["CliError", "ExitCode", "JsonOpt", "data_home", "default_journal", "drift_pp", "err",
           "fail", "iso_utc", "json_ready", "out", "pp", "pp_text", "preparing", "print_wide", "renamed",
           "route_warnings", "solution_json", "user_errors", "wide"]

out = Console()
err = Console(stderr=True)

_V = TypeVar("_V")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]

#: Environment variable naming fbr's per-user data directory (the journal lives there).
DATA_HOME_ENV = "FBR_DATA_HOME"
#: Environment variable naming the journal file itself (wins over ``FBR_DATA_HOME``).
JOURNAL_ENV = "FBR_JOURNAL"


class CliError(FbrError):
    """A usage problem found by the CLI itself (exit code 2 unless set otherwise)."""


def fail(message: str, as_json: bool, code: ExitCode = ExitCode.BAD_INPUT) -> None:
    """One error: ``{"status": "error", ...}`` on stdout with ``--json``, one line on stderr, and
    the exit code."""
    if as_json:
        print(json.dumps({"status": "error", "exit_code": int(code), "error": message}))
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=int(code))


def _journal_busy(exc: Exception, as_json: bool) -> None:
    """A journal another process held past SQLite's wait, met outside the executor's own
    handling (before a plan is journalled: nothing sent): exit 6 with the fix, not "internal
    error"."""
    from executor.journal import journal_busy

    if journal_busy(exc):
        fail(f"the journal is in use by another process (SQLite says: {exc}); nothing was sent. "
             f"Fix: wait for the other fbr run to finish, or stop it, and run again", as_json,
             ExitCode.REFUSED)


@contextmanager
def user_errors(as_json: bool) -> Iterator[None]:
    """Turn fbr's own errors into one message and the error's exit code (bad input: 2; see
    :class:`~models.errors.ExitCode`), unexpected ones into exit code 1 (no traceback unless
    ``FBR_DEBUG`` is set)."""
    try:
        yield
    except typer.Exit:
        raise
    except FbrError as exc:
        fail(str(exc), as_json, exc.exit_code)
    except (ValueError, OSError) as exc:
        fail(str(exc), as_json, ExitCode.BAD_INPUT)
    except Exception as exc:  # an internal error: still no traceback unless asked
        _journal_busy(exc, as_json)
        if os.environ.get("FBR_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (set FBR_DEBUG=1 for the traceback)",
             as_json, ExitCode.INTERNAL)


def json_ready(obj: object) -> object:
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


def iso_utc(ms: float | None) -> str | None:
    """Epoch milliseconds as an ISO 8601 UTC string (``2024-01-01T00:00:00+00:00``, as
    ``datetime.isoformat``); None stays None."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


# ---------------------------------------------------------------------------------------------
# One JSON language across solve, whatif, status, execute, backtest and montecarlo (README, "JSON
# output"): weights are fractions in ``{asset: weight}`` dicts named ``weights_before`` (the book
# as it stands), ``weights_after`` (after the trades / the shock) and ``targets``; drift is
# ``drift_pp``, percentage points ``{asset: 100 (weight - target)}`` of the command's resulting
# weights; the margin ratio is ``margin_ratio`` (maintenance margin / collateral, a fraction);
# times are ISO 8601 UTC strings (``_ms`` keys are durations only).


def pp(fractions: Mapping[str, float | None]) -> dict[str, float | None]:
    """``{asset: fraction}`` in percentage points (x 100); None (no finite value) stays None."""
    return {k: None if v is None else 100.0 * float(v) for k, v in fractions.items()}


def drift_pp(weights: Mapping[str, float | None],
             targets: Mapping[str, float]) -> dict[str, float | None]:
    """``{asset: 100 (weight - target)}``, percentage points (None where the weight is None)."""
    return {a: None if w is None else 100.0 * (float(w) - float(targets.get(a, 0.0)))
            for a, w in weights.items()}


def pp_text(fraction: float | None, digits: int = 2) -> str:
    """A drift as the tables print it: signed percentage points, e.g. ``+0.37 pp`` ('-' for
    None), the unit of ``drift_pp`` in JSON; a value that rounds to zero prints ``+0.00 pp``."""
    return "-" if fraction is None else f"{_rounded(100.0 * float(fraction), digits):+.{digits}f} pp"


#: A margin share (margin / collateral) above this prints as "> 1,000%": a near-zero collateral
#: makes the ratio run to hundreds of digits, none of them telling more than "far past 100%".
RATIO_SHOWN_UP_TO = 10.0


def margin_share_text(share: float | None, digits: int = 2) -> str:
    """Margin / collateral (a fraction) as a percentage with ``digits`` decimals: '-' for None,
    "> 1,000%" above :data:`RATIO_SHOWN_UP_TO` or when infinite (no collateral to divide by)."""
    if share is None:
        return "-"
    if not share <= RATIO_SHOWN_UP_TO:
        return f"> {100 * RATIO_SHOWN_UP_TO:,.0f}%"
    return f"{100 * share:.{digits}f}%"


def signed_pct(fraction: float | None, digits: int = 2) -> str:
    """A fraction as a signed percentage, e.g. ``-9.55%`` ('-' for None): returns such as the
    moves that liquidate a book; a value that rounds to zero prints ``+0.00%``."""
    return "-" if fraction is None else f"{_rounded(100.0 * float(fraction), digits):+.{digits}f}%"


def _rounded(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` decimals, with -0.0 made 0.0 (no sign on a printed zero)."""
    return round(value, digits) + 0.0


def renamed(doc: Mapping[str, _V], names: Mapping[str, str]) -> dict[str, _V]:
    """``doc`` with keys renamed by ``names`` (the order kept)."""
    return {names.get(k, k): v for k, v in doc.items()}


def solution_json(doc: SolutionDoc) -> dict[str, object]:
    """``Solution.to_dict()`` in the CLI's JSON language: ``weights_before`` / ``weights_after`` /
    ``targets`` and ``drift_pp`` (after - target, inserted after ``targets``),
    ``margin.margin_ratio``. The keys keep their order; the result is a plain dict (the README
    documents its schema)."""
    out_doc = renamed(doc, {"effective_weights_before": "weights_before",
                            "effective_weights_after": "weights_after"})
    out_doc["margin"] = renamed(doc["margin"], {"maintenance_ratio": "margin_ratio"})
    drift = drift_pp(doc["effective_weights_after"], doc["targets"])
    keys = list(out_doc)
    at = keys.index("targets") + 1
    return {**{k: out_doc[k] for k in keys[:at]}, "drift_pp": drift,
            **{k: out_doc[k] for k in keys[at:]}}


@contextmanager
def preparing(what: str, show: bool) -> Iterator[None]:
    """A spinner on stderr while ``what`` runs (data loading, path generation)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, disable=not show, transient=True) as bar:
        bar.add_task(escape(what), total=None)
        yield


def wide(console: Console | None = None, width: int = 140) -> Console:
    """``console`` (default :data:`out`) on a terminal; piped output (80 columns by default) gets a
    console at least ``width`` wide, so that wide tables keep one line a row."""
    target = out if console is None else console
    if target.is_terminal:
        return target
    return Console(width=max(target.width, width), highlight=False, file=target.file)


def print_wide(renderable: RenderableType, console: Console | None = None, width: int = 140) -> None:
    """Print a wide table through :func:`wide` (on a terminal, rich folds its cells: numeric
    columns use ``overflow="fold"`` so that a number is never cut with "…")."""
    wide(console, width).print(renderable)


def data_home() -> Path:
    """fbr's per-user data directory: ``$FBR_DATA_HOME``, else the platform's user data directory
    (``~/.local/share/fbr`` on Linux)."""
    env = os.environ.get(DATA_HOME_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_data_path("fbr")


def default_journal() -> Path:
    """The journal file when ``--journal`` is not given: ``$FBR_JOURNAL``, else
    ``journal.sqlite`` in :func:`data_home`."""
    env = os.environ.get(JOURNAL_ENV)
    return Path(env).expanduser() if env else data_home() / "journal.sqlite"


#: the warning texts already printed by this process (a text is printed once, wherever raised)
_SHOWN: set[str] = set()


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    """``warnings.showwarning`` replacement: ``warning: <message>`` on one line of stderr, once per
    text (the same data note raised from two call sites, e.g. the market's and the risk model's
    reads of one data folder, prints once)."""
    del category, filename, lineno, line
    text = " ".join(str(message).split())
    if text in _SHOWN:
        return
    _SHOWN.add(text)
    stream = file if file is not None else sys.stderr
    with contextlib.suppress(OSError):  # stderr gone: nothing to tell
        stream.write(f"warning: {text}\n")


def route_warnings() -> None:
    """Print Python warnings as one clean line (``warning: ...``), no file path or category."""
    warnings.showwarning = _one_line_warning
