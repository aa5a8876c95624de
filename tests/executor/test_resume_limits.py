"""A resume of a plan whose process died before its first send sends the plan's own legs: they are
checked against the USD limits at today's marks, as re-planned legs are
(tests/executor/test_live_exactly_once.py::test_re_planned_legs_keep_the_usd_limits); they were
not, so after the market moved an order far above --max-order-usd went out (a review of crash
recovery).

By hand: seed_example_1 on the emulator's account and marks: leg 0 sells 0.012 BTC (720 USD at
the 60,000 mark). Limits: 800 USD an order. The process dies before the first send (nothing
journalled as sent). BTC's mark then goes to 90,000: that same order is 0.012 x 90,000 = 1,080 USD
> 800: it must be refused (nothing sent), as a re-planned leg of that size is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, SimClock

from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import OrderLeg, PlanOptions
from executor.safety import Limits
from executor.workflow import account_view, prepare_plan
from fbr.config import load_book_file

ORDER = "/fapi/v1/order"


class Crash(BaseException):
    """The process dies."""


def test_resume_after_a_move_keeps_the_per_order_limit(tmp_path: Path) -> None:
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        loaded = load_book_file(SEED_BOOK)
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            PlanOptions(limits=Limits(max_order_usd=800, max_plan_usd=10_000)))
        btc = prep.plan.legs[0]
        assert btc.symbol == "BTC-PERP" and abs(btc.notional) == pytest.approx(720, rel=1e-9)
        j = Journal(tmp_path / "j.sqlite")

        def die(leg: OrderLeg) -> Any:
            raise Crash()

        with pytest.raises(Crash):
            JournaledExecutor(gw, j, PlanBasis(prep.book, prep.market, prep.instruments,
                                               loaded.risk), retry=RetryPolicy(base_delay_s=0.0),
                              sleep=clock.sleep, on_leg=die).execute(prep.plan)
        j.close()
        assert emu.requests_to(ORDER, "POST") == []

        emu.set_mark("BTCUSDT", 90_000.0)  # the market moved before the resume
        # a new process: fresh journal connection and ccxt client, the account view of now
        j2 = Journal(tmp_path / "j.sqlite")
        gw2 = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        acc, market, inst = account_view(gw2, loaded.book, loaded.market)
        assert market.mark_price("BTC-PERP") == pytest.approx(90_000.0)
        report = JournaledExecutor(gw2, j2, PlanBasis(acc, market, inst, loaded.risk),
                                   retry=RetryPolicy(base_delay_s=0.0),
                                   sleep=clock.sleep).resume(prep.plan.plan_id)
        sent_btc = [r for r in emu.requests_to(ORDER, "POST") if r.params.get("symbol") == "BTCUSDT"]
        usd = [float(r.params["quantity"]) * 90_000.0 for r in sent_btc]
        j2.close()
        assert usd == [], f"BTC orders of {usd} USD sent past the 800 USD per-order limit"
        assert any("per-order limit" in m for m in report.messages)
