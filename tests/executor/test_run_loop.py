"""The daily loop (``executor.run_loop.Runner``) on the paper venue and a simulated clock: the
schedule, the drift and funding triggers, the cost gate, the daily limits, margin de-risking, the
kill file, a restart mid-plan, the dry run and secret redaction, each checked against a hand
computation or the run tables / paper exchange / alert contents.

The book (``exec_helpers.three_asset_book``): 0.1 BTC, 1 ETH, 10 SOL against a 50/30/20 target,
3 000 USD cash, one linear perp per asset (lot 0.001, taker fee 5 bp, flat mmr 0.5 %, funding
every 8 h). The market (``exec_helpers.market``, prices replaced) has no half spread and no ADV, so
a paper fill is at mark and costs only the fee. At 50 000 / 3 000 / 200 USD the spot values are
5 000 / 3 000 / 2 000 (V = 10 000): exactly at target. At BTC = 70 000 they are 7 000 / 3 000 /
2 000, V = 12 000, and the naive hedge w*_i V - spot_i is -1 000 / +600 / +400 USD = -0.014 / +0.2
/ +2 contracts after rounding to the lot (turnover 980 + 600 + 400 = 1 980 USD).

Nothing here is random (the plan ids' random suffix is never compared), so the tests are
deterministic.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
from exec_helpers import covariance, market, risk_model, three_asset_book

from executor import safety
from executor.alerts import Alert, AlertHub, MemorySink
from executor.base import ExchangeGateway, ExecutionReport, Trade
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.paper import PaperGateway, PaperStore
from executor.plan import Instrument, OrderLeg, OrderPlan, PlanOptions
from executor.run_loop import Runner, RunSummary, Venue
from executor.run_settings import DailyLimits, RunSettings, Triggers
from executor.run_store import CycleRecord, RunStore
from executor.schedule import Schedule, SimClock
from models.book import Book, FuturesPosition
from models.errors import FbrError
from models.instruments import FuturesContract
from models.margin import MarginModel, margin_state
from models.market import MarketSnapshot
from optimizer.policies import NaiveFutures, Policy, TargetHoldings
from optimizer.settings import CostSettings

T0 = datetime(2024, 6, 1, tzinfo=UTC)
H = timedelta(hours=1)
DAY = timedelta(days=1)
SYMS = ("BTC-PERP", "ETH-PERP", "SOL-PERP")
AT_TARGET = {"BTC": 50_000.0, "ETH": 3_000.0, "SOL": 200.0}
BTC_UP = {"BTC": 70_000.0, "ETH": 3_000.0, "SOL": 200.0}
BTC_DOWN = {"BTC": 35_000.0, "ETH": 3_000.0, "SOL": 200.0}
W_STAR = np.array([0.5, 0.3, 0.2])
# the naive hedge at BTC_UP, by hand (see the module docstring)
HEDGE_UP = {"BTC-PERP": -0.014, "ETH-PERP": 0.2, "SOL-PERP": 2.0}
TURNOVER_UP = 0.014 * 70_000 + 0.2 * 3_000 + 2.0 * 200  # 1 980 USD
V_UP = 12_000.0


class Crash(BaseException):
    """The process dies (nothing in the loop catches a BaseException)."""


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def snapshot(prices: Mapping[str, float], t: datetime = T0) -> MarketSnapshot:
    """The helper market with new spot and marks (marks = spot), at ``t``."""
    base: MarketSnapshot = market()
    return dataclasses.replace(base, time=pd.Timestamp(t), spot=dict(prices),
                               mark={f"{a}-PERP": p for a, p in prices.items()})


def plain_book(**kwargs: Any) -> Book:
    book: Book = three_asset_book(**kwargs)
    return book


class Fixed(Policy):
    """Fixed target futures notionals (USD); raises an FbrError instead when ``fail``."""

    name = "fixed"

    def __init__(self, futures: Mapping[str, float], fail: bool = False) -> None:
        self.futures = dict(futures)
        self.fail = fail
        self.calls = 0

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        self.calls += 1
        if self.fail:
            raise FbrError("the policy broke")
        return TargetHoldings(spot={a: float(q) for a, q in book.spot.items()},
                              futures=dict(self.futures))


class Reads:
    """A gateway that logs the loop-clock time of each account read (``market()``) and makes the
    first ``fails`` of them raise ``error``."""

    def __init__(self, inner: PaperGateway, clock: SimClock, error: Exception | None = None,
                 fails: int = 0) -> None:
        self.inner, self.clock = inner, clock
        self.venue = inner.venue
        self.error = error
        self.left = fails
        self.times: list[datetime] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def market(self, book: Book, fallback: MarketSnapshot) -> MarketSnapshot:
        self.times.append(self.clock.now())
        if self.left > 0 and self.error is not None:
            self.left -= 1
            raise self.error
        return self.inner.market(book, fallback)


@dataclasses.dataclass
class Rig:
    """One loop on the paper venue, with everything a test inspects."""

    runner: Runner
    paper: PaperGateway
    store: PaperStore
    journal: Journal
    clock: SimClock
    sink: MemorySink
    wakes: list[datetime]
    tmp: Path

    def run(self) -> RunSummary:
        return self.runner.run()

    def cycles(self) -> list[CycleRecord]:
        rs = RunStore(self.journal.path, self.runner.account)
        try:
            return rs.cycles()
        finally:
            rs.close()

    def state(self, key: str) -> str | None:
        rs = RunStore(self.journal.path, self.runner.account)
        try:
            return rs.get(key)
        finally:
            rs.close()

    def trades(self) -> list[tuple[str, Trade]]:
        return self.store.trades()

    def positions(self) -> dict[str, float]:
        saved = self.store.load()
        assert saved is not None
        return {s: (saved[0][s].contracts if s in saved[0] else 0.0) for s in SYMS}

    def alerts(self, kind: str, title: str | None = None) -> list[Alert]:
        return [a for a in self.sink.alerts
                if a.kind.value == kind and (title is None or a.title == title)]

    def reasons(self) -> list[tuple[datetime, str, str]]:
        return [(c.time, c.reason, c.action) for c in self.cycles()]


Make = Callable[..., Rig]


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FBR_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    """Build a Rig: the paper venue on ``journal.sqlite`` in ``tmp_path``; closed at teardown."""
    opened: list[Journal | PaperStore] = []

    def build(policy: Policy, *, book: Book | None = None,
              prices: Mapping[str, float] = AT_TARGET, end: datetime = T0 + DAY,
              moves: Mapping[datetime, Mapping[str, float]] | None = None,
              hooks: list[Callable[[datetime, datetime], None]] | None = None,
              triggers: Triggers | None = None, limits: DailyLimits | None = None,
              gate: bool = False, gamma_trade: float = 1.0, gamma_fund: float = 0.0,
              dry: bool = False, on_leg: Callable[[OrderLeg], None] | None = None,
              wrap: Callable[[PaperGateway, SimClock], Any] | None = None,
              clock_start: datetime = T0) -> Rig:
        bk = book or plain_book()
        journal = Journal(tmp_path / "journal.sqlite")
        store = PaperStore(journal.path, bk.name)
        opened.extend([journal, store])
        clock = SimClock(clock_start, end=end)
        paper = PaperGateway(bk, snapshot(prices, clock_start), store=store,
                             clock=lambda: ms(clock.now()))
        wakes: list[datetime] = []
        path = dict(moves or {})

        def advance(t_from: datetime, t_to: datetime) -> None:
            wakes.append(t_to)
            for when in sorted(path):
                if t_from < when <= t_to:
                    paper.set_market(snapshot(path[when], t_to))

        clock.on_advance.append(advance)
        clock.on_advance.extend(hooks or [])
        gateway = cast(ExchangeGateway, wrap(paper, clock) if wrap is not None else paper)

        def executor(basis: PlanBasis) -> JournaledExecutor:
            return JournaledExecutor(gateway, journal, basis, mode="paper",
                                     retry=RetryPolicy(base_delay_s=0.0, reconcile_delays_s=()),
                                     clock=lambda: ms(clock.now()), on_leg=on_leg)

        venue = Venue(gateway, journal.path, None if dry else journal,
                      None if dry else executor, fallback=lambda t: snapshot(prices, t))
        settings = RunSettings(
            schedule=Schedule(interval=DAY), mode="dry-run" if dry else "paper",
            health_file=tmp_path / "state" / "health.json", kill_file=tmp_path / "state" / "KILL",
            triggers=triggers or Triggers(check_every=6 * H), limits=limits or DailyLimits(),
            gate=gate, costs=CostSettings(impact=True, gamma_trade=gamma_trade))
        hub = AlertHub([sink := MemorySink()], book=bk.name)
        runner = Runner(venue, bk, risk_model(), policy, settings, PlanOptions(venue="paper"),
                        clock, hub, gamma_fund=gamma_fund)
        return Rig(runner, paper, store, journal, clock, sink, wakes, tmp_path)

    yield build
    for thing in opened:
        thing.close()


def te_hand(prices: Mapping[str, float], contracts: Mapping[str, float]) -> float:
    """sqrt(d' Sigma d), d = (spot + futures) / V - w* (V the spot value)."""
    spot = np.array([0.1 * prices["BTC"], 1.0 * prices["ETH"], 10.0 * prices["SOL"]])
    fut = np.array([contracts.get(f"{a}-PERP", 0.0) * prices[a] for a in ("BTC", "ETH", "SOL")])
    d = (spot + fut) / spot.sum() - W_STAR
    return float(np.sqrt(d @ covariance() @ d))


def assert_positions(got: Mapping[str, float], want: Mapping[str, float]) -> None:
    for s in SYMS:
        assert got.get(s, 0.0) == pytest.approx(want.get(s, 0.0), abs=1e-9), s


# --- 1. schedule ---------------------------------------------------------------------------------

def test_schedule_cycles_at_start_and_each_midnight_reads_every_6h(make: Make) -> None:
    policy, reads = Fixed({}), cast(list[Reads], [])

    def wrap(paper: PaperGateway, clock: SimClock) -> Reads:
        reads.append(Reads(paper, clock))
        return reads[0]

    rig = make(policy, end=T0 + 3 * DAY, wrap=wrap)
    summary = rig.run()

    assert summary.status == "finished" and summary.cycles == 4
    assert rig.reasons() == [(T0, "start", "no_trade"), (T0 + DAY, "schedule", "no_trade"),
                             (T0 + 2 * DAY, "schedule", "no_trade"),
                             (T0 + 3 * DAY, "schedule", "no_trade")]
    # the account is read at every 6 h wake-up, once; the policy is asked only at the cycles
    assert reads[0].times == [T0 + 6 * H * k for k in range(13)]
    assert rig.wakes == reads[0].times[1:]
    assert policy.calls == 4
    # a daily summary at each new UTC day
    days = rig.alerts("daily_summary")
    assert [a.time for a in days] == [T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY]
    assert [a.fields["cycles"] for a in days] == [1, 1, 1]
    health = json.loads((rig.tmp / "state" / "health.json").read_text())
    assert health["status"] == "finished" and health["cycles"] == 4
    assert health["next_cycle"] == (T0 + 4 * DAY).isoformat()


# --- 2. drift trigger ----------------------------------------------------------------------------

@pytest.mark.parametrize("band", [0.05, None])
def test_drift_beyond_the_band_runs_a_cycle_at_once(make: Make, band: float | None) -> None:
    # BTC 50k -> 70k at 06:00: weight 7 000 / 12 000 = 58.3 %, drift 8.3 % > 5 %
    rig = make(NaiveFutures(band=0.01), moves={T0 + 6 * H: BTC_UP}, end=T0 + 12 * H,
               triggers=Triggers(drift_band=band, check_every=6 * H))
    rig.run()

    if band is None:
        assert rig.reasons() == [(T0, "start", "no_trade")]
        assert rig.trades() == []
        return
    assert rig.reasons() == [(T0, "start", "no_trade"), (T0 + 6 * H, "drift", "traded")]
    assert_positions(rig.positions(), HEDGE_UP)
    assert {t.time_ms for _, t in rig.trades()} == {ms(T0 + 6 * H)}
    drift_cycle = rig.cycles()[1]
    assert drift_cycle.turnover_usd == pytest.approx(TURNOVER_UP, rel=1e-12)
    assert drift_cycle.te_before == pytest.approx(te_hand(BTC_UP, {}), rel=1e-9)
    # hedged: BTC's effective weight is (7 000 - 980) / 12 000 = 50.2 %, so 12:00 runs no cycle
    assert 12 * H + T0 not in [c.time for c in rig.cycles()]


# --- 3. the cost gate ----------------------------------------------------------------------------

@pytest.mark.parametrize(("gate", "gamma", "action"), [
    (True, 1e9, "held"), (True, 1e-6, "traded"), (False, 1e9, "traded")])
def test_gate_holds_a_plan_whose_te_fall_does_not_beat_the_cost(
        make: Make, gate: bool, gamma: float, action: str) -> None:
    rig = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0, gate=gate, gamma_trade=gamma)
    rig.run()

    (c,) = rig.cycles()
    assert (c.reason, c.action) == ("start", action)
    te0, te1 = te_hand(BTC_UP, {}), te_hand(BTC_UP, HEDGE_UP)
    assert c.te_before == pytest.approx(te0, rel=1e-9)
    if action == "held":
        cost = gamma * 0.0005 * TURNOVER_UP / V_UP  # fees only: no spread, no ADV
        assert te0 ** 2 - te1 ** 2 <= cost
        assert c.message == f"TE^2 fall {te0 ** 2 - te1 ** 2:.3g} <= cost {cost:.3g}"
        assert c.te_after == pytest.approx(te1, rel=1e-9)
        assert rig.trades() == [] and rig.store.orders() == {}
        assert_positions(rig.positions(), {})
        return
    assert len(rig.trades()) == 3
    assert_positions(rig.positions(), HEDGE_UP)
    assert c.turnover_usd == pytest.approx(TURNOVER_UP, rel=1e-12)
    assert c.te_after == pytest.approx(te1, rel=1e-9)


