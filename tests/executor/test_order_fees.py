"""A filled order's journal fee is what the account paid (executor.order_fees): Binance's order
answer carries no commission, so the fee had been the taker schedule, 10% above what an account
with the BNB fee discount pays, while the same fill settled by a reconcile was journalled at the
trades' commission. Real ccxt against the emulator (commission in BNB at its 600 USD index)."""

from __future__ import annotations

from pathlib import Path

import pytest
from binance_emulator import BinanceEmulator
from exec_helpers import SimClock, seed_executor

from executor.base import Outcome

T0_MS = 1_750_000_000_000


def test_a_plain_fill_is_journalled_at_the_commission_charged(tmp_path: Path) -> None:
    clock = SimClock()
    with BinanceEmulator(lag_clock=clock.now).start() as emu:
        emu.set_time(T0_MS + int(1000 * clock.now()))  # the exchange and the executor agree
        emu.commission_asset = "BNB"  # the BNB discount: 10% off, paid in BNB
        prep, j, ex = seed_executor(emu, tmp_path / "j.sqlite", clock, t0_ms=T0_MS)
        assert ex.execute(prep.plan).outcome == Outcome.COMPLETE
        for leg in prep.plan.legs:
            row = j.order(prep.plan.plan_id, leg.index)
            price = prep.market.mark_price(leg.symbol)
            # by hand: |contracts| x mark x 0.05% taker x (1 - 10%) (the fill is at the mark)
            hand = abs(row.filled) * price * 0.0005 * 0.9
            assert row.fee == pytest.approx(hand, rel=1e-9), (leg.symbol, row.fee, hand)
            fills = [f for f in j.fills(prep.plan.plan_id) if f["leg"] == leg.index]
            assert sum(f["fee"] for f in fills) == pytest.approx(hand, rel=1e-9)
        j.close()
