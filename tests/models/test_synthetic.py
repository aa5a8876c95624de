"""The synthetic generator: determinism, calibration (vols, correlations, tails, funding), API."""

from __future__ import annotations

import time
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from models.market import MarketSnapshot
from models.synthetic import NAMED_COINS, SyntheticHistory, default_symbols, generate_history

NAMED = tuple(NAMED_COINS)  # BTC, ETH, SOL, BNB, XRP, ADA, DOGE, AVAX, LINK, LTC


@pytest.fixture(scope="module")
def hist() -> SyntheticHistory:
    return generate_history(NAMED, seed=7)


@pytest.fixture(scope="module")
def big() -> SyntheticHistory:
    return generate_history(default_symbols(1000), seed=7)


# -- determinism and shape -------------------------------------------------------------------------


def test_same_seed_identical_different_seed_different() -> None:
    a = generate_history(seed=3)
    b = generate_history(seed=3)
    c = generate_history(seed=4)
    for name in ("spot", "mark", "funding"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
        assert not getattr(a, name).equals(getattr(c, name))
    assert a.adv_usd == b.adv_usd and a.half_spread == b.half_spread
    assert a.seed == 3 and c.seed == 4


def test_no_global_random_state_used() -> None:
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    generate_history(seed=1)
    assert np.random.random() == before


def test_defaults_shape_index_and_start_prices() -> None:
    h = generate_history()
    assert list(h.spot.columns) == ["BTC", "ETH", "SOL"]
    assert h.spot.shape == (730, 3) and h.mark.shape == (730, 3)
    assert h.funding.shape == (730 * 3, 3)
    days, settlements = pd.DatetimeIndex(h.spot.index), pd.DatetimeIndex(h.funding.index)
    assert str(days.tz) == "UTC" and str(settlements.tz) == "UTC"
    assert h.spot.index[0] == pd.Timestamp("2023-01-01", tz="UTC")
    assert (h.spot.index[1:] - h.spot.index[:-1] == pd.Timedelta(days=1)).all()
    np.testing.assert_allclose(h.spot.iloc[0].to_numpy(), [60000.0, 3000.0, 150.0])
    assert set(settlements.hour) == {0, 8, 16}
    assert (settlements.minute == 0).all()
    assert (h.spot.to_numpy() > 0).all() and (h.mark.to_numpy() > 0).all()
    r = h.returns
    assert r.shape == (729, 3) and r.index[0] == h.spot.index[1]
    np.testing.assert_allclose(r.to_numpy(), h.spot.pct_change().iloc[1:].to_numpy())


@pytest.mark.parametrize("days", [2, 3])
def test_shortest_histories_are_finite(days: int) -> None:
    h = generate_history(("BTC", "SYN011"), days=days)
    assert h.spot.shape == (days, 2) and np.isfinite(h.spot.to_numpy()).all()
    assert np.isfinite(h.mark.to_numpy()).all() and len(h.funding) == 3 * days


def test_default_symbols() -> None:
    assert default_symbols(3) == ("BTC", "ETH", "SOL")
    syms = default_symbols(1000)
    assert syms[:10] == NAMED and syms[10] == "SYN011" and syms[-1] == "SYN1000"
    assert len(set(syms)) == 1000
    with pytest.raises(ValidationError):
        default_symbols(0)


def test_large_universe_is_fast_and_well_formed() -> None:
    t0 = time.perf_counter()
    h = generate_history(default_symbols(1000), days=730, seed=11)
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0, f"N=1000 took {elapsed:.2f}s"
    assert h.spot.shape == (730, 1000)
    assert np.isfinite(h.spot.to_numpy()).all() and np.isfinite(h.funding.to_numpy()).all()
    assert set(h.adv_usd) == set(h.spot.columns) == set(h.half_spread)


# -- calibration ----------------------------------------------------------------------------------


def test_realised_vols_are_calibrated(hist: SyntheticHistory) -> None:
    vol = hist.returns.std() * np.sqrt(365)
    assert vol["BTC"] == pytest.approx(0.55, abs=0.05)
    assert vol["ETH"] == pytest.approx(0.70, abs=0.05)
    assert vol["SOL"] == pytest.approx(0.95, abs=0.07)
    assert vol.between(0.50, 1.25).all(), vol


def test_large_universe_vols_in_range(big: SyntheticHistory) -> None:
    vol = big.returns.std() * np.sqrt(365)
    assert vol.between(0.50, 1.25).all()
    assert vol.max() > 1.0 and vol.min() < 0.7  # the range is used, not one value


def test_correlations_in_crypto_range(hist: SyntheticHistory) -> None:
    corr = hist.returns.corr().to_numpy()
    off = corr[~np.eye(len(corr), dtype=bool)]
    assert off.min() > 0.4 and off.max() < 0.95, (off.min(), off.max())
    assert corr[0, 1] > 0.7  # BTC-ETH: strongly correlated


def test_large_universe_correlations_mostly_in_range(big: SyntheticHistory) -> None:
    corr = np.corrcoef(big.returns.to_numpy(), rowvar=False)
    off = corr[~np.eye(len(corr), dtype=bool)]
    lo, hi = np.quantile(off, [0.001, 0.999])
    assert lo > 0.4 and hi < 0.95, (lo, hi)


def test_fat_tails(hist: SyntheticHistory) -> None:
    kurt = stats.kurtosis(hist.returns.to_numpy(), fisher=False)  # 3 for a normal
    assert (kurt > 3.0).all(), kurt
    assert np.median(kurt) > 3.5


def test_volatility_clusters(hist: SyntheticHistory) -> None:
    """Mean |r_t| across assets is autocorrelated at lags 1..5 (GARCH); iid draws give < 0.05."""
    absr = hist.returns.abs().mean(axis=1).to_numpy()
    ac = np.mean([np.corrcoef(absr[lag:], absr[:-lag])[0, 1] for lag in range(1, 6)])
    assert ac > 0.08, ac


def test_funding_level_and_regimes(hist: SyntheticHistory) -> None:
    f = hist.funding
    assert f.to_numpy().mean() == pytest.approx(1e-4, abs=4e-5)
    flat = f["BTC"].to_numpy()
    assert (flat > 2.5e-4).mean() > 0.02  # hot regime present
    assert (flat < -0.5e-4).mean() > 0.02  # negative regime present
    assert (np.abs(flat - 1e-4) < 5e-5).mean() > 0.5  # calm most of the time
    # regimes persist: consecutive settlements mostly stay on the same side of 2e-4
    hot = flat > 2e-4
    assert (hot[1:] == hot[:-1]).mean() > 0.9


def test_funding_mean_across_seeds() -> None:
    means = [generate_history(("BTC", "ETH"), seed=s).funding.to_numpy().mean()
             for s in range(5)]
    assert np.mean(means) == pytest.approx(1e-4, abs=3e-5)


def test_basis_small_and_mean_reverting(hist: SyntheticHistory) -> None:
    b = (hist.mark / hist.spot - 1).to_numpy()
    assert np.abs(b).max() < 0.01
    x = b[:, 0] - b[:, 0].mean()
    ac = float(x[1:] @ x[:-1] / (x @ x))
    assert 0.3 < ac < 0.98, ac


def test_liquidity_plausible(hist: SyntheticHistory) -> None:
    assert hist.adv_usd["BTC"] > hist.adv_usd["SOL"] > hist.adv_usd["LINK"]
    assert hist.half_spread["BTC"] <= hist.half_spread["SOL"]
    assert all(0 < v < 0.01 for v in hist.half_spread.values())


# -- snapshot --------------------------------------------------------------------------------------


def test_snapshot_default_last_day(hist: SyntheticHistory) -> None:
    perp = FuturesContract("BTCUSDT", "BTC")
    snap = hist.snapshot([perp])
    assert isinstance(snap, MarketSnapshot) and snap.synthetic
    assert snap.time == hist.spot.index[-1]
    assert set(snap.spot) == set(NAMED)
    assert snap.spot["BTC"] == hist.spot["BTC"].iloc[-1]
    assert snap.mark["BTCUSDT"] == hist.mark["BTC"].iloc[-1]
    assert snap.funding["BTCUSDT"] == hist.funding.loc[pd.Timestamp(snap.time), "BTC"]
    assert snap.half_spread["BTCUSDT"] == hist.half_spread["BTC"]
    assert snap.adv["BTCUSDT"] == hist.adv_usd["BTC"]


def test_snapshot_at_time_uses_latest_funding_before(hist: SyntheticHistory) -> None:
    contracts = [FuturesContract("ETH-PERP", "ETH"), FuturesContract("ETH-4H", "ETH",
                                                                       funding_interval_h=4.0)]
    at = pd.Timestamp("2023-06-01 12:30", tz="UTC")
    snap = hist.snapshot(contracts, at=at)
    day = pd.Timestamp("2023-06-01", tz="UTC")
    assert snap.time == day
    assert snap.spot["ETH"] == hist.spot.loc[day, "ETH"]
    rate = float(hist.funding["ETH"].loc[pd.Timestamp("2023-06-01 08:00", tz="UTC")])
    assert snap.funding["ETH-PERP"] == rate
    assert snap.funding["ETH-4H"] == pytest.approx(rate / 2)


def test_snapshot_dated_future_carries_basis(hist: SyntheticHistory) -> None:
    dated = FuturesContract("BTC-Q", "BTC", kind=ContractKind.DATED,
                            expiry=datetime(2024, 12, 27))
    snap = hist.snapshot([dated], at=pd.Timestamp("2024-06-01", tz="UTC"))
    assert "BTC-Q" not in snap.funding
    premium = snap.mark["BTC-Q"] / snap.spot["BTC"] - 1
    assert -0.05 < premium < 0.15


def test_snapshot_errors(hist: SyntheticHistory) -> None:
    with pytest.raises(ValidationError, match="underlying"):
        hist.snapshot([FuturesContract("XYZ-PERP", "XYZ")])
    with pytest.raises(ValidationError, match="before the history"):
        hist.snapshot(at=pd.Timestamp("2020-01-01", tz="UTC"))


@pytest.mark.parametrize("kwargs", [
    {"symbols": ()}, {"symbols": "BTC"}, {"symbols": ("BTC", "BTC")}, {"days": 1},
    {"start": "not a date"},
])
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        generate_history(**kwargs)  # type: ignore[arg-type]
