"""Order planning: lot rounding, min notional drops, reduce-only, splits, client ids, limits, TE."""

from __future__ import annotations

import re

import numpy as np
import pytest
from exec_helpers import (
    covariance,
    market,
    risk_model,
    solution_with,
    te_reference,
    three_asset_book,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.ccxt_gateway import contract_from_market, tiers_from_ccxt
from executor.plan import (
    CLIENT_ID_RULES,
    OrderPlan,
    OrderType,
    PlanOptions,
    Side,
    book_instruments,
    new_plan_id,
    plan_orders,
)
from executor.safety import Limits, SafetyError
from models.book import FuturesPosition
from models.errors import ValidationError
from models.instruments import FuturesContract, Settlement

PID = "20240601000000abcd"


def _plan(book, targets, **kw):  # type: ignore[no-untyped-def]
    opts = kw.pop("options", PlanOptions())
    return plan_orders(solution_with(targets), book, market(), book_instruments(book), opts,
                       plan_id=PID, **kw)


def test_notional_to_contracts_rounds_to_the_lot_step() -> None:
    book = three_asset_book()
    plan = _plan(book, {"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0})
    by = {leg.symbol: leg for leg in plan.legs}
    # 1000 / 60000 = 0.01667 -> 0.017; 500 / 2500 = 0.2; 500 / 150 = 3.333 -> 3.333
    assert by["BTC-PERP"].contracts == pytest.approx(0.017) and by["BTC-PERP"].side == Side.SELL
    assert by["ETH-PERP"].contracts == pytest.approx(0.2) and by["ETH-PERP"].side == Side.BUY
    assert by["SOL-PERP"].contracts == pytest.approx(3.333)
    assert by["BTC-PERP"].notional == pytest.approx(-0.017 * 60_000)
    assert not any(leg.reduce_only for leg in plan.legs)


def test_okx_contract_size_and_inverse_contracts_from_ccxt_markets() -> None:
    okx_market = {"symbol": "BTC/USDT:USDT", "contractSize": 0.01, "linear": True, "inverse": False,
                  "swap": True, "precision": {"amount": 1.0, "price": 0.1},
                  "limits": {"amount": {"min": 1.0, "max": 10000.0}, "cost": {"min": None}}}
    okx = contract_from_market(okx_market, FuturesContract("BTC-PERP", "BTC"))
    assert okx.contract_size == 0.01 and okx.lot_step == 1.0 and okx.min_notional == 0.0
    coinm_market = {"symbol": "BTC/USD:BTC", "contractSize": 100.0, "linear": False, "inverse": True,
                    "swap": True, "precision": {"amount": 1.0, "price": 0.1},
                    "limits": {"amount": {"min": 1.0, "max": None}, "cost": {}}}
    inv = contract_from_market(coinm_market, FuturesContract("BTC-PERP", "BTC"))
    assert inv.settlement == Settlement.INVERSE and inv.contract_size == 100.0
    book = three_asset_book({"BTC-PERP": okx})
    plan = _plan(book, {"BTC-PERP": 1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    # 1000 USD / (0.01 BTC x 60000) = 1.667 contracts -> 2 (lot 1); notional 2 x 600 = 1200
    assert [(leg.contracts, leg.notional) for leg in plan.legs] == [(2.0, pytest.approx(1200.0))]
    book = three_asset_book({"BTC-PERP": inv})
    plan = _plan(book, {"BTC-PERP": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    # inverse: 100 USD per contract whatever the price -> 10 contracts
    assert [(leg.side, leg.contracts, leg.notional) for leg in plan.legs] == [
        (Side.SELL, 10.0, pytest.approx(-1000.0))]


def test_tiers_from_ccxt_compute_cum_for_continuity() -> None:
    rows = [{"minNotional": 0, "maxNotional": 50_000, "maintenanceMarginRate": 0.004, "maxLeverage": 125},
            {"minNotional": 50_000, "maxNotional": 250_000, "maintenanceMarginRate": 0.005,
             "maxLeverage": 100}]
    t = tiers_from_ccxt(rows)
    # cum_1 = (0.005 - 0.004) x 50000 = 50; MM continuous at the edge: 0.004 x 50k = 0.005 x 50k - 50
    assert t.brackets[1].cum == pytest.approx(50.0)
    assert t.bracket_lookup(50_000 - 1e-6) == pytest.approx(t.bracket_lookup(50_000), abs=1e-6)


def test_min_notional_drop_reports_the_tracking_error_it_leaves() -> None:
    c = {"SOL-PERP": FuturesContract("SOL-PERP", "SOL", lot_step=1.0, min_notional=100.0)}
    book = three_asset_book(c)
    risk = risk_model()
    # SOL target 90 USD -> 0.6 contract -> 1 contract (lot 1) = 150 USD >= 100: kept
    plan = plan_orders(solution_with({"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 90.0}),
                       book, market(), book_instruments(book), PlanOptions(), risk=risk, plan_id=PID)
    assert [leg.symbol for leg in plan.legs] == ["BTC-PERP", "ETH-PERP", "SOL-PERP"]
    # with a 200 USD minimum the same 150 USD order is dropped
    c2 = {"SOL-PERP": FuturesContract("SOL-PERP", "SOL", lot_step=1.0, min_notional=200.0)}
    book2 = three_asset_book(c2)
    plan2 = plan_orders(solution_with({"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 90.0}),
                        book2, market(), book_instruments(book2), PlanOptions(), risk=risk, plan_id=PID)
    assert [leg.symbol for leg in plan2.legs] == ["BTC-PERP", "ETH-PERP"]
    (drop,) = plan2.dropped
    assert drop.symbol == "SOL-PERP" and drop.contracts == 1.0 and "min notional" in drop.reason
    spot = np.array([6000.0, 2500.0, 1500.0])
    w = np.array([0.5, 0.3, 0.2])
    cov = covariance()
    # reachable: BTC -0.017 x 60000, ETH 0.2 x 2500, SOL nothing
    reach = np.array([-0.017 * 60_000, 0.2 * 2500, 0.0])
    assert plan2.tracking_error_residual == pytest.approx(te_reference(spot, reach, w, cov, 10_000.0))
    assert drop.tracking_error_left == pytest.approx(te_reference(spot, reach, w, cov, 10_000.0))
    target = np.array([-0.017 * 60_000, 0.2 * 2500, 150.0])
    assert plan2.tracking_error_solution == pytest.approx(te_reference(spot, target, w, cov, 10_000.0))
    assert plan2.reachable["SOL-PERP"] == 0.0 and plan2.target["SOL-PERP"] == 1.0


def test_shrinking_is_reduce_only_and_a_flip_is_split() -> None:
    pos = {"BTC-PERP": FuturesPosition(-0.05, 60_000.0), "ETH-PERP": FuturesPosition(0.4, 2500.0)}
    book = three_asset_book(futures=pos)
    # BTC -0.05 -> -0.017 (shrinks: buy 0.033 reduce-only); ETH +0.4 -> -0.2 (flip: sell 0.4 RO + sell 0.2)
    plan = _plan(book, {"BTC-PERP": -1000.0, "ETH-PERP": -500.0, "SOL-PERP": 0.0})
    rows = [(leg.symbol, leg.side, round(leg.contracts, 9), leg.reduce_only) for leg in plan.legs]
    assert rows == [("BTC-PERP", Side.BUY, 0.033, True), ("ETH-PERP", Side.SELL, 0.4, True),
                    ("ETH-PERP", Side.SELL, 0.2, False)]
    assert [leg.index for leg in plan.legs] == [0, 1, 2]  # reduce-only legs first


def test_reduce_only_legs_are_exempt_from_min_notional_where_the_venue_says_so() -> None:
    c = {"BTC-PERP": FuturesContract("BTC-PERP", "BTC", min_notional=100.0)}
    book = three_asset_book(c, futures={"BTC-PERP": FuturesPosition(-0.018, 60_000.0)})
    targets = {"BTC-PERP": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0}  # -0.018 -> -0.017: 60 USD
    plan = _plan(book, targets)
    assert [(leg.contracts, leg.reduce_only) for leg in plan.legs] == [(pytest.approx(0.001), True)]
    strict = _plan(book, targets, options=PlanOptions(reduce_only_exempt=False))
    assert not strict.legs and strict.dropped[0].symbol == "BTC-PERP"


def test_orders_above_max_qty_are_split() -> None:
    c = {"BTC-PERP": FuturesContract("BTC-PERP", "BTC", max_qty=0.007)}
    book = three_asset_book(c)
    plan = _plan(book, {"BTC-PERP": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    assert [round(leg.contracts, 9) for leg in plan.legs] == [0.007, 0.007, 0.003]
    assert sum(leg.signed_contracts for leg in plan.legs) == pytest.approx(-0.017)
    assert len({leg.client_id for leg in plan.legs}) == 3


def test_client_ids_are_deterministic_and_follow_each_venue_rule() -> None:
    book = three_asset_book()
    targets = {"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0}
    a, b = _plan(book, targets), _plan(book, targets)
    assert [leg.client_id for leg in a.legs] == [leg.client_id for leg in b.legs]
    assert [leg.client_id for leg in a.legs] == [f"fbr{PID}-000", f"fbr{PID}-001", f"fbr{PID}-002"]
    for leg in a.legs:
        assert len(leg.client_id) <= 36 and re.fullmatch(r"[.A-Za-z0-9:/_-]+", leg.client_id)
    okx = _plan(book, targets, options=PlanOptions(venue="okx"))
    for leg in okx.legs:
        assert len(leg.client_id) <= 32 and leg.client_id.isalnum()
    assert len(new_plan_id()) == 18 and new_plan_id().isalnum()
    with pytest.raises(ValidationError, match="client order id"):
        CLIENT_ID_RULES["okx"].make("bad-id", 0)
    with pytest.raises(ValidationError, match="client order id"):
        CLIENT_ID_RULES["binanceusdm"].make("x" * 40, 0)


def test_limit_orders_carry_the_slippage_guard_on_the_tick() -> None:
    book = three_asset_book()
    opts = PlanOptions(order_type=OrderType.LIMIT, slippage_guard=0.001)
    plan = _plan(book, {"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 0.0}, options=opts)
    by = {leg.symbol: leg for leg in plan.legs}
    # sell BTC: 60000 x 0.999 = 59940.00 (tick 0.01); buy ETH: 2500 x 1.001 = 2502.50
    assert by["BTC-PERP"].limit_price == pytest.approx(59_940.0)
    assert by["ETH-PERP"].limit_price == pytest.approx(2_502.5)
    c = {"ETH-PERP": FuturesContract("ETH-PERP", "ETH", tick=1.0)}
    plan = _plan(three_asset_book(c), {"BTC-PERP": 0.0, "ETH-PERP": 500.0, "SOL-PERP": 0.0}, options=opts)
    assert plan.legs[0].limit_price == 2502.0  # rounded down: never above the guard
    with pytest.raises(ValidationError, match="slippage_guard"):
        PlanOptions(slippage_guard=0.7)


def test_notional_limits_per_order_and_per_plan() -> None:
    book = three_asset_book()
    targets = {"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0}
    with pytest.raises(SafetyError, match="per-order limit"):
        _plan(book, targets, options=PlanOptions(limits=Limits(max_order_usd=900.0)))
    with pytest.raises(SafetyError, match="per-plan limit"):
        _plan(book, targets, options=PlanOptions(limits=Limits(max_plan_usd=1500.0)))
    assert _plan(book, targets, options=PlanOptions(limits=Limits(1100.0, 2100.0))).legs


def test_plan_round_trips_through_its_dict() -> None:
    book = three_asset_book(futures={"ETH-PERP": FuturesPosition(0.4, 2500.0)})
    plan = _plan(book, {"BTC-PERP": -1000.0, "ETH-PERP": -500.0, "SOL-PERP": 0.0}, risk=risk_model())
    assert OrderPlan.from_dict(plan.to_dict()) == plan


@settings(max_examples=60, deadline=None)
@given(q0=st.integers(-3000, 3000), target=st.floats(-5000, 5000), max_lots=st.integers(1, 50))
def test_legs_always_reach_the_lot_rounded_target(q0: int, target: float, max_lots: int) -> None:
    step = 0.001
    c = {"BTC-PERP": FuturesContract("BTC-PERP", "BTC", max_qty=max_lots * step, min_notional=0.0)}
    pos = {"BTC-PERP": FuturesPosition(q0 * step, 60_000.0)} if q0 else {}
    book = three_asset_book(c, futures=pos)
    plan = _plan(book, {"BTC-PERP": target, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    total = sum(leg.signed_contracts for leg in plan.legs)
    assert q0 * step + total == pytest.approx(plan.target["BTC-PERP"], abs=1e-9)
    assert abs(plan.target["BTC-PERP"] * 60_000 - target) <= 0.5 * step * 60_000 + 1e-6
    for leg in plan.legs:
        assert leg.contracts <= max_lots * step + 1e-12
        assert abs(leg.contracts / step - round(leg.contracts / step)) < 1e-6
        if leg.reduce_only:  # never beyond the position it reduces
            assert abs(leg.signed_contracts) <= abs(q0 * step) + 1e-12