# --- 4. daily limits -----------------------------------------------------------------------------

@pytest.mark.parametrize(("limit", "action"), [(1_900.0, "refused"), (2_000.0, "traded")])
def test_daily_turnover_limit_refuses_a_plan_that_passes_it(make: Make, limit: float,
                                                            action: str) -> None:
    rig = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0,
               limits=DailyLimits(turnover_usd=limit))
    rig.run()

    (c,) = rig.cycles()
    assert c.action == action
    limit_alerts = rig.alerts("limit")
    if action == "traded":  # 1 980 <= 2 000
        assert limit_alerts == [] and len(rig.trades()) == 3
        return
    assert [a.title for a in limit_alerts] == ["daily turnover limit"]
    assert "1,980.00 USD" in limit_alerts[0].text and "1,900.00 USD" in limit_alerts[0].text
    assert c.message == limit_alerts[0].text
    assert rig.trades() == [] and rig.store.orders() == {}


def _loss_rig(make: Make) -> Rig:
    # at target on day 0 (NAV 13 000); BTC 50k -> 35k at 06:00: NAV 11 500, 1 500 below the
    # opening; BTC weight 3 500 / 8 500 = 41.2 %, drift 8.8 % > 2 % -> a cycle at every wake-up
    return make(NaiveFutures(band=0.01), moves={T0 + 6 * H: BTC_DOWN}, end=T0 + DAY,
                triggers=Triggers(drift_band=0.02, check_every=6 * H),
                limits=DailyLimits(loss_usd=1_000.0))


