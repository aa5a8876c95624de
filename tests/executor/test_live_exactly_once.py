"""Exactly once, whatever the exchange answers (issue 10, part A), through real ccxt against the
loopback emulator on a simulated clock.

Invariants asserted throughout: per contract, the orders the exchange *accepted* add up to the
plan's trade (no second order); the account ends within one lot step of the target, or the run
ends UNKNOWN naming the leg; the journal's fills equal the exchange's trades.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from binance_emulator import ApiError, BinanceEmulator, Fault
from exec_helpers import SEED_BOOK, SimClock

from executor.base import AmbiguousOrderError, OrderStatus, Outcome
from executor.ccxt_errors import ExchangeSetupError
from executor.ccxt_gateway import CcxtGateway
from executor.ccxt_metadata import with_instruments
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.lock import AccountBusyError, account_lock
from executor.plan import OrderLeg, OrderType, PlanOptions, Side
from executor.safety import Limits
from executor.workflow import Prepared, prepare_plan
from fbr.config import load_book_file
from models.errors import RefusedError

ORDER = "/fapi/v1/order"
TIMEOUT_MS = 400
BINANCE = {"BTC-PERP": "BTCUSDT", "ETH-PERP": "ETHUSDT", "SOL-PERP": "SOLUSDT"}


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing catches it)."""


class Wrapped:
    """``gw`` with some of its methods replaced (a crash, a fault armed at a chosen moment)."""

    def __init__(self, gw: CcxtGateway, **replaced: Any) -> None:
        self._gw, self._replaced, self.venue = gw, replaced, gw.venue

    def __getattr__(self, name: str) -> Any:
        return self._replaced.get(name) or getattr(self._gw, name)


def _emulator(clock: SimClock) -> BinanceEmulator:
    return BinanceEmulator(lag_clock=clock.now).start()


def _setup(emu: BinanceEmulator, tmp_path: Path, limits: Limits | None = None
           ) -> tuple[CcxtGateway, Prepared, Journal, Any]:
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emu.exchange(timeout=TIMEOUT_MS), base_delay_s=0.0)
    options = PlanOptions() if limits is None else PlanOptions(limits=limits)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, options)
    return gw, prep, Journal(tmp_path / "j.sqlite"), loaded.risk


def _executor(gw: Any, prep: Prepared, j: Journal, risk: Any, clock: SimClock,
              **retry: Any) -> JournaledExecutor:
    return JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, risk),
                             retry=RetryPolicy(base_delay_s=0.0, **retry), sleep=clock.sleep)


def _accepted(emu: BinanceEmulator, symbol: str) -> float:
    """Signed contracts the exchange filled on a Binance symbol (all orders)."""
    total: float = sum((t.qty if t.side == "BUY" else -t.qty) for t in emu.trades if t.symbol == symbol)
    return total


def assert_exactly_once(emu: BinanceEmulator, prep: Prepared, j: Journal) -> None:
    """No overshoot per contract, and journal fills == exchange trades per contract."""
    for book_sym, bsym in BINANCE.items():
        want = prep.plan.reachable[book_sym] - prep.plan.start[book_sym]
        got = _accepted(emu, bsym)
        assert got * want >= 0 and abs(got) <= abs(want) + 1e-9, (book_sym, got, want)
        fills = sum(dq for s, dq, _, _ in j.fills_with_legs(prep.plan.plan_id) if s == book_sym)
        assert fills == pytest.approx(got, abs=1e-12), book_sym


def assert_at_target(emu: BinanceEmulator, prep: Prepared) -> None:
    for book_sym, bsym in BINANCE.items():
        assert emu.positions[bsym] == pytest.approx(prep.plan.reachable[book_sym], abs=1e-9)


# --- A1: a lookup can miss an accepted order -------------------------------------------------------

@pytest.mark.parametrize("fault", [Fault.DISCONNECT_AFTER_ACCEPT, Fault.TIMEOUT_AFTER_ACCEPT])
def test_lookup_lag_after_accept_never_leads_to_a_second_order(tmp_path: Path, fault: Fault) -> None:
    """The order is filled, the answer is lost, and `fetch_order` says -2013 for 3 s. One lookup
    used to mean a resend with the same (reusable) client id: a second order."""
    clock = SimClock()
    with _emulator(clock) as emu:
        emu.lookup_lag_s = 3.0
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject(fault, path=ORDER, method="POST", delay_s=1.0)
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        first = prep.plan.legs[0]
        assert len(emu.orders_for(first.client_id)) == 1
        assert report.outcome == Outcome.COMPLETE and report.gaps == {}
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.FILLED
        assert_exactly_once(emu, prep, j)
        assert_at_target(emu, prep)
        j.close()


