"""An earlier plan's leg in doubt on one exchange instrument, and a new `fbr execute` whose book
now maps that contract to another (a quarterly rolled under the same name): the reconcile would
read the new instrument's trades and position, find no trace of the order, judge it not placed
and send the new plan beside the filled order. The new plan is refused before anything is read
or sent, naming both instruments; with the old mapping the same run reconciles the leg (filled)
and goes on."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, SimClock

from executor.base import ExecutionUnknownError, OrderStatus
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import Instrument, OrderLeg, PlanOptions
from executor.workflow import Prepared, prepare_plan
from fbr.config import load_book_file

ORDER = "/fapi/v1/order"


class Crash(BaseException):
    """The process dies (nothing catches a BaseException)."""


class FillThenDie:
    """The gateway, whose first order goes through before the process dies."""

    def __init__(self, inner: CcxtGateway) -> None:
        self.inner = inner
        self.venue = inner.venue

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create_order(self, leg: OrderLeg) -> Any:
        self.inner.create_order(leg)
        raise Crash()


def _executor(gw: Any, prep: Prepared, instruments: dict[str, Instrument], j: Journal,
              clock: SimClock) -> JournaledExecutor:
    basis = PlanBasis(prep.book, prep.market, instruments, load_book_file(SEED_BOOK).risk)
    return JournaledExecutor(gw, j, basis, retry=RetryPolicy(base_delay_s=0.0), sleep=clock.sleep)


def test_a_leg_in_doubt_on_a_rolled_instrument_stops_the_new_plan(tmp_path: Path) -> None:
    clock = SimClock()
    loaded = load_book_file(SEED_BOOK)
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            PlanOptions())
        j = Journal(tmp_path / "j.sqlite")
        first = prep.plan.legs[0]
        with pytest.raises(Crash):
            _executor(FillThenDie(gw), prep, prep.instruments, j, clock).execute(prep.plan)
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.SENDING
        rolled = dict(prep.instruments)
        old = rolled[first.symbol]
        # another instrument the exchange lists (the emulator's stand-in for the next quarterly)
        other = next(i.exchange_symbol for s, i in prep.instruments.items() if s != first.symbol)
        rolled[first.symbol] = dataclasses.replace(old, exchange_symbol=other)
        again = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                             PlanOptions())
        posts = len(emu.requests_to(ORDER, "POST"))
        with pytest.raises(ExecutionUnknownError) as info:
            _executor(gw, prep, rolled, j, clock).execute(again.plan)
        assert (f"{first.symbol}, client id {first.client_id}) is in doubt on "
                f"{old.exchange_symbol}, which this book now maps to {other}") in str(info.value)
        assert len(emu.requests_to(ORDER, "POST")) == posts  # nothing sent
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.SENDING  # still in doubt
        _executor(gw, prep, prep.instruments, j, clock).execute(again.plan)
        assert j.order(prep.plan.plan_id, 0).status == OrderStatus.FILLED
        j.close()
