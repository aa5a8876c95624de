"""Order planning checks: expired and near-expiry dated contracts, lot rounding that removes (most
of) the solution. Hand computations in the comments; no network."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from exec_helpers import covariance, risk_model, solution_with, te_reference

from executor.plan import (
    OrderPlan,
    PlanOptions,
    Side,
    book_instruments,
    plan_orders,
    with_book_settings,
)
from models.book import Book, FuturesPosition
from models.errors import ExitCode, ValidationError
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from optimizer.settings import ConstraintSettings, OptimizerSettings

PID = "20240601000000abcd"
T0 = pd.Timestamp("2024-06-01", tz="UTC")  # the market time
SPOT = np.array([6000.0, 2500.0, 1500.0])  # 0.1 BTC, 1 ETH, 10 SOL (USD)
W = np.array([0.5, 0.3, 0.2])
V = 10_000.0


def dated(expiry: datetime, symbol: str = "BTC-240614") -> FuturesContract:
    """A BTC dated future (lot 0.001, no min notional) expiring at ``expiry``."""
    return FuturesContract(symbol, "BTC", kind=ContractKind.DATED, expiry=expiry,
                           min_notional=0.0)


def dated_book(btc: FuturesContract, futures: dict[str, FuturesPosition] | None = None) -> Book:
    """0.1 BTC, 1 ETH, 10 SOL, 50/30/20 target; ``btc`` plus ETH and SOL perpetuals."""
    con = (btc, FuturesContract("ETH-PERP", "ETH"), FuturesContract("SOL-PERP", "SOL"))
    return Book(assets=tuple(SpotAsset(a) for a in ("BTC", "ETH", "SOL")), contracts=con,
                spot={"BTC": 0.1, "ETH": 1.0, "SOL": 10.0},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=3000.0,
                futures=dict(futures or {}), name="dated book")


def dated_market(btc_symbol: str = "BTC-240614") -> MarketSnapshot:
    return MarketSnapshot(time=T0, spot={"BTC": 60_000.0, "ETH": 2_500.0, "SOL": 150.0},
                          mark={btc_symbol: 60_000.0, "ETH-PERP": 2_500.0, "SOL-PERP": 150.0})


def plan(book: Book, targets: dict[str, float], options: PlanOptions | None = None,
         market: MarketSnapshot | None = None) -> OrderPlan:
    return plan_orders(solution_with(targets), book, market or dated_market(),
                       book_instruments(book), options or PlanOptions(), risk=risk_model(),
                       plan_id=PID)


# --- 1. expired and near-expiry dated contracts -------------------------------------------------

def test_an_expired_contract_with_a_trade_is_refused_naming_it_and_its_expiry() -> None:
    book = dated_book(dated(datetime(2024, 5, 31, 8, tzinfo=UTC)))  # 16 h before the market time
    with pytest.raises(ValidationError) as info:
        plan(book, {"BTC-240614": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0})
    err = info.value
    assert err.field == "contracts.BTC-240614.expiry"
    assert "2024-05-31 08:00 UTC" in str(err) and "expired" in str(err)
    assert "0.67 days before" in str(err)  # 16 h = 0.667 day
    assert "Fix:" in str(err) and err.exit_code == ExitCode.BAD_INPUT


def test_an_expired_contract_with_a_position_is_refused_even_without_a_trade() -> None:
    pos = {"BTC-240614": FuturesPosition(-0.017, 60_000.0)}
    book = dated_book(dated(datetime(2024, 6, 1, tzinfo=UTC)), pos)  # expires at the market time
    with pytest.raises(ValidationError, match=r"BTC-240614.*2024-06-01 00:00 UTC"):
        plan(book, {"BTC-240614": -0.017 * 60_000, "ETH-PERP": 0.0, "SOL-PERP": 0.0})


def test_an_expired_contract_left_flat_does_not_block_the_plan() -> None:
    book = dated_book(dated(datetime(2024, 5, 1, tzinfo=UTC)))
    p = plan(book, {"BTC-240614": 0.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0})
    assert [leg.symbol for leg in p.legs] == ["ETH-PERP", "SOL-PERP"]


def test_near_expiry_opening_is_dropped_with_the_tracking_error_it_leaves() -> None:
    book = dated_book(dated(datetime(2024, 6, 2, tzinfo=UTC)))  # 1 day left < 2 (default)
    p = plan(book, {"BTC-240614": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0})
    assert [leg.symbol for leg in p.legs] == ["ETH-PERP", "SOL-PERP"]
    (drop,) = p.dropped
    # -1000 / 60000 = -0.01667 -> -0.017 contracts (lot 0.001) = -1020 USD
    assert drop.symbol == "BTC-240614" and drop.contracts == pytest.approx(-0.017)
    assert drop.notional == pytest.approx(-1020.0)
    assert "expires 2024-06-02 00:00 UTC" in drop.reason and "1.00 days" in drop.reason
    assert "min_days_to_expiry = 2" in drop.reason
    # without the BTC leg: futures (0, +0.2 ETH = 500, +3.333 SOL = 499.95) USD
    left = te_reference(SPOT, np.array([0.0, 500.0, 499.95]), W, covariance(), V)
    assert drop.tracking_error_left == pytest.approx(left)
    assert p.tracking_error_residual == pytest.approx(left)
    assert p.reachable["BTC-240614"] == 0.0 and p.target["BTC-240614"] == pytest.approx(-0.017)


def test_near_expiry_reducing_and_closing_legs_are_still_sent() -> None:
    c = dated(datetime(2024, 6, 2, tzinfo=UTC))
    # shrink -0.05 -> -0.017: buy 0.033 reduce-only, sent
    p = plan(dated_book(c, {"BTC-240614": FuturesPosition(-0.05, 60_000.0)}),
             {"BTC-240614": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    (leg,) = p.legs
    assert (leg.side, leg.reduce_only) == (Side.BUY, True) and leg.contracts == pytest.approx(0.033)
    assert p.dropped == ()
    # increase -0.01 -> -0.017: sell 0.007 opening, dropped
    p = plan(dated_book(c, {"BTC-240614": FuturesPosition(-0.01, 60_000.0)}),
             {"BTC-240614": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    assert p.legs == () and [d.contracts for d in p.dropped] == [pytest.approx(-0.007)]
    # flip +0.01 -> -0.017: the reduce-only close (sell 0.01) is sent, the new short is not
    p = plan(dated_book(c, {"BTC-240614": FuturesPosition(0.01, 60_000.0)}),
             {"BTC-240614": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    (leg,) = p.legs
    assert (leg.side, leg.reduce_only) == (Side.SELL, True) and leg.contracts == pytest.approx(0.01)
    assert [d.contracts for d in p.dropped] == [pytest.approx(-0.017)]
    assert p.reachable["BTC-240614"] == 0.0


def test_min_days_to_expiry_is_an_option() -> None:
    book = dated_book(dated(datetime(2024, 6, 2, tzinfo=UTC)))  # 1 day left
    targets = {"BTC-240614": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0}
    assert plan(book, targets, PlanOptions(min_days_to_expiry=0.5)).dropped == ()
    assert len(plan(book, targets, PlanOptions(min_days_to_expiry=1.5)).dropped) == 1
    assert len(plan(book, targets, PlanOptions(min_days_to_expiry=1.0)).legs) == 1  # 1.0 >= 1.0
    with pytest.raises(ValidationError, match="min_days_to_expiry"):
        PlanOptions(min_days_to_expiry=-1.0)
    settings = OptimizerSettings(constraints=ConstraintSettings(min_days_to_expiry=7.0))
    assert with_book_settings(PlanOptions(), settings).min_days_to_expiry == 7.0
    assert PlanOptions().min_days_to_expiry == 2.0


def test_days_to_expiry_in_days_naive_times_are_utc() -> None:
    c = dated(datetime(2024, 6, 3, 12))  # naive: UTC
    assert c.days_to_expiry(T0) == pytest.approx(2.5)
    assert c.days_to_expiry(datetime(2024, 6, 4)) == pytest.approx(-0.5)
    assert FuturesContract("BTC-PERP", "BTC").days_to_expiry(T0) is None


# --- 2. lot rounding that removes (most of) the solution ----------------------------------------

def perp_book(lots: dict[str, float]) -> Book:
    con = tuple(FuturesContract(f"{a}-PERP", a, lot_step=lots.get(a, 0.001), min_notional=0.0)
                for a in ("BTC", "ETH", "SOL"))
    return Book(assets=tuple(SpotAsset(a) for a in ("BTC", "ETH", "SOL")), contracts=con,
                spot={"BTC": 0.1, "ETH": 1.0, "SOL": 10.0},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=3000.0, name="lot book")


def perp_market() -> MarketSnapshot:
    return MarketSnapshot(time=T0, spot={"BTC": 60_000.0, "ETH": 2_500.0, "SOL": 150.0},
                          mark={"BTC-PERP": 60_000.0, "ETH-PERP": 2_500.0, "SOL-PERP": 150.0})


NAIVE = {"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0}  # B x = w* V - spot


def test_rounding_every_target_to_zero_is_reported_with_the_tracking_error_left() -> None:
    book = perp_book({"BTC": 1000.0, "ETH": 1000.0, "SOL": 1000.0})
    p = plan(book, NAIVE, market=perp_market())
    assert p.legs == () and p.dropped == ()  # nothing to send, nothing "dropped"
    (warning,) = p.warnings
    assert warning.startswith("lot rounding removed the whole solution")
    assert "2,000.00 USD of trades asked, 0.00 USD left" in warning
    # BTC: -1000 USD asked, 0 left; one lot = 1000 contracts x 60000 USD = 60,000,000 USD
    assert "BTC-PERP trade -1,000.00 USD -> 0.00 USD (lot step 1000 contracts = 60,000,000.00 USD)" \
        in warning
    assert "ETH-PERP" in warning and "SOL-PERP" in warning
    now = te_reference(SPOT, np.zeros(3), W, covariance(), V)
    assert p.tracking_error_residual == pytest.approx(now)
    assert f"now {100 * now:.3f}%" in warning and f"after rounding {100 * now:.3f}%" in warning
    assert "solution before rounding 0.000%" in warning  # the naive overlay hits the target
    assert "Fix:" in warning


def test_rounding_most_of_the_solution_names_only_the_contracts_behind_it() -> None:
    p = plan(perp_book({"BTC": 1000.0}), NAIVE, market=perp_market())
    (warning,) = p.warnings
    # removed: BTC 1000 + SOL 0.05 (3.333 lots x 150 = 499.95) of 2000 USD asked = 50%
    assert warning.startswith("lot rounding removed most of the solution (50%)")
    assert "BTC-PERP" in warning and "SOL-PERP" not in warning and "ETH-PERP" not in warning
    after = te_reference(SPOT, np.array([0.0, 500.0, 499.95]), W, covariance(), V)
    assert p.tracking_error_solution == pytest.approx(after)
    assert f"after rounding {100 * after:.3f}%" in warning
    assert [leg.symbol for leg in p.legs] == ["ETH-PERP", "SOL-PERP"]


def test_ordinary_rounding_and_dust_trades_give_no_warning() -> None:
    assert plan(perp_book({}), NAIVE, market=perp_market()).warnings == ()
    # a 0.5 USD BTC trade rounds to 0 on a 0.001 lot (60 USD): all of it removed, but < 1 USD
    dust = {"BTC-PERP": -0.5, "ETH-PERP": 0.0, "SOL-PERP": 0.0}
    assert plan(perp_book({}), dust, market=perp_market()).warnings == ()
    # 70 USD of SOL on a whole-contract lot: 70 / 150 = 0.467 -> 0 contracts, all 70 USD removed
    p = plan(perp_book({"SOL": 1.0}), {"BTC-PERP": 0.0, "ETH-PERP": 0.0, "SOL-PERP": 70.0},
             market=perp_market())
    assert p.legs == () and "SOL-PERP trade 70.00 USD -> 0.00 USD" in p.warnings[0]


def test_warnings_travel_in_the_plan_json_and_back() -> None:
    p = plan(perp_book({"BTC": 1000.0}), NAIVE, market=perp_market())
    d = json.loads(json.dumps(p.to_dict()))
    assert d["warnings"] == list(p.warnings) and len(d["warnings"]) == 1
    assert OrderPlan.from_dict(d) == p
    del d["warnings"]  # a plan journalled before warnings existed still loads
    assert OrderPlan.from_dict(d).warnings == ()


def test_re_planned_legs_keep_the_planner_s_drop_rules() -> None:
    """A resume re-plans from the positions with the planner's own rule: no opening leg on a dated
    contract within min_days_to_expiry (it used to be sent), the reason kept; others go out."""
    from executor.legs import legs_toward

    book = dated_book(dated(datetime(2024, 6, 2, tzinfo=UTC)))  # 1 day left < 2 (default)
    rem = legs_toward({}, {"BTC-240614": -0.017, "ETH-PERP": 0.2}, book_instruments(book),
                      dated_market(), PlanOptions(), PID, 3)
    assert [(leg.symbol, leg.index) for leg in rem.legs] == [("ETH-PERP", 3)]
    assert "min_days_to_expiry = 2" in rem.unsendable["BTC-240614"]
    closing = legs_toward({"BTC-240614": -0.017}, {"BTC-240614": 0.0}, book_instruments(book),
                          dated_market(), PlanOptions(), PID, 0)
    assert [(leg.symbol, leg.reduce_only) for leg in closing.legs] == [("BTC-240614", True)]
