"""Paper execution: fills at mark plus slippage, fees, book updates, the seed example end to end,
and a crash between legs followed by resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from exec_helpers import SEED_BOOK, market, three_asset_book

from executor.base import OrderStatus, planned_vs_filled
from executor.journal import Journal
from executor.live import JournaledExecutor, PlanBasis, RetryPolicy
from executor.paper import PaperGateway, PaperStore, apply_fill, paper_book
from executor.plan import OrderLeg, OrderType, PlanOptions, Side
from executor.workflow import prepare_plan
from fbr.config import load_book_file
from models.book import FuturesPosition
from models.instruments import FuturesContract, Settlement


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing catches it)."""


def _leg(symbol: str, side: Side, q: float, *, limit: float | None = None,
         reduce_only: bool = False) -> OrderLeg:
    return OrderLeg(0, "fbrtest-000", symbol, "X", side, q, 0.0, 0.0, reduce_only,
                    OrderType.LIMIT if limit else OrderType.MARKET, limit)


def test_fill_at_mark_plus_half_spread_and_fee() -> None:
    book = three_asset_book()
    m = dataclasses.replace(market(), half_spread={"BTC-PERP": 0.0002})
    gw = PaperGateway(book, m)
    st = gw.create_order(_leg("BTC-PERP", Side.SELL, 0.017))
    # sell: 60000 x (1 - 0.0002) = 59988; fee 0.05% x 0.017 x 60000 (at mark, as the backtest)
    assert st.status == OrderStatus.FILLED and st.average == pytest.approx(59_988.0)
    assert st.fee == pytest.approx(0.0005 * 0.017 * 60_000.0, rel=1e-12)
    after = gw.account(book, m)
    btc = after.futures["BTC-PERP"]
    assert btc.contracts == -0.017 and btc.entry_price == pytest.approx(59_988.0)
    assert after.cash == pytest.approx(3000.0 - 0.0005 * 0.017 * 60_000.0, rel=1e-12)


def test_square_root_impact_moves_the_fill() -> None:
    book = three_asset_book()
    m = dataclasses.replace(market(), adv={"ETH-PERP": 1e6})
    gw = PaperGateway(book, m, daily_vol={"ETH-PERP": 0.04})
    st = gw.create_order(_leg("ETH-PERP", Side.BUY, 4.0))
    # half spread 0; impact 1 x 0.04 x sqrt(10000 / 1e6) = 0.004 -> 2500 x 1.004
    assert st.average == pytest.approx(2510.0)


def test_a_limit_beyond_the_fill_is_cancelled() -> None:
    book = three_asset_book()
    m = dataclasses.replace(market(), half_spread={"ETH-PERP": 0.001})
    gw = PaperGateway(book, m)
    st = gw.create_order(_leg("ETH-PERP", Side.BUY, 0.2, limit=2501.0))  # fill 2502.5 > 2501
    assert st.status == OrderStatus.CANCELED and st.filled == 0.0
    assert gw.account(book, m).futures == {}


def test_apply_fill_realises_pnl_by_hand() -> None:
    c = FuturesContract("X", "X")
    pos, r = apply_fill(FuturesPosition(1.0, 100.0), -0.4, 110.0, c)
    assert pos is not None and pos.contracts == pytest.approx(0.6) and pos.entry_price == 100.0
    assert r == pytest.approx(0.4 * 10.0)
    pos, r = apply_fill(pos, -1.6, 120.0, c)  # closes 0.6 at +20, opens -1 at 120
    assert pos is not None and pos.contracts == pytest.approx(-1.0) and pos.entry_price == 120.0
    assert r == pytest.approx(0.6 * 20.0)
    pos, r = apply_fill(FuturesPosition(1.0, 100.0), 1.0, 200.0, c)
    assert pos is not None and pos.contracts == 2.0 and pos.entry_price == pytest.approx(150.0)
    assert r == 0.0
    inv = FuturesContract("I", "X", settlement=Settlement.INVERSE, contract_size=100.0)
    # 10 contracts of 100 USD long from 50000, closed at 60000: 1000 x (1/50000 - 1/60000) x 60000
    pos, r = apply_fill(FuturesPosition(10.0, 50_000.0), -10.0, 60_000.0, inv)
    assert pos is None and r == pytest.approx(1000.0 * (1 / 50_000 - 1 / 60_000) * 60_000)


def _seed_run(tmp_path: Path, gateway_wrap=None,  # type: ignore[no-untyped-def]
              options: PlanOptions | None = None):
    loaded = load_book_file(SEED_BOOK)
    j = Journal(tmp_path / "j.sqlite")
    gw = PaperGateway(loaded.book, loaded.market, store=PaperStore(j.path, loaded.book.name))
    prep = prepare_plan(gw, loaded.book, loaded.market, loaded.risk, loaded.settings,
                        options or PlanOptions())
    runner_gw = gateway_wrap(gw) if gateway_wrap else gw
    ex = JournaledExecutor(runner_gw, j, PlanBasis(prep.book, prep.market, prep.instruments, loaded.risk),
                           retry=RetryPolicy(base_delay_s=0.0), mode="paper", sleep=lambda s: None)
    return loaded, j, prep, ex


