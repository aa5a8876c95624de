"""Seeded chaos: hundreds of executions through real ccxt against the emulator, each under a random
fault schedule, on a simulated clock (lookup lags and reconcile windows take no real time).

Each run starts the account at random positions (so plans hold reduce-only legs and sign flips),
plans the seed book on it, and executes with faults armed at random on order sends (timeouts before
and after accept, 429, plain 5xx, each Binance "status unknown" code before and after accept, late
execution up to 100 s, partial fills, a market order answered NEW that fills 0-200 s later), lookup
lags of 0-60 s per order (past the ~16 s backoff one time in ten), failing reads (503, 429, and
the status-unknown codes), and a kill at a random gateway call. A killed run, or one that ended
UNKNOWN (exit 5) or INCOMPLETE (exit 4), is followed by a recovery as a user would make it: a
resume, two concurrent resumes, or a re-run (a new plan) before the old plan's resume. Recovery
repeats (faults cleared at the last try) until the plan is complete or the attempts run out.

Invariants, per run:
- no duplicate order: no client id accepted twice, and per contract the exchange's fills never
  overshoot the trade from the start to the target (same sign, no more);
- the account ends within one lot step of the target, or the last run ended UNKNOWN naming its leg;
- the journal's fills equal the exchange's fills per contract (less the fills of legs still in
  doubt when the run ended UNKNOWN);
- a concurrent resume is refused, and a superseded plan's resume is refused;
- no IP ban: every 429 asks for a 2 s Retry-After, and no request comes inside it (a 418 would).

``FBR_CHAOS_RUNS`` sets the number of runs (default 300).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from binance_emulator import BinanceEmulator, Fault
from exec_helpers import SEED_BOOK, SimClock

from executor.base import ExecutionReport, ExecutionUnknownError, Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.lock import AccountBusyError
from executor.plan import PlanOptions
from executor.workflow import Prepared, prepare_plan
from fbr.config import load_book_file
from models.errors import RefusedError

RUNS = int(os.environ.get("FBR_CHAOS_RUNS", "300"))
ORDER = "/fapi/v1/order"
READS = ("/fapi/v3/positionRisk", "/fapi/v1/order", "/fapi/v1/allOrders", "/fapi/v1/userTrades")
BINANCE = {"BTC-PERP": "BTCUSDT", "ETH-PERP": "ETHUSDT", "SOL-PERP": "SOLUSDT"}
STEP = {"BTCUSDT": 0.001, "ETHUSDT": 0.001, "SOLUSDT": 1.0}
START = {"BTCUSDT": (-0.02, 0.0, 0.02), "ETHUSDT": (0.0, 0.1), "SOLUSDT": (-3.0, 0.0, 6.0)}


class Crash(BaseException):
    """The process dies (not an Exception: nothing catches it)."""


@dataclass
class Tally:
    """Counts over all runs (printed at the end)."""

    runs: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    recoveries: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    orders: int = 0
    refused_concurrent: int = 0
    refused_superseded: int = 0
    refused_in_doubt: int = 0
    interim: Counter[str] = field(default_factory=Counter)


class Chaos:
    """A gateway wrapper that arms random faults before order sends and reads, and kills the run
    at gateway call number ``kill_at`` (before or after the call goes through)."""

    def __init__(self, inner: CcxtGateway, emu: BinanceEmulator, rng: np.random.Generator,
                 tally: Tally, *, kill_at: int | None, p_fault: float) -> None:
        self.inner, self.emu, self.rng, self.tally = inner, emu, rng, tally
        self.venue = inner.venue
        self.kill_at = kill_at
        self.kill_after = bool(rng.random() < 0.5)
        self.p = p_fault
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if name == "create_order":
                self._arm_order_fault()
            elif name in ("positions", "find_order", "orders_since", "trades_since"):
                self._arm_read_fault()
            if self.calls == self.kill_at and not self.kill_after:
                raise Crash
            out = target(*args, **kwargs)
            if self.calls == self.kill_at:
                raise Crash
            return out

        return call

    def _arm_order_fault(self) -> None:
        if self.rng.random() >= self.p:
            return
        kind = int(self.rng.integers(0, 10))
        emu = self.emu
        if kind == 0:
            emu.inject(Fault.TIMEOUT_BEFORE_ACCEPT, path=ORDER, method="POST", delay_s=0.0)
            name = "timeout_before_accept"
        elif kind == 1:
            emu.inject(Fault.DISCONNECT_AFTER_ACCEPT, path=ORDER, method="POST")
            name = "timeout_after_accept"
        elif kind == 2:
            emu.inject(Fault.HTTP_429, path=ORDER, method="POST")
            name = "http_429"
        elif kind == 3:
            status = int(self.rng.choice([500, 502, 503, 504]))
            after = bool(self.rng.random() < 0.5)
            emu.inject_error(path=ORDER, method="POST", status=status, after_accept=after)
            name = f"http_{status}_{'after' if after else 'before'}"
        elif kind in (4, 5, 6):
            code = int(self.rng.choice([-1000, -1001, -1006, -1007]))
            after = bool(self.rng.random() < 0.7)
            # late execution: within the backoff window, or past it within the settle time
            late = float(self.rng.uniform(0.0, 100.0)) if after and self.rng.random() < 0.4 else 0.0
            emu.inject_unknown_status(code, after_accept=after, execute_after_s=late)
            name = f"code_{code}_{'late' if late else 'after' if after else 'before'}"
        elif kind == 7:
            emu.inject_error(path=ORDER, method="POST", status=400, code=-4116,
                             msg="ClientOrderId is duplicated.", after_accept=True)
            name = "dup_4116_after"
        elif kind == 8:
            emu.partial_fill_next()
            name = "partial_fill"
        else:
            late = float(self.rng.uniform(0.0, 200.0))  # often past the window, at times past settle_s
            emu.answer_new_next(late)
            name = "answered_new"
        self.tally.faults[name] += 1

    def _arm_read_fault(self) -> None:
        if self.rng.random() >= self.p / 4:
            return
        path = READS[int(self.rng.integers(0, len(READS)))]
        u = self.rng.random()
        if u < 0.2:
            code = int(self.rng.choice([-1000, -1001, -1006, -1007]))
            self.emu.inject_unknown_status(code, path=path, method="GET", after_accept=False)
            self.tally.faults[f"read_code_{code}"] += 1
            return
        fault = Fault.HTTP_503 if u < 0.6 else Fault.HTTP_429
        self.emu.inject(fault, path=path, method="GET")
        self.tally.faults[f"read_{fault.value}"] += 1


def _gateway(emu: BinanceEmulator, clock: SimClock) -> CcxtGateway:
    return CcxtGateway(emu.exchange(timeout=1500), base_delay_s=0.05, sleep=clock.sleep)


def _executor(gw: Any, prep: Prepared, j: Journal, risk: Any,
              clock: SimClock) -> JournaledExecutor:
    return JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, risk),
                             retry=RetryPolicy(base_delay_s=0.05), sleep=clock.sleep)


@dataclass
class Run:
    """One chaos run's world."""

    seed: int
    tmp: Path
    tally: Tally
    loaded: Any = None
    emu: BinanceEmulator = field(init=False)
    clock: SimClock = field(default_factory=SimClock)
    rng: np.random.Generator = field(init=False)
    start: dict[str, float] = field(default_factory=dict)
    plans: list[Prepared] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def recorded(self, prep: Prepared) -> bool:
        """True when the plan is in the journal (a kill can come before it is written)."""
        with self.journal() as j:
            return any(prep.plan.plan_id == p for p in j.plan_ids())

    def journal(self) -> Journal:
        return Journal(self.tmp / f"chaos-{self.seed}.sqlite")

    def prepare(self) -> Prepared:
        gw = _gateway(self.emu, self.clock)
        prep = prepare_plan(gw, self.loaded.book, self.loaded.market, self.loaded.risk,
                            self.loaded.settings, PlanOptions())
        self.plans.append(prep)
        return prep

    def attempt(self, prep: Prepared, *, resume: bool, kill: bool, p_fault: float
                ) -> ExecutionReport | None:
        """One execute or resume in a fresh 'process'; None when it was killed."""
        n_calls = 60
        kill_at = int(self.rng.integers(1, n_calls)) if kill else None
        gw = Chaos(_gateway(self.emu, self.clock), self.emu, self.rng, self.tally,
                   kill_at=kill_at, p_fault=p_fault)
        j = self.journal()
        try:
            ex = _executor(gw, prep, j, self.loaded.risk, self.clock)
            return ex.resume(prep.plan.plan_id) if resume else ex.execute(prep.plan)
        except Crash:
            self.tally.kills += 1
            return None
        finally:
            j.close()