def test_a_lagging_fill_is_journalled_with_the_trades_price_fee_and_id(tmp_path: Path) -> None:
    """The position shows the whole order at once, its trades only after the 3 s lag. The reconcile
    used to conclude on the position alone: price None, fee 0, no exchange id. By hand: leg 0 sells
    0.012 BTC at the 60,000 mark; fee 0.012 x 60,000 x 0.05% = 0.36 USD."""
    clock = SimClock()
    with _emulator(clock) as emu:
        emu.lookup_lag_s = 3.0
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject(Fault.DISCONNECT_AFTER_ACCEPT, path=ORDER, method="POST", delay_s=1.0)
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        first = prep.plan.legs[0]
        assert (first.symbol, first.side, first.contracts) == ("BTC-PERP", Side.SELL, 0.012)
        (order,) = emu.orders_for(first.client_id)  # never resent
        row = j.order(prep.plan.plan_id, 0)
        assert row.status == OrderStatus.FILLED and row.filled == pytest.approx(0.012)
        assert row.exchange_id == str(order.orderId)
        assert row.average == pytest.approx(60_000.0)
        assert row.fee == pytest.approx(0.36)
        assert "Estimated" not in row.message
        fill = j.fills(prep.plan.plan_id)[0]
        assert fill["price"] == pytest.approx(60_000.0) and fill["fee"] == pytest.approx(0.36)
        assert report.legs[0].average == pytest.approx(60_000.0)
        assert report.legs[0].fee == pytest.approx(0.36)
        assert sum(clock.slept) >= 3.0  # it waited for the trades
        assert report.outcome == Outcome.COMPLETE
        assert_exactly_once(emu, prep, j)
        j.close()


def test_a_fill_the_trades_never_show_is_estimated_never_resent(tmp_path: Path) -> None:
    """The trades stay invisible past the whole 15.75 s window while the position shows the order:
    PLACED and FILLED (no resend), priced at the plan's mark 60,000 with the taker fee
    0.012 x 60,000 x 0.05% = 0.36 USD, no exchange id, and the message says it is estimated."""
    clock = SimClock()
    with _emulator(clock) as emu:
        emu.lookup_lag_s = 100.0
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject(Fault.DISCONNECT_AFTER_ACCEPT, path=ORDER, method="POST", delay_s=1.0)
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        first = prep.plan.legs[0]
        assert first.contracts == 0.012 and first.price == 60_000.0
        posts = [r for r in emu.requests_to(ORDER, "POST")
                 if r.params.get("newClientOrderId") == first.client_id]
        assert len(posts) == 1 and len(emu.orders_for(first.client_id)) == 1
        row = j.order(prep.plan.plan_id, 0)
        assert row.status == OrderStatus.FILLED and row.exchange_id is None
        assert row.average == pytest.approx(60_000.0) and row.fee == pytest.approx(0.36)
        assert "Estimated: 0.012 of 0.012 contracts" in row.message
        assert "mark 60000 USD" in row.message
        assert sum(clock.slept) == pytest.approx(15.75)  # the whole window
        assert report.outcome == Outcome.COMPLETE
        assert_exactly_once(emu, prep, j)
        j.close()


@pytest.mark.parametrize(("asset", "fee", "estimated"), [
    ("USDT", 0.36, False),    # 0.012 x 60,000 x 0.05%
    ("BTC", 0.324, False),    # 0.36 x 0.9 / 60,000 = 0.0000054 BTC, x 60,000 (the fill price)
    ("BNB", 0.324, False),    # 0.00054 BNB at its assetIndex price, 600 USD
    ("XYZ", 0.36, True),      # no assetIndex row for XYZ: the taker fee 0.36 instead
])
def test_trade_fees_in_another_currency_are_counted_in_usd(tmp_path: Path, asset: str, fee: float,
                                                           estimated: bool) -> None:
    """userTrades' commission in the fee-discount asset: the journal used to add 0.00054 BNB as
    0.00054 USD, then the undiscounted taker fee. BNB is priced at the exchange's asset index;
    an asset without one falls back to the taker fee, flagged. The fill reaches the journal
    through the trades (lookup lag 3 s, answer lost)."""
    clock = SimClock()
    with _emulator(clock) as emu:
        emu.lookup_lag_s = 3.0
        emu.commission_asset = asset
        emu.asset_prices["XYZ"] = 2.0  # userTrades can price it; assetIndex does not list it
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject(Fault.DISCONNECT_AFTER_ACCEPT, path=ORDER, method="POST", delay_s=1.0)
        _executor(gw, prep, j, risk, clock).execute(prep.plan)
        first = prep.plan.legs[0]
        assert first.contracts == 0.012
        (order,) = emu.orders_for(first.client_id)
        row = j.order(prep.plan.plan_id, 0)
        assert row.exchange_id == str(order.orderId) and row.average == pytest.approx(60_000.0)
        assert row.fee == pytest.approx(fee, rel=1e-9)
        assert ("Fee estimated: 1 trade(s)" in row.message) == estimated
        assert j.fills(prep.plan.plan_id)[0]["fee"] == pytest.approx(fee, rel=1e-9)
        j.close()


