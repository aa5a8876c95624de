"""Settlement of dated futures at expiry by hand: the expiry instant, the close at spot, the
spot-vs-mark PnL, the settlement fee (linear and inverse) and the "settle" trade rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import ContractKind, FuturesContract, Settlement, SpotAsset
from models.market import MarketSnapshot
from scenarios.replay_state import ReplayState, value_state
from scenarios.settlement import expiry_ns, settle_expired, spot_at_expiry

EXPIRY = datetime(2024, 6, 28, 8, 0)
T_EXP = int(pd.Timestamp("2024-06-28T08:00:00Z").value)
DATED = FuturesContract("BTC-0628", "BTC", kind=ContractKind.DATED, expiry=EXPIRY, taker_fee=0.0005)
INVERSE = FuturesContract("BTCUSD-0628", "BTC", kind=ContractKind.DATED, expiry=EXPIRY,
                          settlement=Settlement.INVERSE, contract_size=100.0, taker_fee=0.0004)
PERP = FuturesContract("BTC-PERP", "BTC")


def test_expiry_ns_by_hand() -> None:
    assert expiry_ns(PERP) is None
    assert expiry_ns(DATED) == T_EXP  # naive = UTC
    aware = FuturesContract("X", "BTC", kind=ContractKind.DATED,
                            expiry=datetime(2024, 6, 28, 10, 0, tzinfo=timezone(timedelta(hours=2))))
    assert expiry_ns(aware) == T_EXP
    assert expiry_ns(FuturesContract("Y", "BTC", kind=ContractKind.DATED,
                                     expiry=datetime(2024, 6, 28, 8, 0, tzinfo=UTC))) == T_EXP
    # a perpetual that carries an expiry is still not settled
    assert expiry_ns(FuturesContract("Z", "BTC", expiry=EXPIRY)) is None


def _setup(q_dated: float, q_inv: float = 0.0) -> tuple[Book, ReplayState, MarketSnapshot]:
    book = Book(assets=(SpotAsset("BTC"),), contracts=(DATED, INVERSE, PERP), spot={"BTC": 1.0},
                targets={"BTC": 1.0}, cash=1000.0)
    fut = {}
    if q_dated:
        fut["BTC-0628"] = FuturesPosition(q_dated, 60_000.0)
    if q_inv:
        fut["BTCUSD-0628"] = FuturesPosition(q_inv, 60_000.0)
    fut["BTC-PERP"] = FuturesPosition(0.2, 60_000.0)
    state = ReplayState(spot={"BTC": 1.0}, futures=fut, cash=1000.0)
    market = MarketSnapshot(time=pd.Timestamp(T_EXP, tz="UTC"), spot={"BTC": 60_500.0},
                            mark={"BTC-0628": 61_000.0, "BTCUSD-0628": 61_000.0, "BTC-PERP": 60_400.0})
    return book, state, market


def test_settle_linear_at_spot_by_hand() -> None:
    book, state, market = _setup(-0.5)
    nav_before = value_state(book, state, market).nav
    trades: list[dict[str, object]] = []
    exp = {"BTC-0628": T_EXP, "BTCUSD-0628": T_EXP}
    pnl, fees = settle_expired(book, state, market, T_EXP, exp, trades)
    # spot vs mark: q (S - mark) = -0.5 x (60,500 - 61,000) = +250
    assert pnl == pytest.approx(250.0)
    # fee: 0.0005 x |-0.5 x 60,500| = 15.125
    assert fees == pytest.approx(15.125)
    assert "BTC-0628" not in state.futures or state.futures["BTC-0628"].contracts == 0
    assert state.futures["BTC-PERP"] == FuturesPosition(0.2, 60_000.0)  # untouched
    # cash: 1,000 + realised -0.5 x (60,500 - 60,000) - 15.125
    assert state.cash == pytest.approx(1000.0 - 250.0 - 15.125)
    assert value_state(book, state, market).nav == pytest.approx(nav_before + 250.0 - 15.125)
    (tr,) = trades
    assert tr == {"time": market.time, "kind": "settle", "symbol": "BTC-0628", "quantity": 0.5,
                  "price": 60_500.0, "notional": pytest.approx(30_250.0), "fee": pytest.approx(15.125),
                  "slippage": 0.0}


def test_settle_inverse_fee_on_contract_value() -> None:
    book, state, market = _setup(0.0, q_inv=10.0)
    trades: list[dict[str, object]] = []
    pnl, fees = settle_expired(book, state, market, T_EXP + 1, {"BTCUSD-0628": T_EXP}, trades)
    # inverse: 10 x 100 USD = 1,000 USD notional at any price; fee 0.0004 x 1,000
    assert fees == pytest.approx(0.4)
    # PnL of S against mark: q size (1/mark - 1/S) S ... the NAV change of re-marking to S
    want = 10 * 100 * (1 / 60_000 - 1 / 60_500) * 60_500 - 10 * 100 * (1 / 60_000 - 1 / 61_000) * 61_000
    assert pnl == pytest.approx(want)
    assert trades[0]["quantity"] == -10.0 and trades[0]["notional"] == pytest.approx(-1000.0)


def test_nothing_due() -> None:
    book, state, market = _setup(-0.5)
    trades: list[dict[str, object]] = []
    # before the expiry, a contract without an expiry entry, or one with no position: nothing
    assert settle_expired(book, state, market, T_EXP - 1, {"BTC-0628": T_EXP}, trades) == (0.0, 0.0)
    assert settle_expired(book, state, market, T_EXP, {}, trades) == (0.0, 0.0)
    book0, state0, _ = _setup(0.0)
    state0.futures["BTC-0628"] = FuturesPosition(0.0, 60_000.0)
    assert settle_expired(book0, state0, market, T_EXP, {"BTC-0628": T_EXP}, trades) == (0.0, 0.0)
    assert trades == [] and state.cash == 1000.0


def test_at_exactly_the_expiry_it_settles() -> None:
    book, state, market = _setup(0.3)
    trades: list[dict[str, object]] = []
    pnl, fees = settle_expired(book, state, market, T_EXP, {"BTC-0628": T_EXP}, trades)
    assert pnl == pytest.approx(0.3 * (60_500 - 61_000)) and fees == pytest.approx(0.0005 * 0.3 * 60_500)
    assert trades[0]["quantity"] == -0.3


def test_two_contracts_settle_together_and_their_fees_add_up() -> None:
    book, state, market = _setup(-0.5, q_inv=10.0)
    trades: list[dict[str, object]] = []
    _, fees = settle_expired(book, state, market, T_EXP, {"BTC-0628": T_EXP, "BTCUSD-0628": T_EXP}, trades)
    assert fees == pytest.approx(15.125 + 0.4)
    assert [t["symbol"] for t in trades] == ["BTC-0628", "BTCUSD-0628"]


# --- the replay settles at the spot at expiry, not at the next step's ---------------------------

def _hold_through(expiry: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Daily steps from 2025-01-01, BTC spot 10,000, 10,000, 11,000, 11,000 (no mark path: mark =
    spot); short 1 BTC-Q1 from 10,000 held (no trades); returns the replay's steps and trades."""
    from optimizer.policies import Policy, TargetHoldings, current_holdings
    from scenarios.collateral import NO_SWEEPS
    from scenarios.market_path import MarketPath
    from scenarios.replay import run_backtest

    class Hold(Policy):
        name = "hold"

        def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
            h = current_holdings(book, market)
            return TargetHoldings(spot=h.spot, futures=h.futures)

    q = FuturesContract("BTC-Q1", "BTC", kind=ContractKind.DATED, expiry=expiry, taker_fee=0.0005)
    idx = pd.date_range("2025-01-01", periods=4, freq="D", tz="UTC")
    path = MarketPath(spot=pd.DataFrame({"BTC": [10_000.0, 10_000.0, 11_000.0, 11_000.0]},
                                        index=idx))
    book = Book((SpotAsset("BTC"),), (q,), spot={"BTC": 1.0}, targets={"BTC": 0.0}, cash=20_000.0,
                futures={"BTC-Q1": FuturesPosition(-1.0, 10_000.0)})
    res = run_backtest(book, path, Hold(), collateral=NO_SWEEPS)
    return res.steps, res.trades