def _concurrent_resume(run: Run, prep: Prepared) -> ExecutionReport | None:
    """Two resumes at once: exactly one may run; the other is refused at once."""
    results: list[ExecutionReport | None] = []
    refused: list[BaseException] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(2)

    def one() -> None:
        gw = _gateway(run.emu, run.clock)
        j = run.journal()
        try:
            gate.wait(10)
            results.append(_executor(gw, prep, j, run.loaded.risk, run.clock).resume(
                prep.plan.plan_id))
        except AccountBusyError as exc:
            refused.append(exc)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            j.close()

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) + len(refused) == 2, (run.seed, errors)
    run.tally.refused_concurrent += len(refused)
    return results[0] if results else None


def _recover(run: Run, prep: Prepared, report: ExecutionReport | None) -> tuple[Prepared,
                                                                               ExecutionReport]:
    """Recovery after a kill, an UNKNOWN (exit 5) or an INCOMPLETE (exit 4) end, as a user would
    recover: resume (or re-run); returns the plan that finished and its report."""
    for k in range(4):
        if report is not None and report.outcome == Outcome.COMPLETE:
            return prep, report
        if report is not None:  # exit 4 or 5: the user resumes
            run.tally.interim[report.outcome.value] += 1
        last = k == 3
        p_fault = 0.0 if last else 0.15
        if last:
            run.emu.faults.queue.clear()
        how = "resume" if last else str(run.rng.choice(["resume", "concurrent", "rerun"]))
        if not run.recorded(prep):  # killed before the plan reached the journal: run it again
            run.tally.recoveries["execute_again"] += 1
            report = run.attempt(prep, resume=False, kill=False, p_fault=p_fault)
            continue
        run.tally.recoveries[how] += 1
        if how == "concurrent":
            report = _concurrent_resume(run, prep)
        elif how == "rerun" and report is None:
            old, new = prep, run.prepare()
            try:
                r = run.attempt(new, resume=False, kill=False, p_fault=p_fault)
            except ExecutionUnknownError:  # the old plan still has an order in doubt: not sent
                run.tally.refused_in_doubt += 1
                continue
            prep, report = new, r
            with run.journal() as j, pytest.raises(RefusedError, match="superseded"):
                _executor(_gateway(run.emu, run.clock), old, j, run.loaded.risk,
                          run.clock).resume(old.plan.plan_id)
            run.tally.refused_superseded += 1
        else:
            report = run.attempt(prep, resume=True, kill=not last and run.rng.random() < 0.3,
                                 p_fault=p_fault)
    assert report is not None
    return prep, report


