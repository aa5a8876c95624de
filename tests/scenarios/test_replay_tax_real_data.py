"""The replay's realised tax on real prices against a lot-by-lot loop written here (issue 11).

A spot book BTC/ETH/SOL 50/30/20 of USD 1M is bought at the first daily close of 2022-07-01 (one lot
per asset) and rebalanced back to target whenever a weight drifts more than ``band`` from it
(``BandSpotRebalance``), no fees, 25% on every realised gain with losses credited. The reference
below keeps its own lots: a purchase appends (quantity, price, time); a sale takes FIFO (oldest
first) or HIFO (highest cost first) lots and pays 0.25 x quantity x (price - cost) per lot. It shares
nothing with ``models.tax`` or ``scenarios.replay_tax`` but the price frame.

The same loop, run outside the suite on 8 h steps over 2022-07..2025-06, puts a 1-2 pp band at
928-1,017 bp of the mean spot value a year with FIFO and 239-266 with HIFO, where the replay's
benchmark reports 923-1,011 and 236-264: the replay's tax is the lot arithmetic, whatever convention
makes the issue's own quote lower (630-780 and 105-140).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from models.book import Book
from models.instruments import SpotAsset
from models.tax import LotMethod, TaxLot, TaxRates
from optimizer.policies import BandSpotRebalance
from optimizer.settings import SpotLegSettings
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest

ASSETS = ("BTC", "ETH", "SOL")
WEIGHTS = np.array([0.5, 0.3, 0.2])
RATE = 0.25
NAV0 = 1_000_000.0


def reference_tax(prices: np.ndarray, band: float, method: LotMethod) -> np.ndarray:
    """Cumulative realised tax (USD) after each step, by the loop the module docstring states."""
    q = NAV0 * WEIGHTS / prices[0]
    lots: list[list[list[float]]] = [[[float(q[i]), float(prices[0, i]), 0.0]] for i in range(3)]
    paid, out = 0.0, [0.0]
    for t in range(1, len(prices)):
        value = q * prices[t]
        if np.max(np.abs(value / value.sum() - WEIGHTS)) > band:
            dq = WEIGHTS * value.sum() / prices[t] - q
            for i in range(3):
                if dq[i] > 0:
                    lots[i].append([float(dq[i]), float(prices[t, i]), float(t)])
                    continue
                order = sorted(lots[i], key=lambda lot: -lot[1] if method == LotMethod.HIFO else lot[2])
                need = -float(dq[i])
                for lot in order:
                    take = min(need, lot[0])
                    paid += RATE * take * (prices[t, i] - lot[1])
                    lot[0] -= take
                    need -= take
                    if need <= 0:
                        break
                lots[i] = [lot for lot in lots[i] if lot[0] > 0]
            q = q + dq
        out.append(paid)
    return np.array(out)


@pytest.mark.shared_data
@pytest.mark.parametrize("method", [LotMethod.FIFO, LotMethod.HIFO])
@pytest.mark.parametrize("band", [0.01, 0.02])
def test_a_spot_band_pays_the_tax_of_its_lots(shared_data_dir: Path, method: LotMethod,
                                             band: float) -> None:
    path = MarketPath.from_data(shared_data_dir, (), start="2022-07-01", end="2025-06-30", step="1d",
                                assets=ASSETS)
    prices = path.spot[list(ASSETS)].to_numpy(dtype=float)
    t0: datetime = path.spot.index[0].to_pydatetime()
    q0 = NAV0 * WEIGHTS / prices[0]
    book = Book(assets=tuple(SpotAsset(a, fee=0.0) for a in ASSETS), contracts=(),
                spot=dict(zip(ASSETS, map(float, q0), strict=True)),
                targets=dict(zip(ASSETS, map(float, WEIGHTS), strict=True)), cash=0.0)
    lots = {a: (TaxLot(float(q0[i]), float(prices[0, i]), t0),) for i, a in enumerate(ASSETS)}
    tax = SpotLegSettings(rates=TaxRates(RATE, RATE), lots=lots, lot_method=method)

    res = run_backtest(book, path, BandSpotRebalance(band), collateral=NO_SWEEPS, tax=tax)

    ref = reference_tax(prices, band, method)
    got = res.steps["tax_cumulative"].to_numpy(dtype=float)
    assert len(res.trades) > 20  # the band traded (not a vacuous match at zero)
    assert abs(ref[-1]) > 10_000.0
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-4)
