"""A perpetual's settlement spacing measured from the path (scenarios.funding_run.settlement_hours)
and the label a replay puts on a path whose spacing differs from the contract's
``funding_interval_h`` (scenarios.funding_run.interval_notes, ReplayInputs.interval_notes).

The replay pays every settlement of the path, while the optimiser's carry counts
horizon x 24 / funding_interval_h settlements (optimizer.carry reads the interval from the book's
contract; a MarketSnapshot has no field for it). SOL settled every 2-4 h in November 2022: a
backtest there says so instead of keeping quiet.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition, TargetsBase
from models.instruments import FuturesContract, SpotAsset
from models.risk import RiskModel
from optimizer.policies import NoRebalance
from optimizer.rebalance import solve_rebalance
from optimizer.settings import ConstraintSettings, CostSettings, OptimizerSettings
from scenarios.collateral import NO_SWEEPS
from scenarios.funding_run import interval_notes, measured_intervals, settlement_hours
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest
from scenarios.replay_inputs import market_at, read_inputs

R = 1e-3
HOUR_NS = 3_600_000_000_000


def test_settlement_hours_by_hand() -> None:
    """A settles at hours 0, 8, 16, 20, 24, 28, 32, 34 (gaps 8, 8, 4, 4, 4, 4, 2); B at 0, 16, 32
    only. Medians of the last 5 gaps: A [-, 8, 8, 8, median(8, 8, 4, 4) = 6, 4, 4, 4]; B 16
    from its second settlement on."""
    hours = np.array([0, 8, 16, 20, 24, 28, 32, 34])
    settle_t = hours.astype(np.int64) * HOUR_NS
    settles = np.column_stack([np.ones(8, dtype=bool), np.isin(hours, [0, 16, 32])])
    got = settlement_hours(settle_t, settles)
    nan = np.nan
    np.testing.assert_array_equal(got[:, 0], [nan, 8, 8, 8, 6, 4, 4, 4])
    np.testing.assert_array_equal(got[:, 1], [nan, nan, 16, 16, 16, 16, 16, 16])


def test_interval_notes_by_hand() -> None:
    """The same settlements, steps at hours 8, 24, 34 (2, 5 and 8 rows settled). A (8 h) reads 8,
    6, 4: off at 2 of 3 steps; B (16 h) reads NaN, 16, 16: no note."""
    hours = np.array([0, 8, 16, 20, 24, 28, 32, 34])
    settles = np.column_stack([np.ones(8, dtype=bool), np.isin(hours, [0, 16, 32])])
    spacing = settlement_hours(hours.astype(np.int64) * HOUR_NS, settles)
    t0 = pd.Timestamp("2022-11-10T00:00:00Z")
    times = [t0 + pd.Timedelta(hours=h) for h in (8, 24, 34)]
    contracts = (FuturesContract("A-PERP", "A"), FuturesContract("B-PERP", "B", funding_interval_h=16.0))
    measured = measured_intervals(contracts, np.array([2, 5, 8]), spacing)
    assert measured is not None
    np.testing.assert_array_equal(measured, [[np.nan, np.nan], [6.0, np.nan], [4.0, np.nan]])
    notes = interval_notes(contracts, measured, times)
    assert notes == (f"A-PERP settled every 4, 6 h (median of its last 5 spacings) at 2 of 3 steps "
                     f"({times[1]} .. {times[2]}), not every 8 h (funding_interval_h): the replay "
                     f"pays every settlement and the policy's carry counts the measured spacing "
                     f"there",)
    same = measured_intervals(contracts[1:], np.array([2, 5, 8]), spacing[:, 1:])
    assert same is None and interval_notes(contracts[1:], same, times) == ()


def _book() -> Book:
    """A held short of 1 SOL-PERP at a flat $100 (x = -100 USD)."""
    return Book((SpotAsset("SOL"),), (FuturesContract("SOL-PERP", "SOL", lot_step=1e-8,
                                                     min_notional=0.0),),
                spot={"SOL": 1.0}, targets={"SOL": 0.0}, cash=1_000.0,
                futures={"SOL-PERP": FuturesPosition(-1.0, 100.0)}, targets_base=TargetsBase.NAV)


def _path(every: str) -> MarketPath:
    """Daily steps 2022-11-10 .. 11-12 at a flat $100; SOL-PERP settles R = 1e-3 ``every``."""
    idx = pd.date_range("2022-11-10T00:00:00Z", periods=3, freq="1D")
    spot = pd.DataFrame({"SOL": [100.0] * 3}, index=idx)
    settle = pd.date_range("2022-11-09T00:00:00Z", "2022-11-12T00:00:00Z", freq=every)[1:]
    return MarketPath(spot=spot, funding=pd.DataFrame({"SOL-PERP": [R] * len(settle)}, index=settle))


def test_replay_pays_six_settlements_a_day() -> None:
    """Every 4 h: each day pays 6 R x = 6 x 1e-3 x -100 = -0.6 USD (received)."""
    with pytest.warns(UserWarning, match="SOL-PERP settled every 4 h"):
        res = run_backtest(_book(), _path("4h"), NoRebalance(), collateral=NO_SWEEPS)
    np.testing.assert_allclose(res.steps["funding"].to_numpy(dtype=float)[1:], [6 * R * -100.0] * 2,
                               rtol=1e-12)


def test_a_path_settling_every_4h_is_labelled() -> None:
    with pytest.warns(UserWarning, match=r"settlement spacing differs from funding_interval_h"):
        inputs = read_inputs(_book(), _path("4h"), spot_fee=None, impact_k=1.0,
                             liquidation_penalty=0.01)
    assert len(inputs.interval_notes) == 1
    assert inputs.interval_notes[0].startswith(
        "SOL-PERP settled every 4 h (median of its last 5 spacings) at 3 of 3 steps")


def test_a_path_settling_every_8h_is_not_labelled() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inputs = read_inputs(_book(), _path("8h"), spot_fee=None, impact_k=1.0,
                             liquidation_penalty=0.01)
    assert inputs.interval_notes == ()


def test_carry_assumes_the_settlements_the_replay_pays() -> None:
    """Every 4 h, horizon 1 day: the replay pays 6 R x a day; the carry counts 6 R x too (it had
    counted 24 / 8 = 3 settlements, the contract's funding_interval_h)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = read_inputs(_book(), _path("4h"), spot_fee=None, impact_k=1.0,
                             liquidation_penalty=0.01)
    risk = RiskModel(("SOL",), np.array([[0.9]]), np.zeros(1))
    st = OptimizerSettings(costs=CostSettings(trading=True, impact=False, carry=True,
                                              horizon_days=1.0, gamma_fund=0.0),
                           constraints=ConstraintSettings(margin=False), basis_risk=False,
                           round_lots=False)
    market = market_at(inputs, 0)
    assert market.funding_interval_h == {"SOL-PERP": 4.0}
    sol = solve_rebalance(_book(), market, risk, st)
    x = {p.symbol: p.notional for p in sol.target_positions}["SOL-PERP"]
    assert sol.costs.funding_carry == pytest.approx(6 * R * x, rel=1e-6)


