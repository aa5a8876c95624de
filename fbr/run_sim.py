"""``fbr run --simulate``: the loop over the file's market path on a simulated clock and the paper
venue, the very policy object ``fbr backtest`` replays.

The clock starts at the path's first step and ends at its last and stops only at the path's steps
(:class:`PathClock`); the loop keeps the run file's schedule (``interval`` / ``cron``), a scheduled
time the path has no step for served at the next step. Each jump to a later step k moves the
paper exchange to the step's market (``scenarios.replay_inputs.market_at``: closes,
marks, funding, spreads, ADV) and impact vols, and pays every funding settlement in
(t_{k-1}, t_k] at step k's marks, as the backtest's funding step does; a dated position whose
expiry T the jump reaches settles at the underlying's spot at T (interpolated between the steps
around T, the backtest's settlement price and fee: :func:`expiry_spots`,
``PaperGateway.settle_expired``), a fill of the paper account. The loop then reads the
account, asks the policy, plans and executes through the journaled executor (the run file's
``max_order_usd`` / ``max_plan_usd``). After the step's funding the paper exchange applies the
exchange's liquidation rule at the backtest's penalty (``PaperGateway.liquidate_if_due``; each
liquidation a CRITICAL margin alert and in :attr:`Simulation.liquidations`). With the gate off,
every trigger off, a schedule firing at every step (``interval`` = the path's step), lot-free or
lot-aligned contracts, no min notional and orders within the limits, its trades are the
backtest's (``tests/fbr/test_run_cli.py`` checks it to 1e-9, ``tests/fbr/test_run_sim_dated.py``
with an expiry on the path); the loop does not sweep collateral or trade spot, so compare with
``[backtest] collateral = false`` and a futures policy.

The loop's risk model (its cost gate, the tracking error it records, the plans' residual TE) is
read at each cycle time t and never looks past it (:func:`loop_risk`): the book's model is used
as it is only when it does not look ahead (given, or estimated on data up to the path's start) or
``[backtest] risk_model = "book"`` asks for it; otherwise it is re-estimated from returns up to t,
as ``fbr backtest`` does for the policies with a risk model (fbr.backtest_risk).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from executor.alerts import AlertHub
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.paper import PaperGateway, PaperStore
from executor.paper_margin import Liquidation, liquidation_alert
from executor.plan import OrderType, PlanOptions, with_book_settings
from executor.run_loop import Runner, RunSummary, Venue
from executor.run_settings import RunSettings
from executor.safety import Limits
from executor.schedule import SimClock
from fbr.backtest_config import BacktestConfig
from fbr.backtest_risk import risk_input, risk_lookahead, utc
from fbr.backtest_run import backtest_options
from fbr.run_config import RunConfig
from fbr.run_wiring import loop_policy
from models.book import Book
from models.errors import ValidationError
from optimizer.policies import OptimizedFutures, Policy
from optimizer.te_band import RiskInput, TrackingErrorBandFutures
from scenarios.backtest_result import BacktestResult
from scenarios.market_path import MarketPath
from scenarios.replay import policy_costs
from scenarios.replay_inputs import ReplayInputs, market_at, read_inputs
from scenarios.replay_steps import expiry_prices


@dataclasses.dataclass
class HistoryFeed:
    """Moves a paper gateway along ``inputs`` as a simulated clock advances."""

    inputs: ReplayInputs
    paper: PaperGateway
    k: int = 0
    vol: dict[str, float] = dataclasses.field(default_factory=dict)
    book: Book | None = None
    alerts: AlertHub | None = None
    liquidations: list[Liquidation] = dataclasses.field(default_factory=list)

    def vol_at(self, k: int) -> dict[str, float]:
        """Daily impact vol per contract at step k (0 where unknown or without ADV)."""
        if self.inputs.vol is None:
            return {c: 0.0 for c in self.inputs.cons}
        row = self.inputs.vol[k]
        return {c: (float(v) if math.isfinite(v) else 0.0)
                for c, v in zip(self.inputs.cons, row.tolist(), strict=True)}

    def advance(self, t_from: datetime, t_to: datetime) -> None:
        """Step through every path step after the current one up to the last at or before
        ``t_to`` (a wake-up may pass several: ``check_every`` longer than the path's step), each
        as the backtest steps: its market (dated positions it reaches the expiry of settle at
        :func:`expiry_spots`), then its funding at its marks, then the exchange's liquidation rule
        (:meth:`PaperGateway.liquidate_if_due`, at the backtest's penalty; reported by
        :meth:`liquidated`)."""
        del t_from
        ns = pd.Timestamp(t_to).value
        k = int(np.searchsorted(self.inputs.step_ns, ns, side="right")) - 1
        for m in range(self.k + 1, k + 1):
            self._step(m)

    def _step(self, m: int) -> None:
        """Move the paper exchange from step m - 1 to step m (see :meth:`advance`)."""
        lo, hi = int(self.inputs.settled[m - 1]), int(self.inputs.settled[m])
        prices = expiry_spots(self.book, self.inputs, m - 1, m) if self.book is not None else None
        self.k = m
        self.vol.clear()
        self.vol.update(self.vol_at(m))
        self.paper.set_market(market_at(self.inputs, m), self.vol, prices)
        if hi > lo:
            rates = self.inputs.settle_r[lo:hi].sum(axis=0)
            self.paper.settle_funding(dict(zip(self.inputs.cons, rates.tolist(), strict=True)))
        event = self.paper.liquidate_if_due(self.inputs.liquidation_penalty)
        if event is not None:
            self.liquidated(event)

    def liquidated(self, event: Liquidation) -> None:
        """Keep ``event`` and send its CRITICAL margin alert (the loop's alert hub)."""
        self.liquidations.append(event)
        if self.alerts is not None:
            liquidation_alert(self.alerts, event)


def expiry_spots(book: Book, inputs: ReplayInputs, k0: int, k: int) -> dict[str, float]:
    """Per dated contract whose expiry T is in (t_k0, t_k]: the price the backtest settles it at,
    on the first step m at or after T (``scenarios.replay_steps.expiry_prices``: the spot
    interpolated linearly in time between steps m - 1 and m), USD."""
    out: dict[str, float] = {}
    for sym, expiry in inputs.expiries.items():
        m = int(np.searchsorted(inputs.step_ns, expiry, side="left"))
        if k0 < m <= k:
            out[sym] = expiry_prices(book, inputs, m)[sym]
    return out


@dataclasses.dataclass
class PathClock(SimClock):
    """A simulated clock that stops only at the path's step times ``steps`` (ascending, UTC): a
    wake-up the loop asks for at t (its schedule, ``check_every``, a retry) lands on the first
    step at or after t. So every read and cycle sees the market of its own time, and a scheduled
    time the path has no bar for (a gap in the data) is served at the next step, as a loop whose
    exchange was down then runs its overdue cycle when it answers again."""

    steps: tuple[datetime, ...] = ()

    def sleep_until(self, t: datetime, stop: Callable[[], bool]) -> None:
        """Jump to the first step at or after ``t`` (the last step when none is)."""
        k = bisect.bisect_left(self.steps, t)
        super().sleep_until(self.steps[min(k, len(self.steps) - 1)] if self.steps else t, stop)


@dataclasses.dataclass(frozen=True)
class Simulation:
    """A simulated loop's summary, the labels its output carries (:func:`lookahead_labels`) and
    the paper account's liquidations (:meth:`HistoryFeed.liquidated`)."""

    summary: RunSummary
    labels: list[str]
    liquidations: list[Liquidation] = dataclasses.field(default_factory=list)

    def liquidation_doc(self) -> dict[str, object]:
        """``{count, penalty, insurance_fund, events}`` (USD; events: :meth:`Liquidation.doc`)."""
        return {"count": len(self.liquidations),
                "penalty": sum(e.penalty for e in self.liquidations),
                "insurance_fund": sum(e.insurance for e in self.liquidations),
                "events": [e.doc() for e in self.liquidations]}


def simulate(cfg: RunConfig, path: MarketPath, journal_path: Path, state_dir: Path,
             alerts: AlertHub, preflight: Callable[[], None] | None = None) -> Simulation:
    """Run the loop of ``cfg`` over ``path`` on the paper venue (journal at ``journal_path``)."""
    bt = cfg.backtest
    book = bt.loaded.book
    policy = loop_policy(cfg, bt, path)
    risk = loop_risk(bt, policy, path)
    labels = lookahead_labels(bt, risk, path)
    opts = backtest_options(bt)
    inputs = read_inputs(book, path, spot_fee=opts.get("spot_fee"), impact_k=1.0,
                         liquidation_penalty=opts.get("liquidation_penalty", 0.01),
                         costs=policy_costs(policy))
    start = inputs.times[0].to_pydatetime()
    with Journal(journal_path) as journal:
        store = PaperStore(journal.path, book.name)
        try:
            paper = PaperGateway(book, market_at(inputs, 0), store=store,
                                 clock=lambda: int(clock.now().timestamp() * 1000))
            feed = HistoryFeed(inputs, paper, book=book, alerts=alerts)
            feed.vol.update(feed.vol_at(0))
            paper.set_market(market_at(inputs, 0), feed.vol)
            clock = PathClock(start, end=inputs.times[-1].to_pydatetime(),
                              on_advance=[feed.advance],
                              steps=tuple(t.to_pydatetime() for t in inputs.times))
            runner = _runner(cfg, (policy, risk), paper, journal, journal_path, feed, clock,
                             state_dir, alerts)
            return Simulation(runner.run(preflight), labels, feed.liquidations)
        finally:
            store.close()


def loop_risk(bt: BacktestConfig, policy: Policy, path: MarketPath) -> RiskInput:
    """The simulated loop's risk model, risk(t) (annualised covariance) at each cycle time t: the
    policy's own per-time model when it has one (its trailing estimate, so gate and policy agree),
    else :func:`fbr.backtest_risk.risk_input` of an entry without risk keys: the book's model when
    it does not look ahead (given, or estimated up to the path's start) or ``risk_model = "book"``
    asks for it, else a trailing estimate on daily returns up to t. Refused (ValidationError, before
    any work) when fewer than ``MIN_RISK_ROWS`` returns precede the path's start for that estimate."""
    if isinstance(policy, OptimizedFutures | TrackingErrorBandFutures) and callable(policy.risk):
        return policy.risk
    try:
        return risk_input({}, bt, path)
    except ValidationError as exc:
        raise ValidationError(exc.field, "the simulated loop's cost gate and recorded tracking "
                              f"error need a risk model without look-ahead, and {exc.problem}",
                              exc.fix) from exc


def lookahead_labels(bt: BacktestConfig, risk: RiskInput, path: MarketPath) -> list[str]:
    """"LOOK-AHEAD" when the loop reads the book's model as it is (``risk_model = "book"``) and
    that model is estimated on data after the path's first step (as ``fbr backtest`` labels it);
    none otherwise (a given model, one estimated before the start, or a per-time estimate)."""
    t_book = risk_lookahead(bt, path)
    if callable(risk) or t_book is None:
        return []
    return [f"LOOK-AHEAD: the loop's risk model (its cost gate, recorded tracking error and the "
            f"policy's, if it reads one) is the book's full-sample model, estimated on data up to "
            f"{t_book:%Y-%m-%d}, after the simulation's start {utc(path.spot.index[0]):%Y-%m-%d} "
            '(backtest.risk_model = "book")']


def _runner(cfg: RunConfig, policy_risk: tuple[Policy, RiskInput], paper: PaperGateway,
            journal: Journal, journal_path: Path, feed: HistoryFeed, clock: SimClock,
            state_dir: Path, alerts: AlertHub) -> Runner:
    """The loop on the paper venue, on the run file's schedule (``interval`` / ``cron``; the
    clock wakes only at the path's steps, :class:`PathClock`) and order limits (``max_order_usd``,
    ``max_plan_usd``, as ``fbr run`` passes them), with the policy and the loop's risk model
    (:func:`loop_risk`)."""
    policy, risk = policy_risk
    settings = cfg.backtest.loaded.settings
    run_settings = RunSettings(schedule=cfg.schedule, mode="paper", gate=cfg.gate,
                               health_file=state_dir / "health.json",
                               kill_file=state_dir / "KILL", triggers=cfg.triggers,
                               limits=cfg.limits, costs=settings.costs)
    options = with_book_settings(PlanOptions(venue="paper", order_type=OrderType(cfg.order_type),
                                             limits=Limits(cfg.max_order_usd, cfg.max_plan_usd)),
                                 settings)

    def executor(basis: PlanBasis) -> JournaledExecutor:
        return JournaledExecutor(paper, journal, basis, mode="paper",
                                 retry=RetryPolicy(base_delay_s=0.0, reconcile_delays_s=(),
                                                   settle_s=0.0),
                                 clock=lambda: int(clock.now().timestamp() * 1000))

    venue = Venue(paper, journal_path, journal, executor,
                  fallback=lambda t: market_at(feed.inputs, feed.k),
                  daily_vol=feed.vol)
    loaded = cfg.backtest.loaded
    return Runner(venue, loaded.book, risk, policy, run_settings, options, clock, alerts,
                  gamma_fund=settings.costs.gamma_fund)


def backtest_trades(result: BacktestResult) -> pd.DataFrame:
    """The futures trades of a backtest: time, symbol, quantity (contracts, signed)."""
    t = result.trades
    return t.loc[t["kind"] == "futures", ["time", "symbol", "quantity"]].reset_index(drop=True)