def _check(run: Run, prep: Prepared, report: ExecutionReport) -> None:
    emu = run.emu
    ids = Counter(o.clientOrderId for o in emu.accepted_orders())
    dup_ids = [c for c, n in ids.items() if n > 1]
    filled = {s: 0.0 for s in BINANCE.values()}
    for t in emu.trades:
        filled[t.symbol] += t.qty if t.side == "BUY" else -t.qty
    final = prep.plan.reachable
    overshoot = []
    for book_sym, bsym in BINANCE.items():
        need = final[book_sym] - run.start[bsym]
        tol = STEP[bsym] * 1e-6
        if filled[bsym] * need < -tol or abs(filled[bsym]) > abs(need) + tol:
            overshoot.append((book_sym, filled[bsym], need))
    run.tally.duplicates += len(dup_ids) + len(overshoot)
    run.tally.orders += len(ids)
    assert not dup_ids and not overshoot, (run.seed, dup_ids, overshoot)
    with run.journal() as j:
        in_doubt = {r.client_id for p in run.plans for r in j.orders(p.plan.plan_id)
                    if r.status.value in ("sending", "unknown", "open")}
        journal = {s: 0.0 for s in BINANCE}
        for p in run.plans:
            for sym, dq, _, _ in j.fills_with_legs(p.plan.plan_id):
                journal[sym] += dq
    doubt = {s: 0.0 for s in BINANCE.values()}
    for o in emu.accepted_orders():
        if o.clientOrderId in in_doubt:
            doubt[o.symbol] += o.executedQty if o.side == "BUY" else -o.executedQty
    for book_sym, bsym in BINANCE.items():
        assert journal[book_sym] == pytest.approx(filled[bsym] - doubt[bsym], abs=1e-9), (
            run.seed, book_sym)
    run.tally.outcomes[report.outcome.value] += 1
    if report.outcome == Outcome.UNKNOWN:
        assert any("client id" in m for m in report.messages), (run.seed, report.messages)
        return
    assert report.outcome == Outcome.COMPLETE, (run.seed, report.outcome, report.messages)
    for book_sym, bsym in BINANCE.items():
        assert abs(emu.positions[bsym] - final[book_sym]) < STEP[bsym] * (1 - 1e-9), (
            run.seed, book_sym, emu.positions[bsym], final[book_sym])


