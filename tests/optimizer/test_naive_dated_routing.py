"""Naive overlays route each asset's hedge through its first contract (book order) that is not
within min_days_to_expiry of expiry (optimizer.policies.hedge_contracts): a quarterly rolls into
the next. Before, the first contract in book order took the hedge even after it had expired, so
the asset stayed unhedged from the settlement on (no trade on BTC-Q2). Hand arithmetic: 1 BTC of
spot at S_k = 10,000 + 100 k, target 50% of it: the hedge is -0.5 S_k."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from models.book import Book
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.market import MarketSnapshot
from optimizer.carry import _carry_per_horizon
from optimizer.policies import NaiveFutures
from scenarios.collateral import NO_SWEEPS
from scenarios.dated_basis import BasisModel, with_dated_marks
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

D0 = pd.Timestamp("2025-01-01", tz="UTC")


def dated(symbol: str, expiry_day: int) -> FuturesContract:
    return FuturesContract(symbol, "BTC", kind=ContractKind.DATED, taker_fee=0.0005,
                           expiry=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=expiry_day))


Q1 = dated("BTC-Q1", 10)   # expires 2025-01-11 00:00 UTC
Q2 = dated("BTC-Q2", 40)   # live throughout the path


def test_the_naive_overlay_rolls_into_the_live_contract() -> None:
    n = 14
    idx = pd.date_range(D0, periods=n, freq="D")
    spot = pd.DataFrame({"BTC": [10_000.0 + 100.0 * k for k in range(n)]}, index=idx)
    path = with_dated_marks(MarketPath(spot=spot), (Q1, Q2), BasisModel.constant({"BTC": 0.0365}))
    # 1 BTC of spot, target 50% of the invested base (the spot value): the naive rule shorts
    # half the spot value every day, w* V - spot = 0.5 S - S = -0.5 S (USD).
    book = Book((SpotAsset("BTC"),), (Q1, Q2), spot={"BTC": 1.0}, targets={"BTC": 0.5},
                cash=5_000.0)
    res = run_backtest(book, path, NaiveFutures(period="1D"), collateral=NO_SWEEPS)
    fn = res.futures_notional.sum(axis=1)
    # before Q1's window: hedged in Q1 at -0.5 S (hand arithmetic, S_k = 10,000 + 100 k)
    assert fn.iloc[0] == pytest.approx(-5_000.0)
    # from Q1's last 2 days on (and after its settlement on step 10) Q2 carries -0.5 S_k
    for k in range(8, n):  # Q1 within 2 days of expiry from step 9: rolled into Q2 by then
        assert fn.iloc[k] == pytest.approx(-0.5 * (10_000.0 + 100.0 * k), rel=1e-6), (
            f"step {k}: BTC futures exposure {fn.iloc[k]:.2f} USD, Q2 traded "
            f"{(res.trades['symbol'] == 'BTC-Q2').sum()} times")


@pytest.fixture
def new_york() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_dated_carry_reads_a_naive_expiry_as_utc(new_york: None) -> None:
    """The basis carry reads a naive expiry as UTC, as every other expiry rule (it used the
    machine's time zone: 1 day + 5 h in New York, 0.4138% instead of 0.5%)."""
    # expiry 2024-01-02 00:00 (naive = UTC), market 2024-01-01 00:00 UTC: 1 day left.
    q = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED, expiry=datetime(2024, 1, 2))
    assert q.days_to_expiry(datetime(2024, 1, 1)) == pytest.approx(1.0)
    book = Book((SpotAsset("BTC"),), (q,), spot={"BTC": 1.0}, targets={"BTC": 1.0})
    market = MarketSnapshot(time=pd.Timestamp("2024-01-01", tz="UTC"), spot={"BTC": 100.0},
                            mark={"BTC-Q": 101.0})
    # horizon 0.5 day, basis 1%, 1 day left: a long pays b x 0.5 / max(1, 0.5) = 0.5%
    carry = _carry_per_horizon(book, market, 0.5)
    assert carry[0] == pytest.approx(0.01 * 0.5 / 1.0)
