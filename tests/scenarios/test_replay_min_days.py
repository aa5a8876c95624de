"""The replay applies the order planner's ``min_days_to_expiry`` rule (hand-computed).

Daily steps from 2025-01-01 UTC, BTC spot 10,000 flat and no mark path (mark = spot, so one linear
contract of size 1 is 10,000 USD), BTC-Q1 expiring 2025-01-05 00:00 UTC: 4, 3, 2 and 1 days to
expiry at steps 0-3. With min_days_to_expiry = 2 (the default) step 3 is inside the window
(1 < 2), step 2 is not (2 >= 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from executor.plan_parts import near_expiry, trade_parts
from models.book import Book
from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract, SpotAsset, reduce_only_quantity
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.policies import OptimizedFutures, Policy, TargetHoldings, current_holdings
from optimizer.settings import ConstraintSettings, OptimizerSettings
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest
from scenarios.replay_inputs import read_inputs
from scenarios.rolls import RollingPolicy

D0 = pd.Timestamp("2025-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)
Q1 = FuturesContract("BTC-Q1", "BTC", kind=ContractKind.DATED, taker_fee=0.0,
                     expiry=datetime(2025, 1, 5, tzinfo=UTC))
Q2 = FuturesContract("BTC-Q2", "BTC", kind=ContractKind.DATED, taker_fee=0.0,
                     expiry=datetime(2025, 3, 1, tzinfo=UTC))


class SetAt(Policy):
    """Holds, except at the listed times, where it sets futures notional (USD)."""

    name = "set_at"

    def __init__(self, futures: Mapping[pd.Timestamp, Mapping[str, float]]) -> None:
        self.futures = dict(futures)

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        held = current_holdings(book, market)
        return TargetHoldings(spot=held.spot, futures={**held.futures, **self.futures.get(t, {})})


def _path(n: int = 4) -> MarketPath:
    idx = pd.date_range(D0, periods=n, freq="D")
    return MarketPath(spot=pd.DataFrame({"BTC": [10_000.0] * n}, index=idx),
                      half_spread=pd.Series({"BTC-Q1": 0.0, "BTC-Q2": 0.0}))


def _book() -> Book:
    return Book((SpotAsset("BTC"),), (Q1,), spot={"BTC": 1.0}, targets={"BTC": 0.5}, cash=5_000.0)


def _q1_notional(targets: Mapping[pd.Timestamp, Mapping[str, float]]) -> list[float]:
    res = run_backtest(_book(), _path(), SetAt(targets), collateral=NO_SWEEPS)
    return [float(x) for x in res.futures_notional["BTC-Q1"]]


def test_not_opened_inside_the_window() -> None:
    # step 3 (1 day left): opening -5,000 USD from flat is refused; step 2 (2 days) still opens
    assert _q1_notional({D0 + 3 * DAY: {"BTC-Q1": -5_000.0}}) == [0.0, 0.0, 0.0, 0.0]
    assert _q1_notional({D0 + 2 * DAY: {"BTC-Q1": -5_000.0}}) == [0.0, 0.0, -5_000.0, -5_000.0]


def test_not_increased_inside_the_window() -> None:
    # short 5,000 at step 0; -8,000 at step 3 would increase it: held at -5,000
    got = _q1_notional({D0: {"BTC-Q1": -5_000.0}, D0 + 3 * DAY: {"BTC-Q1": -8_000.0}})
    assert got == pytest.approx([-5_000.0] * 4, abs=1e-9)


def test_reduced_and_flip_closed_inside_the_window() -> None:
    got = _q1_notional({D0: {"BTC-Q1": -5_000.0}, D0 + 3 * DAY: {"BTC-Q1": -2_000.0}})
    assert got == pytest.approx([-5_000.0, -5_000.0, -5_000.0, -2_000.0], abs=1e-9)
    # a flip to +3,000: the closing part trades, the opening one does not -> 0
    got = _q1_notional({D0: {"BTC-Q1": -5_000.0}, D0 + 3 * DAY: {"BTC-Q1": 3_000.0}})
    assert got == pytest.approx([-5_000.0, -5_000.0, -5_000.0, 0.0], abs=1e-9)


def test_optimiser_does_not_open_at_1_5_days() -> None:
    """The reviewer's case: an optimiser with only a contract 1.5 days from expiry (default
    settings: expiry_row off) opened -4,990.75 USD; the replay now trades nothing."""
    q = FuturesContract("BTC-Q1", "BTC", kind=ContractKind.DATED, taker_fee=5e-4,
                        expiry=datetime(2025, 1, 2, 12, tzinfo=UTC))
    risk = RiskModel.from_covariance(["BTC"], np.array([[0.36]]))
    book = Book((SpotAsset("BTC"),), (q,), spot={"BTC": 1.0}, targets={"BTC": 0.5}, cash=5_000.0)
    res = run_backtest(book, _path(), OptimizedFutures(risk), collateral=NO_SWEEPS)
    assert (res.trades["kind"] == "futures").sum() == 0


def test_same_rule_as_the_executor() -> None:
    inputs = read_inputs(_book(), _path(), spot_fee=None, impact_k=1.0, liquidation_penalty=0.01)
    for k, t in enumerate(inputs.times):
        assert bool(inputs.near_expiry[k, 0]) == (near_expiry(Q1, t.to_pydatetime(), 2.0) is not None)
    assert inputs.near_expiry[:, 0].tolist() == [False, False, False, True]
    for q0, q1 in [(-5, -2), (-5, -8), (-5, 3), (0, 4), (5, 0), (5, 5), (5, -5), (2, 1)]:
        reduced = q0 + sum(p.contracts for p in trade_parts("X", q0, q1, 0.0) if p.reduce_only)
        assert reduce_only_quantity(q0, q1) == pytest.approx(reduced)


def test_rolling_inside_the_window_is_refused() -> None:
    risk = RiskModel.from_covariance(["BTC"], np.array([[0.36]]))
    with pytest.raises(ValidationError, match=r"roll_days_before.*min_days_to_expiry = 2.*"
                                              r"roll_days_before >= 2"):
        RollingPolicy(OptimizedFutures(risk), (Q1, Q2), roll_days_before=1.0)
    with pytest.raises(ValidationError, match="roll_days_before"):
        RollingPolicy(SetAt({}), (Q1, Q2), roll_days_before=1.5)
    loose = OptimizerSettings(constraints=ConstraintSettings(min_days_to_expiry=1.0))
    assert RollingPolicy(OptimizedFutures(risk, loose), (Q1, Q2),
                         roll_days_before=1.0).roll_days_before == 1.0
    assert RollingPolicy(SetAt({}), (Q1, Q2), roll_days_before=2.0).roll_days_before == 2.0


class SetAtWithSettings(SetAt):
    """:class:`SetAt` whose optimiser settings (read by the replay through ``Policy.optimiser``)
    carry ``min_days_to_expiry``."""

    def __init__(self, futures: Mapping[pd.Timestamp, Mapping[str, float]], min_days: float) -> None:
        super().__init__(futures)
        risk = RiskModel.from_covariance(["BTC"], np.array([[0.36]]))
        cons = ConstraintSettings(min_days_to_expiry=min_days)
        self._opt = OptimizedFutures(risk, OptimizerSettings(constraints=cons))

    def optimiser(self) -> OptimizedFutures:
        return self._opt


@pytest.mark.parametrize(("min_days", "step", "opened"), [
    (0.5, 3, True),    # 1 day left >= 0.5: opened (the default 2 would refuse it)
    (2.5, 2, False),   # 2 days left < 2.5: refused (the default 2 would open it)
])
def test_the_policys_own_window_is_the_one_applied(min_days: float, step: int, opened: bool) -> None:
    t = D0 + step * DAY
    res = run_backtest(_book(), _path(), SetAtWithSettings({t: {"BTC-Q1": -5_000.0}}, min_days),
                       collateral=NO_SWEEPS)
    assert float(res.futures_notional["BTC-Q1"].iloc[3]) == (-5_000.0 if opened else 0.0)