def test_paper_execution_of_the_seed_example_reaches_the_target(tmp_path: Path) -> None:
    loaded, j, prep, ex = _seed_run(tmp_path)
    report = ex.execute(prep.plan)
    j.close()
    assert report.complete and len(report.legs) == 3
    # the seed answer by hand: B x = w* V - spot, V = 10,000 USD of spot
    prices = {"BTC": 60_000.0, "ETH": 2_500.0, "SOL": 150.0}
    spot = {"BTC": 6000.0, "ETH": 2500.0, "SOL": 1500.0}
    w = {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}
    for a in prices:
        c = next(c for c in loaded.book.contracts if c.underlying == a)
        want = (w[a] * 10_000.0 - spot[a]) / prices[a]
        assert abs(report.positions[c.symbol] - want) <= c.lot_step + 1e-12
    e = {a: (spot[a] + report.positions[f"{a}-PERP"] * prices[a]) / 10_000.0 for a in prices}
    assert e == pytest.approx(w, abs=1e-6)
    assert report.tracking_error_residual == pytest.approx(0.0, abs=1e-6)


def test_paper_crash_between_legs_then_resume_sends_each_trade_once(tmp_path: Path) -> None:
    calls = {"n": 0}

    class CrashAfterFirst:
        def __init__(self, inner: PaperGateway) -> None:
            self.inner = inner
            self.venue = inner.venue

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.inner, name)

        def create_order(self, leg: OrderLeg):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 2:
                raise Crash()
            return self.inner.create_order(leg)

    loaded, j, prep, ex = _seed_run(tmp_path, CrashAfterFirst)
    with pytest.raises(Crash):
        ex.execute(prep.plan)
    pid = prep.plan.plan_id
    assert [o.status for o in j.orders(pid)] == [OrderStatus.FILLED, OrderStatus.SENDING,
                                                 OrderStatus.PLANNED]
    # a new process: the paper exchange's account is read back from its tables
    acc, found = paper_book(loaded.book, j)
    assert found and acc.futures[prep.plan.legs[0].symbol].contracts == pytest.approx(
        prep.plan.legs[0].signed_contracts)
    store = PaperStore(j.path, loaded.book.name)
    gw2 = PaperGateway(loaded.book, loaded.market, store=store)
    ex2 = JournaledExecutor(gw2, j, PlanBasis(acc, loaded.market, prep.instruments, loaded.risk),
                            retry=RetryPolicy(base_delay_s=0.0), mode="paper", sleep=lambda s: None)
    report = ex2.resume(pid)
    assert report.complete
    # the leg in doubt was proven not placed; the rest were re-planned from the positions
    assert j.order(pid, 1).status == OrderStatus.NOT_PLACED
    traded: dict[str, float] = {}
    for sym, dq, _, _ in j.fills_with_legs(pid):
        traded[sym] = traded.get(sym, 0.0) + dq
    want = {s: prep.plan.target[s] - prep.plan.start[s] for s in prep.plan.target}
    assert traded == pytest.approx(want, abs=1e-12)  # each contract's trade exactly once
    got = np.array([report.positions[s] for s in sorted(prep.plan.target)])
    assert got == pytest.approx(np.array([prep.plan.target[s] for s in sorted(prep.plan.target)]),
                                abs=1e-12)
    assert j.plan_status(pid) == "done"
    cash = gw2.account(loaded.book, loaded.market).cash
    # resuming the finished plan again sends nothing and charges nothing (it used to re-apply fills)
    gw3 = PaperGateway(loaded.book, loaded.market, store=store)
    again = JournaledExecutor(gw3, j, PlanBasis(acc, loaded.market, prep.instruments, loaded.risk),
                              retry=RetryPolicy(base_delay_s=0.0), mode="paper",
                              sleep=lambda s: None).resume(pid)
    assert again.complete and gw3.account(loaded.book, loaded.market).cash == cash
    assert again.positions == report.positions and len(gw3.orders) == len(gw2.orders)
    store.close()
    j.close()


def test_legs_planned_again_keep_the_plans_slippage_guard(tmp_path: Path) -> None:
    """Limit orders with a 0.5 bp guard do not fill on paper (the half spread is 1 bp): each round
    cancels them and plans the rest again. Every round keeps the plan's guard (sell at
    60,000 x (1 - 0.00005) = 59,997; the re-planned legs used the default 0.5%, 59,700, and
    filled past the user's limit), so nothing fills; the plan's options survive the journal; and
    planned vs filled counts the plan's own legs once (it summed every round's)."""
    sent: list[OrderLeg] = []

    class Spy:
        def __init__(self, inner: PaperGateway) -> None:
            self.inner = inner
            self.venue = inner.venue

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.inner, name)

        def create_order(self, leg: OrderLeg):  # type: ignore[no-untyped-def]
            sent.append(leg)
            return self.inner.create_order(leg)

    options = PlanOptions(venue="paper", order_type=OrderType.LIMIT, slippage_guard=0.00005)
    _, j, prep, ex = _seed_run(tmp_path, Spy, options=options)
    report = ex.execute(prep.plan)
    assert j.plan(prep.plan.plan_id).options == options
    j.close()
    assert len(sent) > 3  # the first round and at least one round planned again
    btc = [leg for leg in sent if leg.symbol == "BTC-PERP"]
    assert len(btc) > 1 and all(leg.limit_price == pytest.approx(59_997.0) for leg in btc)
    assert all(leg.filled == 0.0 for leg in report.legs)
    pvf = planned_vs_filled(prep.plan.legs, report.legs)
    assert pvf["BTC-PERP"]["planned"] == pytest.approx(-1_000.0 / 60_000.0, abs=1e-8)
    assert pvf["BTC-PERP"]["filled"] == 0.0