def test_replay_settles_at_spot_interpolated_to_expiry() -> None:
    """Expiry 2025-01-02 06:00, between the steps of 01-02 (10,000) and 01-03 (11,000): settled
    at 10,000 + 1,000 x 6/24 = 10,250 (the old replay took 01-03's 11,000), so the short's futures
    PnL is -(10,250 - 10,000) = -250 (was -1,000) and the fee 0.0005 x 10,250."""
    steps, trades = _hold_through(datetime(2025, 1, 2, 6, tzinfo=UTC))
    settle = trades[trades["kind"] == "settle"]
    assert len(settle) == 1
    assert settle["time"].iloc[0] == pd.Timestamp("2025-01-03", tz="UTC")
    assert settle["price"].iloc[0] == pytest.approx(10_250.0)
    assert steps["futures_pnl"].sum() == pytest.approx(-250.0)
    assert steps["fee_futures"].sum() == pytest.approx(0.0005 * 10_250.0)


def test_replay_settles_at_the_step_at_expiry() -> None:
    """Expiry exactly at the 01-03 step: settled at that step's spot 11,000, PnL -1,000."""
    steps, trades = _hold_through(datetime(2025, 1, 3, tzinfo=UTC))
    settle = trades[trades["kind"] == "settle"]
    assert settle["price"].iloc[0] == pytest.approx(11_000.0)
    assert steps["futures_pnl"].sum() == pytest.approx(-1_000.0)


def test_spot_at_expiry_by_hand() -> None:
    assert spot_at_expiry(15, 10, 20, 100.0, 200.0) == pytest.approx(150.0)
    assert spot_at_expiry(20, 10, 20, 100.0, 200.0) == 200.0   # at the step: its close
    assert spot_at_expiry(5, 10, 20, 100.0, 200.0) == 200.0    # before the previous step
    assert spot_at_expiry(10, 10, 20, 100.0, 200.0) == 200.0   # on it (strictly between only)
    assert spot_at_expiry(18, 10, 20, 100.0, 200.0) == pytest.approx(180.0)

