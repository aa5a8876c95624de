"""The replay's funding forecast (issue 11, item 5): with ``[costs] funding_forecast = "ewma"`` the
step's MarketSnapshot carries each perpetual's EWMA-shrunk forecast made from the settlements at
or before that step only (scenarios.replay_inputs); by default it carries none.

Causality is shown twice: the snapshots and the optimiser's decision at step t are unchanged when
every funding settlement after t is changed, and so are all positions up to t of a whole replay.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from models.book import Book, TargetsBase
from models.funding_forecast import EwmaShrinkForecaster
from models.instruments import ContractKind, FuturesContract, SpotAsset
from models.risk import RiskModel
from optimizer.policies import OptimizedFutures
from optimizer.settings import CostSettings, FundingForecastRule, OptimizerSettings
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest
from scenarios.replay_inputs import ReplayInputs, market_at, read_inputs

T0 = pd.Timestamp("2025-01-01T00:00:00Z")
STEP = pd.Timedelta(hours=8)
N = 60
CUT = 30  # the step t after which the funding is changed
HORIZON_DAYS = 3.0

EWMA = CostSettings(horizon_days=HORIZON_DAYS, funding_forecast=FundingForecastRule.EWMA,
                    funding_half_life=5.0, funding_reversion_half_life=30.0,
                    funding_long_run_rate=1e-4)
LAST = replace(EWMA, funding_forecast=FundingForecastRule.LAST)


def _book() -> Book:
    """$6,000 of BTC and $4,000 of ETH, $5,000 cash, targets 70 / 30 of NAV: a long BTC hedge."""
    return Book((SpotAsset("BTC"), SpotAsset("ETH")),
                (FuturesContract("BTC-PERP", "BTC"), FuturesContract("ETH-PERP", "ETH")),
                spot={"BTC": 0.1, "ETH": 1.6}, targets={"BTC": 0.7, "ETH": 0.3}, cash=5_000.0,
                targets_base=TargetsBase.NAV)


def _path(seed: int = 3) -> MarketPath:
    """8 h steps; BTC-PERP settles every step, ETH-PERP every other one (its column holds 0 in
    between and ``funding_settled`` False, as scenarios.read_history fills a union schedule)."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(T0, periods=N, freq=STEP)
    spot = pd.DataFrame({"BTC": 60_000.0 * np.exp(np.cumsum(rng.normal(0, 0.01, N))),
                         "ETH": 2_500.0 * np.exp(np.cumsum(rng.normal(0, 0.012, N)))}, index=idx)
    btc = 1e-4 + rng.normal(0, 3e-4, N)
    eth = np.where(np.arange(N) % 2 == 0, 1e-4 + rng.normal(0, 3e-4, N), 0.0)
    funding = pd.DataFrame({"BTC-PERP": btc, "ETH-PERP": eth}, index=idx)
    settled = pd.DataFrame({"BTC-PERP": True, "ETH-PERP": np.arange(N) % 2 == 0}, index=idx)
    return MarketPath(spot=spot, funding=funding, funding_settled=settled,
                      half_spread=pd.Series({"BTC-PERP": 0.0001, "ETH-PERP": 0.0001}))


def _changed_after(path: MarketPath, t: pd.Timestamp) -> MarketPath:
    """``path`` with every settlement strictly after ``t`` changed (big positive funding)."""
    assert path.funding is not None
    f = path.funding.copy()
    later = f.index > t
    f.loc[later] = f.loc[later].where(f.loc[later] == 0.0, 0.004)
    return replace(path, funding=f)


def _inputs(path: MarketPath, costs: CostSettings | None) -> ReplayInputs:
    return read_inputs(_book(), path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01,
                       costs=costs)


def _risk() -> RiskModel:
    vol = np.array([0.55, 0.70])
    corr = np.array([[1.0, 0.7], [0.7, 1.0]])
    return RiskModel.from_covariance(("BTC", "ETH"), np.outer(vol, vol) * corr)


def _policy(costs: CostSettings) -> OptimizedFutures:
    return OptimizedFutures(_risk(), OptimizerSettings(costs=costs, basis_risk=False))


def test_default_fills_no_forecast() -> None:
    path = _path()
    for costs in (None, LAST):
        inputs = _inputs(path, costs)
        assert inputs.forecast is None
        for k in range(N):
            m = market_at(inputs, k)
            assert m.funding_forecast == {}
            assert m.funding == market_at(_inputs(path, None), k).funding


def test_forecast_is_the_forecasters_own_causal_forecast() -> None:
    """Step k's forecast equals EwmaShrinkForecaster.forecast(settlements, at=t_k, H) on each
    contract's own settlements (ETH's unsettled rows are not), over the settlements the step's
    carry counts: H = 3 d x 24 / h with h = 8 h for BTC, and for ETH, which settles every 16 h,
    16 h once it has settled twice (the measured spacing the snapshot carries), H = 4.5; the
    long-run level 1e-4 per 8 h is 1e-4 x h / 8 per settlement."""
    path = _path()
    assert path.funding is not None and path.funding_settled is not None
    with pytest.warns(UserWarning, match="ETH-PERP settled every 16 h"):
        inputs = _inputs(path, EWMA)
    for sym in ("BTC-PERP", "ETH-PERP"):
        col = path.funding[sym]
        own = col[path.funding_settled[sym]]
        for k in range(N):
            snap = market_at(inputs, k)
            hours = 16.0 if sym == "ETH-PERP" and k >= 2 else 8.0
            assert snap.funding_hours(sym, 8.0) == hours
            fc = EwmaShrinkForecaster(5.0, 30.0, 1e-4 * hours / 8.0)
            want = fc.forecast(own, at=inputs.times[k], horizon=HORIZON_DAYS * 24.0 / hours).mean_rate
            assert snap.funding_forecast[sym] == pytest.approx(want, rel=1e-12, abs=1e-18), (sym, k)


