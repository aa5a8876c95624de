"""The replay's fills (``scenarios.replay_fills``) by hand, one step at a time.

Book: BTC and ETH spot; contracts BTC-INV (inverse, 100 USD a contract), BTC-PERP (linear, size 1)
and BTC-Q (dated, expiring exactly at the second step's time). Daily steps from 2025-01-01 UTC,
BTC 50,000 / 40,000 / 55,000, ETH 3,000 flat; no mark path, so marks are the spot closes; spot fee
0.1%, BTC's spot half spread 2 bp (ETH's not given: the 1 bp default).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract, Settlement, SpotAsset
from optimizer.policies import TargetHoldings
from scenarios.backtest_result import RollTargets
from scenarios.market_path import MarketPath
from scenarios.replay_fills import fill_spot, futures_orders, roll_rows
from scenarios.replay_inputs import ReplayInputs, market_at, read_inputs
from scenarios.replay_state import ReplayState
from scenarios.replay_steps import Event, new_row

D0 = pd.Timestamp("2025-01-01", tz="UTC")
INV = FuturesContract("BTC-INV", "BTC", settlement=Settlement.INVERSE, contract_size=100.0)
PERP = FuturesContract("BTC-PERP", "BTC")
Q = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED, expiry=datetime(2025, 1, 2, tzinfo=UTC))
BOOK = Book((SpotAsset("BTC", fee=0.001), SpotAsset("ETH", fee=0.001)), (INV, PERP, Q),
            spot={"BTC": 2.0, "ETH": 10.0}, targets={"BTC": 0.5, "ETH": 0.5}, cash=10_000.0)


def inputs() -> ReplayInputs:
    idx = pd.date_range(D0, periods=3, freq="D")
    path = MarketPath(spot=pd.DataFrame({"BTC": [50_000.0, 40_000.0, 55_000.0],
                                         "ETH": [3_000.0] * 3}, index=idx),
                      spot_half_spread=pd.Series({"BTC": 2e-4}))
    return read_inputs(BOOK, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01)


def state(btc: float = 2.0, futures: dict[str, FuturesPosition] | None = None) -> ReplayState:
    return ReplayState(spot={"BTC": btc, "ETH": 10.0}, futures=dict(futures or {}), cash=10_000.0)


def spot_row(time: pd.Timestamp, q: float, px: float) -> Event:
    return {"time": time, "kind": "spot", "symbol": "BTC", "quantity": q, "price": px,
            "notional": q * px, "fee": 0.001 * abs(q) * px, "slippage": 2e-4 * abs(q) * px}


# --- spot -------------------------------------------------------------------------------------


def test_a_spot_buy_by_hand_and_an_asset_left_out_is_held() -> None:
    """BTC 2 -> 2.5 at 50,000: cash pays 25,000 + 25 fee + 5 half spread; ETH, not in the target,
    is held."""
    inp, st, row = inputs(), state(), new_row()
    trades: list[Event] = []
    m = market_at(inp, 0)
    assert fill_spot(inp, st, m, 0, TargetHoldings(spot={"BTC": 2.5}, futures={}), row,
                     trades) is True
    assert st.spot == {"BTC": 2.5, "ETH": 10.0}
    assert st.cash == pytest.approx(10_000.0 - 25_000.0 - 25.0 - 5.0)
    assert row["fee_spot"] == pytest.approx(25.0)
    assert row["slippage_spot"] == pytest.approx(5.0)
    assert row["traded_spot"] == pytest.approx(25_000.0)
    assert trades == [spot_row(pd.Timestamp(m.time), 0.5, 50_000.0)]


def test_nothing_to_trade_returns_false() -> None:
    inp, st = inputs(), state()
    trades: list[Event] = []
    held = TargetHoldings(spot={"BTC": 2.0, "ETH": 10.0}, futures={})
    assert fill_spot(inp, st, market_at(inp, 0), 0, held, new_row(), trades) is False
    assert trades == [] and st.cash == 10_000.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_bad_spot_target_is_refused_with_its_field(bad: float) -> None:
    inp = inputs()
    m = market_at(inp, 0)
    with pytest.raises(ValidationError) as exc:
        fill_spot(inp, state(), m, 0, TargetHoldings(spot={"BTC": bad}, futures={}), new_row(),
                  [])
    assert exc.value.field == "policy.spot.BTC"
    assert exc.value.problem == f"is {bad} at {m.time}"
    assert exc.value.fix == "a policy must target finite spot quantities >= 0"


def test_a_declared_round_trip_fills_a_sale_then_a_buy() -> None:
    """Held 2 BTC, sell 1 and buy 1 back at 40,000 (step 1): two rows, fees 40 + 40, half
    spreads 8 + 8, cash -96 net, the sale kept for the lots."""
    inp, st, row = inputs(), state(), new_row()
    trades: list[Event] = []
    m = market_at(inp, 1)
    target = TargetHoldings(spot={"BTC": 2.0}, futures={}, spot_gross={"BTC": (1.0, 1.0)})
    assert fill_spot(inp, st, m, 1, target, row, trades) is True
    t = pd.Timestamp(m.time)
    assert trades == [spot_row(t, -1.0, 40_000.0), spot_row(t, 1.0, 40_000.0)]
    assert st.cash == pytest.approx(10_000.0 - 96.0)
    assert st.spot["BTC"] == 2.0 and st.sold_first == {"BTC": 1.0}
    assert row["fee_spot"] == pytest.approx(80.0)
    assert row["slippage_spot"] == pytest.approx(16.0)
    assert row["traded_spot"] == pytest.approx(80_000.0)


@pytest.mark.parametrize(("held", "target_q", "gross", "net"), [
    (2.0, 1.0, (1.0, 0.0), -1.0),   # the buy-back b = 1 - 2 + 1 = 0: the net sale alone
    (0.0, 1.0, (1.0, 2.0), 1.0),    # nothing held to sell (s = 0): the net buy alone
])
def test_a_round_trip_without_both_legs_fills_the_net_trade(held: float, target_q: float,
                                                            gross: tuple[float, float],
                                                            net: float) -> None:
    inp, st = inputs(), state(btc=held)
    trades: list[Event] = []
    m = market_at(inp, 1)
    target = TargetHoldings(spot={"BTC": target_q}, futures={})
    object.__setattr__(target, "spot_gross", {"BTC": gross})  # as a policy may declare it
    assert fill_spot(inp, st, m, 1, target, new_row(), trades) is True
    assert trades == [spot_row(pd.Timestamp(m.time), net, 40_000.0)]
    assert st.spot["BTC"] == target_q and st.sold_first == {}


def test_a_declared_round_trip_with_nothing_to_do_leaves_the_other_assets_to_trade() -> None:
    """BTC declared sold and bought back but nothing sold (s = 0) and its target held: no BTC
    trade, and ETH, after it in book order, still trades."""
    inp, st = inputs(), state()
    trades: list[Event] = []
    target = TargetHoldings(spot={"BTC": 2.0, "ETH": 4.0}, futures={},
                            spot_gross={"BTC": (0.0, 0.0)})
    assert fill_spot(inp, st, market_at(inp, 0), 0, target, new_row(), trades) is True
    assert [t["symbol"] for t in trades] == ["ETH"] and st.spot == {"BTC": 2.0, "ETH": 4.0}


# --- futures ----------------------------------------------------------------------------------


def test_a_dated_contract_at_its_expiry_is_closed_whatever_the_target() -> None:
    """BTC-Q expires exactly at step 1: a held 0.1 is closed (q* = 0) though the target is 5,000."""
    inp = inputs()
    st = state(futures={"BTC-Q": FuturesPosition(0.1, 50_000.0)})
    target = TargetHoldings(spot={}, futures={"BTC-Q": 5_000.0})
    orders = futures_orders(inp, st, market_at(inp, 1), target, 1)
    assert orders.new_q == {"BTC-Q": 0.0}
    assert orders.dq.tolist() == [0.0, 0.0, -0.1]
    assert orders.trade_usd[2] == pytest.approx(-4_000.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_bad_futures_target_is_refused_with_its_field(bad: float) -> None:
    inp = inputs()
    m = market_at(inp, 0)
    with pytest.raises(ValidationError) as exc:
        futures_orders(inp, state(), m, TargetHoldings(spot={}, futures={"BTC-PERP": bad}), 0)
    assert exc.value.field == "policy.futures.BTC-PERP"
    assert exc.value.problem == f"is {bad} at {m.time}"
    assert exc.value.fix == "a policy must target finite futures notional (USD)"


def test_an_inverse_position_held_at_its_exposure_is_no_trade_and_the_next_contract_trades() -> None:
    """1 BTC-INV contract struck at 50,000, mark 55,000 (step 2): exposure 1 x 100 x 55,000 /
    50,000 = 110 USD. A target of 110 is held; 110.5 grows it by the exchange's fill rule: 0.5 USD
    of exposure at the mark is 0.005 contracts (1.005; re-striking it all would have said 1.105),
    dq x 100 = 0.5 USD traded; the BTC-PERP order after the held contract is planned."""
    inp = inputs()
    m = market_at(inp, 2)
    st = state(futures={"BTC-INV": FuturesPosition(1.0, 50_000.0)})
    held = futures_orders(inp, st, m, TargetHoldings(spot={}, futures={"BTC-INV": 110.0,
                                                                        "BTC-PERP": 5_500.0}), 2)
    assert held.new_q == {"BTC-PERP": pytest.approx(0.1)}
    moved = futures_orders(inp, st, m, TargetHoldings(spot={}, futures={"BTC-INV": 110.5}), 2)
    assert moved.new_q == {"BTC-INV": pytest.approx(1.005)}
    assert moved.trade_usd[0] == pytest.approx(0.5)


def test_a_target_within_the_tolerance_of_an_inverse_exposure_is_held_and_the_next_trades() -> None:
    """1 BTC-INV contract struck at 55,000 / 1.2, mark 55,000 (step 2): exposure 100 x 1.2 = 120
    USD. A target of 120 x (1 + 0.9e-9) is within QTY_RTOL of the exposure, though its contracts
    1 + 1.08e-9 are not within QTY_RTOL of 1 (the exposure is 1.2 x the face): held; the
    BTC-PERP order after it is still planned (5,500 USD: 0.1)."""
    inp = inputs()
    m = market_at(inp, 2)
    st = state(futures={"BTC-INV": FuturesPosition(1.0, 55_000.0 / 1.2)})
    orders = futures_orders(inp, st, m, TargetHoldings(spot={}, futures={
        "BTC-INV": 120.0 * (1 + 0.9e-9), "BTC-PERP": 5_500.0}), 2)
    assert orders.new_q == {"BTC-PERP": pytest.approx(0.1)}


# --- rolls ------------------------------------------------------------------------------------


def test_roll_rows_by_hand() -> None:
    """Pairs: (BTC-Q -> BTC-PERP) traded on one leg only, (BTC-INV -> BTC-Q) not traded, then
    (BTC-INV -> BTC-PERP) traded: a row for the first and the last. Both roll into BTC-PERP and
    neither closed anything, so they share its leg equally (2,000 USD, fee 1.0, slippage 0.2
    each: the rows add up to the 4,000 USD leg, not twice it). Marks 40,000 (step 1), so
    basis = opened x (P_to - P_from) / P_to = 0."""
    inp = inputs()
    m = market_at(inp, 1)
    target = RollTargets(spot={}, futures={}, rolls=(("BTC-Q", "BTC-PERP"), ("BTC-INV", "BTC-Q"),
                                                     ("BTC-INV", "BTC-PERP")))
    trade_usd = np.array([0.0, 4_000.0, 0.0])
    fee, slip = np.array([0.0, 2.0, 0.0]), np.array([0.0, 0.4, 0.0])
    rows = roll_rows(target, inp.cons, m, 1, trade_usd, fee, slip)
    assert [(r["from"], r["to"]) for r in rows] == [("BTC-Q", "BTC-PERP"), ("BTC-INV", "BTC-PERP")]
    assert rows[0] == {"time": m.time, "step": 1, "from": "BTC-Q", "to": "BTC-PERP",
                       "from_price": 40_000.0, "to_price": 40_000.0, "notional": -0.0,
                       "opened": 2_000.0, "fee": 1.0, "slippage": 0.2, "basis": 0.0}
    assert (rows[1]["opened"], rows[1]["fee"], rows[1]["slippage"]) == (2_000.0, 1.0, 0.2)
    only_from = roll_rows(RollTargets(spot={}, futures={}, rolls=(("BTC-PERP", "BTC-Q"),)),
                          inp.cons, m, 1, trade_usd, fee, slip)
    assert [(r["notional"], r["opened"]) for r in only_from] == [(-4_000.0, 0.0)]


def test_a_roll_of_an_unknown_contract_is_refused() -> None:
    inp = inputs()
    m = market_at(inp, 0)
    target = RollTargets(spot={}, futures={}, rolls=(("BTC-PERP", "ETH-PERP"),))
    with pytest.raises(ValidationError) as exc:
        roll_rows(target, inp.cons, m, 0, np.zeros(3), np.zeros(3), np.zeros(3))
    assert exc.value.field == "policy.rolls.ETH-PERP"
    assert exc.value.problem == f"is not a contract of the book at {m.time}"
    assert exc.value.fix == "roll between ['BTC-INV', 'BTC-PERP', 'BTC-Q']"


def test_a_spot_trade_pays_the_default_half_spread_where_none_is_given() -> None:
    """ETH 10 -> 4 at 3,000 (no half spread in the path: 1 bp): cash receives 18,000 less the
    18 fee and 1.8 half spread; the optimiser's snapshot carries the same half spreads."""
    inp, st, row = inputs(), state(), new_row()
    trades: list[Event] = []
    m = market_at(inp, 0)
    assert fill_spot(inp, st, m, 0, TargetHoldings(spot={"ETH": 4.0}, futures={}), row, trades)
    assert st.cash == pytest.approx(10_000.0 + 18_000.0 - 18.0 - 1.8)
    assert row["slippage_spot"] == pytest.approx(1.8) and trades[0]["slippage"] == pytest.approx(1.8)
    assert dict(m.spot_half_spread) == {"BTC": 2e-4, "ETH": 1e-4}


