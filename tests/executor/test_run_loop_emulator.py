"""The daily loop for 100 simulated days against the Binance USD-M emulator, through real ccxt, with
injected faults, alerts posted to a loopback webhook receiver.

The book: 1 BTC, 8 ETH and 60 SOL of spot against a 50/30/20 target, a 20,000 USDT futures wallet,
the optimiser (trading and funding costs, margin rows) rebalancing daily at 00:00 UTC, the account
read every 6 h. Prices follow a seeded daily random walk (annual vols 55/70/95%); funding settles
every 8 h in the emulator. Faults:

- day 20 00:00: the exchange is down for an hour (every request HTTP 503);
- day 40 00:00: a margin spike: the wallet drops so the margin ratio is 60% (a withdrawal made
  elsewhere on the account), above the 50% de-risk threshold; the money comes back on day 45;
- day 60: a crash mid-plan: the process dies right after the exchange accepted the plan's first
  order, before the journal heard of it; the loop is restarted;
- day 80: a funding spike: SOL pays 0.5% per settlement for a day.

Checked: the account ends at the policy's target within one lot step, no client id was accepted
twice and the journal's fills equal the exchange's, every fault was alerted (payloads asserted),
no secret reached a payload, and the run tables hold every cycle.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from binance_emulator import BinanceEmulator

from executor.alerts import AlertHub, WebhookSink
from executor.base import ExchangeGateway
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import OrderLeg, PlanOptions, with_book_settings
from executor.run_loop import Runner, Venue
from executor.run_settings import DailyLimits, RunSettings, Triggers
from executor.run_store import RunStore
from executor.schedule import Schedule, SimClock
from fbr.backtest_config import build_path
from fbr.run_config import RunConfig, load_run_file
from fbr.run_wiring import loop_policy

API_KEY = "canary-run-key-5f1c"
SECRET = "canary-run-secret-9a2e"
T0 = datetime(2024, 3, 1, tzinfo=UTC)
DAYS = 100
SYMBOLS = {"BTC": "BTCUSDT", "ETH": "ETHUSDT", "SOL": "SOLUSDT"}
START = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
VOLS = {"BTC": 0.55, "ETH": 0.70, "SOL": 0.95}
STEP = {"BTC-PERP": 0.001, "ETH-PERP": 0.001, "SOL-PERP": 1.0}

BOOK = """
[book]
name = "daily loop"
cash = 20000.0

[targets]
BTC = "50%"
ETH = "30%"
SOL = "20%"

[spot]
BTC = 1.0
ETH = 8.0
SOL = 60.0

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
trading = true
carry = true
"""

RUN = """
book = "book.toml"
[[policies]]
kind = "optimized"
name = "optimiser"
[run]
exchange = "binanceusdm"
interval = "1d"
"""


class Receiver:
    """A webhook receiver on 127.0.0.1: keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/fbr"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> Counter[str]:
        return Counter(str(b["kind"]) for b in self.bodies)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["kind"] == kind]


class Crash(BaseException):
    """The process dies (nothing catches a BaseException)."""


class CrashingGateway:
    """The ccxt gateway; once ``armed``, the next accepted order kills the process before the
    answer reaches the executor (the order exists on the exchange, the journal says SENDING)."""

    def __init__(self, inner: CcxtGateway) -> None:
        self.inner = inner
        self.venue = inner.venue
        self.armed = False
        self.crashed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create_order(self, leg: OrderLeg) -> Any:
        state = self.inner.create_order(leg)
        if self.armed:
            self.armed = False
            self.crashed += 1
            raise Crash
        return state