def test_an_order_never_placed_is_resent_only_after_the_whole_window(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject(Fault.TIMEOUT_BEFORE_ACCEPT, path=ORDER, method="POST", delay_s=1.0)
        t0 = clock.now()
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        assert clock.now() - t0 >= sum(RetryPolicy().reconcile_delays_s)  # waited out the window
        row = j.order(prep.plan.plan_id, 0)
        assert row.status == OrderStatus.NOT_PLACED and row.position_before == 0.0
        resent = [r for r in j.orders(prep.plan.plan_id) if r.leg >= len(prep.plan.legs)]
        assert [r.symbol for r in resent] == [prep.plan.legs[0].symbol]  # a fresh leg and id
        assert resent[0].client_id != prep.plan.legs[0].client_id
        assert report.complete
        assert_exactly_once(emu, prep, j)
        assert_at_target(emu, prep)
        j.close()


def test_late_execution_within_the_window_is_found_not_resent(tmp_path: Path) -> None:
    """-1007: accepted, answered "status unknown", executed 4 s later (no lookup finds it before)."""
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject_unknown_status(-1007, after_accept=True, execute_after_s=4.0)
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        assert report.complete
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.FILLED
        assert len(emu.orders_for(prep.plan.legs[0].client_id)) == 1
        assert_exactly_once(emu, prep, j)
        assert_at_target(emu, prep)
        j.close()


def test_an_account_that_cannot_be_read_stops_the_plan_naming_the_leg(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject(Fault.DISCONNECT_AFTER_ACCEPT, path=ORDER, method="POST")
        emu.lookup_lag_s = 1e9

        def blind_after_send(leg: OrderLeg) -> Any:
            for _ in range(200):  # every position read fails for the whole window
                emu.inject(Fault.HTTP_503, path="/fapi/v3/positionRisk", method="GET")
            return gw.create_order(leg)

        report = _executor(Wrapped(gw, create_order=blind_after_send), prep, j, risk,
                           clock).execute(prep.plan)
        leg = prep.plan.legs[0]
        assert report.outcome == Outcome.UNKNOWN
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.UNKNOWN
        assert any(leg.client_id in m and "--resume" in m for m in report.messages)
        assert len(emu.requests_to(ORDER, "POST")) == 1  # nothing more was sent
        j.close()


# --- A2 and A3: -4116 and the "status unknown" answers ------------------------------------------------

def test_duplicate_client_id_means_the_order_exists(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject_error(path=ORDER, method="POST", status=400, code=-4116,
                         msg="ClientOrderId is duplicated.", after_accept=True)
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.FILLED  # never "rejected"
        assert report.complete
        assert_exactly_once(emu, prep, j)
        j.close()


def test_a_real_duplicate_answer_is_ambiguous_with_exists(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw = CcxtGateway(emu.exchange(timeout=TIMEOUT_MS), base_delay_s=0.0)
        gw.instruments(load_book_file(SEED_BOOK).book)
        leg = OrderLeg(0, "fbr-dup-000", "ETH-PERP", "ETH/USDT:USDT", Side.BUY, 0.01, 30.0,
                       3000.0, False, OrderType.MARKET)
        emu.answer_new_next(100.0)  # accepted and open (NEW) for 100 s
        gw.create_order(leg)
        with pytest.raises(AmbiguousOrderError) as info:
            gw.create_order(leg)
        assert info.value.exists and "-4116" in str(info.value)


@pytest.mark.parametrize("after_accept", [True, False])
@pytest.mark.parametrize("code", [-1000, -1001, -1006, -1007])
def test_every_status_unknown_code_is_reconciled(tmp_path: Path, code: int,
                                                 after_accept: bool) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        emu.lookup_lag_s = 2.0
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject_unknown_status(code, after_accept=after_accept)
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        want = OrderStatus.FILLED if after_accept else OrderStatus.NOT_PLACED
        assert j.order(prep.plan.plan_id, 0).status == want
        assert report.complete
        assert_exactly_once(emu, prep, j)
        assert_at_target(emu, prep)
        j.close()


@pytest.mark.parametrize("status", [500, 502, 504])
def test_plain_5xx_after_accept_is_not_a_rejection(tmp_path: Path, status: int) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject_error(path=ORDER, method="POST", status=status, after_accept=True)
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.FILLED
        assert report.complete
        assert_exactly_once(emu, prep, j)
        j.close()


# --- A4: the report compares positions with the targets ---------------------------------------------

def test_a_partial_fill_is_topped_up_in_the_next_round(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.partial_fill_next()
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.PARTIAL
        assert report.complete
        assert_exactly_once(emu, prep, j)
        assert_at_target(emu, prep)
        j.close()


def test_a_gap_left_is_named_and_the_outcome_incomplete(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.partial_fill_next()
        report = _executor(gw, prep, j, risk, clock, max_rounds=1).execute(prep.plan)
        sym = prep.plan.legs[0].symbol
        assert report.outcome == Outcome.INCOMPLETE and not report.complete
        assert set(report.gaps) == {sym}
        half = emu.positions[BINANCE[sym]]
        assert report.gaps[sym] == pytest.approx(half - prep.plan.reachable[sym])
        assert any(m.startswith(f"{sym}:") and "gap" in m for m in report.messages)
        j.close()


# --- A5: one executor per account ------------------------------------------------------------------

def test_a_second_run_on_the_same_account_is_refused(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        with account_lock(gw.account_key()), pytest.raises(AccountBusyError, match="wait"):
            _executor(gw, prep, j, risk, clock).execute(prep.plan)
        assert emu.requests_to(ORDER, "POST") == []
        assert _executor(gw, prep, j, risk, clock).execute(prep.plan).complete  # released
        j.close()


def test_concurrent_resumes_do_not_interleave(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        gate, go = threading.Event(), threading.Event()

        def slow(leg: OrderLeg) -> Any:
            gate.set()
            go.wait(5)
            return gw.create_order(leg)

        results: list[Any] = []

        def first() -> None:
            with Journal(tmp_path / "j.sqlite") as j1:
                ex = _executor(Wrapped(gw, create_order=slow), prep, j1, risk, clock)
                results.append(ex.execute(prep.plan))

        t = threading.Thread(target=first)
        t.start()
        assert gate.wait(10)
        with pytest.raises(AccountBusyError):
            _executor(gw, prep, j, risk, clock).resume(prep.plan.plan_id)
        go.set()
        t.join(20)
        assert results and results[0].complete
        assert_exactly_once(emu, prep, j)
        j.close()


def test_a_crashed_holder_releases_the_lock(tmp_path: Path) -> None:
    lock_dir = tmp_path / "locks"
    root = str(Path(__file__).resolve().parents[2])
    code = (f"import sys, time; sys.path.insert(0, {root!r})\n"
            "from executor.lock import account_lock\n"
            f"with account_lock('acct', __import__('pathlib').Path({str(lock_dir)!r})):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(AccountBusyError, match="pid"), account_lock("acct", lock_dir):
            pass
    finally:
        proc.kill()
        proc.wait()
    with account_lock("acct", lock_dir):  # the dead holder's lock is gone
        pass


# --- A6: resume reads positions; a superseded plan is refused ---------------------------------------

def test_resume_sends_only_what_the_account_still_needs(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        calls = {"n": 0}

        def crash_second(leg: OrderLeg) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                raise Crash()
            return gw.create_order(leg)

        with pytest.raises(Crash):
            _executor(Wrapped(gw, create_order=crash_second), prep, j, risk, clock).execute(prep.plan)
        # meanwhile somebody brought ETH to its target by hand
        eth = prep.plan.legs[1]
        emu.set_position(BINANCE[eth.symbol], prep.plan.reachable[eth.symbol])
        posts = len(emu.requests_to(ORDER, "POST"))
        report = _executor(gw, prep, j, risk, clock).resume(prep.plan.plan_id)
        sent = [r.params["symbol"] for r in emu.requests_to(ORDER, "POST")[posts:]]
        assert sent == [BINANCE[prep.plan.legs[2].symbol]]  # only SOL: ETH is there already
        assert report.complete
        j.close()


def test_a_plan_is_resumed_only_on_its_own_account(tmp_path: Path) -> None:
    """Leg 0 fills on account X and the process dies before journalling it; a resume with account
    Y's keys is refused before anything is read or sent (it reconciled leg 0 against Y, found it
    "not placed", and traded the whole plan on Y)."""
    clock = SimClock()
    with _emulator(clock) as emu_x, BinanceEmulator(api_key="key-Y", secret="sec-Y",
                                                    lag_clock=clock.now).start() as emu_y:
        gw, prep, j, risk = _setup(emu_x, tmp_path)

        def fill_then_die(leg: OrderLeg) -> Any:
            gw.create_order(leg)
            raise Crash()

        with pytest.raises(Crash):
            _executor(Wrapped(gw, create_order=fill_then_die), prep, j, risk, clock).execute(prep.plan)
        gw_y = CcxtGateway(emu_y.exchange(timeout=TIMEOUT_MS), base_delay_s=0.0)
        assert gw_y.account_key() != gw.account_key()
        with pytest.raises(RefusedError, match="another account"):
            _executor(gw_y, prep, j, risk, clock).resume(prep.plan.plan_id)
        assert emu_y.requests_to(ORDER, "POST") == []
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.SENDING  # still in doubt, on X
        report = _executor(gw, prep, j, risk, clock).resume(prep.plan.plan_id)
        assert report.complete
        assert_exactly_once(emu_x, prep, j)
        j.close()


def test_re_planned_legs_keep_the_usd_limits(tmp_path: Path) -> None:
    """Limits of 5,000 USD an order and 10,000 a plan; the process dies before the first send,
    and someone opens 2 BTC (120,000 USD) by hand. The resume re-plans from the account: selling
    2 BTC is 24x the per-order limit, so nothing is sent and the messages name the limit (it sent
    the 120,000 USD order: only the first plan's legs were checked)."""
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path, Limits(max_order_usd=5_000, max_plan_usd=10_000))

        def die(leg: OrderLeg) -> None:
            raise Crash()

        ex = JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments, risk),
                               retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep, on_leg=die)
        with pytest.raises(Crash):
            ex.execute(prep.plan)
        emu.set_position("BTCUSDT", 2.0, 60_000.0)
        report = _executor(gw, prep, j, risk, clock).resume(prep.plan.plan_id)
        assert emu.requests_to(ORDER, "POST") == []
        assert not report.complete and any("per-order limit" in m for m in report.messages)
        j.close()


def test_a_resume_sets_the_account_up_before_it_sends(tmp_path: Path) -> None:
    """The first run ends with leg 0 rejected (insufficient margin); the account is then switched
    to hedge mode. Resuming in a fresh process checks the position mode again and refuses, and
    sends nothing (it skipped the set-up when no leg was in doubt and sent the remaining legs)."""
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        emu.inject(Fault.INSUFFICIENT_MARGIN, path=ORDER, method="POST")
        first = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        assert not first.complete
        posts = len(emu.requests_to(ORDER, "POST"))
        emu.set_hedge_mode(True)
        fresh = CcxtGateway(emu.exchange(timeout=TIMEOUT_MS), base_delay_s=0.0)
        with pytest.raises(ExchangeSetupError, match="one-way"):
            _executor(fresh, prep, j, risk, clock).resume(prep.plan.plan_id)
        assert len(emu.requests_to(ORDER, "POST")) == posts
        j.close()


def test_a_superseded_plan_is_refused(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)

        def crash(leg: OrderLeg) -> Any:
            raise Crash()

        with pytest.raises(Crash):
            _executor(Wrapped(gw, create_order=crash), prep, j, risk, clock).execute(prep.plan)
        loaded = load_book_file(SEED_BOOK)
        prep2 = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                             PlanOptions())
        assert _executor(gw, prep2, j, risk, clock).execute(prep2.plan).complete
        with pytest.raises(RefusedError, match="superseded"):
            _executor(gw, prep, j, risk, clock).resume(prep.plan.plan_id)
        assert j.plan_status(prep.plan.plan_id) == "superseded"
        j.close()


# --- A7: hedge position mode ------------------------------------------------------------------------

def test_hedge_mode_rows_are_netted_and_trading_is_refused(tmp_path: Path) -> None:
    clock = SimClock()
    with _emulator(clock) as emu:
        emu.set_hedge_mode(True)
        emu.set_hedge_position("BTCUSDT", long=0.5, short=0.2)
        loaded = load_book_file(SEED_BOOK)
        gw = CcxtGateway(emu.exchange(timeout=TIMEOUT_MS), base_delay_s=0.0)
        inst = gw.instruments(loaded.book)
        acc = gw.account(with_instruments(loaded.book, inst), loaded.market)
        assert acc.futures["BTC-PERP"].contracts == pytest.approx(0.3)  # long - short, not -0.2
        assert gw.positions(inst)["BTC-PERP"] == pytest.approx(0.3)
        with pytest.raises(ExchangeSetupError, match="one-way"):
            gw.prepare(inst)
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            PlanOptions())
        assert prep.plan.start["BTC-PERP"] == pytest.approx(0.3)
        with Journal(tmp_path / "j.sqlite") as j, pytest.raises(ExchangeSetupError):
            _executor(gw, prep, j, loaded.risk, clock).execute(prep.plan)
        assert emu.requests_to(ORDER, "POST") == []


def test_time_is_simulated() -> None:
    """The reconcile windows above ran on the simulated clock: this module takes seconds."""
    clock = SimClock()
    t0 = time.monotonic()
    clock.sleep(3600.0)
    assert clock.now() == pytest.approx(4600.0) and time.monotonic() - t0 < 1.0


def test_an_unreadable_account_before_a_send_stops_without_sending(tmp_path: Path) -> None:
    """The position read before leg 1 fails every retry: leg 1 is not sent, the report says how
    to go on, and a resume later finishes the plan with one order per contract."""
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        calls = {"n": 0}

        def fails_third_read(instruments: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 3:  # round read, leg 0's read, then leg 1's read
                for _ in range(gw._attempts):
                    emu.inject(Fault.HTTP_503, path="/fapi/v3/positionRisk", method="GET")
            return gw.positions(instruments)

        report = _executor(Wrapped(gw, positions=fails_third_read), prep, j, risk, clock).execute(prep.plan)
        assert report.outcome == Outcome.INCOMPLETE
        assert any("could not be read" in m and "--resume" in m for m in report.messages)
        assert len(emu.requests_to(ORDER, "POST")) == 1
        assert _executor(gw, prep, j, risk, clock).resume(prep.plan.plan_id).complete
        assert_exactly_once(emu, prep, j)
        assert_at_target(emu, prep)
        j.close()


@pytest.mark.parametrize("placed", [True, False])
def test_an_exchange_without_order_and_trade_history_still_reconciles(tmp_path: Path,
                                                                      placed: bool) -> None:
    """allOrders and userTrades are refused for good (a key without that permission): the verdict
    rests on the lookup and the position."""
    clock = SimClock()

    def refuse(params: dict[str, str]) -> object:
        raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")

    with _emulator(clock) as emu:
        for path in ("/fapi/v1/allOrders", "/fapi/v1/userTrades"):
            emu._routes[("GET", path)] = (True, refuse)
        gw, prep, j, risk = _setup(emu, tmp_path)
        fault = Fault.DISCONNECT_AFTER_ACCEPT if placed else Fault.TIMEOUT_BEFORE_ACCEPT
        emu.inject(fault, path=ORDER, method="POST", delay_s=0.0)
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        want = OrderStatus.FILLED if placed else OrderStatus.NOT_PLACED
        assert j.order(prep.plan.plan_id, 0).status == want
        assert report.complete
        assert_at_target(emu, prep)
        assert len(emu.accepted_orders()) == len(prep.plan.legs)
        j.close()


def test_a_status_unknown_answer_on_a_read_is_retried(tmp_path: Path) -> None:
    """-1001 on the position read (ccxt: a plain ExchangeError on this URL) is transient: retried,
    never taken as a verdict or a setup error."""
    clock = SimClock()
    with _emulator(clock) as emu:
        gw, prep, j, risk = _setup(emu, tmp_path)
        for _ in range(2):
            emu.inject_unknown_status(-1001, path="/fapi/v3/positionRisk", method="GET",
                                      after_accept=False)
        report = _executor(gw, prep, j, risk, clock).execute(prep.plan)
        assert report.complete
        assert_exactly_once(emu, prep, j)
        j.close()
