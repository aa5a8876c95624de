"""Wiring of ``fbr run``: the venue (dry run, paper, Binance USD-M), the alert sinks, structured
logs, signals and the state files, all checked before the loop starts.

Checks before any long work, one message each: live trading without keys (the variables named),
a webhook that does not answer (its scheme and host named, never its path: a Telegram URL carries
the bot token), a schedule that never fires (:class:`executor.schedule.Schedule`), a second loop
on the same account (:class:`executor.run_loop.Runner` holds the account's run lock).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import logging.handlers
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from executor.alerts import Alert, AlertHub, AlertKind, Severity, WebhookSink, url_label
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis
from executor.paper import PaperGateway
from executor.paper_feed import live_paper
from executor.paper_margin import liquidation_alert
from executor.run_loop import Runner, Venue
from executor.safety import redact
from fbr import paper_prices
from fbr.backtest_config import BacktestConfig
from fbr.console import CliError
from fbr.run_config import RunConfig
from models.market import MarketSnapshot
from optimizer.policies import Policy
from scenarios.market_path import MarketPath

#: ``webhook_post`` of the alert sinks (tests swap in one that records the bodies).
WEBHOOK_POST: list[Callable[..., Any]] = []


def loop_policy(cfg: RunConfig, bt: BacktestConfig, path: MarketPath) -> Policy:
    """The run file's policy object, as ``fbr backtest`` builds it; an optimiser attaches its
    solution to each decision, so the loop can refuse an infeasible one (the positions are the
    same either way)."""
    from fbr.backtest_run import build_policy
    from optimizer.policies import OptimizedFutures

    policy = build_policy(cfg.policy, bt, path)
    if isinstance(policy, OptimizedFutures):
        policy.report = True
    return policy


def state_dir(cfg: RunConfig, journal_path: Path) -> Path:
    """``[run] state_dir``, else ``run-<book name>`` beside the journal."""
    if cfg.state_dir is not None:
        return cfg.state_dir
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cfg.backtest.loaded.book.name)
    return journal_path.parent / f"run-{safe}"


def alert_hub(cfg: RunConfig) -> AlertHub:
    """The hub with the file's webhook (if any)."""
    hub = AlertHub(book=cfg.backtest.loaded.book.name)
    spec = cfg.alerts
    if spec.url is not None:
        kw: dict[str, Any] = {"post": WEBHOOK_POST[0]} if WEBHOOK_POST else {}
        hub.sinks.append(WebhookSink(spec.url, spec.fmt, spec.chat_id, retries=spec.retries,
                                     timeout_s=spec.timeout_s, **kw))
    return hub


def check_webhooks(hub: AlertHub, mode: str, account: str) -> None:
    """Send the start alert; a webhook that does not take it stops the run before any order."""
    alert = Alert(AlertKind.START, Severity.INFO, "fbr run started",
                  f"mode {mode}, account {account}", datetime.now(UTC), hub.book)
    hub.sent.append(alert)
    for sink in hub.sinks:
        if not isinstance(sink, WebhookSink):
            continue
        ok, why = sink.try_send(alert)
        if not ok:
            raise CliError(f"alerts.webhook {url_label(sink.url)} did not take the start alert "
                           f"({why}, {sink.retries + 1} tries). Fix: check the URL and that the "
                           f"receiver is up, or remove [alerts] webhook to run without alerts")


class JsonLines(logging.Formatter):
    """One JSON object per log record: ``{time, level, logger, message}`` (secrets redacted)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                           "level": record.levelname.lower(), "logger": record.name,
                           "message": redact(record.getMessage())})


def structured_logs(path: Path | None) -> logging.Handler:
    """JSON-lines logs of the ``executor`` loggers to ``path`` (appended; reopened when logrotate
    or a hand moves or deletes it, so a loop running for months follows the rotation) or
    stderr."""
    handler: logging.Handler = (logging.handlers.WatchedFileHandler(path) if path is not None
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonLines())
    root = logging.getLogger("executor")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


@contextmanager
def signals(runner: Runner) -> Iterator[None]:
    """SIGTERM and SIGINT stop the loop after the wake-up in progress; SIGUSR1 is the kill
    switch. The previous handlers come back afterwards."""
    wanted = {signal.SIGTERM: "stop", signal.SIGINT: "stop", signal.SIGUSR1: "kill"}
    old: dict[signal.Signals, Any] = {}
    for sig, why in wanted.items():
        old[sig] = signal.signal(sig, _handler(runner, why))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _handler(runner: Runner, why: str) -> Callable[[int, FrameType | None], None]:
    """A signal handler asking ``runner`` to stop (``why``: stop or kill)."""
    def handle(_signum: int, _frame: FrameType | None) -> None:
        runner.request_stop(why)
    return handle


@dataclass
class OpenVenue:
    """A venue, what must be closed after the loop, and what it records once the loop holds the
    account's run lock (``started``: a second loop refused at the lock writes nothing)."""

    venue: Venue
    close: Callable[[], None]
    started: Callable[[], None] = lambda: None