def test_daily_loss_limit_halts_the_day_and_trading_resumes_the_next(make: Make) -> None:
    rig = _loss_rig(make)
    summary = rig.run()

    rows = rig.cycles()
    assert [(c.time, c.reason, c.action) for c in rows if c.time < T0 + 7 * H] == [
        (T0, "start", "no_trade"), (T0 + 6 * H, "drift", "refused")]
    refused = rows[1]
    assert refused.nav == pytest.approx(11_500.0)
    loss = rig.alerts("limit", "daily loss limit")
    assert len(loss) == 1 and loss[0].time == T0 + 6 * H
    assert "NAV 11,500.00 USD is 1,500.00 below the day's opening 13,000.00" in loss[0].text
    # 12:00 and 18:00 are drift cycles of the halted day: nothing is sent
    assert summary.cycles == 5
    assert all(t.time_ms == ms(T0 + DAY) for _, t in rig.trades())
    # the next day: a fresh opening NAV, the halt lifted, the hedge at 35k traded
    assert rows[-1].time == T0 + DAY and (rows[-1].reason, rows[-1].action) == ("schedule",
                                                                               "traded")
    assert rig.state("halted") is None and float(rig.state("day_nav") or 0) == pytest.approx(
        11_500.0)
    # w* V - spot at V = 8 500: +750 / -450 / -300 USD
    assert_positions(rig.positions(), {"BTC-PERP": 0.021, "ETH-PERP": -0.15, "SOL-PERP": -1.5})


