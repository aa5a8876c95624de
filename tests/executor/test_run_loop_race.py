"""The daily loop checks its turnover limit (and its gate) on the account it read at the start of
the cycle, before its executor holds the account's lock. When another process trades the account
in between, the executor must send the plan as checked or nothing: it re-planned from the new
positions and sent orders the limit never saw.

Rig (tests/executor/test_run_loop): book 0.1 BTC / 1 ETH / 10 SOL against 50/30/20 at BTC 70,000,
ETH 3,000, SOL 200, no spread or ADV; the naive hedge is -0.014 BTC / +0.2 ETH / +2 SOL =
980 + 600 + 400 = 1,980 USD. Daily turnover limit 2,500 USD. After the loop read the account (flat)
and passed its limit (0 + 1,980 <= 2,500), a manual `fbr execute --exchange paper` (its own
journal and paper-store connections on the same file, the same lock folder) buys 0.01 BTC-PERP
(700 USD). Expected (README, [limits]: manual runs count toward the day): 700 + 1,980 > 2,500, so
the loop sends nothing that day; it sent 2,680 USD re-planned from +0.01 BTC."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import test_run_loop as rig  # tests/executor, on sys.path (its paper venue and clock)
from test_run_loop import BTC_UP, T0, H, Make, ms, snapshot

from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.paper import PaperGateway, PaperStore
from executor.plan import PlanOptions, book_instruments, plan_orders
from executor.run_settings import DailyLimits
from optimizer.policies import NaiveFutures

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir


def _manual_buy(journal_path: Path, clock_ms: Callable[[], int]) -> None:
    """Another process: fbr execute --exchange paper buying 0.01 BTC-PERP (700 USD at 70,000)."""
    book = rig.plain_book()
    market = snapshot(BTC_UP, T0)
    with Journal(journal_path) as j:
        store = PaperStore(j.path, book.name)
        try:
            gw = PaperGateway(book, market, store=store, clock=clock_ms)
            acc = gw.account(book, market)
            inst = book_instruments(acc)
            plan = plan_orders({"BTC-PERP": 700.0}, acc, market, inst, PlanOptions(venue="paper"),
                               now=T0)
            (leg,) = plan.legs
            assert leg.symbol == "BTC-PERP" and leg.contracts == pytest.approx(0.01)
            JournaledExecutor(gw, j, PlanBasis(acc, market, inst), mode="paper",
                              retry=RetryPolicy(base_delay_s=0.0, reconcile_delays_s=()),
                              clock=clock_ms).execute(plan)
        finally:
            store.close()


def test_a_trade_before_the_loop_holds_the_lock_keeps_the_day_within_its_limit(make: Make) -> None:
    loop = make(NaiveFutures(band=0.01), prices=BTC_UP, end=T0 + H,
                limits=DailyLimits(turnover_usd=2_500.0))
    inner = loop.runner.venue.executor
    assert inner is not None
    fired: list[bool] = []

    def executor(basis: PlanBasis) -> JournaledExecutor:
        if not fired:  # the manual run takes the account's lock first
            fired.append(True)
            _manual_buy(loop.journal.path, lambda: ms(loop.clock.now()))
        ex: JournaledExecutor = inner(basis)
        return ex

    loop.runner.venue.executor = executor
    loop.run()
    assert fired
    sent = sum(abs(t.contracts) * t.price for _, t in loop.trades())
    assert sent == pytest.approx(700.0, rel=1e-9)  # the manual buy alone
    first = loop.cycles()[0]
    assert first.action == "failed" and first.message is not None
    assert "the account moved since it was made" in first.message


def test_a_plan_refused_as_moved_is_never_sent_by_a_resume(tmp_path: Path) -> None:
    """Plan P buys 0.02 BTC-PERP (1,400 USD at 70,000) from flat; another process buys 0.01 first;
    P sent exactly is refused (AccountMovedError) and journalled "refused"; `fbr execute --resume
    P` is refused too (it re-planned toward P's target and bought the 0.01 nobody confirmed), the
    account stays at the other process's +0.01, and P is no "last rebalance"."""
    from executor.base import AccountMovedError
    from models.errors import RefusedError

    book = rig.plain_book()
    market = snapshot(BTC_UP, T0)
    path = tmp_path / "journal.sqlite"
    with Journal(path) as j:
        store = PaperStore(j.path, book.name)
        try:
            gw = PaperGateway(book, market, store=store)
            acc = gw.account(book, market)
            inst = book_instruments(acc)
            plan = plan_orders({"BTC-PERP": 1_400.0}, acc, market, inst, PlanOptions(venue="paper"),
                               now=T0)
            _manual_buy(path, lambda: ms(T0))

            def executor() -> JournaledExecutor:
                return JournaledExecutor(gw, j, PlanBasis(acc, market, inst), mode="paper",
                                         retry=RetryPolicy(base_delay_s=0.0, reconcile_delays_s=()))

            with pytest.raises(AccountMovedError):
                executor().execute(plan, exact=True)
            assert j.plan_status(plan.plan_id) == "refused"
            with pytest.raises(RefusedError, match="refused before any order"):
                executor().resume(plan.plan_id)
            assert gw.positions(inst)["BTC-PERP"] == pytest.approx(0.01)
            last = j.last_rebalance("paper", book.name)
            assert last is not None and last.plan_id != plan.plan_id
        finally:
            store.close()


def test_a_margin_de_risk_is_sent_although_the_account_moved(make: Make) -> None:
    """A de-risk skips the gate and the limits, so it is not held to the plan as checked: the
    margin book (short 0.3 BTC-PERP at 50,000 on 100 USD, ratio 75% against a 50% threshold)
    de-risks to 0.9 x 50%: MM 45 USD = 0.5% of 9,000 USD, 0.18 BTC short (test_run_loop's hand
    figures). Another process buys 0.05 BTC-PERP before the loop's executor holds the lock; the
    de-risk re-plans from -0.25 and the account still ends at -0.18 (refused, it would have stayed
    at -0.25, above the threshold's aim until the next wake-up)."""
    book = rig._margin_book()
    market = snapshot(rig.AT_TARGET, T0)
    loop = make(rig.Fixed({"BTC-PERP": -20_000.0}), book=book, end=T0,
                triggers=rig.Triggers(margin_ratio=0.5, check_every=6 * H))
    inner = loop.runner.venue.executor
    assert inner is not None
    fired: list[bool] = []

    def executor(basis: PlanBasis) -> JournaledExecutor:
        if not fired:  # another process buys 0.05 BTC-PERP (2,500 USD) first
            fired.append(True)
            with Journal(loop.journal.path) as j:
                store = PaperStore(j.path, book.name)
                try:
                    gw = PaperGateway(book, market, store=store, clock=lambda: ms(T0))
                    acc = gw.account(book, market)
                    inst = book_instruments(acc)
                    plan = plan_orders({"BTC-PERP": -0.25 * 50_000.0}, acc, market, inst,
                                       PlanOptions(venue="paper"), now=T0)
                    JournaledExecutor(gw, j, PlanBasis(acc, market, inst), mode="paper",
                                      retry=RetryPolicy(base_delay_s=0.0, reconcile_delays_s=()),
                                      clock=lambda: ms(T0)).execute(plan)
                finally:
                    store.close()
        ex: JournaledExecutor = inner(basis)
        return ex

    loop.runner.venue.executor = executor
    loop.run()
    assert fired
    (cycle,) = loop.cycles()
    assert (cycle.reason, cycle.action) == ("margin", "traded")
    assert loop.positions()["BTC-PERP"] == pytest.approx(-0.18, abs=1e-9)
