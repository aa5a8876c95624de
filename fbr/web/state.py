"""What the dashboard shows, read from the same state the CLI reads: the book file, the journal
(paper account, plans, orders, fills, funding, the loop's cycles and alerts), the exchange account
and the report files.

:class:`DashboardState` keeps the loaded book (re-read when the file changes) and one
:class:`optimizer.rebalance.Rebalancer` (problems compiled once, re-solved per request), so a page
costs a solve, not a compile. Every figure is in the units of the CLI: USD, fractions, ISO times.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, TypeVar, cast

from executor.base import ExchangeGateway
from executor.journal import Journal
from executor.plan import PlanOptions, plan_orders, with_book_settings
from executor.safety import redact
from executor.status import StatusReport
from executor.workflow import account_view, require_tradeable
from fbr.config_loader import LoadedBook, load_book_file
from fbr.execute_wiring import ExchangeChoice
from fbr.status_cli import account_gateway, account_silence, status_report
from fbr.web.security import same
from models.book import Book
from models.errors import FbrError, RefusedError
from optimizer.prepare import prepare
from optimizer.rebalance import Rebalancer
from optimizer.solution import Solution

if TYPE_CHECKING:
    from executor.plan import OrderPlan
    from executor.plan_doc import OrderPlanDoc
    from fbr.execute_cli import ExecuteResult
    from scenarios.whatif_result import WhatIfDoc

_Row = TypeVar("_Row")


class CycleRow(TypedDict):
    """One ``fbr run`` cycle (USD, annualised TE and ratios as fractions, ISO time)."""

    time: str
    reason: str
    action: str
    nav: float | None
    te_before: float | None
    te_after: float | None
    turnover_usd: float
    margin_ratio: float | None
    max_drift: float | None
    message: str


class FillRow(TypedDict):
    """One fill of a journalled order: contracts, price (USD), fee (USD), time (ms, UTC)."""

    time_ms: int
    symbol: str
    side: str
    contracts: float
    price: float | None
    fee: float
    plan_id: str


class FundingRow(TypedDict):
    """One funding payment (USD, > 0 received) at ``time_ms`` (ms, UTC)."""

    time_ms: int
    symbol: str
    amount: float


class PositionRow(TypedDict):
    """A position snapshot after a plan: contracts and the wallet cash (USD)."""

    time_ms: int
    symbol: str
    contracts: float
    cash: float
    plan_id: str


class History(TypedDict):
    """What ``/history`` shows."""

    cycles: list[CycleRow]
    fills: list[FillRow]
    funding: list[FundingRow]
    positions: list[PositionRow]


class OrderRow(TypedDict):
    """One journalled leg with its fill (contracts, USD)."""

    plan_id: str
    venue: str
    leg: int
    client_id: str
    symbol: str
    side: str
    contracts: float
    status: str
    filled: float
    average: float | None
    fee: float
    message: str
    updated_ms: int


class AlertRow(TypedDict):
    """One alert the loop sent."""

    time: str
    kind: str
    severity: str
    title: str
    text: str


class RunState(TypedDict):
    """``fbr run``'s health file (None when absent) and its latest alerts."""

    health: dict[str, object] | None
    alerts: list[AlertRow]


class ReportRow(TypedDict):
    """One HTML report: file name, size (kB), modification time (ISO UTC)."""

    name: str
    size_kb: float
    modified: str


@dataclass(frozen=True)
class ServeConfig:
    """What ``fbr serve`` serves: the book file, where holdings come from (``exchange``), the
    journal, the loop's state folder (health file), the reports folder, and whether the plan may
    be executed from the page (``allow_execute``; real orders only with ``live``)."""

    book: Path
    exchange: ExchangeChoice = ExchangeChoice.PAPER
    journal: Path | None = None
    state_dir: Path | None = None
    reports: Path | None = None
    allow_execute: bool = False
    live: bool = False


#: a plan of this account (its key), or one journalled before plans kept their account (its venue
#: and book name): the parameters (account, venue, book name)
_PLAN_OF = "(p.account = ? OR (p.account = '' AND p.venue = ? AND p.book_name = ?))"