def impact_inputs(adv: dict[str, float]) -> ReplayInputs:
    """:func:`inputs` with a static ADV (USD a day) per symbol."""
    idx = pd.date_range(D0, periods=3, freq="D")
    path = MarketPath(spot=pd.DataFrame({"BTC": [50_000.0, 40_000.0, 55_000.0],
                                         "ETH": [3_000.0] * 3}, index=idx),
                      spot_half_spread=pd.Series({"BTC": 2e-4}), adv=pd.Series(adv))
    return read_inputs(BOOK, path, spot_fee=None, impact_k=0.5, liquidation_penalty=0.01)


def test_a_spot_sale_pays_the_impact_of_its_spot_market_by_hand() -> None:
    """BTC 2 -> 1 at step 2 (55,000), spot ADV 1e9 USD a day, k = 0.5: sigma is the sample std of
    the two daily log returns ln(40/50), ln(55/40); slippage = 2 bp x 55,000 + 0.5 sigma
    55,000^1.5 / sqrt(1e9). The snapshot carries the ADV for the optimiser's spot leg too."""
    inp, st, row = impact_inputs({"BTC": 1e9, "BTC-PERP": 5e9}), state(), new_row()
    trades: list[Event] = []
    m = market_at(inp, 2)
    assert m.adv["BTC"] == 1e9
    r = np.log([40 / 50, 55 / 40])
    sigma = abs(r[1] - r[0]) / np.sqrt(2.0)  # the sample std of two numbers
    impact = 0.5 * sigma * 55_000.0 ** 1.5 / np.sqrt(1e9)
    assert fill_spot(inp, st, m, 2, TargetHoldings(spot={"BTC": 1.0}, futures={}), row, trades)
    assert row["slippage_spot"] == pytest.approx(11.0 + impact, rel=1e-12)
    assert trades[0]["slippage"] == row["slippage_spot"] and impact > 1.0
    assert st.cash == pytest.approx(10_000.0 + 55_000.0 - 55.0 - 11.0 - impact, rel=1e-12)


