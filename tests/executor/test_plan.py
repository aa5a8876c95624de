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

from executor.ccxt_metadata import contract_from_market, tiers_from_ccxt
from executor.plan import (
    OrderPlan,
    OrderType,
    PlanOptions,
    Side,
    book_instruments,
    plan_orders,
)
from executor.plan_ids import CLIENT_ID_RULES, new_plan_id
from executor.safety import Limits, SafetyError
from models.book import Book, FuturesPosition
from models.errors import ValidationError
from models.instruments import FuturesContract, Settlement
from models.risk import RiskModel

PID = "20240601000000abcd"


def _plan(book: Book, targets: dict[str, float], options: PlanOptions | None = None,
          risk: RiskModel | None = None) -> OrderPlan:
    opts = PlanOptions() if options is None else options
    return plan_orders(solution_with(targets), book, market(), book_instruments(book), opts,
                       plan_id=PID, risk=risk)


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
    # pytest.Approx matches a float by its own __eq__, which mypy's strict equality ignores in a tuple
    assert [(leg.contracts, leg.notional) for leg in plan.legs] == [(2.0, pytest.approx(1200.0))]  # type: ignore[comparison-overlap]
    book = three_asset_book({"BTC-PERP": inv})
    plan = _plan(book, {"BTC-PERP": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    # inverse: 100 USD per contract whatever the price -> 10 contracts
    # pytest.Approx matches a float by its own __eq__, which mypy's strict equality ignores in a tuple
    assert [(leg.side, leg.contracts, leg.notional) for leg in plan.legs] == [  # type: ignore[comparison-overlap]
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
    # pytest.Approx matches a float by its own __eq__, which mypy's strict equality ignores in a tuple
    assert [(leg.contracts, leg.reduce_only) for leg in plan.legs] == [(pytest.approx(0.001), True)]  # type: ignore[comparison-overlap]
    strict = _plan(book, targets, options=PlanOptions(reduce_only_exempt=False))
    assert not strict.legs and strict.dropped[0].symbol == "BTC-PERP"


def test_orders_above_max_qty_are_split() -> None:
    c = {"BTC-PERP": FuturesContract("BTC-PERP", "BTC", max_qty=0.007)}
    book = three_asset_book(c)
    plan = _plan(book, {"BTC-PERP": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    assert [round(leg.contracts, 9) for leg in plan.legs] == [0.006, 0.006, 0.005]  # near-equal
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
    # market orders (the default) carry no limit price
    plan = _plan(book, {"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 0.0})
    assert plan.legs and all(leg.limit_price is None for leg in plan.legs)


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


# --- hand-computed checks of each planning step (issue 13: mutation survivors) -------------------

def test_trade_parts_every_case_by_hand() -> None:
    from executor.plan_parts import TradePart, trade_parts

    def parts(q0: float, q1: float, step: float = 0.001) -> list[tuple[float, bool]]:
        out = trade_parts("X", q0, q1, step)
        assert all(isinstance(p, TradePart) and p.symbol == "X" for p in out)
        return [(round(p.contracts, 9), p.reduce_only) for p in out]

    assert parts(0.0, 0.5) == [(0.5, False)]  # open
    assert parts(0.0, -0.5) == [(-0.5, False)]
    assert parts(0.2, 0.5) == [(0.3, False)]  # add to a long: never reduce-only
    assert parts(-0.2, -0.5) == [(-0.3, False)]  # add to a short
    assert parts(0.5, 0.2) == [(-0.3, True)]  # shrink a long
    assert parts(-0.5, -0.2) == [(0.3, True)]  # shrink a short
    assert parts(0.5, 0.0) == [(-0.5, True)]  # close
    assert parts(-0.5, 0.0) == [(0.5, True)]
    # flips: close (reduce-only) then open, whether the new side is larger or smaller
    assert parts(0.2, -0.5) == [(-0.2, True), (-0.5, False)]
    assert parts(-0.5, 0.2) == [(0.5, True), (0.2, False)]
    assert parts(0.3, 0.3) == [] and parts(0.0, 0.0) == []
    assert parts(0.3, 0.3 + 1e-13) == []  # float noise below a lot is no trade
    # the trade is rounded to the lot step in decimal: 0.3 - 0.1 is 0.2, not 0.19999999999999998
    assert trade_parts("X", 0.1, 0.3, 0.1)[0].contracts == 0.2


def test_a_position_that_grows_is_never_reduce_only_and_a_larger_flip_is_two_orders() -> None:
    pos = {"BTC-PERP": FuturesPosition(-0.01, 60_000.0), "ETH-PERP": FuturesPosition(0.2, 2500.0)}
    book = three_asset_book(futures=pos)
    # BTC -0.01 -> -0.017: sell 0.007 more (opening); ETH +0.2 -> -0.6: sell 0.2 RO, then sell 0.6
    plan = _plan(book, {"BTC-PERP": -1020.0, "ETH-PERP": -1500.0, "SOL-PERP": 0.0})
    rows = [(leg.symbol, leg.side, round(leg.contracts, 9), leg.reduce_only) for leg in plan.legs]
    assert rows == [("ETH-PERP", Side.SELL, 0.2, True), ("BTC-PERP", Side.SELL, 0.007, False),
                    ("ETH-PERP", Side.SELL, 0.6, False)]
    assert plan.reachable["ETH-PERP"] == pytest.approx(-0.6)
    assert plan.reachable["BTC-PERP"] == pytest.approx(-0.017)
    assert plan.gross_notional == pytest.approx(0.2 * 2500 + 0.007 * 60_000 + 0.6 * 2500)


def test_round_to_step_by_hand() -> None:
    from decimal import ROUND_CEILING, ROUND_FLOOR

    from executor.plan_parts import _tick_round, round_to_step

    assert round_to_step(0.0167, 0.001) == 0.017
    assert round_to_step(0.25, 0.1) == 0.2  # half to even: 2.5 steps -> 2
    assert round_to_step(0.35, 0.1) == 0.4  # 3.5 -> 4
    assert round_to_step(1.234, 0.0) == 1.234 and round_to_step(1.234, -1.0) == 1.234
    assert round_to_step(0.0167, 0.001, ROUND_FLOOR) == 0.016
    assert round_to_step(0.0161, 0.001, ROUND_CEILING) == 0.017
    assert round_to_step(-0.0167, 0.001, ROUND_FLOOR) == -0.017
    # float noise is snapped before a directed rounding: 2500 x 1.001 = 2502.4999999999995
    assert round_to_step(2500 * 1.001, 0.01, ROUND_FLOOR) == 2502.5
    assert round_to_step(2502.4999, 0.01, ROUND_FLOOR) == 2502.49  # 1e-2 steps away is real
    assert _tick_round(100.004, 0.01, up=True) == 100.01
    assert _tick_round(100.006, 0.01, up=False) == 100.0
    assert _tick_round(100.005, 0.01, up=True) == 100.01  # not half-even (which gives 100.0)


def test_split_at_max_qty_by_hand() -> None:
    from executor.plan_parts import _split

    plain = FuturesContract("X", "BTC", lot_step=0.001)
    assert _split(-5.0, plain) == [-5.0]  # no max quantity
    c = FuturesContract("X", "BTC", lot_step=0.001, max_qty=0.0075)  # chunk 0.007 (floored)
    assert _split(0.0075, c) == [0.0075]  # at the max: one order
    # the fewest chunks (3), as equal as the lot allows: no small remainder under a min notional
    assert [round(s, 9) for s in _split(-0.017, c)] == [-0.006, -0.006, -0.005]
    assert [round(s, 9) for s in _split(0.014, c)] == [0.007, 0.007]  # no empty remainder
    no_lot = FuturesContract("X", "BTC", lot_step=0.0, max_qty=2.5)
    assert _split(6.0, no_lot) == [2.0, 2.0, 2.0]
    tiny = FuturesContract("X", "BTC", lot_step=0.001, max_qty=0.0005)  # below one lot
    with pytest.raises(ValidationError, match="below one lot") as err:
        _split(0.01, tiny)
    assert err.value.field == "contracts.X.max_qty"


def test_tracking_error_of_by_hand_with_reordered_risk_and_a_basis_term() -> None:
    from dataclasses import replace

    from executor.plan import tracking_error_of
    from models.risk import RiskModel

    book = three_asset_book()
    cov = covariance()
    # the risk model lists the assets in another order, plus one the book does not hold
    order = ("SOL", "DOGE", "BTC", "ETH")
    big = np.eye(4) * 0.5
    pos = {"BTC": 2, "ETH": 3, "SOL": 0}
    for a in ("BTC", "ETH", "SOL"):
        for b in ("BTC", "ETH", "SOL"):
            big[pos[a], pos[b]] = cov[("BTC", "ETH", "SOL").index(a), ("BTC", "ETH", "SOL").index(b)]
    risk = RiskModel.from_covariance(order, big)
    held = {"BTC-PERP": -0.02, "ETH-PERP": 0.4, "SOL-PERP": 0.0}
    spot = np.array([6000.0, 2500.0, 1500.0])
    fut = np.array([-0.02 * 60_000, 0.4 * 2500, 0.0])
    w = np.array([0.5, 0.3, 0.2])
    want = te_reference(spot, fut, w, cov, 10_000.0)
    assert tracking_error_of(book, market(), risk, held) == pytest.approx(want, rel=1e-9)
    # a basis covariance adds z' Sb z, z = x / V
    sb = np.diag([0.04, 0.09, 0.01])
    z = fut / 10_000.0
    with_basis = replace(risk, basis_cov=sb)
    assert tracking_error_of(book, market(), with_basis, held) == pytest.approx(
        float(np.sqrt(want ** 2 + z @ sb @ z)), rel=1e-9)
    # a basis covariance of another shape is ignored
    assert tracking_error_of(book, market(), replace(risk, basis_cov=np.eye(2)), held) == \
        pytest.approx(want, rel=1e-9)


def test_client_id_rule_edges() -> None:
    from executor.plan_ids import ClientIdRule, client_id_rule

    rule = ClientIdRule(10, r"[a-z0-9_]", "_")
    assert rule.make("ab", 7) == "fbrab_007"  # 9 chars
    assert rule.make("abc", 7) == "fbrabc_007"  # exactly 10: allowed
    with pytest.raises(ValidationError) as err:
        rule.make("abcd", 7)
    assert err.value.field == "plan_id" and "'fbrabcd_007'" in str(err.value)
    assert "<= 10 of [a-z0-9_]" in str(err.value)
    with pytest.raises(ValidationError):
        ClientIdRule(36, r"[a-z0-9]", "_").make("AB", 0)  # an upper-case letter is outside
    assert client_id_rule("okx") is CLIENT_ID_RULES["okx"]
    assert client_id_rule("bybit") is CLIENT_ID_RULES["bybit"]
    assert client_id_rule("somewhere") is CLIENT_ID_RULES["binanceusdm"]
    assert CLIENT_ID_RULES["okx"].make(PID, 12) == f"fbr{PID}012"


def test_new_plan_id_from_a_given_time() -> None:
    from datetime import UTC, datetime

    pid = new_plan_id(datetime(2024, 6, 1, 12, 34, 56, tzinfo=UTC))
    assert pid.startswith("20240601123456") and len(pid) == 18
    assert re.fullmatch(r"[0-9a-f]{4}", pid[14:])


def test_book_instruments_and_exchange_symbols() -> None:
    from executor.plan import default_exchange_symbol

    inv = FuturesContract("BTC-INV", "BTC", settlement=Settlement.INVERSE, contract_size=100.0)
    assert default_exchange_symbol(inv) == "BTC/USD:BTC"
    assert default_exchange_symbol(FuturesContract("ETH-PERP", "ETH")) == "ETH/USDT:USDT"
    assert default_exchange_symbol(FuturesContract("ETH-PERP", "ETH"), "USDC") == "ETH/USDC:USDC"
    book = three_asset_book()
    inst = book_instruments(book, {"SOL-PERP": "SOL/USDC:USDC"})
    assert list(inst) == ["BTC-PERP", "ETH-PERP", "SOL-PERP"]
    assert {k: v.exchange_symbol for k, v in inst.items()} == {
        "BTC-PERP": "BTC/USDT:USDT", "ETH-PERP": "ETH/USDT:USDT", "SOL-PERP": "SOL/USDC:USDC"}
    assert inst["BTC-PERP"].contract is book.contracts[0]
    assert book_instruments(book)["SOL-PERP"].exchange_symbol == "SOL/USDT:USDT"


def test_plan_dict_has_the_gross_notional_and_old_dicts_load() -> None:
    book = three_asset_book()
    plan = _plan(book, {"BTC-PERP": -1200.0, "ETH-PERP": 500.0, "SOL-PERP": 0.0})
    d = plan.to_dict()
    assert d["gross_notional"] == pytest.approx(0.02 * 60_000 + 0.2 * 2500)
    assert d["legs"][0]["side"] == "sell" and d["plan_id"] == PID
    old = {k: v for k, v in d.items() if k != "warnings"}  # written before warnings existed
    assert OrderPlan.from_dict(old).warnings == ()


def test_iso_times_are_utc() -> None:
    from datetime import datetime, timedelta, timezone

    from executor.plan_parts import _iso

    assert _iso(datetime(2024, 6, 1, 12, 30)) == "2024-06-01 12:30 UTC"  # naive = UTC
    plus2 = timezone(timedelta(hours=2))
    assert _iso(datetime(2024, 6, 1, 14, 30, tzinfo=plus2)) == "2024-06-01 12:30 UTC"


def test_drop_reason_boundaries_by_hand() -> None:
    from executor.plan_parts import TradePart, drop_reason

    c = FuturesContract("X", "BTC", min_qty=0.002, min_notional=100.0)
    opts, strict = PlanOptions(), PlanOptions(reduce_only_exempt=False)
    # exactly the minimum quantity and notional: sent
    assert drop_reason(TradePart("X", 0.002, False), c, 50_000.0, opts, None) is None
    assert drop_reason(TradePart("X", -0.004, False), c, 25_000.0, opts, None) is None  # 100 USD
    assert drop_reason(TradePart("X", 0.001, True), c, 1e6, opts, None) == \
        "below min quantity 0.002 contracts"  # min qty applies to reduce-only legs too
    assert drop_reason(TradePart("X", 0.003, False), c, 30_000.0, opts, None) == \
        "90.00 USD is below the min notional 100.00 USD"
    assert drop_reason(TradePart("X", 0.003, True), c, 30_000.0, opts, None) is None  # exempt
    assert drop_reason(TradePart("X", 0.003, True), c, 30_000.0, strict, None) is not None
    # near expiry: opening legs dropped with that reason, reduce-only legs still judged on size
    assert drop_reason(TradePart("X", 0.01, False), c, 30_000.0, opts, "near") == "near"
    assert drop_reason(TradePart("X", 0.01, True), c, 30_000.0, opts, "near") is None
    assert drop_reason(TradePart("X", 0.001, True), c, 30_000.0, opts, "near") is not None


def test_pct_text() -> None:
    from executor.plan_parts import _pct_text

    assert _pct_text(None) == "n/a (no risk model)"
    assert _pct_text(0.01234) == "1.234%"


def test_rounding_warning_thresholds_by_hand() -> None:
    from executor.plan_parts import _Rounded, _rounding_warning

    rows = [_Rounded("A", 1000.0, 400.0, 200.0, 0.1), _Rounded("B", -500.0, 0.0, 600.0, 1.0),
            _Rounded("C", 5.0, 5.0, 1.0, 0.001)]
    # asked 1,505, removed 600 + 500 = 1,100 (73%): warned at share 0.5, not at 0.75
    text = _rounding_warning(rows, 0.5, 0.02, 0.001, 0.015)
    assert text is not None and text.startswith("lot rounding removed most of the solution (73%)")
    assert "1,505.00 USD of trades asked, 405.00 USD left" in text
    assert text.index("A trade") < text.index("B trade") and "C trade" not in text
    assert "A trade 1,000.00 USD -> 400.00 USD (lot step 0.1 contracts = 200.00 USD)" in text
    assert "now 2.000%, solution before rounding 0.100%, after rounding 1.500%" in text
    assert _rounding_warning(rows, 0.75, None, None, None) is None
    whole = [_Rounded("A", 100.0, 0.0, 300.0, 1.0)]
    text = _rounding_warning(whole, 1.0, None, None, None)
    assert text is not None and "removed the whole solution" in text and "n/a (no risk model)" in text
    assert _rounding_warning([_Rounded("A", 0.9, 0.0, 3.0, 1.0)], 0.5, None, None, None) is None  # < 1 USD
    assert _rounding_warning([_Rounded("A", 0.0, 0.0, 3.0, 1.0)], 0.5, None, None, None) is None


def test_plan_options_bounds() -> None:
    PlanOptions(slippage_guard=0.0, min_days_to_expiry=0.0, rounding_warn_share=1.0)
    PlanOptions(min_days_to_expiry=366.0)
    for kw in ({"slippage_guard": 0.5}, {"slippage_guard": -0.001}, {"slippage_guard": float("nan")},
               {"min_days_to_expiry": -1.0}, {"min_days_to_expiry": 366.5},
               {"min_days_to_expiry": float("inf")}, {"rounding_warn_share": 0.0},
               {"rounding_warn_share": 1.01}, {"rounding_warn_share": float("nan")}):
        with pytest.raises(ValidationError) as err:
            PlanOptions(**kw)  # type: ignore[arg-type]
        assert err.value.field == next(iter(kw))


def test_error_texts_say_how_to_fix() -> None:
    from executor.plan_ids import ClientIdRule
    from executor.plan_parts import _split

    with pytest.raises(ValidationError) as err:
        ClientIdRule(5, r"[a-z]", "-").make("abc", 1)
    assert err.value.fix == "use a shorter, alphanumeric plan id"
    with pytest.raises(ValidationError) as err:
        _split(1.0, FuturesContract("X", "BTC", lot_step=0.01, max_qty=0.005))
    assert err.value.fix == "check the exchange's market metadata"
    assert err.value.problem == "is 0.005, below one lot"


def test_near_expiry_reason_text() -> None:
    from datetime import datetime

    from executor.plan_parts import near_expiry
    from models.instruments import ContractKind

    c = FuturesContract("BTC-0628", "BTC", kind=ContractKind.DATED, expiry=datetime(2024, 6, 28, 8, 0))
    assert near_expiry(c, datetime(2024, 6, 20), 2.0) is None
    assert near_expiry(FuturesContract("P", "BTC"), datetime(2024, 6, 20), 2.0) is None
    assert near_expiry(c, datetime(2024, 6, 26, 8, 0), 2.0) is None  # exactly 2 days: still open
    assert near_expiry(c, datetime(2024, 6, 27, 8, 0), 2.0) == (
        "BTC-0628 expires 2024-06-28 08:00 UTC, 1.00 days after the market time, within "
        "min_days_to_expiry = 2 days: it is not opened or increased that close to expiry (closing "
        "and reducing orders are still sent)")


def test_naive_times_are_utc_whatever_the_machine_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    from datetime import UTC, datetime

    from executor import plan_ids as plan_mod
    from executor.plan_parts import _iso

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert _iso(datetime(2024, 6, 1, 12, 30)) == "2024-06-01 12:30 UTC"
        assert _iso(datetime(2024, 6, 1, 12, 30, tzinfo=UTC)) == "2024-06-01 12:30 UTC"

        class FakeDatetime(datetime):
            @classmethod
            def now(cls, tz=None):  # type: ignore[no-untyped-def]
                utc = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
                return utc if tz is not None else utc.astimezone().replace(tzinfo=None)

        monkeypatch.setattr(plan_mod, "datetime", FakeDatetime)
        assert plan_mod.new_plan_id().startswith("20240601120000")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_drop_reason_tolerances_are_tiny() -> None:
    from executor.plan_parts import TradePart, drop_reason

    c = FuturesContract("X", "BTC", min_qty=0.002, min_notional=100.0)
    opts = PlanOptions()
    # float noise of 1e-12 contracts (or 1e-9 USD) under a minimum is not a drop
    assert drop_reason(TradePart("X", 0.002 - 1e-12, False), c, 1e6, opts, None) is None
    assert drop_reason(TradePart("X", 1.0, False), FuturesContract("X", "BTC", min_notional=100.0),
                       100.0 - 1e-9, opts, None) is None
    # half a dollar under is a drop
    assert drop_reason(TradePart("X", 1.0, False), FuturesContract("X", "BTC", min_notional=100.0),
                       99.5, opts, None) == "99.50 USD is below the min notional 100.00 USD"


def test_limit_prices_round_away_from_the_guard_and_legs_carry_the_mark() -> None:
    c = {"ETH-PERP": FuturesContract("ETH-PERP", "ETH", tick=1.0),
         "BTC-PERP": FuturesContract("BTC-PERP", "BTC", tick=1.0)}
    opts = PlanOptions(order_type=OrderType.LIMIT, slippage_guard=0.001)
    plan = _plan(three_asset_book(c), {"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 0.0},
                 options=opts)
    by = {leg.symbol: leg for leg in plan.legs}
    # sell BTC: 60,000 x 0.999 = 59,940 (on the tick); buy ETH: 2,502.5 -> 2,502 (down)
    assert by["ETH-PERP"].limit_price == 2502.0
    plan = _plan(three_asset_book(c), {"BTC-PERP": 0.0, "ETH-PERP": -500.0, "SOL-PERP": 0.0},
                 options=opts)
    # sell ETH: 2,500 x 0.999 = 2,497.5 -> 2,498 (up: never below the guard)
    assert plan.legs[0].side == Side.SELL and plan.legs[0].limit_price == 2498.0
    assert plan.legs[0].price == 2500.0 and plan.legs[0].order_type == OrderType.LIMIT
    assert by["BTC-PERP"].price == 60_000.0


def test_rounding_warning_edges() -> None:
    from executor.plan_parts import _Rounded, _rounding_warning

    # exactly 1 USD asked and removed: reported (the floor is "less than 1 USD is never reported")
    text = _rounding_warning([_Rounded("A", 1.0, 0.0, 2.0, 1.0)], 0.5, None, None, None)
    assert text is not None and "the whole solution" in text
    assert text.endswith("Fix: use contracts with a finer lot step, or rebalance a larger book")
    # a contract behind exactly 1% of the removed notional is named; 0.5 USD of 20 is named too
    rows = [_Rounded("A", 990.0, 0.0, 1.0, 1.0), _Rounded("B", 10.0, 0.0, 1.0, 1.0)]
    text = _rounding_warning(rows, 0.5, None, None, None)
    assert text is not None and "; B trade 10.00 USD -> 0.00 USD" in text
    rows = [_Rounded("A", 19.5, 0.0, 1.0, 1.0), _Rounded("B", 0.5, 0.0, 1.0, 1.0)]
    text = _rounding_warning(rows, 0.5, None, None, None)
    assert text is not None and "B trade 0.50 USD" in text


def test_option_errors_in_full() -> None:
    cases = [({"slippage_guard": 0.7}, "slippage_guard: is 0.7. Fix: give a fraction of mark in [0, 0.5), "
              "e.g. 0.005"),
             ({"min_days_to_expiry": 400.0}, "min_days_to_expiry: is 400.0. Fix: give the days before "
              "expiry in [0, 366], e.g. 2"),
             ({"rounding_warn_share": 0.0}, "rounding_warn_share: is 0.0. Fix: give a fraction in (0, 1], "
              "e.g. 0.5")]
    for kw, text in cases:
        with pytest.raises(ValidationError) as err:
            PlanOptions(**kw)  # type: ignore[arg-type]
        assert str(err.value) == text


def test_an_expired_contract_is_refused_in_full() -> None:
    from datetime import datetime

    from models.instruments import ContractKind
    from models.instruments import check_not_expired as _check_not_expired

    c = FuturesContract("BTC-0628", "BTC", kind=ContractKind.DATED, expiry=datetime(2024, 6, 28, 8, 0))
    _check_not_expired(c, datetime(2024, 6, 28, 7, 0), 1.0, 2.0)  # an hour before: fine
    _check_not_expired(c, datetime(2024, 6, 30, 8, 0), 0.0, 0.0)  # expired, nothing held or asked
    _check_not_expired(FuturesContract("P", "BTC"), datetime(2030, 1, 1), 1.0, 1.0)
    with pytest.raises(ValidationError) as err:
        _check_not_expired(c, datetime(2024, 6, 29, 20, 0), 0.5, 0.0)
    assert str(err.value) == (
        "contracts.BTC-0628.expiry: is 2024-06-28 08:00 UTC, 1.50 days before the market time "
        "2024-06-29 20:00 UTC: BTC-0628 has expired and cannot be traded (position 0.5, target 0 "
        "contracts). Fix: remove BTC-0628 from the book (the exchange settled it at expiry) and hedge "
        "with a live contract (the next dated future or the perpetual)")
    with pytest.raises(ValidationError):  # at the expiry instant: expired
        _check_not_expired(c, datetime(2024, 6, 28, 8, 0), 0.0, 1.0)


def test_a_missing_instrument_is_named() -> None:
    book = three_asset_book()
    inst = book_instruments(book)
    del inst["SOL-PERP"]
    with pytest.raises(ValidationError) as err:
        plan_orders(solution_with({"BTC-PERP": 0.0}), book, market(), inst, plan_id=PID)
    assert str(err.value) == ("instruments.SOL-PERP: is missing. Fix: list SOL-PERP on the exchange or "
                              "map it to an exchange symbol")


def test_plan_times_ids_and_tracking_errors() -> None:
    from datetime import UTC, datetime

    book = three_asset_book()
    now = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)
    plan = plan_orders(solution_with({"BTC-PERP": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0}), book,
                       market(), book_instruments(book), risk=risk_model(), now=now)
    assert plan.created == "2024-06-01T09:30:00+00:00"
    assert plan.plan_id.startswith("20240601093000") and len(plan.plan_id) == 18
    spot = np.array([6000.0, 2500.0, 1500.0])
    w = np.array([0.5, 0.3, 0.2])
    assert plan.tracking_error_before == pytest.approx(
        te_reference(spot, np.zeros(3), w, covariance(), 10_000.0))
    assert plan.tracking_error_solution == pytest.approx(
        te_reference(spot, np.array([-0.017 * 60_000, 0.0, 0.0]), w, covariance(), 10_000.0))
    assert plan.book_name == "test book" and plan.venue == "binanceusdm"


def test_plan_created_now_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    from datetime import UTC, datetime

    from executor import plan as plan_mod

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def]
            utc = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
            return utc if tz is not None else utc.astimezone().replace(tzinfo=None)

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        monkeypatch.setattr(plan_mod, "datetime", FakeDatetime)
        book = three_asset_book()
        plan = plan_orders(solution_with({"BTC-PERP": 0.0}), book, market(), book_instruments(book))
        assert plan.created == "2024-06-01T12:00:00+00:00"
        assert plan.plan_id.startswith("20240601120000")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_contract_without_a_target_keeps_its_position() -> None:
    pos = {"SOL-PERP": FuturesPosition(2.0, 150.0)}
    book = three_asset_book(futures=pos)
    plan = _plan(book, {"BTC-PERP": -1000.0})  # no ETH or SOL target: both stay where they are
    assert [leg.symbol for leg in plan.legs] == ["BTC-PERP"]
    assert plan.target["SOL-PERP"] == 2.0 and plan.target["ETH-PERP"] == 0.0
    assert plan.reachable["SOL-PERP"] == 2.0


def test_rounding_warning_counts_from_the_held_position() -> None:
    c = {"SOL-PERP": FuturesContract("SOL-PERP", "SOL", lot_step=1.0, min_notional=0.0)}
    book = three_asset_book(c, futures={"SOL-PERP": FuturesPosition(2.0, 150.0)})
    # held 2 contracts (300 USD); target 360 USD = 2.4 contracts -> 2: the 60 USD trade is rounded away
    plan = _plan(book, {"BTC-PERP": 0.0, "ETH-PERP": 0.0, "SOL-PERP": 360.0})
    assert not plan.legs
    (text,) = plan.warnings
    assert text.startswith("lot rounding removed the whole solution: 60.00 USD of trades asked, "
                           "0.00 USD left")
    assert "SOL-PERP trade 60.00 USD -> 0.00 USD (lot step 1 contracts = 150.00 USD)" in text
    # 2.6 contracts -> 3: 90 USD asked, 150 USD sent, |90 - 150| = 60 removed (67%)
    plan = _plan(book, {"BTC-PERP": 0.0, "ETH-PERP": 0.0, "SOL-PERP": 390.0})
    assert plan.legs[0].contracts == 1.0
    (text,) = plan.warnings
    assert text.startswith("lot rounding removed most of the solution (67%): 90.00 USD of trades asked, "
                           "150.00 USD left")


def test_trade_parts_growing_to_exactly_one_contract() -> None:
    from executor.plan_parts import trade_parts

    assert [(p.contracts, p.reduce_only) for p in trade_parts("X", 0.5, 1.0, 0.5)] == [(0.5, False)]
    assert [(p.contracts, p.reduce_only) for p in trade_parts("X", -0.5, -1.0, 0.5)] == [(-0.5, False)]


def test_round_to_step_snaps_only_within_a_billionth_of_a_step() -> None:
    from decimal import ROUND_CEILING, ROUND_FLOOR

    from executor.plan_parts import round_to_step

    assert round_to_step(1.000000001, 1.0, ROUND_CEILING) == 2.0  # 1e-9 of a step is real
    assert round_to_step(1.0000000009, 1.0, ROUND_CEILING) == 1.0  # below it is noise
    assert round_to_step(2.999999999, 1.0, ROUND_FLOOR) == 2.0


def test_target_notionals_as_a_mapping_plan_as_a_solution_does() -> None:
    """Any policy's targets (USD by contract) plan the very legs a solution with them plans; a
    contract the mapping leaves out is held."""
    book = three_asset_book()
    targets = {"BTC-PERP": -1_000.0, "ETH-PERP": 500.0, "SOL-PERP": 300.0}
    via_solution = _plan(book, targets)
    via_mapping = plan_orders(targets, book, market(), book_instruments(book), PlanOptions(),
                              plan_id=PID)
    assert via_mapping.legs == via_solution.legs and via_mapping.target == via_solution.target
    held = plan_orders({"BTC-PERP": -1_000.0}, book, market(), book_instruments(book),
                       PlanOptions(), plan_id=PID)
    assert [leg.symbol for leg in held.legs] == ["BTC-PERP"]


def test_without_a_lot_step_float_noise_of_a_held_position_is_no_trade() -> None:
    """lot_step = 0: a target within 1e-9 (relative) of the position held, the float noise of a
    notional -> contracts round trip, sends nothing; 1e-7 away is a real trade, sent."""
    con = {s: FuturesContract(s, s.split("-")[0], lot_step=0.0, min_notional=0.0)
           for s in ("BTC-PERP", "ETH-PERP", "SOL-PERP")}
    q0 = 0.0123456789
    book = three_asset_book(contracts=con, futures={"BTC-PERP": FuturesPosition(q0, 60_000.0)})
    noise = _plan(book, {"BTC-PERP": q0 * 60_000.0 * (1 + 3e-16), "ETH-PERP": 0.0,
                         "SOL-PERP": 0.0})
    assert noise.legs == () and noise.target["BTC-PERP"] == q0
    real = _plan(book, {"BTC-PERP": q0 * 60_000.0 * (1 + 1e-7), "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    (leg,) = real.legs
    assert leg.symbol == "BTC-PERP" and leg.contracts == pytest.approx(q0 * 1e-7, rel=1e-6)


def test_closing_an_expired_position_is_refused_naming_both_quantities() -> None:
    """The planner refuses an expired contract held at 0.5 whose target is 0 (the exchange
    settled it: nothing to close), naming the position and the target (the position alone passed
    as the target would let the close through)."""
    from datetime import datetime

    from models.instruments import ContractKind

    dated = FuturesContract("BTC-PERP", "BTC", kind=ContractKind.DATED,
                            expiry=datetime(2024, 5, 31, 8, 0))
    book = three_asset_book({"BTC-PERP": dated},
                            futures={"BTC-PERP": FuturesPosition(0.5, 60_000.0)})
    with pytest.raises(ValidationError) as err:
        _plan(book, {"BTC-PERP": 0.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    assert err.value.field == "contracts.BTC-PERP.expiry"
    assert "(position 0.5, target 0 contracts)" in err.value.problem


def test_plan_options_of_a_plan_journalled_without_them() -> None:
    """Re-planned legs of a plan journalled without options keep its venue and its first leg's
    order type (market when it has no leg); a plan with options returns them as they are."""
    from dataclasses import replace

    from executor.plan import plan_options

    opts = PlanOptions(venue="paper", order_type=OrderType.LIMIT, slippage_guard=0.002)
    assert PlanOptions().venue != "paper"  # the venue below is the plan's, not a default
    plan = _plan(three_asset_book(), {"BTC-PERP": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0},
                 options=opts)
    assert plan_options(plan) is plan.options and len(plan.legs) == 1
    bare = replace(plan, options=None)
    got = plan_options(bare)  # its one leg's order type
    assert (got.venue, got.order_type) == ("paper", OrderType.LIMIT)
    assert got.slippage_guard == PlanOptions().slippage_guard
    empty = plan_options(replace(bare, legs=()))
    assert (empty.venue, empty.order_type) == ("paper", OrderType.MARKET)