def test_halted_cycles_are_recorded_as_refused(make: Make) -> None:
    rig = _loss_rig(make)
    rig.run()
    day0 = [(c.time, c.reason, c.action) for c in rig.cycles() if c.time < T0 + DAY]
    assert day0 == [(T0, "start", "no_trade"), (T0 + 6 * H, "drift", "refused"),
                    (T0 + 12 * H, "drift", "refused"), (T0 + 18 * H, "drift", "refused")]


# --- 5. margin de-risk ---------------------------------------------------------------------------

def _margin_book(taker_fee: float = 0.0) -> Book:
    """Short 0.3 BTC-PERP at 50 000 (15 000 USD, MM 75) on 100 USD of cash: ratio 75 %."""
    cons = {s: FuturesContract(s, s.split("-")[0], taker_fee=taker_fee) for s in SYMS}
    return plain_book(contracts=cons, futures={"BTC-PERP": FuturesPosition(-0.3, 50_000.0)},
                      cash=100.0)


def _ratio(book: Book, contracts: Mapping[str, float], collateral: float) -> float:
    n = np.array([contracts.get(s, 0.0) * AT_TARGET[s.split("-")[0]] for s in SYMS])
    return float(margin_state(MarginModel.from_contracts(book.contracts), n,
                              collateral).margin_ratio)


