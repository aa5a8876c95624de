"""What the dashboard shows, read from the same state the CLI reads: the book file, the journal
(paper account, plans, orders, fills, funding, the loop's cycles and alerts), the exchange account
and the report files.

:class:`DashboardState` keeps the loaded book (:mod:`fbr.web.book_cache`: re-read when the file
changes, and at every request when its market or risk model reads a data folder or the clock, so
every page prices the book as the CLI does now) and one :class:`optimizer.rebalance.Rebalancer`
(problems compiled once, re-solved per request), so a page costs a solve, not a compile. Every
figure is in the units of the CLI: USD, fractions, ISO times (:mod:`fbr.web.journal_rows`).

The dashboard's handlers call this state from worker threads, so two requests may use it at once;
:class:`DashboardState` serialises its shared, mutable parts with one lock (see its docstring).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from executor.base import ExchangeGateway
from executor.journal import Journal
from executor.plan import PlanOptions, plan_orders, with_book_settings
from executor.safety import redact
from executor.status import StatusReport
from executor.workflow import account_view, require_tradeable
from fbr.config_loader import LoadedBook
from fbr.execute_wiring import ExchangeChoice
from fbr.status_cli import account_gateway, account_silence, status_report
from fbr.web.book_cache import BookCache
from fbr.web.journal_rows import (
    AlertRow,
    History,
    OrderRow,
    alert_rows,
    empty_history,
    history_rows,
    order_rows,
)
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
    from models.market import MarketSnapshot
    from models.risk import RiskModel
    from optimizer.settings import OptimizerSettings
    from scenarios.whatif_result import WhatIfDoc

#: The loop's state file in ``--state-dir`` (``fbr run`` rewrites it every cycle).
HEALTH_FILE = "health.json"


class RunState(TypedDict):
    """``fbr run``'s health file (None when absent or unreadable; ``health_error`` then says why,
    else None) and its latest alerts."""

    health: dict[str, object] | None
    health_error: str | None
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


class SerialRebalancer(Rebalancer):
    """A :class:`Rebalancer` whose solves run one at a time (its own lock held for the whole of
    each): the dashboard's request threads share its compiled problems."""

    def __init__(self) -> None:
        super().__init__()
        self._serial = threading.Lock()

    def solve(self, book: Book, market: MarketSnapshot, risk: RiskModel,
              settings: OptimizerSettings, *, explain: bool = True,
              labels: tuple[str, ...] = ()) -> Solution:
        """:meth:`Rebalancer.solve`, under the lock."""
        with self._serial:
            return Rebalancer.solve(self, book, market, risk, settings, explain=explain,
                                    labels=labels)


