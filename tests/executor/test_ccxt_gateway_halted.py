"""A contract the exchange does not trade now (Binance exchangeInfo ``status`` SETTLING while it
delists a perpetual, DELIVERING at a quarterly's delivery, CLOSE after): every order on it is
refused (-1122), so the optimiser holds its position and hedges with the others, and a plan
from a solution that still trades it drops its parts and says why. The markets are
read afresh each time the instruments are (a loop of months must see a status, a lot step or a
cap change: ccxt keeps the first ``load_markets`` otherwise)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK

from executor.base import Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions, plan_orders
from executor.workflow import account_view, orderable_solution, prepare_plan
from fbr.config import load_book_file

ORDER = "/fapi/v1/order"


def test_a_status_change_is_read_the_next_time_the_instruments_are() -> None:
    with BinanceEmulator() as emu:
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        book = load_book_file(SEED_BOOK).book
        assert {s: i.halted for s, i in gw.instruments(book).items()} == dict.fromkeys(
            ("BTC-PERP", "ETH-PERP", "SOL-PERP"), None)
        emu.status["SOLUSDT"] = "SETTLING"
        halted = {s: i.halted for s, i in gw.instruments(book).items()}
        assert halted == {"BTC-PERP": None, "ETH-PERP": None, "SOL-PERP": "SETTLING"}


def test_the_solve_holds_a_halted_contract_and_sends_the_rest(tmp_path: Path) -> None:
    """The seed book (short BTC 1,000 USD, long ETH 500, long SOL 500) while SOLUSDT settles: the
    optimiser holds the SOL position and hedges with BTC and ETH (not the trades of a solve that
    could move SOL); no SOL order reaches the exchange, BTC and ETH are sent once each."""
    with BinanceEmulator() as emu:
        emu.status["SOLUSDT"] = "SETTLING"
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        loaded = load_book_file(SEED_BOOK)
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            PlanOptions())
        assert prep.market.halted == {"SOL-PERP": "SETTLING"}
        assert {leg.symbol for leg in prep.plan.legs} == {"BTC-PERP", "ETH-PERP"}
        assert prep.plan.dropped == ()
        trades = prep.solution.trade_vector()
        assert trades.get("SOL-PERP", 0.0) == 0.0
        assert any("SOL-PERP is held at its position" in m for m in prep.solution.messages)
        free = orderable_solution(prep.book, replace(prep.market, halted={}), loaded.risk,
                                  loaded.settings).trade_vector()
        assert abs(free["SOL-PERP"]) > 400.0 and abs(free["BTC-PERP"] - trades["BTC-PERP"]) > 1.0
        ex = JournaledExecutor(gw, Journal(tmp_path / "j.sqlite"),
                               PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                               retry=RetryPolicy(base_delay_s=0.0))
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.COMPLETE
        sent = [r.params["symbol"] for r in emu.requests_to(ORDER, "POST")]
        assert sorted(sent) == ["BTCUSDT", "ETHUSDT"] and emu.positions["SOLUSDT"] == 0.0


def test_a_solution_that_trades_a_halted_contract_has_its_legs_dropped_with_the_reason() -> None:
    """The planner's own guard: a solution made without the status (it trades SOL) becomes a plan
    without SOL legs, naming why and the tracking error the SOL leg leaves."""
    with BinanceEmulator() as emu:
        emu.status["SOLUSDT"] = "SETTLING"
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        loaded = load_book_file(SEED_BOOK)
        acc, market, instruments = account_view(gw, loaded.book, loaded.market)
        stale = orderable_solution(acc, replace(market, halted={}), loaded.risk, loaded.settings)
        plan = plan_orders(stale, acc, market, instruments, PlanOptions(), risk=loaded.risk)
        assert {leg.symbol for leg in plan.legs} == {"BTC-PERP", "ETH-PERP"}
        (sol,) = plan.dropped
        assert sol.symbol == "SOL-PERP" and sol.notional > 400.0
        assert sol.reason == "SOL/USDT:USDT does not trade now (exchange status SETTLING)"
        assert sol.tracking_error_left is not None and sol.tracking_error_left > 0.0