@pytest.mark.parametrize(("policy", "scale", "title"), [
    # asks 0.4 BTC short (20 000 USD, MM 100, 100 %): scaled by 45 % / 100 % = 0.45
    (Fixed({"BTC-PERP": -20_000.0}), 0.45, None),
    # fails: the 0.3 held (MM 75, 75 %) is scaled by 45 % / 75 % = 0.6
    (Fixed({}, fail=True), 0.6, "policy failed while de-risking"),
])
def test_margin_derisk_scales_the_targets_to_90pct_of_the_threshold(
        make: Make, policy: Fixed, scale: float, title: str | None) -> None:
    book = _margin_book()
    assert _ratio(book, {"BTC-PERP": -0.3}, 100.0) == pytest.approx(0.75)
    # gate on and a 1 USD turnover limit: a de-risk skips both
    rig = make(policy, book=book, end=T0, gate=True, gamma_trade=1e9,
               limits=DailyLimits(turnover_usd=1.0),
               triggers=Triggers(margin_ratio=0.5, check_every=6 * H))
    rig.run()

    (c,) = rig.cycles()
    assert (c.reason, c.action) == ("margin", "traded")
    (d,) = rig.alerts("margin", "de-risking")
    s = d.fields["scale"]
    assert isinstance(s, float) and 0 < s < 1 and s == pytest.approx(scale, abs=1e-6)
    failed = rig.alerts("failure", "policy failed while de-risking")
    assert len(failed) == (1 if title else 0)
    if title:
        assert "the policy broke" in failed[0].text
    # 0.9 x 50 % = 45 %: MM 45 USD = 0.5 % of 9 000 USD = 0.18 BTC
    pos = rig.positions()
    assert_positions(pos, {"BTC-PERP": -0.18})
    saved = rig.store.load()
    assert saved is not None and saved[1] == pytest.approx(100.0)  # fee 0, filled at entry
    assert _ratio(book, pos, saved[1]) <= 0.9 * 0.5 + 1e-12


def test_margin_derisk_with_fees_lands_within_90pct_of_the_threshold(make: Make) -> None:
    book = _margin_book(taker_fee=0.0005)
    rig = make(Fixed({"BTC-PERP": -20_000.0}), book=book, end=T0,
               triggers=Triggers(margin_ratio=0.5, check_every=6 * H))
    rig.run()
    saved = rig.store.load()
    assert saved is not None
    # the ratio counts the de-risk's own fee: 100 s / (100 - 0.0005 (15 000 - 20 000 s)) = 0.45
    # -> s = 41.625 / 95.5 = 0.43586, 0.4 s = 0.17435 BTC, 0.174 on the 0.001 lot
    (d,) = rig.alerts("margin", "de-risking")
    assert d.fields["scale"] == pytest.approx(41.625 / 95.5, abs=1e-7)
    # the alert gives the targets' ratio (MM 100 of the 20,000 short against 100 of cash: 100%)
    # beside the book's now (the 15,000 short: 75%)
    assert d.fields["target_margin_ratio"] == pytest.approx(1.0)
    assert "the targets' margin ratio 100.0% is above 50% (now 75.0%)" in d.text
    assert_positions(rig.positions(), {"BTC-PERP": -0.174})
    assert saved[1] == pytest.approx(100.0 - 0.0005 * 0.126 * 50_000)  # 96.85
    assert _ratio(book, rig.positions(), saved[1]) <= 0.9 * 0.5 + 1e-12


# --- 6. funding ahead ----------------------------------------------------------------------------

@pytest.mark.parametrize("gamma_fund", [1.0, 0.0])
def test_funding_ahead_runs_one_cycle_before_each_settlement(make: Make,
                                                             gamma_fund: float) -> None:
    rig = make(Fixed({}), end=T0 + DAY, gamma_fund=gamma_fund,
               triggers=Triggers(funding_ahead=timedelta(minutes=30), check_every=6 * H))
    rig.run()

    funding = [T0 + timedelta(hours=h, minutes=30) for h in (7, 15, 23)]
    got = [(c.time, c.reason) for c in rig.cycles()]
    if gamma_fund > 0:
        assert got == [(T0, "start"), *[(t, "funding") for t in funding], (T0 + DAY, "schedule")]
        assert set(funding) <= set(rig.wakes)
    else:
        assert got == [(T0, "start"), (T0 + DAY, "schedule")]
        assert rig.wakes == [T0 + 6 * H * k for k in range(1, 5)]


