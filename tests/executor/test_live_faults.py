"""The ccxt executor against the Binance emulator (real ccxt, loopback only) under injected faults.

Each test asserts what the exchange saw: exactly one accepted order per contract's trade (none for
a leg the exchange rejected for good), a client id never sent twice, and never a resend without a
reconcile against the account first. Reconcile windows run on a no-op sleep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from binance_emulator import BinanceEmulator, Fault
from exec_helpers import SEED_BOOK

from executor.base import OrderStatus
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import OrderLeg, PlanOptions
from executor.workflow import Prepared, prepare_plan
from fbr.config import load_book_file

ORDER = "/fapi/v1/order"
TIMEOUT_MS = 400


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing catches it)."""


def _setup(emulator: BinanceEmulator, tmp_path: Path) -> tuple[CcxtGateway, Prepared, Journal, Any]:
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emulator.exchange(timeout=TIMEOUT_MS), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
    return gw, prep, Journal(tmp_path / "j.sqlite"), loaded.risk


def _executor(gw: Any, prep: Prepared, j: Journal, risk: Any) -> JournaledExecutor:
    return JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, risk),
                             retry=RetryPolicy(base_delay_s=0.0), sleep=lambda s: None)


def _symbol_posts(emulator: BinanceEmulator, symbol: str) -> int:
    return sum(1 for r in emulator.requests_to(ORDER, "POST") if r.params.get("symbol") == symbol)


def _symbol_orders(emulator: BinanceEmulator, symbol: str) -> int:
    return sum(1 for o in emulator.accepted_orders() if o.symbol == symbol)


def _posts(emulator: BinanceEmulator, cid: str) -> int:
    return sum(1 for r in emulator.requests_to(ORDER, "POST") if r.params.get("newClientOrderId") == cid)


def _lookups(emulator: BinanceEmulator, cid: str) -> int:
    return sum(1 for r in emulator.requests_to(ORDER, "GET") if r.params.get("origClientOrderId") == cid)


def test_plan_has_three_legs_on_the_emulator(emulator: BinanceEmulator, tmp_path: Path) -> None:
    _, prep, j, _ = _setup(emulator, tmp_path)
    j.close()
    assert [leg.exchange_symbol for leg in prep.plan.legs] == ["BTC/USDT:USDT", "ETH/USDT:USDT",
                                                                "SOL/USDT:USDT"]


@pytest.mark.parametrize(("fault", "posts"), [
    (Fault.TIMEOUT_AFTER_ACCEPT, 1),   # accepted, answer lost: found by client id, not resent
    (Fault.TIMEOUT_BEFORE_ACCEPT, 2),  # dropped: proven absent, then one fresh leg
    (Fault.HTTP_429, 2),
    (Fault.HTTP_503, 2),
])
def test_ambiguous_failures_end_with_one_order_per_leg(emulator: BinanceEmulator, tmp_path: Path,
                                                       fault: Fault, posts: int) -> None:
    gw, prep, j, risk = _setup(emulator, tmp_path)
    emulator.inject(fault, path=ORDER, method="POST", delay_s=1.0)
    report = _executor(gw, prep, j, risk).execute(prep.plan)
    j.close()
    first = prep.plan.legs[0]
    for leg in prep.plan.legs:
        assert _posts(emulator, leg.client_id) == 1, leg  # no client id is ever sent twice
        assert _symbol_orders(emulator, leg.exchange_symbol.split("/")[0] + "USDT") == 1, leg
    assert _symbol_posts(emulator, "BTCUSDT") == posts
    assert len(emulator.orders_for(first.client_id)) == (1 if posts == 1 else 0)
    post_t = min(r.time for r in emulator.requests_to(ORDER, "POST"))
    reads = [r for r in emulator.requests_to("/fapi/v3/positionRisk") if r.time > post_t]
    assert reads  # reconciled against the account before anything else was sent
    assert report.complete
    assert report.positions == pytest.approx(prep.plan.target)
    # the emulator's positions agree (Binance ids)
    want = {"BTCUSDT": prep.plan.target["BTC-PERP"], "ETHUSDT": prep.plan.target["ETH-PERP"],
            "SOLUSDT": prep.plan.target["SOL-PERP"]}
    assert emulator.positions == pytest.approx(want)


@pytest.mark.parametrize(("fault", "text"), [(Fault.MIN_NOTIONAL, "InvalidOrder"),
                                             (Fault.INSUFFICIENT_MARGIN, "insufficient margin")])
def test_definite_rejections_are_not_retried(emulator: BinanceEmulator, tmp_path: Path,
                                             fault: Fault, text: str) -> None:
    gw, prep, j, risk = _setup(emulator, tmp_path)
    emulator.inject(fault, path=ORDER, method="POST")
    report = _executor(gw, prep, j, risk).execute(prep.plan)
    first, *rest = prep.plan.legs
    assert _posts(emulator, first.client_id) == 1 and not emulator.orders_for(first.client_id)
    assert _lookups(emulator, first.client_id) == 0
    for leg in rest:
        assert len(emulator.orders_for(leg.client_id)) == 1
    assert report.legs[0].status == "rejected" and text in report.legs[0].message
    assert j.order(prep.plan.plan_id, 0).status == OrderStatus.REJECTED
    assert not report.complete and report.positions["BTC-PERP"] == 0.0
    j.close()


