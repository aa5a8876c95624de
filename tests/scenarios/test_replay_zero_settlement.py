"""A funding settlement at a rate of exactly 0 is a settlement; a row of the union schedule where a
contract did not settle is not (scenarios.read_history, scenarios.replay_inputs).

LTC's funding file has 312 settlements of exactly 0 (2020-01 .. 2020-08). The replay read an exact
0 as "no settlement", so its snapshot kept the previous rate and its EWMA forecast skipped the
zero, while ``fbr solve`` on a data market reads 0. Now ``MarketPath.funding_settled`` (set by
``scenarios.read_history``) marks where each contract settled; without it every row of a funding
column is a settlement.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition, TargetsBase
from models.errors import ValidationError
from models.funding_forecast import EwmaShrinkForecaster
from models.instruments import FuturesContract, SpotAsset
from optimizer.policies import NoRebalance
from optimizer.settings import CostSettings, FundingForecastRule
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest
from scenarios.replay_inputs import market_at, read_inputs

T0 = pd.Timestamp("2020-03-01T00:00:00Z")
H8 = pd.Timedelta(hours=8)


def _ltc_book() -> Book:
    return Book((SpotAsset("LTC"),), (FuturesContract("LTC-PERP", "LTC"),), spot={"LTC": 100.0},
                targets={"LTC": 1.0}, cash=1_000.0, targets_base=TargetsBase.NAV)


def _ltc_path() -> MarketPath:
    """A settlement at each 8 h step: 3e-4, 3e-4, then a real 0 (as LTC's file has), then 3e-4."""
    idx = pd.date_range(T0, periods=4, freq=H8)
    spot = pd.DataFrame({"LTC": [50.0] * 4}, index=idx)
    funding = pd.DataFrame({"LTC-PERP": [3e-4, 3e-4, 0.0, 3e-4]}, index=idx)
    return MarketPath(spot=spot, funding=funding)


def test_last_rate_after_a_zero_settlement_is_zero() -> None:
    inputs = read_inputs(_ltc_book(), _ltc_path(), spot_fee=None, impact_k=1.0,
                         liquidation_penalty=0.01)
    seen = [market_at(inputs, k).funding["LTC-PERP"] for k in range(4)]
    assert seen == [3e-4, 3e-4, 0.0, 3e-4]


def test_ewma_forecast_counts_the_zero_settlement() -> None:
    """Half-life 1 settlement (lam = 1/2), no reversion (w = 1): after [3e-4, 3e-4, 0] the EWMA
    is (0 + 0.5 x 3e-4 + 0.25 x 3e-4) / (1 + 0.5 + 0.25) = 2.25e-4 / 1.75 = 1.2857e-4; after
    the next 3e-4 it is (3e-4 + 0.5 x 0 + 0.25 x 3e-4 + 0.125 x 3e-4) / 1.875 = 2.2e-4."""
    costs = CostSettings(horizon_days=1.0, funding_forecast=FundingForecastRule.EWMA,
                         funding_half_life=1.0, funding_reversion_half_life=float("inf"),
                         funding_long_run_rate=1e-4)
    inputs = read_inputs(_ltc_book(), _ltc_path(), spot_fee=None, impact_k=1.0,
                         liquidation_penalty=0.01, costs=costs)
    got = [market_at(inputs, k).funding_forecast["LTC-PERP"] for k in range(4)]
    want = [3e-4, 3e-4, 2.25e-4 / 1.75, (3e-4 + 0.375 * 3e-4) / 1.875]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def _two_perp_book() -> Book:
    """A $100 long BTC-PERP and a $50 short LTC-PERP (prices flat at 100 and 50)."""
    contracts = (FuturesContract("BTC-PERP", "BTC", lot_step=1e-8, min_notional=0.0),
                 FuturesContract("LTC-PERP", "LTC", lot_step=1e-8, min_notional=0.0))
    return Book((SpotAsset("BTC"), SpotAsset("LTC")), contracts, spot={"BTC": 1.0, "LTC": 1.0},
                targets={"BTC": 0.5, "LTC": 0.5}, cash=1_000.0,
                futures={"BTC-PERP": FuturesPosition(1.0, 100.0),
                         "LTC-PERP": FuturesPosition(-1.0, 50.0)})


def _two_perp_path() -> MarketPath:
    """Steps 00:00, 08:00, 16:00. BTC settles 2e-4 at 00:00, a real 0 at 08:00 and 5e-4 at 16:00;
    LTC settles 1e-4 at 00:00, 3e-4 alone at 04:00 (BTC: 0, did not settle) and -2e-4 at 08:00,
    not at 16:00 (LTC: 0, did not settle)."""
    idx = pd.date_range(T0, periods=3, freq=H8)
    spot = pd.DataFrame({"BTC": [100.0] * 3, "LTC": [50.0] * 3}, index=idx)
    times = pd.DatetimeIndex([T0 + pd.Timedelta(hours=h) for h in (0, 4, 8, 16)])
    funding = pd.DataFrame({"BTC-PERP": [2e-4, 0.0, 0.0, 5e-4],
                            "LTC-PERP": [1e-4, 3e-4, -2e-4, 0.0]}, index=times)
    settled = pd.DataFrame({"BTC-PERP": [True, False, True, True],
                            "LTC-PERP": [True, True, True, False]}, index=times)
    return MarketPath(spot=spot, funding=funding, funding_settled=settled)


def test_a_zero_settlement_and_a_row_without_settlement_differ() -> None:
    """The 08:00 snapshot shows BTC's real 0 (not its 2e-4 of 00:00); the 16:00 one keeps LTC's
    -2e-4 of 08:00 (LTC did not settle at 16:00)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LTC's 4 h spacing is labelled (test_replay_settlement_spacing)
        inputs = read_inputs(_two_perp_book(), _two_perp_path(), spot_fee=None, impact_k=1.0,
                             liquidation_penalty=0.0)
    seen = [dict(market_at(inputs, k).funding) for k in range(3)]
    assert seen == [{"BTC-PERP": 2e-4, "LTC-PERP": 1e-4}, {"BTC-PERP": 0.0, "LTC-PERP": -2e-4},
                    {"BTC-PERP": 5e-4, "LTC-PERP": -2e-4}]


def test_ewma_skips_rows_a_contract_did_not_settle() -> None:
    """Half-life 1, no reversion. BTC's settlements by 08:00 are [2e-4, 0]: EWMA (0 + 0.5 x 2e-4)
    / 1.5 = 6.667e-5 (the 04:00 row, where it did not settle, is not a 0 in it); by 16:00 [2e-4,
    0, 5e-4]: (5e-4 + 0 + 0.25 x 2e-4) / 1.75. LTC's by 08:00 are [1e-4, 3e-4, -2e-4]:
    (-2e-4 + 0.5 x 3e-4 + 0.25 x 1e-4) / 1.75, and the same at 16:00 (no new settlement)."""
    costs = CostSettings(horizon_days=1.0, funding_forecast=FundingForecastRule.EWMA,
                         funding_half_life=1.0, funding_reversion_half_life=float("inf"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = read_inputs(_two_perp_book(), _two_perp_path(), spot_fee=None, impact_k=1.0,
                             liquidation_penalty=0.0, costs=costs)
    btc = [market_at(inputs, k).funding_forecast["BTC-PERP"] for k in range(3)]
    ltc = [market_at(inputs, k).funding_forecast["LTC-PERP"] for k in range(3)]
    ltc_08 = (-2e-4 + 0.5 * 3e-4 + 0.25 * 1e-4) / 1.75
    np.testing.assert_allclose(btc, [2e-4, 1e-4 / 1.5, 5.5e-4 / 1.75], rtol=1e-12, atol=0)
    np.testing.assert_allclose(ltc, [1e-4, ltc_08, ltc_08], rtol=1e-12, atol=0)


def test_replay_pays_only_the_settlements_that_happened() -> None:
    """Step 08:00 pays BTC's 0 on +$100 and LTC's 3e-4 - 2e-4 on -$50: -0.005 USD (received);
    step 16:00 pays BTC's 5e-4 on +$100 and nothing for LTC: 0.05 USD."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_backtest(_two_perp_book(), _two_perp_path(), NoRebalance(), collateral=NO_SWEEPS)
    paid = res.steps["funding"].to_numpy(dtype=float)
    np.testing.assert_allclose(paid[1:], [1e-4 * -50.0, 5e-4 * 100.0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("settled", "field"), [
    (lambda f: f.astype(float), "market_path.funding_settled"),  # not boolean
    (lambda f: f.iloc[:-1] != 0.0, "market_path.funding_settled"),  # not on the funding index
    (lambda f: (f != 0.0)[["BTC-PERP"]], "market_path.funding_settled"),  # a column missing
    (lambda f: f == 0.0, "market_path.funding"),  # says "did not settle" where a rate is not 0
])
def test_funding_settled_is_checked(settled: object, field: str) -> None:
    path = _two_perp_path()
    assert path.funding is not None and callable(settled)
    with pytest.raises(ValidationError) as info:
        MarketPath(spot=path.spot, funding=path.funding, funding_settled=settled(path.funding))
    assert info.value.field == field


def _file_rates(data: Path, asset: str) -> pd.Series:
    """The funding file's settlements, read here with pandas alone (fraction per settlement)."""
    frame = pd.read_csv(data / "funding" / f"{asset}.csv.gz", index_col="timestamp", parse_dates=True)
    return frame["funding_rate"].astype(float)


@pytest.mark.shared_data
def test_data_replay_reads_ltcs_zero_settlements(shared_data_dir: Path) -> None:
    """BTC + LTC, 2020-01-20 .. 01-25 (LTC settled at exactly 0 on 01-21 .. 01-23): each step's
    snapshot shows each contract's latest settlement in its file since the path's first step (0
    where that is one of LTC's zeros), and its EWMA forecast is the forecaster's own over those."""
    contracts = (FuturesContract("BTC-PERP", "BTC"), FuturesContract("LTC-PERP", "LTC"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = MarketPath.from_data(shared_data_dir, contracts, start="2020-01-20", end="2020-01-25")
    assert path.funding is not None and path.funding_settled is not None
    ltc = _file_rates(shared_data_dir, "LTC")
    zeros = ltc.index[(ltc == 0.0) & (ltc.index >= path.spot.index[0])
                      & (ltc.index <= path.spot.index[-1])]
    assert len(zeros) >= 3
    assert path.funding_settled.loc[zeros, "LTC-PERP"].all()
    book = Book((SpotAsset("BTC"), SpotAsset("LTC")), contracts, spot={"BTC": 0.1, "LTC": 10.0},
                targets={"BTC": 0.5, "LTC": 0.5}, cash=1_000.0)
    costs = CostSettings(horizon_days=1.0, funding_forecast=FundingForecastRule.EWMA,
                         funding_half_life=3.0, funding_reversion_half_life=10.0)
    inputs = read_inputs(book, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01,
                         costs=costs)
    fc = EwmaShrinkForecaster(3.0, 10.0, costs.funding_long_run_rate)
    files = {"BTC-PERP": _file_rates(shared_data_dir, "BTC"), "LTC-PERP": ltc}
    zero_steps = 0
    for k, t in enumerate(inputs.times):
        m = market_at(inputs, k)
        for sym, rates in files.items():
            past = rates.loc[path.spot.index[0]:t]
            assert m.funding[sym] == (float(past.iloc[-1]) if len(past) else 0.0), (sym, t)
            want = fc.forecast(past, at=t, horizon=3.0).mean_rate  # 1 d / 8 h = 3 settlements
            assert m.funding_forecast[sym] == pytest.approx(want, rel=1e-12, abs=1e-18), (sym, t)
        zero_steps += m.funding["LTC-PERP"] == 0.0
    assert zero_steps >= 3