class FourHourSol:
    """The paper gateway, but the exchange settles SOL-PERP every 4 h (its instruments say so;
    the book file says 8 h)."""

    def __init__(self, inner: PaperGateway, clock: SimClock) -> None:
        self.inner = inner
        self.venue = inner.venue

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def instruments(self, book: Book) -> dict[str, Instrument]:
        out = dict(self.inner.instruments(book))
        sol = out["SOL-PERP"]
        out["SOL-PERP"] = dataclasses.replace(sol, contract=dataclasses.replace(
            sol.contract, funding_interval_h=4.0))
        return out


def test_funding_ahead_follows_the_exchange_s_interval(make: Make) -> None:
    """SOL-PERP settles every 4 h on the exchange: a cycle 30 minutes before each of its six
    settlements of the day (the book's 8 h would have missed three of them)."""
    rig = make(Fixed({}), end=T0 + DAY, gamma_fund=1.0, wrap=FourHourSol,
               triggers=Triggers(funding_ahead=timedelta(minutes=30), check_every=6 * H))
    rig.run()
    funding = [T0 + timedelta(hours=h, minutes=30) for h in (3, 7, 11, 15, 19, 23)]
    got = [(c.time, c.reason) for c in rig.cycles()]
    assert got == [(T0, "start"), *[(t, "funding") for t in funding], (T0 + DAY, "schedule")]


# --- 7. kill file --------------------------------------------------------------------------------

@pytest.mark.parametrize("kill", [True, False])
def test_kill_file_stops_the_loop_before_the_next_cycle(make: Make, tmp_path: Path,
                                                        kill: bool) -> None:
    kill_file = tmp_path / "state" / "KILL"

    def killer(t_from: datetime, t_to: datetime) -> None:
        if kill and t_from < T0 + 6 * H <= t_to:
            kill_file.parent.mkdir(parents=True, exist_ok=True)
            kill_file.touch()

    # off target at the start (a trade at 00:00), back at 50k at 06:00: effective weights
    # 43 / 36 / 24 %, a drift cycle is due
    rig = make(NaiveFutures(band=0.01), prices=BTC_UP, moves={T0 + 6 * H: AT_TARGET},
               hooks=[killer], end=T0 + DAY,
               triggers=Triggers(drift_band=0.02, check_every=6 * H))
    summary = rig.run()

    times = Counter(t.time_ms for _, t in rig.trades())
    if not kill:
        assert summary.status == "finished" and times[ms(T0 + 6 * H)] == 3
        assert rig.alerts("kill") == []
        return
    assert summary.status == "killed" and rig.clock.now() == T0 + 6 * H
    assert times == Counter({ms(T0): 3})  # the start's hedge, nothing after the kill
    assert rig.reasons() == [(T0, "start", "traded")]
    (k,) = rig.alerts("kill")
    assert k.severity.value == "critical" and k.time == T0 + 6 * H
    assert str(kill_file) in k.text
    assert rig.alerts("stop") == []


# --- 8. restart mid-plan -------------------------------------------------------------------------

def _crashed_first_run(make: Make) -> tuple[Rig, list[OrderLeg]]:
    """A loop whose process dies as the plan's second leg is about to go out: (its rig, the legs
    it reached)."""
    seen: list[OrderLeg] = []

    def crash_on_second_leg(leg: OrderLeg) -> None:
        seen.append(leg)
        if len(seen) == 2:
            raise Crash

    first = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H,
                 on_leg=crash_on_second_leg)
    with pytest.raises(Crash):
        first.run()
    return first, seen