@pytest.mark.parametrize("after_send", [True, False])
def test_crash_between_legs_then_resume(emulator: BinanceEmulator, tmp_path: Path,
                                        after_send: bool) -> None:
    """A crash right after leg 0 was accepted (journal still says ``sending``), or right before leg
    1 goes out; a fresh process resumes the plan from the journal."""
    gw, prep, j, risk = _setup(emulator, tmp_path)
    calls = {"n": 0}

    class Crashing:
        venue = gw.venue

        def __getattr__(self, name: str) -> Any:
            return getattr(gw, name)

        def create_order(self, leg: OrderLeg) -> Any:
            calls["n"] += 1
            if after_send and calls["n"] == 1:
                gw.create_order(leg)
                raise Crash()
            if not after_send and calls["n"] == 2:
                raise Crash()
            return gw.create_order(leg)

    with pytest.raises(Crash):
        _executor(Crashing(), prep, j, risk).execute(prep.plan)
    j.close()
    pid = prep.plan.plan_id
    # a new process: new journal connection, new ccxt client
    j2 = Journal(tmp_path / "j.sqlite")
    gw2 = CcxtGateway(emulator.exchange(timeout=TIMEOUT_MS), base_delay_s=0.0)
    gw2.instruments(prep.book)
    report = _executor(gw2, prep, j2, risk).resume(pid)
    for leg in prep.plan.legs:  # one accepted order per contract, no client id sent twice
        assert _symbol_orders(emulator, leg.exchange_symbol.split("/")[0] + "USDT") == 1, leg
        assert _posts(emulator, leg.client_id) <= 1, leg
    assert report.complete and j2.plan_status(pid) == "done"
    assert emulator.positions == pytest.approx(
        {"BTCUSDT": prep.plan.target["BTC-PERP"], "ETHUSDT": prep.plan.target["ETH-PERP"],
         "SOLUSDT": prep.plan.target["SOL-PERP"]})
    # resuming a finished plan sends nothing more
    n_posts = len(emulator.requests_to(ORDER, "POST"))
    _executor(gw2, prep, j2, risk).resume(pid)
    assert len(emulator.requests_to(ORDER, "POST")) == n_posts
    j2.close()


def test_a_lookup_that_keeps_failing_is_settled_by_the_position(
        emulator: BinanceEmulator, tmp_path: Path) -> None:
    """Every order lookup fails, but the position shows the whole order: filled, not resent."""
    gw, prep, j, risk = _setup(emulator, tmp_path)
    emulator.inject(Fault.TIMEOUT_AFTER_ACCEPT, path=ORDER, method="POST", delay_s=1.0)
    for _ in range(40):
        emulator.inject(Fault.HTTP_503, path=ORDER, method="GET")
    report = _executor(gw, prep, j, risk).execute(prep.plan)
    first = prep.plan.legs[0].client_id
    assert report.legs[0].status == "filled" and "position" in report.legs[0].message
    assert _posts(emulator, first) == 1 and len(emulator.orders_for(first)) == 1
    assert report.complete
    j.close()


def test_reads_retry_network_errors_with_backoff(emulator: BinanceEmulator) -> None:
    delays: list[float] = []
    gw = CcxtGateway(emulator.exchange(timeout=TIMEOUT_MS), base_delay_s=0.25, sleep=delays.append)
    loaded = load_book_file(SEED_BOOK)
    inst = gw.instruments(loaded.book)
    emulator.inject(Fault.HTTP_503, path="/fapi/v3/positionRisk", method="GET")
    emulator.inject(Fault.HTTP_429, path="/fapi/v3/positionRisk", method="GET")
    from executor.ccxt_metadata import with_instruments

    acc = gw.account(with_instruments(loaded.book, inst), loaded.market)
    assert acc.futures == {} and acc.cash == pytest.approx(100_000.0)
    assert delays == [0.25, 0.5]  # exponential backoff, two retries
    assert len(emulator.requests_to("/fapi/v3/positionRisk")) == 3
    assert gw.ex.options["maxRetriesOnFailure"] == 0


def test_exchange_metadata_and_tiers_reach_the_instruments(emulator: BinanceEmulator) -> None:
    gw = CcxtGateway(emulator.exchange(timeout=TIMEOUT_MS), base_delay_s=0.0)
    inst = gw.instruments(load_book_file(SEED_BOOK).book)
    btc, sol = inst["BTC-PERP"].contract, inst["SOL-PERP"].contract
    # emulator: BTCUSDT step 0.001, tick 0.1, min notional 100; SOLUSDT step 1
    assert (btc.lot_step, btc.tick, btc.min_notional, btc.contract_size) == (0.001, 0.1, 100.0, 1.0)
    assert sol.lot_step == 1.0
    b0, b1 = btc.tiers.brackets[:2]
    assert (b0.max_notional, b0.max_leverage, b0.mmr) == (300_000.0, 125.0, 0.004)
    # continuity of MM at the first edge: 0.004 x 300k = 0.01 x 300k - cum_1
    assert b1.cum == pytest.approx(0.01 * 300_000 - 0.004 * 300_000)
