"""The rolls table when two chain contracts roll into one at the same step: the pairs share the new
leg in proportion to the legs they close, so the table's fees add up to what the step paid and
the new leg's notional is counted once (hand-computed: flat spot 10,000 USD, marks at spot, no
spread or ADV, taker fee 5 bp)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from optimizer.policies import Policy, TargetHoldings, current_holdings
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest
from scenarios.rolls import RollingPolicy

FEE = 0.0005


def dated(symbol: str, expiry_day: int) -> FuturesContract:
    return FuturesContract(symbol, "BTC", kind=ContractKind.DATED, taker_fee=FEE,
                           expiry=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=expiry_day))


class Hold(Policy):
    name = "hold"

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        return current_holdings(book, market)


def test_two_contracts_rolled_into_one_share_its_leg() -> None:
    # Q1 (expiry 2025-01-12) and Q2 (2025-01-13) are within 3 days of expiry at the start
    # (2025-01-10 12:00), Q3 (2025-03-02) is the active contract: both roll into Q3 at step 0.
    q1, q2, q3 = dated("BTC-Q1", 11), dated("BTC-Q2", 12), dated("BTC-Q3", 60)
    idx = pd.date_range(pd.Timestamp("2025-01-10T12:00", tz="UTC"), periods=2, freq="D")
    book = Book((SpotAsset("BTC"),), (q1, q2, q3), spot={"BTC": 1.0}, targets={"BTC": 0.5},
                cash=5_000.0, futures={"BTC-Q1": FuturesPosition(-0.1, 10_000.0),
                                       "BTC-Q2": FuturesPosition(-0.2, 10_000.0)})
    path = MarketPath(spot=pd.DataFrame({"BTC": [10_000.0, 10_000.0]}, index=idx),
                      half_spread=pd.Series({"BTC-Q1": 0.0, "BTC-Q2": 0.0, "BTC-Q3": 0.0}))
    res = run_backtest(book, path, RollingPolicy(Hold(), (q1, q2, q3), roll_days_before=3.0),
                       collateral=NO_SWEEPS)
    # hand: buy back 0.1 (1,000 USD, fee 0.50) and 0.2 (2,000 USD, fee 1.00), sell 3,000 USD of
    # Q3 (fee 1.50): 3.00 USD of fees at step 0
    assert res.steps["fee_futures"].iloc[0] == pytest.approx(3.0)
    assert res.futures_notional["BTC-Q3"].iloc[0] == pytest.approx(-3_000.0)
    rolls = res.rolls.set_index("from")
    assert list(rolls.index) == ["BTC-Q1", "BTC-Q2"] and set(rolls["to"]) == {"BTC-Q3"}
    # Q1 closed 1,000 of the 3,000 USD closed: a third of the Q3 leg (-1,000 USD, fee 0.50);
    # Q2 the other two thirds (-2,000 USD, fee 1.00)
    assert rolls.loc["BTC-Q1", "notional"] == pytest.approx(-1_000.0)
    assert rolls.loc["BTC-Q1", "opened"] == pytest.approx(-1_000.0)
    assert rolls.loc["BTC-Q1", "fee"] == pytest.approx(0.5 + 0.5)
    assert rolls.loc["BTC-Q2", "notional"] == pytest.approx(-2_000.0)
    assert rolls.loc["BTC-Q2", "opened"] == pytest.approx(-2_000.0)
    assert rolls.loc["BTC-Q2", "fee"] == pytest.approx(1.0 + 1.0)
    assert rolls["fee"].sum() == pytest.approx(3.0)
    assert rolls["opened"].sum() == pytest.approx(-3_000.0)
    assert rolls["slippage"].sum() == pytest.approx(0.0) and rolls["basis"].sum() == pytest.approx(0.0)


def test_the_split_is_proportional_for_legs_under_a_dollar() -> None:
    """roll_rows on two pairs into C closing 0.3 and 0.6 USD (a leg of 0.9 USD sold in C, fee
    0.09, slippage 0.009): C's leg is split 1/3 and 2/3 by hand, however small the notionals."""
    import numpy as np

    from scenarios.backtest_result import RollTargets
    from scenarios.replay_fills import roll_rows

    cons = ["A", "B", "C"]
    market = MarketSnapshot(time=pd.Timestamp("2025-01-10", tz="UTC"), spot={"BTC": 100.0},
                            mark={"A": 100.0, "B": 100.0, "C": 100.0})
    target = RollTargets(spot={}, futures={}, rolls=(("A", "C"), ("B", "C")))
    rows = roll_rows(target, cons, market, 0, np.array([0.3, 0.6, -0.9]),
                     np.array([0.03, 0.06, 0.09]), np.array([0.003, 0.006, 0.009]))
    by = {r["from"]: r for r in rows}
    assert by["A"]["opened"] == pytest.approx(-0.3) and by["B"]["opened"] == pytest.approx(-0.6)
    assert by["A"]["fee"] == pytest.approx(0.03 + 0.03) and by["B"]["fee"] == pytest.approx(0.06 + 0.06)
    assert by["A"]["slippage"] == pytest.approx(0.006)