def test_restart_resumes_the_plan_a_crash_left_open(make: Make, tmp_path: Path) -> None:
    first, seen = _crashed_first_run(make)
    plan_id = first.state("plan_in_flight")
    assert plan_id is not None and first.journal.plan_status(plan_id) == "open"
    assert [s for s, _ in first.trades()] == ["BTC-PERP"]  # only the first leg went out
    assert first.cycles() == []
    first.journal.close()
    first.store.close()

    # a new process: a fresh journal handle, paper account from its tables, the same clock time
    second = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H)
    second.run()

    (r,) = second.alerts("restart")
    assert r.fields["plan_id"] == plan_id and r.time == T0
    assert second.journal.plan_status(plan_id) == "done"
    assert second.state("plan_in_flight") is None
    target = second.journal.plan(plan_id).reachable
    assert target == pytest.approx(HEDGE_UP)
    for s, q in second.positions().items():
        assert abs(q - target[s]) <= 0.001 * (1 + 1e-9), s
    # each client id filled once; each contract traded once (BTC not re-sent)
    trades = second.trades()
    assert Counter(t.order_id for _, t in trades).most_common(1)[0][1] == 1
    assert sorted(s for s, _ in trades) == sorted(SYMS)
    orders = second.store.orders()
    assert len(orders) == 3 and all(o.exchange_id == f"paper-{cid}" for cid, o in orders.items())
    assert seen[0].client_id in orders and seen[1].client_id not in orders  # re-planned leg
    assert second.reasons() == [(T0, "resume", "traded")]
    # the resumed cycle's turnover is the whole plan's (the crashed run recorded no cycle)
    assert second.cycles()[0].turnover_usd == pytest.approx(TURNOVER_UP, rel=1e-12)
    (t,) = second.alerts("trade")
    assert t.title == "rebalanced (resume)" and t.fields["plan_id"] == plan_id


def test_restart_does_not_resume_a_superseded_plan(make: Make) -> None:
    """A plan a crash left open, then superseded by a newer plan of the account (a manual ``fbr
    execute`` in between): the restart forgets it (nothing to resume, no restart alert) and runs
    the interrupted cycle again at once, which trades the account to the policy's target."""
    first, _ = _crashed_first_run(make)
    plan_id = first.state("plan_in_flight")
    assert plan_id is not None
    old = first.journal.plan(plan_id)
    newer = dataclasses.replace(old, plan_id=old.plan_id[:-4] + "beef", legs=())
    first.journal.record_plan(newer, "", first.runner.account)
    btc_usd = sum(abs(t.contracts) * t.price for s, t in first.trades() if s == "BTC-PERP")
    first.journal.close()
    first.store.close()

    second = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H)
    second.run()
    assert second.alerts("restart") == []
    assert second.journal.plan_status(plan_id) == "superseded"
    assert second.state("plan_in_flight") is None
    # the superseded plan's one fill (its BTC leg) counts toward the day's turnover; then the
    # interrupted cycle runs again
    assert second.reasons() == [(T0, "resume", "recovered"), (T0, "restart", "traded")]
    assert btc_usd > 0 and second.cycles()[0].turnover_usd == pytest.approx(btc_usd, rel=1e-9)
    for s, q in second.positions().items():
        assert abs(q - HEDGE_UP[s]) <= 0.001 * (1 + 1e-9), s


def test_a_plan_finished_before_the_crash_counts_toward_the_daily_turnover(make: Make) -> None:
    """The process dies after every leg filled and was journalled but before the cycle row was
    written. The restart records that plan's fills (1,980 USD) as a recovered cycle, so with a
    2,500 USD daily limit the next drift cycle's 1,700 USD plan is refused (it was sent: 3,680 USD
    in a day)."""
    lim = DailyLimits(turnover_usd=2_500.0)
    first = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + 6 * H, limits=lim)
    inner = first.runner.venue.executor
    assert inner is not None

    class Dies:
        def __init__(self, ex: JournaledExecutor) -> None:
            self.ex = ex

        def execute(self, plan: OrderPlan, book_path: str = "", *,
                    exact: bool = False) -> ExecutionReport:
            self.ex.execute(plan, book_path, exact=exact)  # every leg filled and journalled ...
            raise Crash  # ... then the process dies before the cycle row

        def resume(self, plan_id: str) -> ExecutionReport:
            return self.ex.resume(plan_id)

    first.runner.venue.executor = lambda basis: Dies(inner(basis))  # type: ignore[assignment,return-value]
    with pytest.raises(Crash):
        first.run()
    assert first.cycles() == [] and len(first.trades()) == 3
    first.journal.close()
    first.store.close()

    second = make(NaiveFutures(band=0.01), prices=BTC_UP, moves={T0 + 6 * H: AT_TARGET},
                  end=T0 + 12 * H, limits=lim,
                  triggers=Triggers(drift_band=0.02, check_every=6 * H))
    second.run()
    recovered = [c for c in second.cycles() if c.action == "recovered"]
    assert len(recovered) == 1 and recovered[0].turnover_usd == pytest.approx(TURNOVER_UP, rel=1e-9)
    assert "refused" in [c.action for c in second.cycles()]
    traded_today = sum(abs(t.contracts) * t.price for _, t in second.trades())
    assert traded_today <= 2_500.0