def test_contracts_without_funding_data_get_no_forecast() -> None:
    """A dated contract and a perp with no funding column: no forecast, today's carry."""
    q = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED,
                        expiry=(T0 + pd.Timedelta(days=90)).to_pydatetime())
    book = replace(_book(), contracts=(*_book().contracts, q))
    path = _path()
    assert path.funding is not None
    path = replace(path, funding=path.funding[["BTC-PERP"]])
    inputs = read_inputs(book, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01,
                         costs=EWMA)
    for k in (0, N - 1):
        assert set(market_at(inputs, k).funding_forecast) == {"BTC-PERP"}


def test_snapshots_and_decision_at_t_ignore_later_funding() -> None:
    path = _path()
    t = path.spot.index[CUT]
    other = _changed_after(path, t)
    a, b = _inputs(path, EWMA), _inputs(other, EWMA)
    for k in range(CUT + 1):
        assert market_at(a, k) == market_at(b, k)
    assert any(market_at(a, k).funding_forecast != market_at(b, k).funding_forecast
               for k in range(CUT + 1, N))
    # the optimiser's decision at t from each path's snapshot (fresh policies)
    book = _book()
    dec_a = _policy(EWMA)(book, market_at(a, CUT), t)
    dec_b = _policy(EWMA)(book, market_at(b, CUT), t)
    assert dec_a.futures == dec_b.futures
    # ... and the forecast matters: the same step under "last" decides differently
    dec_last = _policy(LAST)(book, market_at(_inputs(path, None), CUT), t)
    assert dec_last.futures != dec_a.futures


def _replay(path: MarketPath, costs: CostSettings) -> pd.DataFrame:
    """A whole replay under an optimising policy with ``costs``: run_backtest passes the policy's
    cost settings to the snapshots, so they carry its forecast."""
    return run_backtest(_book(), path, _policy(costs)).futures_notional


def test_replay_positions_up_to_t_ignore_later_funding() -> None:
    path = _path()
    t = path.spot.index[CUT]
    a = _replay(path, EWMA)
    b = _replay(_changed_after(path, t), EWMA)
    pd.testing.assert_frame_equal(a.loc[:t], b.loc[:t], check_exact=True)
    assert not np.allclose(a.loc[t:].iloc[1:].to_numpy(), b.loc[t:].iloc[1:].to_numpy())
    # the forecast reaches the decisions: "ewma" and "last" replays differ
    last = _replay(path, LAST)
    assert not np.allclose(a.to_numpy(), last.to_numpy())
    # with changed later funding the BTC long is cut (0.4% per settlement is costly to hold)
    assert b["BTC-PERP"].iloc[-1] < a["BTC-PERP"].iloc[-1]
    assert math.isfinite(float(a.to_numpy().sum()))


def test_a_snapshot_shows_each_contracts_own_last_rate() -> None:
    """BTC settles at 00:00 and 08:00, SOL also alone at 04:00 and 06:00 (the settlement table
    holds 0 for BTC in those rows and ``funding_settled`` False). The 4 h step at 04:00 and the
    one at 08:00 show BTC's own last rate: 1e-4 (set at 00:00), then 3e-4; SOL's 2e-4 then -5e-4
    (its last, at 06:00). The snapshot showed BTC at 0 after a row where SOL settled alone."""
    assets = ("BTC", "SOL")
    book = Book(tuple(SpotAsset(a) for a in assets),
                tuple(FuturesContract(f"{a}-PERP", a) for a in assets),
                spot={"BTC": 1.0, "SOL": 100.0}, targets={"BTC": 0.5, "SOL": 0.5}, cash=0.0)
    idx = pd.date_range(T0, periods=3, freq="4h")
    spot = pd.DataFrame({"BTC": [60_000.0] * 3, "SOL": [150.0] * 3}, index=idx)
    times = [T0, T0 + pd.Timedelta(hours=4), T0 + pd.Timedelta(hours=6), T0 + pd.Timedelta(hours=8)]
    funding = pd.DataFrame({"BTC-PERP": [1e-4, 0.0, 0.0, 3e-4],
                            "SOL-PERP": [-1e-4, 2e-4, -5e-4, 0.0]}, index=pd.DatetimeIndex(times))
    settled = pd.DataFrame({"BTC-PERP": [True, False, False, True],
                            "SOL-PERP": [True, True, True, False]}, index=funding.index)
    inputs = read_inputs(book, MarketPath(spot=spot, funding=funding, funding_settled=settled),
                         spot_fee=None, impact_k=1.0, liquidation_penalty=0.0)
    seen = [dict(market_at(inputs, k).funding) for k in range(3)]
    assert seen == [{"BTC-PERP": 1e-4, "SOL-PERP": -1e-4}, {"BTC-PERP": 1e-4, "SOL-PERP": 2e-4},
                    {"BTC-PERP": 3e-4, "SOL-PERP": -5e-4}]
