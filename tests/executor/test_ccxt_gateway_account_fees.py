"""The account's own commission rates: Binance lists 0.02% maker / 0.05% taker for USD-M, and a VIP
tier pays less (``GET /fapi/v1/commissionRate``, through ccxt ``fetch_trading_fee``). The
instruments carry the account's rates, so the optimiser prices trades at what the account pays,
and the fills the executor books are charged at them."""

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
from executor.workflow import prepare_plan
from fbr.config import load_book_file

VIP_TAKER, VIP_MAKER = 0.00036, 0.00016


def test_a_vip_account_s_rates_reach_the_solution_and_the_fills(tmp_path: Path) -> None:
    """The seed book on a VIP account (at the emulator's marks): every contract carries 0.036% /
    0.016%; the solution's fees are 0.036% of the USD it trades; each fill is charged 0.036% of
    its notional."""
    with BinanceEmulator() as emu:
        emu.taker_rate, emu.maker_rate = VIP_TAKER, VIP_MAKER
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        loaded = load_book_file(SEED_BOOK)
        inst = gw.instruments(loaded.book)
        assert {(i.contract.maker_fee, i.contract.taker_fee) for i in inst.values()} == {
            (VIP_MAKER, VIP_TAKER)}
        prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                            PlanOptions())
        traded = sum(abs(t.notional) for t in prep.solution.trades)
        assert prep.solution.costs.fees == pytest.approx(VIP_TAKER * traded, rel=1e-9)
        assert traded > 1_000.0  # the exchange's marks move the trades; every one paid at VIP
        ex = JournaledExecutor(gw, Journal(tmp_path / "j.sqlite"),
                               PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                               retry=RetryPolicy(base_delay_s=0.0))
        report = ex.execute(prep.plan)
        assert report.outcome == Outcome.COMPLETE
        for leg in report.legs:
            assert leg.average is not None
            assert leg.fee == pytest.approx(VIP_TAKER * leg.filled * leg.average, rel=1e-6)