def paper_venue(cfg: RunConfig, journal_path: Path, alerts: AlertHub | None = None) -> OpenVenue:
    """The journal's paper account, at the book file's market, or with ``prices = "binanceusdm"``
    at the exchange's (:mod:`executor.paper_feed`: its marks, funding rates and funding intervals,
    so the instruments the venue reports carry the exchange's intervals, as on the exchange path).
    The gateway lives as long as the loop but reads the account from the journal at every read
    (and fills it there), so a manual ``fbr execute --exchange paper`` on the same journal between
    two cycles is seen by the next. The funding intervals the venue uses (the exchange's, or the
    book file's with ``prices = "book"``) are kept in the journal's paper tables, so ``fbr status``,
    ``solve``/``whatif --exchange paper`` and the dashboard, which read the account through
    ``executor.paper.paper_book``, count the loop's settlements. The prices the account follows
    are kept there too, so those readers and a manual paper trade read the same market
    (:mod:`fbr.paper_prices`). A liquidation the paper exchange applies at the exchange's marks
    sends its CRITICAL alert to ``alerts``."""
    from executor.paper import PaperGateway, PaperStore, paper_book
    from fbr.execute_wiring import _retry

    loaded = cfg.backtest.loaded
    journal = Journal(journal_path)
    acc, _ = paper_book(loaded.book, journal)
    store = PaperStore(journal.path, loaded.book.name)
    vol = paper_prices.daily_vol(loaded)
    feed: Callable[[datetime], MarketSnapshot]
    gw: PaperGateway
    if cfg.prices == "binanceusdm":
        source = paper_prices.public_gateway(cfg.prices, pledge_source=loaded.pledge_source)
        gw, feed = live_paper(acc, loaded.book, loaded.market, source, daily_vol=vol, store=store)
    else:
        gw = PaperGateway(acc, loaded.market, daily_vol=vol, store=store)

        def feed(t: datetime) -> MarketSnapshot:  # the book file's prices at the loop's time
            market = dataclasses.replace(loaded.market, time=t)
            gw.set_market(market)  # a dated position reaching its expiry settles
            return market

    def started() -> None:
        """Once the run lock is held: a manual trade or read of the account follows this loop's
        prices (:mod:`fbr.paper_prices`); on the book file's, its rates are per its own
        intervals, which replace any an earlier loop on an exchange's prices stored."""
        store.save_price_source(cfg.prices)
        if cfg.prices != "binanceusdm":
            gw.set_funding_intervals({c.symbol: c.funding_interval_h for c in loaded.book.contracts})

    if alerts is not None:
        gw.on_liquidation = functools.partial(liquidation_alert, alerts)

    def executor(basis: PlanBasis) -> JournaledExecutor:
        return JournaledExecutor(gw, journal, basis, retry=_retry(True), mode="paper")

    def close() -> None:
        store.close()
        journal.close()

    return OpenVenue(Venue(gw, journal_path, journal, executor, feed, vol), close, started)


def exchange_venue(cfg: RunConfig, journal_path: Path, live: bool) -> OpenVenue:
    """Binance USD-M (keys from the environment): live orders with ``live``, else plans shown;
    the account's pledged spot is read as the book's ``[book] pledge_source`` says."""
    from fbr.execute_wiring import ExchangeChoice, _gateway, _retry

    loaded = cfg.backtest.loaded
    gw = _gateway(ExchangeChoice.BINANCEUSDM, live, pledge_source=loaded.pledge_source)
    journal = Journal(journal_path)

    def executor(basis: PlanBasis) -> JournaledExecutor:  # sends stamped on the exchange's clock
        return JournaledExecutor(gw, journal, basis, retry=_retry(False), mode="live",
                                 clock=gw.now_ms)

    return OpenVenue(Venue(gw, journal_path, journal, executor if live else None,
                           lambda _t: loaded.market, paper_prices.daily_vol(loaded)), journal.close)


def dry_venue(cfg: RunConfig, journal_path: Path) -> OpenVenue:
    """The book file's holdings; plans are shown, nothing is sent."""

    loaded = cfg.backtest.loaded
    gw = DryGateway(loaded.book, loaded.market)
    return OpenVenue(Venue(gw, journal_path, None, None, lambda _t: loaded.market,
                           paper_prices.daily_vol(loaded)), lambda: None)


class DryGateway(PaperGateway):
    """The book file's holdings as an account that is never traded: its own account key, so a
    dry-run loop neither locks out nor mixes its cycles with the book's paper loop."""

    def account_key(self) -> str:
        """``dry-run:<book name>``."""
        return "dry-run:" + super().account_key().removeprefix("paper:")