@pytest.mark.parametrize(("adv", "k"), [({"BTC-PERP": 5e9}, 2),  # no spot ADV for BTC
                                        ({"BTC": 1e9}, 0)])      # no vol before two returns
def test_no_spot_impact_without_the_assets_adv_or_vol(adv: dict[str, float], k: int) -> None:
    inp, st, row = impact_inputs(adv), state(), new_row()
    m = market_at(inp, k)
    px = float(inp.spot[k, 0])
    assert fill_spot(inp, st, m, k, TargetHoldings(spot={"BTC": 1.0}, futures={}), row, [])
    assert row["slippage_spot"] == pytest.approx(2e-4 * px, rel=1e-12)


@pytest.mark.parametrize("bad", [-1e-4, 0.5, float("nan")])
def test_a_bad_spot_half_spread_is_refused_with_its_field(bad: float) -> None:
    """One message naming the asset's half spread and the fix, before any step runs."""
    idx = pd.date_range(D0, periods=2, freq="D")
    with pytest.raises(ValidationError) as exc:
        MarketPath(spot=pd.DataFrame({"BTC": [50_000.0] * 2}, index=idx),
                   spot_half_spread=pd.Series({"BTC": bad}))
    assert exc.value.field == "market_path.spot_half_spread.BTC"
    assert exc.value.fix == "give the half spread as a fraction in [0, 0.5)"