@dataclass
class DashboardState:
    """The dashboard's data access (see the module docstring).

    Thread safety: the web handlers run in worker threads, so requests use this state
    concurrently. Two locks guard what they share and write, each held only for that:

    - ``rebalancer``'s compiled cvxpy problems, whose Parameters every solve writes (two threads in
      one problem at once would solve a mix of two books) and whose caches a new structure fills:
      :class:`SerialRebalancer` holds its own lock for the whole of each solve (those of
      :meth:`status`, :meth:`plan` and :meth:`whatif`), and no longer: an account read (an
      exchange's, or the live prices a paper account follows) holds no lock, so a slow exchange
      holds up no other page;
    - the book cache (``_book``, :class:`fbr.web.book_cache.BookCache`), read and rewritten by
      :meth:`loaded` and :meth:`book_name` under ``_lock``.

    Neither is held across journal, report or health-file reads (each opens its own journal
    connection), nor by :meth:`execute`, which uses neither (``fbr execute``'s own load and a
    fresh :class:`Rebalancer`): a live send may wait minutes, and every page would wait with it.
    """

    config: ServeConfig
    rebalancer: Rebalancer = field(default_factory=lambda: SerialRebalancer())
    _book: BookCache = field(init=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False,
                                  default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._book = BookCache(self.config.book)

    # --- the book ---------------------------------------------------------------------------
    def loaded(self) -> LoadedBook:
        """The book as the CLI loads it now (:class:`fbr.web.book_cache.BookCache`: the kept copy
        while the book file did not change, unless its market or risk reads a data folder or the
        clock; a book file gone or broken raises the loader's :class:`FbrError`). Under the lock:
        the cache is shared by the request threads."""
        with self._lock:
            return self._book.load()

    def book_name(self) -> str:
        """``[book] name`` for the page header (the file's name when the book does not load). Under
        the lock, as :meth:`loaded`."""
        with self._lock:
            return self._book.name()

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
        """The book now: weights, drift, TE, margin and liquidation distance, funding, the plan.
        The account read holds no lock; the solve holds the rebalancer's
        (:class:`SerialRebalancer`)."""
        loaded = self.loaded()
        with self.journal() as j:
            return status_report(loaded, self.config.exchange, j, live=False,
                                 rebalancer=self.rebalancer)

    def plan(self) -> tuple[Solution, OrderPlanDoc, str | None]:
        """(the solution with its binding constraints, the order plan as a dict, why it may not
        be traded or None). A solution that may not be traded plans no order (every position
        held: its least-violation book's orders would only trip the order limits' checks). The
        solve holds the rebalancer's lock (the account read and the order plan need none)."""
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
        plan = plan_orders({} if blocked else sol, book, market, instruments, options,
                           risk=loaded.risk)
        return sol, plan.to_dict(), blocked

    def whatif(self, shocks: list[str]) -> tuple[WhatIfDoc, list[str]]:
        """One what-if of ``shocks`` (``"BTC=-30%"``, ``"funding=x3"``, ...) on the account now (an
        exchange's holdings and marks, as ``fbr whatif --exchange`` reads them; it used the book
        file's) (``WhatIfResult.to_dict()``; ``fbr.whatif_cli.scenario_json`` gives the CLI's
        language), and notes. The book is read as ``fbr whatif`` reads it: a futures-only book
        on the NAV base (:func:`fbr.whatif_cli.load_whatif_book`; it was refused). The shocked
        book's re-solve holds the rebalancer's lock."""
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
        from executor.paper import PaperGateway

        loaded = self.loaded()
        if self.config.exchange in (ExchangeChoice.PAPER, ExchangeChoice.DRY_RUN):
            # the paper venue's key and name need no read of the prices its account follows
            paper = PaperGateway(loaded.book, loaded.market)
            return paper.account_key(), paper.venue, loaded.book.name
        gw, _ = self._gateway(loaded, journal)
        return gw.account_key(), gw.venue, loaded.book.name

    def history(self) -> History:
        """From the journal: this account's loop cycles (NAV, TE), and this book's fills, funding
        and position snapshots on this venue (times ISO 8601 UTC)."""
        with self.journal() as j:
            if j is None:
                return empty_history()
            account, venue, name = self._whose(j)
            path = j.path
        return history_rows(path, account, venue, name)

    def orders(self, limit: int = 200) -> list[OrderRow]:
        """The latest orders of this account's plans (newest first) with their fills."""
        with self.journal() as j:
            if j is None:
                return []
            account, venue, name = self._whose(j)
            path = j.path
        return order_rows(path, account, venue, name, limit)

    def run_state(self) -> RunState:
        """``fbr run``'s health file (an unreadable one named in ``health_error``) and its latest
        alerts (from the journal)."""
        health, problem = read_health(self.config.state_dir)
        where: tuple[str, Path] | None = None
        with self.journal() as j:
            if j is not None:
                where = self._whose(j)[0], j.path
        alerts: list[AlertRow] = [] if where is None else alert_rows(where[1], where[0])
        return {"health": health, "health_error": problem, "alerts": alerts}

    def execute(self, confirmed: str) -> ExecuteResult:
        """Send the plan now (``fbr execute`` on the configured venue: paper, or live when the
        dashboard was started with ``--live``) if it is the plan of fingerprint ``confirmed``
        (:func:`plan_fingerprint`): the plan is checked after its last solve, just before the
        first order, so a price move since the page was shown stops it (:class:`PlanChangedError`,
        nothing sent), and so does an account another process traded before this one held its
        lock (the executor sends the confirmed legs or nothing: ``AccountMovedError``). The
        result in ``fbr execute --json``'s form. It does not take the state's lock: it loads the
        book and solves as ``fbr execute`` does (its own load, a fresh Rebalancer), touching no
        shared compiled problem or cache; two sends are serialised by the account's lock."""
        from executor.base import AccountMovedError
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
        try:
            return _execute(self.config.book, venue, self.config.live, journal, options, confirm)
        except AccountMovedError as exc:
            raise PlanChangedError(f"{exc} (reload and confirm it)") from exc

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


def read_health(state_dir: Path | None) -> tuple[dict[str, object] | None, str | None]:
    """(``fbr run``'s health file in ``state_dir``, None when there is none or it cannot be read;
    why it cannot be read, else None). A file cut short (a loop killed mid-write, a full disk) is
    named, not fatal: the loop rewrites it every cycle."""
    if state_dir is None or not (state_dir / HEALTH_FILE).is_file():
        return None, None
    path = state_dir / HEALTH_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        why = f"{type(exc).__name__}: {exc}"
    else:
        if isinstance(doc, dict):
            return doc, None
        why = f"holds a JSON {type(doc).__name__}, not an object"
    return None, (f"health file {path} is unreadable ({why}). fbr run rewrites it every cycle. "
                  f"Fix: wait for the loop's next cycle; if fbr run is not running, start it again "
                  f"or delete the file")


class PlanChangedError(RefusedError):
    """The plan about to be sent is not the plan the user confirmed: nothing was sent."""


def plan_fingerprint(plan: OrderPlanDoc) -> str:
    """A digest of the orders a plan sends (contract, side, contracts per leg): what the user
    confirmed must be what is sent."""
    import hashlib

    legs = [(leg["symbol"], leg["side"], repr(float(leg["contracts"]))) for leg in plan["legs"]]
    return hashlib.sha256(json.dumps(legs).encode()).hexdigest()[:32]
