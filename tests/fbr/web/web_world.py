"""What the dashboard tests share (imported by name: ``tests/fbr/web/conftest.py`` puts this folder
on sys.path): the fixture world's constants, :class:`World` and :func:`cli_json`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

_FBR_TESTS = str(Path(__file__).resolve().parents[1])
if _FBR_TESTS not in sys.path:  # cli_helpers (tests/fbr/conftest.py adds it too)
    sys.path.insert(0, _FBR_TESTS)

from cli_helpers import run_fbr  # noqa: E402

from executor.alerts import Alert, AlertKind, Severity  # noqa: E402
from executor.run_store import CycleRecord  # noqa: E402
from fbr.web.state import ServeConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
TEN = ROOT / "examples" / "ten_assets.toml"
#: A valid token (>= 16 characters) for the guarded clients.
TOKEN = "test-token-0123456789abcdef"
SHOCK = "BTC=-30%"
REPORT_HTML = "<!doctype html><html><body><h1>Backtest report 7</h1><p>fixture</p></body></html>"
SECRET_HTML = "<html><body>outside the reports folder: must never be served</body></html>"

#: The loop's cycles (times UTC; NAV in USD; TE annualised fractions).
CYCLES = (
    CycleRecord(datetime(2026, 1, 5, 8, 0, tzinfo=UTC), "schedule", "traded", "plan-a",
                101_234.5, 0.0123, 0.0021, 12_345.67, "sent 9 legs"),
    CycleRecord(datetime(2026, 1, 6, 8, 0, tzinfo=UTC), "schedule", "held", None,
                102_000.25, 0.0034, 0.0034, 0.0, "benefit below cost"),
    CycleRecord(datetime(2026, 1, 7, 8, 0, tzinfo=UTC), "drift", "no_trade", None,
                99_876.0, 0.0007, 0.0007, 0.0, ""),
)
#: Alerts of the loop; one title needs HTML escaping.
ALERTS = (
    Alert(AlertKind.START, Severity.INFO, "loop started", "paper mode, daily at 08:00",
          datetime(2026, 1, 5, 7, 59, tzinfo=UTC)),
    Alert(AlertKind.MARGIN, Severity.WARNING, "margin ratio < 20% on <BTC>",
          "maintenance margin is 21% of collateral", datetime(2026, 1, 6, 8, 0, tzinfo=UTC)),
    Alert(AlertKind.FAILURE, Severity.CRITICAL, "order rejected: ETH-PERP",
          "insufficient margin", datetime(2026, 1, 7, 8, 0, tzinfo=UTC)),
)
#: Another account's run in the same journal (a paper loop of another book): never shown.
OTHER_CYCLES = (
    CycleRecord(datetime(2026, 1, 6, 9, 0, tzinfo=UTC), "schedule", "traded", "plan-z",
                5_000.0, 0.05, 0.01, 777.77, "another book's cycle"),
)
OTHER_ALERTS = (
    Alert(AlertKind.FAILURE, Severity.CRITICAL, "another book's alert", "not this account",
          datetime(2026, 1, 6, 9, 0, tzinfo=UTC)),
)
HEALTH: dict[str, Any] = {
    "status": "running", "pid": 4242, "account": "paper", "mode": "paper",
    "updated": "2026-01-07T08:00:05+00:00", "wall_time": "2026-01-07T08:00:05+00:00",
    "last_cycle": "2026-01-07T08:00:00+00:00", "next_cycle": "2026-01-08T08:00:00+00:00",
    "cycles": 3, "trades": 1, "failures": 0, "last_error": None,
}


@dataclass(frozen=True)
class World:
    """The files the dashboard serves and the CLI's own documents about them."""

    root: Path
    book: Path
    journal: Path
    state_dir: Path
    reports: Path
    env: dict[str, str]
    executed: dict[str, Any]     # fbr execute BOOK --exchange paper --journal J --json
    status: dict[str, Any]       # fbr status BOOK --exchange paper --journal J --json
    solve: dict[str, Any]        # fbr solve BOOK --exchange paper --journal J --json
    whatif: dict[str, Any]       # fbr whatif BOOK -s SHOCK --exchange paper --journal J --json
    dry_plan: dict[str, Any]     # fbr execute BOOK --json (dry run: holdings of the book file)
    dry_status: dict[str, Any]   # fbr status BOOK --exchange dry-run --journal MISSING --json

    def config(self, **changes: Any) -> ServeConfig:
        """The dashboard's configuration over this world (``changes`` override fields)."""
        base: dict[str, Any] = {"book": self.book, "journal": self.journal,
                                "state_dir": self.state_dir, "reports": self.reports}
        return ServeConfig(**{**base, **changes})


def cli_json(*args: str, env: dict[str, str]) -> dict[str, Any]:
    """``fbr ARGS --json`` through the real entry point: exit 0 and one JSON object."""
    res = run_fbr(*args, "--json", env=env)
    assert res.returncode == 0, f"fbr {' '.join(args)}: {res.stderr[-2000:]}"
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


class _Tables(HTMLParser):
    """Every ``<table>`` of a page as (header texts, rows of cell texts)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[tuple[list[str], list[list[str]]]] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append(([], []))
        elif tag == "thead":
            self._head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            heads, rows = self.tables[-1]
            if self._head:
                heads.extend(self._row)
            else:
                rows.append(self._row)
            self._row = None
        elif tag == "thead":
            self._head = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table(page: str, first_header: str, *headers: str) -> list[dict[str, str]]:
    """The rows (header -> cell text, entities decoded) of the page's first table whose headers
    start with ``first_header`` and include ``headers``."""
    parser = _Tables()
    parser.feed(page)
    for heads, rows in parser.tables:
        if heads and heads[0] == first_header and set(headers) <= set(heads):
            return [dict(zip(heads, r, strict=False)) for r in rows if len(r) == len(heads)]
    raise AssertionError(f"no table with headers {first_header!r}, {headers} in the page")
