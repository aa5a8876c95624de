"""Rate limits: Binance answers HTTP 429 with a ``Retry-After`` (seconds) and bans the IP (HTTP 418,
every request refused for minutes to days) when the client calls again before that wait is over.
The emulator does both on a simulated clock; fbr's reads and its reconciliation of an order the
429 left in doubt wait at least that long, so they never earn the ban."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import ccxt
import pytest
import requests
from binance_emulator import BinanceEmulator, Fault
from exec_helpers import SEED_BOOK, SimClock

from executor.base import ExchangeBannedError, OrderState, OrderStatus, Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.ccxt_wiring import MAX_RETRY_AFTER_S, retry_after_s
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import Instrument, OrderLeg, PlanOptions
from executor.workflow import Prepared, prepare_plan
from fbr.config import load_book_file
from models.errors import RefusedError

POSITIONS = "/fapi/v3/positionRisk"
ORDER = "/fapi/v1/order"
BINANCE = {"BTC-PERP": "BTCUSDT", "ETH-PERP": "ETHUSDT", "SOL-PERP": "SOLUSDT"}


def _balance(emu: BinanceEmulator) -> requests.Response:
    """A hand-signed GET /fapi/v2/balance at the emulator's time."""
    query = urlencode({"timestamp": emu.now_ms()})
    sig = hmac.new(b"test-secret", query.encode(), hashlib.sha256).hexdigest()
    return requests.get(f"{emu.base_url}/fapi/v2/balance?{query}&signature={sig}",
                        headers={"X-MBX-APIKEY": "test-key"}, timeout=5)


def _gateway(emu: BinanceEmulator, clock: SimClock) -> tuple[CcxtGateway, dict[str, Instrument]]:
    """A gateway on the simulated clock (backoff 0.25 s) and the seed book's instruments."""
    gw = CcxtGateway(emu.exchange(), base_delay_s=0.25, sleep=clock.sleep, clock=clock.now)
    return gw, gw.instruments(load_book_file(SEED_BOOK).book)


def _rate_limited(clock: SimClock) -> BinanceEmulator:
    emu = BinanceEmulator(lag_clock=clock.now).start()
    emu.retry_after_s = 2
    return emu


def test_a_request_inside_the_retry_after_earns_a_ban_and_one_after_it_does_not() -> None:
    """429 with Retry-After: 2; a request 1 s later: 418 for 120 s (Retry-After counts down), then
    served again; a request 2 s after a 429: served, no ban."""
    clock = SimClock()
    with _rate_limited(clock) as emu:
        emu.inject(Fault.HTTP_429, path="/fapi/v2/balance", method="GET")
        first = _balance(emu)
        assert first.status_code == 429 and first.headers["Retry-After"] == "2"
        clock.sleep(1.0)
        banned = _balance(emu)
        assert banned.status_code == 418 and banned.json()["code"] == -1003
        assert banned.headers["Retry-After"] == "120" and emu.bans == 1
        clock.sleep(100.0)
        assert _balance(emu).headers["Retry-After"] == "20"
        clock.sleep(20.0)
        assert _balance(emu).status_code == 200
        emu.inject(Fault.HTTP_429, path="/fapi/v2/balance", method="GET")
        assert _balance(emu).status_code == 429
        clock.sleep(2.0)
        assert _balance(emu).status_code == 200


def test_retry_after_is_read_from_the_answer_that_raised() -> None:
    """Only on a rate-limit error, from the last answer's headers (any case), capped, else 0."""
    class Ex:
        def __init__(self) -> None:
            self.last_response_headers = {"retry-after": "7"}

    ex = Ex()
    assert retry_after_s(ex, ccxt.RateLimitExceeded("429")) == 7.0
    assert retry_after_s(ex, ccxt.DDoSProtection("418")) == 7.0
    assert retry_after_s(ex, ccxt.RequestTimeout("slow")) == 0.0
    ex.last_response_headers = {"Retry-After": "86400"}
    assert retry_after_s(ex, ccxt.DDoSProtection("418")) == MAX_RETRY_AFTER_S
    ex.last_response_headers = {"Retry-After": "soon"}
    assert retry_after_s(ex, ccxt.RateLimitExceeded("429")) == 0.0
    for odd in ("nan", "inf", "-5"):
        ex.last_response_headers = {"Retry-After": odd}
        assert retry_after_s(ex, ccxt.RateLimitExceeded("429")) == 0.0
    assert retry_after_s(None, ccxt.RateLimitExceeded("429")) == 0.0


