"""The Monte Carlo history (``JointHistory.from_market_path``) and the dated-basis fit
(``BasisModel.fit``) read a perpetual's funding at its own settlements only: on a union schedule
(BTC every 8 h, SOL every 4 h, as in November 2022), BTC's column holds a zero at SOL's extra
times that is not a BTC settlement (``MarketPath.funding_settled`` False). Expected values by
hand: before the fix the zero was read as BTC's last settlement and averaged into its basis."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.instruments import FuturesContract
from scenarios.dated_basis import BasisModel
from scenarios.market_path import MarketPath
from scenarios.path_history import JointHistory

T0 = pd.Timestamp("2022-11-01", tz="UTC")


def _path(close_hour: int = 0) -> MarketPath:
    """Daily closes for 4 days at ``close_hour``; settlements every 4 h; BTC settles at 0, 8,
    16 h at 1e-4, SOL at every 4 h at 3e-4 (rates per settlement)."""
    spot = pd.DataFrame({"BTC": [20_000.0, 20_100.0, 20_050.0, 20_200.0],
                         "SOL": [30.0, 31.0, 29.0, 30.5]},
                        index=pd.date_range(T0 + pd.Timedelta(hours=close_hour), periods=4,
                                            freq="1D"))
    idx = pd.date_range(T0 + pd.Timedelta(hours=4), T0 + pd.Timedelta(days=3, hours=4), freq="4h")
    btc_settles = np.asarray([t.hour % 8 == 0 for t in idx])
    funding = pd.DataFrame({"BTC-PERP": np.where(btc_settles, 1e-4, 0.0),
                            "SOL-PERP": np.full(len(idx), 3e-4)}, index=idx)
    settled = pd.DataFrame({"BTC-PERP": btc_settles, "SOL-PERP": np.ones(len(idx), dtype=bool)},
                           index=idx)
    return MarketPath(spot=spot, funding=funding, funding_settled=settled)


def test_monte_carlo_history_reads_btc_at_its_own_settlements() -> None:
    """Closes at 06:00, a daily step on an 8 h interval: grid times 06:00, 22:00 and 14:00, each
    the sum of BTC's settlements in the 8 h before it (00:00, 16:00, 08:00): 1e-4 everywhere.
    Before the fix the last row at or before was SOL's 04:00, 20:00 and 12:00 settlement, where
    BTC's column holds a zero that is not a BTC settlement."""
    contracts = [FuturesContract("BTC-PERP", "BTC"), FuturesContract("SOL-PERP", "SOL")]
    h = JointHistory.from_market_path(_path(close_hour=6), contracts, ["BTC", "SOL"])
    assert h.funding.shape == (3, 3, 2)
    np.testing.assert_allclose(h.funding[:, :, 0], 1e-4, rtol=1e-12, atol=0)
    # SOL settles every 4 h: each 8 h slot sums its two settlements, 6e-4 (the day's 1.8e-3)
    np.testing.assert_allclose(h.funding[:, :, 1], 6e-4, rtol=1e-12, atol=0)


def test_basis_fit_averages_btc_own_settlements() -> None:
    """BTC's funding-implied carry over a 1-day window: mean of its settlements (1e-4) x 3 x 365
    = 0.1095 a year at every day after the first settlement; the zero rows at 04:00, 12:00 and
    20:00 would halve it (0.05475) before the fix."""
    contracts = [FuturesContract("BTC-PERP", "BTC"), FuturesContract("SOL-PERP", "SOL")]
    model = BasisModel.fit(_path(), contracts, window="1D")
    days = pd.date_range(T0 + pd.Timedelta(days=1), periods=3, freq="1D")
    np.testing.assert_allclose(model.annual("BTC", days), 1e-4 * 3 * 365, rtol=1e-12)
    np.testing.assert_allclose(model.annual("SOL", days), 3e-4 * 3 * 365, rtol=1e-12)