@dataclass
class Market:
    """Seeded daily closes per asset; faults applied as the clock passes them."""

    emu: BinanceEmulator
    gateway: CrashingGateway
    closes: dict[str, np.ndarray] = field(default_factory=dict)
    withdrawn: float = 0.0
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(20241205)
        for a, vol in VOLS.items():
            r = rng.normal(-0.5 * vol ** 2 / 365, vol / math.sqrt(365), DAYS + 1)
            r[0] = 0.0
            self.closes[a] = START[a] * np.exp(np.cumsum(r))

    def advance(self, t0: datetime, t1: datetime) -> None:
        """Marks of the day of ``t1``, funding settled up to ``t1``, faults crossed."""
        day = min(int((t1 - T0) / timedelta(days=1)), DAYS)
        for a, sym in SYMBOLS.items():
            self.emu.set_mark(sym, float(self.closes[a][day]))
        self.emu.advance_to(int(t1.timestamp() * 1000))
        for when, fault in self._faults():
            if t0 < when <= t1:
                fault(when)

    def _faults(self) -> list[tuple[datetime, Any]]:
        d = timedelta(days=1)
        return [(T0 + 20 * d, self._down), (T0 + 40 * d, self._margin_spike),
                (T0 + 45 * d, self._deposit), (T0 + 60 * d, self._arm_crash),
                (T0 + 80 * d, self._funding_spike), (T0 + 81 * d, self._funding_normal)]

    def _down(self, when: datetime) -> None:
        self.emu.set_down(int((when + timedelta(hours=1)).timestamp() * 1000))
        self.log.append("down")

    def _margin_spike(self, when: datetime) -> None:
        _, _, mm, upnl = self.emu._im_mm()
        target = mm / 0.6 - upnl  # wallet at which MM / (wallet + uPnL) = 60%
        self.withdrawn = self.emu.balance - target
        self.emu.balance = target
        self.log.append("margin")

    def _deposit(self, when: datetime) -> None:
        self.emu.balance += self.withdrawn
        self.log.append("deposit")

    def _arm_crash(self, when: datetime) -> None:
        self.gateway.armed = True
        self.log.append("crash armed")

    def _funding_spike(self, when: datetime) -> None:
        self.emu.set_funding("SOLUSDT", 0.005)
        self.log.append("funding")

    def _funding_normal(self, when: datetime) -> None:
        self.emu.set_funding("SOLUSDT", 0.0001)


def positions_now(emu: BinanceEmulator) -> dict[str, float]:
    """The emulator's positions by book contract (contracts)."""
    return {s: emu.positions[SYMBOLS[s.split("-")[0]]] for s in STEP}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _config(tmp_path: Path) -> RunConfig:
    (tmp_path / "book.toml").write_text(BOOK)
    (tmp_path / "run.toml").write_text(RUN)
    return load_run_file(tmp_path / "run.toml")


def _runner(cfg: RunConfig, gw: CrashingGateway, emu: BinanceEmulator, journal: Journal,
            clock: SimClock, hub: AlertHub, tmp_path: Path) -> Runner:
    loaded = cfg.backtest.loaded
    retry = RetryPolicy(base_delay_s=0.0, reconcile_delays_s=(0.0, 0.0))

    def executor(basis: PlanBasis) -> JournaledExecutor:
        return JournaledExecutor(cast(ExchangeGateway, gw), journal, basis, retry=retry,
                                 mode="live", clock=emu.now_ms, sleep=lambda s: None)

    venue = Venue(cast(ExchangeGateway, gw), journal.path, journal, executor,
                  lambda _t: loaded.market, {})
    settings = RunSettings(
        schedule=Schedule(interval=timedelta(days=1)), mode="live",
        health_file=tmp_path / "state" / "health.json", kill_file=tmp_path / "state" / "KILL",
        triggers=Triggers(margin_ratio=0.5, margin_warn=0.3, funding_alert=0.001,
                          check_every=timedelta(hours=6)),
        limits=DailyLimits(), costs=loaded.settings.costs)
    options = with_book_settings(PlanOptions(venue="binanceusdm"), loaded.settings)
    bt = cfg.backtest
    policy = loop_policy(cfg, bt, build_path(bt))
    return Runner(venue, loaded.book, loaded.risk, policy, settings, options, clock, hub,
                  gamma_fund=loaded.settings.costs.gamma_fund)