def test_a_rate_limited_read_waits_the_retry_after_not_its_backoff() -> None:
    """positionRisk answers 429 (Retry-After 2): the gateway sleeps 2 s, not its 0.25 s backoff,
    and the retried read is served: no ban."""
    clock = SimClock()
    with _rate_limited(clock) as emu:
        gw, instruments = _gateway(emu, clock)
        emu.inject(Fault.HTTP_429, path=POSITIONS, method="GET")
        assert set(gw.positions(instruments)) == set(BINANCE)
        assert clock.slept == [2.0]
        assert emu.bans == 0


def test_an_order_answered_429_is_reconciled_after_the_wait_and_completed_once(tmp_path: Path) -> None:
    """The first order is answered 429 (not processed). The reconciliation's first read waits the
    2 s Retry-After (it used to read at once and earn a 120 s ban, leaving the leg unknown); the
    order is proven not placed, the trade goes out once as a follow-up, the plan completes."""
    clock = SimClock()
    with _rate_limited(clock) as emu:
        loaded = load_book_file(SEED_BOOK)
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
        j = Journal(tmp_path / "j.sqlite")
        emu.inject(Fault.HTTP_429, path=ORDER, method="POST")
        report = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                                   retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep).execute(prep.plan)
        assert clock.slept[0] == 2.0
        assert emu.bans == 0
        assert report.outcome == Outcome.COMPLETE
        first = prep.plan.legs[0]
        assert emu.orders_for(first.client_id) == []
        for book_sym, bsym in BINANCE.items():
            assert emu.positions[bsym] == pytest.approx(prep.plan.reachable[book_sym], abs=1e-9)
        j.close()


def test_a_long_ban_stops_the_gateway_without_another_request() -> None:
    """A ban of an hour (Retry-After 3,600 > the 300 s fbr waits): the read raises
    ExchangeBannedError at once, naming the wait, with no sleep and no retry; every later call
    raises it too without a request (a request inside a ban lengthens it)."""
    clock = SimClock()
    with _rate_limited(clock) as emu:
        emu.ban_s = 3_600
        gw, instruments = _gateway(emu, clock)
        emu.inject(Fault.HTTP_429, path="/fapi/v2/balance", method="GET")
        assert _balance(emu).status_code == 429  # another client on this IP earns the ban ...
        assert _balance(emu).status_code == 418 and emu.bans == 1
        before = len(emu.requests)
        with pytest.raises(ExchangeBannedError, match="asked for 3,600 s without requests"):
            gw.positions(instruments)  # ... and fbr's next read meets it
        assert len(emu.requests) == before + 1 and clock.slept == []
        with pytest.raises(ExchangeBannedError):
            gw.positions(instruments)
        assert len(emu.requests) == before + 1


def test_a_long_ban_ends_at_the_time_asked_and_the_same_gateway_reads_again() -> None:
    """A long-running loop keeps one gateway: 10 s before the hour-long ban ends a read still
    raises ExchangeBannedError without a request (naming the 10 s left); once it has ended the
    same gateway reads again, with no new ban."""
    clock = SimClock()
    with _rate_limited(clock) as emu:
        emu.ban_s = 3_600
        gw, instruments = _gateway(emu, clock)
        emu.inject(Fault.HTTP_429, path="/fapi/v2/balance", method="GET")
        assert _balance(emu).status_code == 429
        assert _balance(emu).status_code == 418 and emu.bans == 1
        with pytest.raises(ExchangeBannedError):
            gw.positions(instruments)
        before = len(emu.requests)
        clock.sleep(3_590.0)
        with pytest.raises(ExchangeBannedError) as late:
            gw.positions(instruments)
        assert late.value.wait_s == pytest.approx(10.0) and len(emu.requests) == before
        clock.sleep(10.0)
        assert set(gw.positions(instruments)) <= set(instruments)
        assert len(emu.requests) > before and emu.bans == 1


def _resumed_only_after_the_wait(emu: BinanceEmulator, clock: SimClock, prep: Prepared,
                                 executor: Callable[[Any], JournaledExecutor]) -> None:
    """After a 1,000 s silence met at ``clock.now()``: a resume 10 s later, on a new gateway (a new
    process), is refused before any request; one after the wait completes the plan, no ban."""
    clock.sleep(10.0)
    before = len(emu.requests)
    with pytest.raises(RefusedError, match="asked this account's runs for silence until"):
        executor(CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)).resume(prep.plan.plan_id)
    assert len(emu.requests) == before
    clock.sleep(990.0)
    done = executor(CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)).resume(
        prep.plan.plan_id)
    assert done.outcome == Outcome.COMPLETE and emu.bans == 0
    for book_sym, bsym in BINANCE.items():
        assert emu.positions[bsym] == pytest.approx(prep.plan.reachable[book_sym], abs=1e-9)