def test_a_daily_limit_alerts_once_a_day(make: Make) -> None:
    """BTC jumps at 06:00 and the drift check runs every hour: each cycle's plan (1,980 USD) passes
    the 1,900 USD turnover limit and is refused, but the limit is alerted once (it was alerted at
    every check: 18 times for one condition)."""
    rig = make(NaiveFutures(band=0.01), moves={T0 + 6 * H: BTC_UP}, end=T0 + 23 * H,
               triggers=Triggers(drift_band=0.05, check_every=H),
               limits=DailyLimits(turnover_usd=1_900.0))
    rig.run()
    refused = [c for c in rig.cycles() if c.action == "refused"]
    assert len(refused) > 5
    assert len(rig.alerts("limit", "daily turnover limit")) == 1


def test_a_margin_episode_alerts_once_across_cron_wakeups(make: Make) -> None:
    """Three processes woken by cron (--once) an hour apart on a book whose margin ratio stays
    above the warning: the episode lives in the run state, so it is alerted once (each process
    alerted it again)."""
    book = _margin_book()
    for hour in range(3):
        rig = make(Fixed({"BTC-PERP": -15_000.0}), book=book, end=T0 + 3 * H,
                   clock_start=T0 + hour * H,
                   triggers=Triggers(margin_ratio=None, margin_warn=0.3, check_every=H))
        rig.runner.settings = dataclasses.replace(rig.runner.settings, once=True)
        rig.run()
        rig.journal.close()
        rig.store.close()
    runs = RunStore(rig.journal.path, rig.runner.account)
    try:
        assert [a[2] for a in runs.alerts() if a[1] == "margin"] == ["margin ratio high"]
    finally:
        runs.close()


@pytest.mark.parametrize(("warn", "alerted"), [(0.75, False), (0.7499, True)])
def test_the_margin_warning_fires_above_the_ratio_not_at_it(make: Make, warn: float,
                                                            alerted: bool) -> None:
    """A 15,000 short at 0.5% maintenance on 100 of cash: ratio 75% exactly. The README says
    'above this margin ratio', as the de-risk compares (it fired at 75%)."""
    rig = make(Fixed({"BTC-PERP": -15_000.0}), book=_margin_book(), end=T0,
               triggers=Triggers(margin_ratio=None, margin_warn=warn, check_every=H))
    rig.run()
    assert bool(rig.alerts("margin", "margin ratio high")) is alerted


# --- 9. dry run ----------------------------------------------------------------------------------

def test_dry_run_records_the_plan_and_sends_nothing(make: Make) -> None:
    rig = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + DAY, dry=True)
    summary = rig.run()

    assert [(c.reason, c.action) for c in rig.cycles()] == [("start", "dry_run"),
                                                            ("schedule", "dry_run")]
    assert rig.cycles()[0].message == "3 legs shown"
    assert rig.trades() == [] and rig.store.orders() == {} and rig.paper.orders == {}
    assert_positions(rig.positions(), {})
    assert rig.journal.plan_ids() == [] and summary.trades == 0
    assert rig.alerts("trade") == []


# --- 10. secrets ---------------------------------------------------------------------------------

def test_a_registered_secret_never_reaches_an_alert(make: Make,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "canary-secret-7c31e"
    monkeypatch.setattr(safety, "_SECRETS", set())
    safety.register_secret(secret)
    rig = make(Fixed({}), end=T0 + 6 * H,
               wrap=lambda p, c: Reads(p, c, FbrError(f"boom {secret}"), fails=1))
    rig.run()

    (down,) = rig.alerts("failure", "account read failed")
    assert down.time == T0 and "boom ***" in down.text and secret not in down.text
    (back,) = rig.alerts("failure", "exchange answers again")
    assert back.time > T0 and "boom ***" in back.text
    for a in rig.sink.alerts:
        body = json.dumps(a.json_body())
        assert secret not in body and secret not in a.text
    assert [(c.reason, c.action) for c in rig.cycles()] == [("read", "failed"),
                                                            ("start", "no_trade")]
    assert rig.cycles()[0].message == "boom ***"
    assert secret not in (rig.tmp / "state" / "health.json").read_text()


def test_a_start_cycle_missed_by_a_failed_read_is_retried_after_retry_every(make: Make) -> None:
    rig = make(Fixed({}), end=T0 + 6 * H,
               wrap=lambda p, c: Reads(p, c, FbrError("exchange down"), fails=1))
    rig.run()
    assert rig.reasons() == [(T0, "read", "failed"), (T0 + timedelta(minutes=5), "start",
                                                       "no_trade")]
