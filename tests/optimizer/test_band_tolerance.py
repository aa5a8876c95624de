"""A drift exactly on the band (in decimal) is not past it: the band rules say |d| > b.

Book by hand: prices BTC 52,000, ETH 3,000, SOL 180; spot 1 BTC + 10 ETH + 100 SOL = 52,000 +
30,000 + 18,000 = 100,000 USD = V (invested base), targets 50/30/20%. Drift d = (0.52 - 0.5,
0.30 - 0.30, 0.18 - 0.2) = (+0.02, 0, -0.02) exactly in decimal, but 0.52 - 0.5 =
0.020000000000000018 in floats, which ``> 0.02`` called a breach: a full rebalance (naive futures
BTC-PERP -2,000, SOL-PERP +2,000) on a drift that sits on the band.
"""

from __future__ import annotations

import pandas as pd
import pytest

from models.book import Book
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from optimizer.baselines import DcaFutures, VolScaledBandFutures
from optimizer.edge_bands import EdgeBandFutures
from optimizer.policies import BAND_TOL, BandSpotRebalance, NaiveFutures, TargetHoldings, breached

T = pd.Timestamp("2025-01-01", tz="UTC")
SYMS = ("BTC", "ETH", "SOL")
UNITS = {"BTC": 1.0, "ETH": 10.0, "SOL": 100.0}
ON_BAND = {"BTC": 52_000.0, "ETH": 3_000.0, "SOL": 180.0}


def market(prices: dict[str, float], t: pd.Timestamp = T) -> MarketSnapshot:
    return MarketSnapshot(t, spot=prices, mark={f"{s}-PERP": prices[s] for s in SYMS})


def book() -> Book:
    cons = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-9, min_notional=0.0) for s in SYMS)
    return Book(tuple(SpotAsset(s) for s in SYMS), cons, spot=UNITS,
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=10_000.0)


def flat(h: TargetHoldings) -> bool:
    return all(abs(x) < 1e-9 for x in h.futures.values())


def test_breached_ignores_float_noise_only() -> None:
    """0.52 - 0.5 = 0.020000000000000018 is on a 0.02 band; 0.02 + 10 x BAND_TOL is past it."""
    assert not breached(0.52 - 0.5, 0.02)
    assert breached(0.02 + 10 * BAND_TOL, 0.02)
    assert breached(0.0200001, 0.02)


def test_naive_futures_on_the_band_does_not_trade() -> None:
    """band 0.02, max drift 0.02: no trade (before the fix: BTC-PERP -2,000, SOL-PERP +2,000)."""
    assert flat(NaiveFutures(band=0.02)(book(), market(ON_BAND), T))


def test_naive_futures_a_hair_inside_the_drift_trades() -> None:
    """band 0.0199999 < 0.02: the seed rule w*V - s = (50,000 - 52,000, 0, 20,000 - 18,000)."""
    out = NaiveFutures(band=0.0199999)(book(), market(ON_BAND), T)
    assert out.futures == pytest.approx({"BTC-PERP": -2_000.0, "ETH-PERP": 0.0, "SOL-PERP": 2_000.0},
                                        abs=1e-6)


def test_band_spot_on_the_band_keeps_spot() -> None:
    """band_spot 0.02 on the same book: spot unchanged (before: to 50,000 / 52,000 = 0.9615 BTC).
    At 0.0199999 it trades: BTC 0.5 x 100,000 / 52,000 = 0.961538 units, SOL 20,000 / 180."""
    assert BandSpotRebalance(0.02)(book(), market(ON_BAND), T).spot == pytest.approx(UNITS)
    moved = BandSpotRebalance(0.0199999)(book(), market(ON_BAND), T).spot
    assert moved["BTC"] == pytest.approx(50_000.0 / 52_000.0)
    assert moved["SOL"] == pytest.approx(20_000.0 / 180.0)


def test_vol_band_on_the_band_does_not_trade() -> None:
    """vol_band_futures base_band 0.02, first call (no history: band_t = base_band = 0.02)."""
    pol = VolScaledBandFutures(base_band=0.02, window=5)
    assert flat(pol(book(), market(ON_BAND), T))
    assert pol.last_band == 0.02


def test_dca_on_the_band_does_not_restart() -> None:
    """dca_futures steps 2, band 0.02. Call 1 at BTC 60,000, ETH 2,500, SOL 150 (spot 60,000 /
    25,000 / 15,000, V = 100,000; drift BTC +0.10): x* = w*V - s = (-10,000, +5,000, +5,000),
    half of it traded. Call 2 a day later at BTC 62,000, SOL 130 (spot 62,000 / 25,000 / 13,000,
    V = 100,000): the plan drift with x* in place is ((62,000 - 10,000) / 100,000 - 0.5, (25,000 +
    5,000) / 100,000 - 0.3, (13,000 + 5,000) / 100,000 - 0.2) = (0.02, 0, -0.02), on the band: the
    schedule goes on to x* (before the fix it restarted toward a fresh x*, BTC-PERP -8,583.3)."""
    b = book()
    first = {"BTC": 60_000.0, "ETH": 2_500.0, "SOL": 150.0}
    pol = DcaFutures(steps=2, band=0.02)
    m1 = market(first)
    half = pol(b, m1, T)
    assert half.futures == pytest.approx({"BTC-PERP": -5_000.0, "ETH-PERP": 2_500.0,
                                          "SOL-PERP": 2_500.0})
    q = {c.symbol: c.contracts_for(half.futures[c.symbol], m1.mark_price(c.symbol))
         for c in b.contracts}
    out = pol(b.with_futures(q, m1), market({"BTC": 62_000.0, "ETH": 2_500.0, "SOL": 130.0},
                                            T + pd.Timedelta("1D")), T + pd.Timedelta("1D"))
    assert out.futures == pytest.approx({"BTC-PERP": -10_000.0, "ETH-PERP": 5_000.0,
                                         "SOL-PERP": 5_000.0})
    assert pol.step == 0


def test_edge_band_on_the_band_does_not_trade() -> None:
    """The edge band (``optimizer.edge_bands``): BTC and SOL sit exactly on their 2% bands: no
    trade, where BTC's float drift 0.020000000000000018 traded ~1e-12 USD."""
    out = EdgeBandFutures(0.02)(book(), market(ON_BAND), T)
    assert all(x == 0.0 for x in out.futures.values()), out.futures  # nothing held, none traded


def test_te_band_on_the_band_does_not_trade() -> None:
    """The TE band (``optimizer.te_band``) with an identity covariance: TE = |d| = sqrt(0.02^2 +
    0.02^2) = 0.02 sqrt(2) by hand, the band given; the float drift made it 1.3e-17 more (a full
    trade to the band's edge). A band a millionth smaller is passed."""
    import math

    import numpy as np

    from optimizer.te_band import te_band_exposure

    b, m = book(), market(ON_BAND)
    band = math.hypot(0.02, 0.02)
    assert te_band_exposure(b, m, np.eye(3), band) == {}
    assert te_band_exposure(b, m, np.eye(3), band * (1 - 1e-6)) != {}