def test_hundred_days_with_faults(tmp_path: Path, receiver: Receiver,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    cfg = _config(tmp_path)
    with BinanceEmulator(api_key=API_KEY, secret=SECRET, balance_usdt=20_000.0) as emu:
        emu.set_time(int(T0.timestamp() * 1000))
        gw = CrashingGateway(CcxtGateway(emu.exchange(timeout=3000), base_delay_s=0.0))
        market = Market(emu, gw)
        clock = SimClock(T0, end=T0 + timedelta(days=DAYS), on_advance=[market.advance])
        hub = AlertHub([WebhookSink(receiver.url, sleep=lambda s: None)], book="daily loop")
        restarts = 0
        with Journal(tmp_path / "journal.sqlite") as journal:
            while True:
                runner = _runner(cfg, gw, emu, journal, clock, hub, tmp_path)
                try:
                    summary = runner.run()
                    break
                except Crash:
                    restarts += 1
                    assert restarts < 3
            store = RunStore(journal.path, runner.account)
            cycles = store.cycles()
            store.close()
            open_plans = journal.open_plans(runner.account)
            journal_fills: dict[str, float] = dict.fromkeys(STEP, 0.0)
            for plan_id in journal.plan_ids():
                for sym, q, _price, _fee in journal.fills_with_legs(plan_id):
                    journal_fills[sym] += q
            final_target = journal.plan(next(c.plan_id for c in reversed(cycles)
                                             if c.action == "traded" and c.plan_id)).target

        print(f"run loop: {len(cycles)} cycles {dict(Counter(c.action for c in cycles))}, "
              f"{len(emu.accepted_orders())} orders, alerts {dict(receiver.kinds())}, "
              f"final {positions_now(emu)} vs target {final_target}")
        assert market.log == ["down", "margin", "deposit", "crash armed", "funding"]
        assert summary.status == "finished" and restarts == 1 and gw.crashed == 1
        assert clock.now() == T0 + timedelta(days=DAYS)

        # no duplicate order, journal fills = exchange fills
        ids = Counter(o.clientOrderId for o in emu.accepted_orders())
        assert ids and max(ids.values()) == 1
        assert not open_plans
        exchange_fills: dict[str, float] = dict.fromkeys(STEP, 0.0)
        for tr in emu.trades:
            exchange_fills[f"{tr.symbol.removesuffix('USDT')}-PERP"] += (
                tr.qty if tr.side == "BUY" else -tr.qty)
        for sym in STEP:
            assert journal_fills[sym] == pytest.approx(exchange_fills[sym], abs=1e-9)
            assert exchange_fills[sym] == pytest.approx(
                emu.positions[SYMBOLS[sym.split("-")[0]]], abs=1e-9)

        # ends at target within one lot
        positions = positions_now(emu)
        for sym, q in positions.items():
            assert abs(q - final_target[sym]) <= STEP[sym] * (1 + 1e-9), (sym, q, final_target)
        last = cycles[-1]
        assert last.time == T0 + timedelta(days=DAYS) and last.action in ("traded", "no_trade",
                                                                          "held")

        # every fault alerted to the webhook, with the right payload
        kinds = receiver.kinds()
        down = [b for b in receiver.of("failure") if b["severity"] == "critical"]
        assert down and down[0]["title"] == "account read failed"
        assert down[0]["time"].startswith("2024-03-21T00:00")
        assert "503" in down[0]["text"] or "Unavailable" in down[0]["text"]
        back = [b for b in receiver.of("failure") if b["title"] == "exchange answers again"]
        assert back and back[0]["time"].startswith("2024-03-21T01:00")  # retried every 5 min
        margin = receiver.of("margin")
        assert margin[0]["title"] == "margin ratio high" and margin[0]["severity"] == "warning"
        assert margin[0]["time"].startswith("2024-04-10T00:00")
        assert margin[0]["fields"]["margin_ratio"] == pytest.approx(0.6)
        derisk = [b for b in receiver.of("trade") if b["title"] == "rebalanced (margin)"]
        assert derisk and derisk[0]["time"].startswith("2024-04-10T00:00")  # at once
        restart = receiver.of("restart")
        assert len(restart) == 1 and restart[0]["time"].startswith("2024-04-30")
        funding = receiver.of("funding")
        assert any(b["fields"]["symbol"] == "SOL-PERP" and b["fields"]["rate"] == 0.005
                   and b["time"].startswith("2024-05-20") for b in funding)
        assert kinds["daily_summary"] == DAYS and kinds["trade"] >= 50
        for b in receiver.bodies:
            assert set(b) == {"source", "kind", "severity", "title", "text", "time", "book",
                              "fields"} and b["book"] == "daily loop"
        everything = json.dumps(receiver.bodies)
        assert API_KEY not in everything and SECRET not in everything

        # the run tables: a cycle per scheduled day at least, the outage recorded
        assert sum(c.action == "failed" and c.reason == "read" for c in cycles) == 12
        days = {(T0 + timedelta(days=k)).date() for k in range(DAYS + 1)}
        assert {c.time.date() for c in cycles} == days  # every day has its cycle
        assert {c.reason for c in cycles} == {"start", "schedule", "margin", "resume", "read"}
        health = json.loads((tmp_path / "state" / "health.json").read_text())
        assert health["status"] == "finished" and API_KEY not in json.dumps(health)


class BannedMarket(Market):
    """The same prices, and one fault: an IP ban of 8 h from day 1 00:00 (HTTP 418, -1003, on the
    emulator's clock)."""

    def _faults(self) -> list[tuple[datetime, Any]]:
        return [(T0 + timedelta(days=1), self._ban)]

    def _ban(self, when: datetime) -> None:
        self.emu.set_banned(int((when + timedelta(hours=8)).timestamp() * 1000))
        self.log.append("ban")


def test_a_ban_silences_the_loop_until_it_ends(tmp_path: Path, receiver: Receiver,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An IP ban of 8 h meets the loop's day-1 read: exactly one request reaches the banned
    exchange (the one that met it; each one more would lengthen a real ban), the journal keeps the
    silence, the loop's next wake-up is when it ends (not its 5-minute retry of a failed read),
    and from then on it reads and trades again, with one outage alerted and its end, and no order
    sent twice."""
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))
    cfg = _config(tmp_path)
    with BinanceEmulator(api_key=API_KEY, secret=SECRET, balance_usdt=20_000.0) as emu:
        emu.set_time(int(T0.timestamp() * 1000))
        gw = CrashingGateway(CcxtGateway(emu.exchange(timeout=3000), base_delay_s=0.0,
                                         clock=lambda: emu.now_ms() / 1000))
        market = BannedMarket(emu, gw)
        clock = SimClock(T0, end=T0 + timedelta(days=3), on_advance=[market.advance])
        hub = AlertHub([WebhookSink(receiver.url, sleep=lambda s: None)], book="daily loop")
        with Journal(tmp_path / "journal.sqlite") as journal:
            runner = _runner(cfg, gw, emu, journal, clock, hub, tmp_path)
            summary = runner.run()
            silence = journal.silence_until(runner.account)
            store = RunStore(journal.path, runner.account)
            cycles = store.cycles()
            store.close()
    ban_end = T0 + timedelta(days=1, hours=8)
    assert market.log == ["ban"] and summary.status == "finished"
    assert emu.banned_answers == 1
    assert silence == int(ban_end.timestamp() * 1000)  # the Retry-After: 28,800 s from 00:00
    failed = [c for c in cycles if c.action == "failed" and c.reason == "read"]
    assert [c.time for c in failed] == [T0 + timedelta(days=1)]  # no wake-up inside the silence
    assert "without requests" in failed[0].message
    down = [b for b in receiver.of("failure") if b["severity"] == "critical"]
    back = [b for b in receiver.of("failure") if b["title"] == "exchange answers again"]
    assert len(down) == 1 and len(back) == 1
    assert datetime.fromisoformat(back[0]["time"]) == ban_end
    assert {c.time.date() for c in cycles if c.action == "traded"} >= {T0.date(),
                                                                        ban_end.date()}
    ids = Counter(o.clientOrderId for o in emu.accepted_orders())
    assert ids and max(ids.values()) == 1
