"""Market-order size caps: Binance's MARKET_LOT_SIZE (120 BTC on BTCUSDT, against 1,000 for limit
orders) reaches the instruments through real ccxt, and an order above it is split into legs the
emulator accepts, one order per leg."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from binance_emulator import BinanceEmulator
from exec_helpers import SEED_BOOK, solution_with

from executor.ccxt_gateway import CcxtGateway
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.plan import PlanOptions, plan_orders
from executor.safety import Limits
from fbr.config import load_book_file

ORDER = "/fapi/v1/order"


def test_market_order_cap_reaches_the_instruments_and_splits_big_orders(tmp_path: Path) -> None:
    with BinanceEmulator(balance_usdt=50_000_000.0) as emu:
        gw = CcxtGateway(emu.exchange(timeout=400), base_delay_s=0.0)
        loaded = load_book_file(SEED_BOOK)
        inst = gw.instruments(loaded.book)
        assert inst["BTC-PERP"].contract.max_qty == 120.0  # MARKET_LOT_SIZE, not LOT_SIZE's 1000
        assert inst["ETH-PERP"].contract.max_qty == 10_000.0  # no separate market cap
        book = loaded.book  # spot only, no positions
        mark = emu.marks["BTCUSDT"]
        target = -250.0 * mark  # 250 BTC short: three near-equal orders under the 120 cap
        sol = solution_with({"BTC-PERP": target, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
        market = replace(loaded.market, mark={**loaded.market.mark, "BTC-PERP": mark})
        opts = PlanOptions(limits=Limits(max_order_usd=math.inf, max_plan_usd=math.inf))
        plan = plan_orders(sol, book, market, inst, opts, risk=loaded.risk)
        btc = [leg for leg in plan.legs if leg.symbol == "BTC-PERP"]
        assert [leg.contracts for leg in btc] == [83.334, 83.333, 83.333]
        ex = JournaledExecutor(gw, Journal(tmp_path / "j.sqlite"),
                               PlanBasis(book, market, inst, loaded.risk),
                               retry=RetryPolicy(base_delay_s=0.0))
        ex.execute(plan)
        for leg in btc:  # one accepted order per leg, none rejected for size
            assert len(emu.orders_for(leg.client_id)) == 1
            posts = [r for r in emu.requests_to(ORDER, "POST")
                     if r.params.get("newClientOrderId") == leg.client_id]
            assert len(posts) == 1 and float(posts[0].params["quantity"]) == leg.contracts
        assert emu.positions["BTCUSDT"] == -250.0
