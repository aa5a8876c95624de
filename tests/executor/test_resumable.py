"""What a resume may do with a journalled plan (executor.resumable): one done is reported and never
traded again, so a resume days later cannot trade the account back to an old target; one of
another account is refused; a stopped one (ended incomplete) is resumed. Real ccxt against the
emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK

from executor.base import Outcome
from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions
from executor.workflow import Prepared, prepare_plan
from fbr.config import load_book_file
from models.errors import RefusedError

ORDER = "/fapi/v1/order"


def _prepared(emu: BinanceEmulator) -> tuple[CcxtGateway, Prepared, PlanBasis]:
    loaded = load_book_file(SEED_BOOK)
    gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings, PlanOptions())
    return gw, prep, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk)


def test_a_done_plan_is_never_traded_again_after_the_account_moved(tmp_path: Path) -> None:
    """A resume of a plan that finished at its target, after the user traded BTC: no order is
    sent (it would have sold the account back to the old target), the report says the plan is
    done and names the move, and the plan stays 'done'."""
    with BinanceEmulator() as emu:
        gw, prep, basis = _prepared(emu)
        j = Journal(tmp_path / "j.sqlite")
        ex = JournaledExecutor(gw, j, basis, retry=RetryPolicy(base_delay_s=0.0))
        assert ex.execute(prep.plan).outcome == Outcome.COMPLETE
        emu.set_position("BTCUSDT", 0.5)  # the user traded since
        posts = len(emu.requests_to(ORDER, "POST"))
        again = ex.resume(prep.plan.plan_id)
        assert len(emu.requests_to(ORDER, "POST")) == posts and emu.positions["BTCUSDT"] == 0.5
        assert again.complete and again.positions["BTC-PERP"] == 0.5
        (msg,) = again.messages
        assert "finished at its target earlier; nothing was sent" in msg
        assert f"BTC-PERP 0.5 (its target {prep.plan.reachable['BTC-PERP']:g})" in msg
        assert j.plan_status(prep.plan.plan_id) == "done"
        j.close()


def test_another_account_s_plan_is_refused(tmp_path: Path) -> None:
    with BinanceEmulator() as emu:
        gw, prep, basis = _prepared(emu)
        j = Journal(tmp_path / "j.sqlite")
        j.record_plan(prep.plan, "", "someone-else")
        with pytest.raises(RefusedError, match="was sent on another account"):
            JournaledExecutor(gw, j, basis, retry=RetryPolicy(base_delay_s=0.0)).resume(
                prep.plan.plan_id)
        assert emu.requests_to(ORDER, "POST") == []
        j.close()


def test_a_stopped_plan_is_resumed(tmp_path: Path) -> None:
    """A plan that ended incomplete (every BTC order refused for margin) is 'stopped'; once the
    refusal is gone a resume sends the missing BTC leg."""
    with BinanceEmulator() as emu:
        gw, prep, basis = _prepared(emu)
        j = Journal(tmp_path / "j.sqlite")
        ex = JournaledExecutor(gw, j, basis, retry=RetryPolicy(base_delay_s=0.0))
        emu.inject_error(path=ORDER, method="POST", status=400, code=-2019,
                         msg="Margin is insufficient.")
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.INCOMPLETE
        assert j.plan_status(prep.plan.plan_id) == "stopped"
        done = ex.resume(prep.plan.plan_id)
        assert done.outcome == Outcome.COMPLETE
        assert emu.positions["BTCUSDT"] == pytest.approx(prep.plan.reachable["BTC-PERP"])
        j.close()
