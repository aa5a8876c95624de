"""The book file edited while ``fbr run`` loops (review Q4).

The loop loads the book file once. It used to keep trading the targets it loaded, silently, after
the file was edited (50/30/20 -> 30/50/20), while ``fbr status`` on the same file showed the new
ones. Now, at each wake-up and before the account is read, the Runner asks its ``book_changed``
check (``fbr.book_watch.book_watcher``, as ``fbr run`` wires it): an edit stops the loop with one
CRITICAL alert, nothing sent after it, health ``book_changed`` naming it in ``last_error``; the
loop started again on the file as saved trades its targets.

Rig (test_run_loop_emulator's, through real ccxt against the Binance USD-M emulator): spot 1 BTC,
8 ETH, 60 SOL at 60,000 / 3,000 / 150 (V = 93,000), a 20,000 USDT wallet, the optimiser with costs
and constraints off (the naive hedge), daily at 00:00, the account read every 6 h, the clock from
day 0 00:00 to day 1 01:00. By hand: day 0's hedge of BTC at 50% is 0.5 x 93,000 - 60,000 =
-13,500 USD = -0.225 BTC; at 30% (the edited file) 0.3 x 93,000 - 60,000 = -32,100 USD = -0.535
BTC.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator

from executor.alerts import Alert, AlertHub
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions, with_book_settings
from executor.run_loop import Runner, RunSummary, Venue
from executor.run_settings import DailyLimits, RunSettings, Triggers
from executor.schedule import Schedule, SimClock
from fbr.backtest_config import build_path
from fbr.book_watch import book_watcher
from fbr.run_config import RunConfig, load_run_file
from fbr.run_wiring import loop_policy

API_KEY = "book-edit-key-3c7d"
SECRET = "book-edit-secret-81f0"
T0 = datetime(2024, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
END = T0 + timedelta(days=1, hours=1)
# the wake-ups of an uninterrupted run: each 6 h (check_every), then the clock's end
WAKES = [T0 + k * 6 * H for k in range(5)] + [END]

RUN = """
book = "book.toml"
[[policies]]
kind = "optimized"
name = "optimiser"
[run]
exchange = "binanceusdm"
interval = "1d"
"""

BOOK = """
[book]
name = "edited book"
cash = 20000.0
[targets]
BTC = "{btc}"
ETH = "{eth}"
SOL = "20%"
[spot]
BTC = 1.0
ETH = 8.0
SOL = 60.0
[contract_defaults]
lot_step = 0.001
min_notional = 0.0
[market]
time = 2024-03-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 3000.0
SOL = 150.0
[risk]
correlation = 0.75
[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95
[costs]
trading = false
carry = false
impact = false
[constraints]
margin = false
"""
OLD = BOOK.format(btc="50%", eth="30%")
NEW = BOOK.format(btc="30%", eth="50%")


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))


@dataclass
class Run:
    """One loop's outcome: its summary, alerts, wake-ups (clock times), the times its book check
    ran, and the requests the exchange received and the orders it accepted by the time of the
    06:00 edit and at the end."""

    summary: RunSummary
    alerts: list[Alert]
    wakes: list[datetime]
    checks: list[datetime] = field(default_factory=list)
    orders_at_edit: int = -1
    orders: int = 0
    requests_at_edit: int = -1
    requests: int = 0

    def book_alerts(self) -> list[Alert]:
        return [a for a in self.alerts if a.title.startswith("book file changed")]


@contextmanager
def _account() -> Iterator[tuple[BinanceEmulator, CcxtGateway]]:
    with BinanceEmulator(api_key=API_KEY, secret=SECRET, balance_usdt=20_000.0) as emu:
        emu.set_time(int(T0.timestamp() * 1000))
        yield emu, CcxtGateway(emu.exchange(timeout=3000), base_delay_s=0.0)


def _runner(cfg: RunConfig, gw: CcxtGateway, emu: BinanceEmulator, journal: Journal,
            clock: SimClock, hub: AlertHub, tmp_path: Path,
            book_changed: Callable[[], str | None]) -> Runner:
    """test_run_loop_emulator's loop (read every 6 h, daily cycles), with the book check."""
    loaded = cfg.backtest.loaded
    retry = RetryPolicy(base_delay_s=0.0, reconcile_delays_s=(0.0, 0.0))

    def executor(basis: PlanBasis) -> JournaledExecutor:
        return JournaledExecutor(gw, journal, basis, retry=retry, mode="live", clock=emu.now_ms,
                                 sleep=lambda s: None)

    venue = Venue(gw, journal.path, journal, executor, lambda _t: loaded.market, {})
    settings = RunSettings(
        schedule=Schedule(interval=timedelta(days=1)), mode="live",
        health_file=tmp_path / "state" / "health.json", kill_file=tmp_path / "state" / "KILL",
        triggers=Triggers(margin_ratio=0.5, margin_warn=0.3, funding_alert=0.001,
                          check_every=6 * H),
        limits=DailyLimits(), costs=loaded.settings.costs)
    options = with_book_settings(PlanOptions(venue="binanceusdm"), loaded.settings)
    policy = loop_policy(cfg, cfg.backtest, build_path(cfg.backtest))
    return Runner(venue, loaded.book, loaded.risk, policy, settings, options, clock, hub,
                  book_path=str(cfg.backtest.book_path), book_changed=book_changed)


def _loop(tmp_path: Path, emu: BinanceEmulator, gw: CcxtGateway, start: datetime,
          at_six: Callable[[], object] = lambda: None) -> Run:
    """Load the run file (and its book) as ``fbr run`` does, watch the book as ``fbr run`` wires
    it, and loop from ``start`` to END; ``at_six`` runs as the clock reaches 06:00 on day 0."""
    cfg = load_run_file(tmp_path / "run.toml")
    watch = book_watcher(cfg.backtest.book_path)
    hub = AlertHub([], book="edited book")
    run = Run(RunSummary("running"), hub.sent, [start])
    clock_ref: list[SimClock] = []

    def check() -> str | None:
        run.checks.append(clock_ref[0].now())
        return watch()

    def advance(t0: datetime, t1: datetime) -> None:
        emu.advance_to(int(t1.timestamp() * 1000))
        run.wakes.append(t1)
        if t1 == T0 + 6 * H:
            at_six()
            run.orders_at_edit = len(emu.accepted_orders())
            run.requests_at_edit = len(emu.requests)

    clock = SimClock(start, end=END, on_advance=[advance])
    clock_ref.append(clock)
    with Journal(tmp_path / "journal.sqlite") as journal:
        run.summary = _runner(cfg, gw, emu, journal, clock, hub, tmp_path, check).run()
    run.orders, run.requests = len(emu.accepted_orders()), len(emu.requests)
    return run


def _health(tmp_path: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((tmp_path / "state" / "health.json").read_text())
    return doc


def _files(tmp_path: Path) -> Path:
    book = tmp_path / "book.toml"
    book.write_text(OLD)
    (tmp_path / "run.toml").write_text(RUN)
    return book


def test_an_edited_book_file_stops_the_loop_and_the_restart_trades_it(tmp_path: Path) -> None:
    """Edited at 06:00 (30/50/20): the 06:00 wake-up stops the loop before reading the account:
    one CRITICAL alert naming the file, no order after the edit (BTCUSDT stays at day 0's -0.225),
    health ``book_changed`` with the change in ``last_error``. Started again on the file as saved
    (what a supervisor does), the day-1 cycle hedges to it: BTCUSDT -0.535."""
    book = _files(tmp_path)
    with _account() as (emu, gw):
        first = _loop(tmp_path, emu, gw, T0, at_six=lambda: book.write_text(NEW))
        assert (first.summary.status, first.summary.cycles) == ("book_changed", 1)
        assert first.wakes == [T0, T0 + 6 * H]  # stopped at the wake-up after the edit
        assert first.checks == first.wakes
        assert first.orders == first.orders_at_edit > 0  # nothing sent after the change
        assert first.requests == first.requests_at_edit  # the account was not even read
        assert emu.positions["BTCUSDT"] == pytest.approx(-0.225, abs=0.002)
        (alert,) = first.book_alerts()
        assert (alert.kind.value, alert.severity.value, alert.time) == (
            "stop", "critical", T0 + 6 * H)
        assert str(book) in alert.text and "fbr run RUN.toml" in alert.text
        assert "nothing was sent after the change was seen" in alert.text
        health = _health(tmp_path)
        assert health["status"] == "book_changed"
        assert health["last_error"] == alert.text

        second = _loop(tmp_path, emu, gw, T0 + 6 * H)
        assert (second.summary.status, second.summary.cycles) == ("finished", 1)
        assert second.book_alerts() == []
        assert emu.positions["BTCUSDT"] == pytest.approx(-0.535, abs=0.002)
        assert _health(tmp_path)["last_error"] is None  # the change is over once restarted on it


@pytest.mark.parametrize("touch", [False, True], ids=["untouched", "same-bytes-new-mtime"])
def test_a_book_file_unchanged_in_content_keeps_the_loop_running(tmp_path: Path, touch: bool) -> None:
    """The file untouched, or saved again with the same bytes at 06:00 (a new mtime): the loop
    runs on as before (day 0's and day 1's cycles, both at 50/30/20: BTCUSDT -0.225), no alert
    about the book, and the check ran at every wake-up."""
    book = _files(tmp_path)
    mtime = book.stat().st_mtime_ns

    def resave() -> None:
        book.write_text(OLD)
        os.utime(book, ns=(mtime + 10**9, mtime + 10**9))

    with _account() as (emu, gw):
        run = _loop(tmp_path, emu, gw, T0, at_six=resave if touch else lambda: None)
    assert (book.stat().st_mtime_ns != mtime) is touch
    assert (run.summary.status, run.summary.cycles) == ("finished", 2)
    assert run.wakes == WAKES and run.checks == WAKES
    assert run.book_alerts() == []
    assert emu.positions["BTCUSDT"] == pytest.approx(-0.225, abs=0.002)
    health = _health(tmp_path)
    assert health["status"] == "finished" and health["last_error"] is None