@dataclass
class DashboardState:
    """The dashboard's data access (see the module docstring)."""

    config: ServeConfig
    rebalancer: Rebalancer = field(default_factory=Rebalancer)
    _loaded: LoadedBook | None = None
    _mtime: float = -1.0

    # --- the book ---------------------------------------------------------------------------
    def loaded(self) -> LoadedBook:
        """The book file, re-read when it changed on disk."""
        mtime = self.config.book.stat().st_mtime
        if self._loaded is None or mtime != self._mtime:
            self._loaded, self._mtime = load_book_file(self.config.book), mtime
        return self._loaded

    @contextmanager
    def journal(self) -> Iterator[Journal | None]:
        """The journal when it exists (never created by a page)."""
        path = self.config.journal
        if path is None or not path.is_file():
            yield None
            return
        with Journal(path) as j:
            yield j

    def _gateway(self, loaded: LoadedBook, journal: Journal | None) -> tuple[ExchangeGateway, Book]:
        """The venue's gateway and the account's book (the paper account, or the book file's
        holdings for an exchange, which the gateway's ``account`` replaces)."""
        return account_gateway(loaded, self.config.exchange, journal, live=False)

    # --- pages ------------------------------------------------------------------------------
    def status(self) -> StatusReport:
        """The book now: weights, drift, TE, margin and liquidation distance, funding, the plan."""
        loaded = self.loaded()
        with self.journal() as j:
            return status_report(loaded, self.config.exchange, j, live=False,
                                 rebalancer=self.rebalancer)

    def plan(self) -> tuple[Solution, OrderPlanDoc, str | None]:
        """(the solution with its binding constraints, the order plan as a dict, why it may not
        be traded or None)."""
        loaded = self.loaded()
        with self.journal() as j:
            gw, acc = self._gateway(loaded, j)
            with account_silence(gw, self.config.exchange, j):
                book, market, instruments = account_view(gw, acc, loaded.market)
        sol = self.rebalancer.solve(book, market, loaded.risk, loaded.settings, explain=True,
                                    labels=loaded.labels)
        blocked: str | None = None
        try:
            require_tradeable(sol, prepare(book, market, loaded.risk, loaded.settings))
        except FbrError as exc:
            blocked = redact(str(exc))
        options = with_book_settings(PlanOptions(venue=gw.venue), loaded.settings)
        plan = plan_orders(sol, book, market, instruments, options, risk=loaded.risk)
        return sol, plan.to_dict(), blocked

    def whatif(self, shocks: list[str]) -> tuple[WhatIfDoc, list[str]]:
        """One what-if of ``shocks`` (``"BTC=-30%"``, ``"funding=x3"``, ...) on the account now (an
        exchange's holdings and marks, as ``fbr whatif --exchange`` reads them; it used the book
        file's) (``WhatIfResult.to_dict()``; ``fbr.whatif_cli.scenario_json`` gives the CLI's
        language), and notes. The book is read as ``fbr whatif`` reads it: a futures-only book
        on the NAV base (:func:`fbr.whatif_cli.load_whatif_book`; it was refused)."""
        from fbr.whatif_cli import load_whatif_book
        from scenarios.shocks import parse_scenario
        from scenarios.whatif import run_whatif

        loaded, notes = load_whatif_book(self.config.book)
        with self.journal() as j:  # the account's holdings and market, as status and plan read
            gw, acc = self._gateway(loaded, j)
            with account_silence(gw, self.config.exchange, j):
                book, market, _ = account_view(gw, acc, loaded.market)
        scenario = parse_scenario("dashboard", shocks)
        result = run_whatif(book, market, loaded.risk, scenario, loaded.settings,
                            rebalancer=self.rebalancer)
        return result.to_dict(), notes

    def _whose(self, journal: Journal) -> tuple[str, str, str]:
        """(account key, venue, book name) of the account this dashboard shows: a journal may
        hold other accounts' and books' runs (a dry-run loop, a paper loop, another book)."""
        loaded = self.loaded()
        gw, _ = self._gateway(loaded, journal)
        return gw.account_key(), gw.venue, loaded.book.name

    def history(self) -> History:
        """From the journal: this account's loop cycles (NAV, TE), and this book's fills, funding
        and position snapshots on this venue."""
        with self.journal() as j:
            if j is None:
                return {"cycles": [], "fills": [], "funding": [], "positions": []}
            account, venue, name = self._whose(j)
            conn = _reader(j.path)
        try:
            return {"cycles": _rows(conn, "SELECT time, reason, action, nav, te_before, te_after, "
                                          "turnover_usd, margin_ratio, max_drift, message FROM "
                                          "run_cycles WHERE account = ? ORDER BY id", (account,),
                                    kind=CycleRow),
                    "fills": _rows(conn, "SELECT f.time_ms, o.symbol, o.side, f.contracts, f.price, "
                                         "f.fee, f.plan_id FROM fills f JOIN orders o ON "
                                         "o.plan_id = f.plan_id AND o.leg = f.leg JOIN plans p ON "
                                         f"p.plan_id = f.plan_id WHERE {_PLAN_OF} ORDER BY f.id",
                                   (account, venue, name), kind=FillRow),
                    "funding": _rows(conn, "SELECT time_ms, symbol, amount FROM funding WHERE "
                                           "venue = ? AND book_name = ? ORDER BY time_ms",
                                     (venue, name), kind=FundingRow),
                    "positions": _rows(conn, "SELECT time_ms, symbol, contracts, cash, plan_id FROM "
                                             "positions WHERE venue = ? AND book_name = ? ORDER BY id",
                                       (venue, name), kind=PositionRow)}
        finally:
            conn.close()

    def orders(self, limit: int = 200) -> list[OrderRow]:
        """The latest orders of this account's plans (newest first) with their fills."""
        with self.journal() as j:
            if j is None:
                return []
            account, venue, name = self._whose(j)
            conn = _reader(j.path)
        try:
            return _rows(conn, "SELECT o.plan_id, p.venue, o.leg, o.client_id, o.symbol, o.side, "
                               "o.contracts, o.status, o.filled, o.average, o.fee, o.message, "
                               "o.updated_ms FROM orders o JOIN plans p ON p.plan_id = o.plan_id "
                               f"WHERE {_PLAN_OF} ORDER BY o.updated_ms DESC, o.leg LIMIT ?",
                         (account, venue, name, limit), kind=OrderRow)
        finally:
            conn.close()

    def run_state(self) -> RunState:
        """``fbr run``'s health file and its latest alerts (from the journal)."""
        health: dict[str, object] | None = None
        sdir = self.config.state_dir
        if sdir is not None and (sdir / "health.json").is_file():
            health = json.loads((sdir / "health.json").read_text())
        alerts: list[AlertRow] = []
        with self.journal() as j:
            if j is not None:
                account = self._whose(j)[0]
                conn = _reader(j.path)
                try:
                    alerts = _rows(conn, "SELECT time, kind, severity, title, text FROM run_alerts "
                                         "WHERE account = ? ORDER BY id DESC LIMIT 50", (account,),
                                   kind=AlertRow)
                finally:
                    conn.close()
        return {"health": health, "alerts": alerts}

    def execute(self, confirmed: str) -> ExecuteResult:
        """Send the plan now (``fbr execute`` on the configured venue: paper, or live when the
        dashboard was started with ``--live``) if it is the plan of fingerprint ``confirmed``
        (:func:`plan_fingerprint`): the plan is checked after its last solve, just before the
        first order, so a price move since the page was shown stops it (:class:`PlanChangedError`,
        nothing sent). The result in ``fbr execute --json``'s form."""
        from executor.plan import PlanOptions
        from fbr.console import default_journal
        from fbr.execute_cli import _execute

        def confirm(plan: OrderPlan) -> None:
            if not same(confirmed, plan_fingerprint(plan.to_dict())):
                raise PlanChangedError("the plan changed since the page was shown (prices or the "
                                       "book moved); nothing was sent. Fix: reload and confirm "
                                       "the new plan")

        venue = self.config.exchange  # the account the page reads is the one traded
        if venue == ExchangeChoice.DRY_RUN or self.config.live != (venue == ExchangeChoice.BINANCEUSDM):
            raise RefusedError(f"this dashboard reads {venue.value}"
                               f"{' with --live' if self.config.live else ''}, which it may not "
                               f"trade: nothing was sent. Fix: serve --exchange paper, or "
                               f"--exchange binanceusdm --live")
        journal = self.config.journal or default_journal()
        options = PlanOptions(venue=venue.value)
        return _execute(self.config.book, venue, self.config.live, journal, options, confirm)

    def reports(self) -> list[ReportRow]:
        """The HTML reports of the reports folder (backtests, Monte Carlo), newest first."""
        folder = self.config.reports
        if folder is None or not folder.is_dir():
            return []
        files = sorted(folder.glob("*.html"), key=lambda p: p.stat().st_mtime, reverse=True)
        return [{"name": p.name, "size_kb": round(p.stat().st_size / 1024, 1),
                 "modified": datetime.fromtimestamp(p.stat().st_mtime, UTC).isoformat()}
                for p in files]

    def report_path(self, name: str) -> Path | None:
        """The report file ``name`` inside the reports folder (None for anything else)."""
        folder = self.config.reports
        if folder is None or "/" in name or "\\" in name or not name.endswith(".html"):
            return None
        path = folder / name
        return path if path.is_file() and path.resolve().parent == folder.resolve() else None


def _reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to the journal file."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)


def _rows(conn: sqlite3.Connection, sql: str, args: tuple[int | str, ...] = (), *,
          kind: type[_Row]) -> list[_Row]:
    """Rows as ``kind`` dicts, one key per selected column (an absent table, e.g. before the
    first ``fbr run``, gives none)."""
    try:
        cur = conn.execute(sql, args)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    names = [d[0] for d in cur.description]
    return [cast(_Row, dict(zip(names, row, strict=True))) for row in cur.fetchall()]


class PlanChangedError(RefusedError):
    """The plan about to be sent is not the plan the user confirmed: nothing was sent."""


def plan_fingerprint(plan: OrderPlanDoc) -> str:
    """A digest of the orders a plan sends (contract, side, contracts per leg): what the user
    confirmed must be what is sent."""
    import hashlib

    legs = [(leg["symbol"], leg["side"], repr(float(leg["contracts"]))) for leg in plan["legs"]]
    return hashlib.sha256(json.dumps(legs).encode()).hexdigest()[:32]