def _file_rates(data: Path, asset: str) -> pd.Series:
    frame = pd.read_csv(data / "funding" / f"{asset}.csv.gz", index_col="timestamp", parse_dates=True)
    return frame["funding_rate"].astype(float)


@pytest.mark.shared_data
def test_data_path_marks_and_labels_sols_two_hour_settlements(shared_data_dir: Path) -> None:
    """BTC + SOL, 2022-11-05 .. 11-25: SOL settled every 2 h for days; BTC did not settle at
    SOL's lone settlements (funding_settled False, rate 0 there) and keeps its own last rate in the
    snapshots; SOL is labelled, BTC (8 h throughout) is not."""
    contracts = (FuturesContract("BTC-PERP", "BTC"), FuturesContract("SOL-PERP", "SOL"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = MarketPath.from_data(shared_data_dir, contracts, start="2022-11-05", end="2022-11-25")
    assert path.funding is not None and path.funding_settled is not None
    files = {"BTC-PERP": _file_rates(shared_data_dir, "BTC"), "SOL-PERP": _file_rates(shared_data_dir, "SOL")}
    for sym, rates in files.items():
        np.testing.assert_array_equal(path.funding_settled[sym].to_numpy(),
                                      path.funding.index.isin(rates.index))
    assert not path.funding_settled["BTC-PERP"].all()
    book = Book((SpotAsset("BTC"), SpotAsset("SOL")), contracts, spot={"BTC": 0.1, "SOL": 10.0},
                targets={"BTC": 0.5, "SOL": 0.5}, cash=1_000.0)
    with pytest.warns(UserWarning, match="SOL-PERP settled every"):
        inputs = read_inputs(book, path, spot_fee=None, impact_k=1.0, liquidation_penalty=0.01)
    assert [n.split(" ")[0] for n in inputs.interval_notes] == ["SOL-PERP"]
    assert "every 2 h" in inputs.interval_notes[0] or "every 2, " in inputs.interval_notes[0]
    for k, t in enumerate(inputs.times):
        m = market_at(inputs, k)
        for sym, rates in files.items():
            past = rates.loc[path.spot.index[0]:t]
            assert m.funding[sym] == (float(past.iloc[-1]) if len(past) else 0.0), (sym, t)