def test_an_order_answered_with_a_long_wait_stops_the_run_and_a_resume_completes_once(
        tmp_path: Path) -> None:
    """The first order is answered 429 with Retry-After 1,000 s: nothing more is sent, the run
    ends UNKNOWN with the leg in doubt and the wait named, and the journal keeps the silence: a
    resume 10 s later is refused before any request (a new process knows it too); 1,000 s
    later a resume on a new gateway finds the order never placed and completes the plan once,
    with no ban."""
    clock = SimClock()
    with _rate_limited(clock) as emu:
        emu.retry_after_s = 1_000
        loaded = load_book_file(SEED_BOOK)
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
        j = Journal(tmp_path / "j.sqlite")
        basis = PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk)

        def executor(gateway: CcxtGateway) -> JournaledExecutor:
            return JournaledExecutor(gateway, j, basis, retry=RetryPolicy(base_delay_s=0.0),
                                     sleep=clock.sleep, clock=lambda: int(1000 * clock.now()))

        emu.inject(Fault.HTTP_429, path=ORDER, method="POST")
        report = executor(gw).execute(prep.plan)
        last = emu.requests[-1]
        assert (last.method, last.path) == ("POST", ORDER)  # the refused order, then silence
        assert report.outcome == Outcome.UNKNOWN and emu.bans == 0
        assert any("asked for 1,000 s without requests" in m for m in report.messages)
        _resumed_only_after_the_wait(emu, clock, prep, executor)
        assert emu.orders_for(prep.plan.legs[0].client_id) == []
        j.close()


class _Wrapped:
    """``gw`` with ``create_order`` replaced."""

    def __init__(self, gw: CcxtGateway, create_order: Callable[[OrderLeg], OrderState]) -> None:
        self._gw, self.create_order, self.venue = gw, create_order, gw.venue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gw, name)


def test_a_long_wait_met_while_reconciling_is_journalled_and_the_resume_waits_for_it(
        tmp_path: Path) -> None:
    """The first order is answered 503 (ambiguous), and the reconcile's first position read is
    answered 429 with Retry-After 1,000 s: the reconcile stops at once (no read inside the wait),
    the run ends UNKNOWN and the journal keeps the silence, so a resume 10 s later is refused
    before any request; one after the wait settles the leg and completes once, with no ban (the
    reconcile used to swallow the wait as a failed read: the resume then met an IP ban)."""
    clock = SimClock()
    with _rate_limited(clock) as emu:
        emu.retry_after_s = 1_000
        loaded = load_book_file(SEED_BOOK)
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0, sleep=clock.sleep,
                         clock=clock.now)
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
        j = Journal(tmp_path / "j.sqlite")
        basis = PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk)

        def executor(gateway: Any) -> JournaledExecutor:
            return JournaledExecutor(gateway, j, basis, retry=RetryPolicy(base_delay_s=0.0),
                                     sleep=clock.sleep, clock=lambda: int(1000 * clock.now()))

        def create_order(leg: OrderLeg) -> OrderState:
            emu.inject(Fault.HTTP_503, path=ORDER, method="POST")
            try:
                return gw.create_order(leg)
            finally:
                emu.inject(Fault.HTTP_429, path="/fapi/v3/positionRisk", method="GET")

        report = executor(_Wrapped(gw, create_order)).execute(prep.plan)
        assert report.outcome == Outcome.UNKNOWN and emu.bans == 0
        assert j.silence_until(gw.account_key()) == int(1000 * clock.now()) + 1_000_000
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.SENDING  # in doubt
        _resumed_only_after_the_wait(emu, clock, prep, executor)
        j.close()


def test_the_funding_history_under_a_long_wait_stops_the_gateway_too() -> None:
    """The income history answered 429 with Retry-After 3,600: ExchangeBannedError at once (one
    request, no sleep), and the gateway sends nothing more."""
    clock = SimClock()
    with _rate_limited(clock) as emu:
        emu.retry_after_s = 3_600
        gw, instruments = _gateway(emu, clock)
        emu.inject(Fault.HTTP_429, path="/fapi/v1/income", method="GET")
        with pytest.raises(ExchangeBannedError, match="asked for 3,600 s"):
            gw.funding_history(0, instruments)
        assert len(emu.requests_to("/fapi/v1/income")) == 1 and clock.slept == []
        before = len(emu.requests)
        with pytest.raises(ExchangeBannedError):
            gw.positions(instruments)
        assert len(emu.requests) == before and emu.bans == 0