def _lookup_lag(rng: np.random.Generator) -> float:
    """An order's lookup lag (s): none half the time, 0-5 s mostly, 5-60 s (past the backoff
    window, within the settle time) one time in ten."""
    u = rng.random()
    return float(rng.uniform(5.0, 60.0)) if u < 0.1 else float(rng.uniform(0.0, 5.0)) if u < 0.5 else 0.0


def _one(seed: int, tmp: Path, tally: Tally, loaded: Any) -> None:
    run = Run(seed, tmp, tally, loaded)
    with BinanceEmulator(lag_clock=run.clock.now) as emu:
        run.emu = emu
        emu.retry_after_s = 2  # a 429 asks for 2 s; a request inside them earns a 418 ban
        emu.lookup_lag_s = lambda: _lookup_lag(run.rng)
        for bsym, choices in START.items():
            q = float(run.rng.choice(choices))
            run.start[bsym] = q
            if q:
                emu.set_position(bsym, q)
        prep = run.prepare()
        kill = bool(run.rng.random() < 0.4)
        report = run.attempt(prep, resume=False, kill=kill, p_fault=0.5)
        prep, report = _recover(run, prep, report)
        _check(run, prep, report)
        assert emu.bans == 0, (run.seed, "a request inside a 429's Retry-After: IP banned")
    tally.runs += 1


def test_chaos_exactly_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_book_file(SEED_BOOK)
    tally = Tally()
    for seed in range(RUNS):
        _one(seed, tmp_path, tally, loaded)
    with capsys.disabled():
        print(f"\nchaos: {tally.runs} runs, {tally.orders} accepted orders, "
              f"{tally.duplicates} duplicates; outcomes {dict(tally.outcomes)}; kills "
              f"{tally.kills}; recoveries {dict(tally.recoveries)}; refused concurrent "
              f"{tally.refused_concurrent}, superseded {tally.refused_superseded}, in doubt "
              f"{tally.refused_in_doubt}; interim outcomes resumed {dict(tally.interim)}; faults "
              f"{sum(tally.faults.values())} {dict(sorted(tally.faults.items()))}")
    assert tally.runs == RUNS and tally.duplicates == 0
    assert sum(tally.faults.values()) >= RUNS  # the schedule really was chaotic
