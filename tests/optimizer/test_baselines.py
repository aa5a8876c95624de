"""The baseline overlays of optimizer.baselines, each checked against a hand computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.book import Book
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from optimizer.baselines import DcaFutures, VolScaledBandFutures, realised_portfolio_vol
from optimizer.policies import TargetHoldings, max_drift, naive_futures_notional

SYMS = ("BTC", "ETH", "SOL")
PRICES = {"BTC": 60000.0, "ETH": 2500.0, "SOL": 150.0}
T0 = pd.Timestamp("2025-01-01", tz="UTC")
DAY = pd.Timedelta("1D")


def make_book(spot_usd: tuple[float, float, float]) -> tuple[Book, MarketSnapshot]:
    assets = tuple(SpotAsset(s) for s in SYMS)
    cons = tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-9, min_notional=0.0) for s in SYMS)
    book = Book(assets, cons, spot={s: v / PRICES[s] for s, v in zip(SYMS, spot_usd, strict=True)},
                targets={"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, cash=3000.0)
    return book, market_at(T0, PRICES)


def market_at(t: pd.Timestamp, prices: dict[str, float]) -> MarketSnapshot:
    return MarketSnapshot(t, spot=prices, mark={f"{s}-PERP": p for s, p in prices.items()})


def apply(book: Book, h: TargetHoldings, market: MarketSnapshot) -> Book:
    """The book after trading futures to ``h`` (notional -> contracts at mark)."""
    q = {c.symbol: c.contracts_for(h.futures[c.symbol], market.mark_price(c.symbol))
         for c in book.contracts}
    return book.with_futures(q, market)


def path(returns: np.ndarray) -> np.ndarray:
    """Prices (T+1 x 3) starting at PRICES and compounding ``returns`` (T x 3)."""
    p0 = np.array([PRICES[s] for s in SYMS])
    return np.vstack([p0, p0 * np.cumprod(1.0 + returns, axis=0)])


def run(pol: VolScaledBandFutures, book: Book, prices: np.ndarray) -> TargetHoldings:
    out: TargetHoldings | None = None
    for k, row in enumerate(prices):
        out = pol(book, market_at(T0 + k * DAY, dict(zip(SYMS, map(float, row), strict=True))), T0 + k * DAY)
    assert out is not None
    return out


# --- VolScaledBandFutures --------------------------------------------------------------------


def test_band_matches_hand_computed_realised_vol() -> None:
    rng = np.random.default_rng(7)
    window = 10
    prices = path(rng.normal(0.0, 0.04, size=(25, 3)))  # longer than the window: only the tail counts
    book, _ = make_book((6000.0, 2500.0, 1500.0))
    pol = VolScaledBandFutures(0.05, ref_vol=0.6, window=window)
    run(pol, book, prices)
    P = prices[-(window + 1):]
    R = P[1:] / P[:-1] - 1.0
    q = np.array([book.spot[s] for s in SYMS])
    w = q * P[-1] / (q * P[-1]).sum()
    sigma = np.std(R @ w, ddof=1) * np.sqrt(365.0)
    assert pol.last_sigma == pytest.approx(sigma, rel=1e-12)
    assert pol.last_band == pytest.approx(0.05 * sigma / 0.6, rel=1e-12)
    assert realised_portfolio_vol(P, w, 365.0) == pytest.approx(sigma, rel=1e-12)


def test_band_doubles_with_vol_and_flips_the_trigger() -> None:
    # one return series for all assets: weights (and so the 10 pp drift) stay put while prices move
    window = 20
    z = np.random.default_rng(11).normal(size=window)
    daily = 0.9 / np.sqrt(365.0)
    r1 = z / np.std(z, ddof=1) * daily  # realised vol exactly 90% a year
    book, market = make_book((6000.0, 2500.0, 1500.0))
    assert max_drift(book, market) == pytest.approx(0.10)
    bands, holdings = [], []
    for r in (r1, 2.0 * r1):
        pol = VolScaledBandFutures(0.05, ref_vol=0.6, window=window)
        holdings.append(run(pol, book, path(np.repeat(r[:, None], 3, axis=1))))
        bands.append(pol.last_band)
        sigma = np.std(r, ddof=1) * np.sqrt(365.0)  # by hand
        assert pol.last_sigma == pytest.approx(sigma, rel=1e-12)
        assert pol.last_band == pytest.approx(0.05 * sigma / 0.6, rel=1e-12)
    assert bands[0] == pytest.approx(0.075, rel=1e-12)
    assert bands[1] == pytest.approx(0.15, rel=1e-12)
    assert bands[1] == pytest.approx(2.0 * bands[0], rel=1e-12)
    # 90% vol: band 7.5 pp < 10 pp drift -> naive hedge; 180% vol: band 15 pp -> no trade
    calm, wild = holdings
    final = market_at(T0 + window * DAY, {s: PRICES[s] * float(np.prod(1 + r1)) for s in SYMS})
    assert calm.futures == pytest.approx(naive_futures_notional(book, final), rel=1e-9)
    assert calm.futures["BTC-PERP"] < 0
    assert all(v == 0 for v in wild.futures.values())
    assert calm.spot == pytest.approx(dict(book.spot)) and wild.spot == pytest.approx(dict(book.spot))


def test_base_band_until_enough_history_then_clipped() -> None:
    book, _ = make_book((6000.0, 2500.0, 1500.0))  # drift 10 pp
    pol = VolScaledBandFutures(0.12, window=5)
    for k in range(5):  # 5 prices = 4 returns < window: base band 12 pp, no trade
        h = pol(book, market_at(T0 + k * DAY, PRICES), T0 + k * DAY)
        assert pol.last_sigma is None and pol.last_band == 0.12
        assert all(v == 0 for v in h.futures.values())
    # flat prices: sigma 0 -> band 0, clipped up to min_band
    clipped = VolScaledBandFutures(0.12, window=3, min_band=0.02, max_band=0.3)
    for k in range(4):
        h = clipped(book, market_at(T0 + k * DAY, PRICES), T0 + k * DAY)
    assert clipped.last_sigma == 0.0 and clipped.last_band == 0.02
    assert h.futures["BTC-PERP"] == pytest.approx(-1000.0)
    # huge vol -> clipped down to max_band
    wild = VolScaledBandFutures(0.12, window=3, max_band=0.3)
    run(wild, book, path(np.array([[0.5] * 3, [-0.4] * 3, [0.6] * 3])))
    assert wild.last_sigma is not None and wild.last_sigma > 0.6 * 0.3 / 0.12
    assert wild.last_band == 0.3


def test_repeat_timestamp_replaces_and_earlier_timestamp_resets() -> None:
    book, _ = make_book((6000.0, 2500.0, 1500.0))
    prices = path(np.random.default_rng(3).normal(0.0, 0.03, size=(4, 3)))
    pol = VolScaledBandFutures(0.05, window=4)
    run(pol, book, prices)
    sigma = pol.last_sigma
    last = T0 + 4 * DAY
    pol(book, market_at(last, dict(zip(SYMS, map(float, prices[-1]), strict=True))), last)
    assert pol.last_sigma == sigma  # same observation again: not double counted
    pol(book, market_at(T0, PRICES), T0)  # back in time: a new run
    assert pol.last_sigma is None


def test_hourly_history_is_annualised_by_its_spacing() -> None:
    book, _ = make_book((6000.0, 2500.0, 1500.0))
    r = np.random.default_rng(5).normal(0.0, 0.01, size=6)
    prices = path(np.repeat(r[:, None], 3, axis=1))
    pol = VolScaledBandFutures(0.05, window=6)
    for k, row in enumerate(prices):
        t = T0 + k * pd.Timedelta("1h")
        pol(book, market_at(t, dict(zip(SYMS, map(float, row), strict=True))), t)
    assert pol.last_sigma == pytest.approx(np.std(r, ddof=1) * np.sqrt(365.0 * 24), rel=1e-12)


def test_vol_band_rejects_bad_settings() -> None:
    with pytest.raises(ValidationError):
        VolScaledBandFutures(0.0)
    with pytest.raises(ValidationError):
        VolScaledBandFutures(0.05, window=1)
    with pytest.raises(ValidationError):
        VolScaledBandFutures(0.05, min_band=0.2, max_band=0.1)


# --- DcaFutures ------------------------------------------------------------------------------


def test_dca_reaches_naive_target_in_k_equal_steps() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    target = naive_futures_notional(book, market)  # BTC -1000, ETH +500, SOL +500
    k = 4
    pol = DcaFutures(k, band=0.05)
    for i in range(1, k + 1):
        h = pol(book, market, T0 + i * DAY)
        assert h.spot == pytest.approx(dict(book.spot))
        for c, x in target.items():
            assert h.futures[c] == pytest.approx(i / k * x, abs=1e-9)
        book = apply(book, h, market)
    assert h.futures == pytest.approx(target, abs=1e-9)
    for c, x in zip(book.contract_symbols, book.futures_notional(market), strict=True):
        assert x == pytest.approx(target[c], abs=1e-9)
    assert max_drift(book, market) == pytest.approx(0.0, abs=1e-12)
    # done: no more trades until triggered again
    assert pol.step == 0
    idle = pol(book, market, T0 + 10 * DAY)
    assert idle.futures == pytest.approx(target, abs=1e-9)


def test_dca_fractions_start_from_the_position_at_trigger() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    x0 = {"BTC-PERP": 300.0, "ETH-PERP": -200.0, "SOL-PERP": 0.0}
    book = apply(book, TargetHoldings(spot=dict(book.spot), futures=x0), market)
    target = naive_futures_notional(book, market)
    k = 3
    pol = DcaFutures(k, period="30D")
    for i in range(1, k + 1):
        h = pol(book, market, T0 + i * DAY)
        for c in target:
            assert h.futures[c] == pytest.approx(x0[c] + i / k * (target[c] - x0[c]), abs=1e-9)
        book = apply(book, h, market)
    assert h.futures == pytest.approx(target, abs=1e-9)
    assert pol(book, market, T0 + 5 * DAY).futures == pytest.approx(target, abs=1e-9)  # idle


def test_dca_one_step_is_naive() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    h = DcaFutures(1, period="1D")(book, market, T0)
    assert h.futures == pytest.approx(naive_futures_notional(book, market), abs=1e-9)


def test_dca_no_trade_when_not_triggered() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))  # drift 10 pp
    pol = DcaFutures(4, band=0.2)
    for i in range(3):
        h = pol(book, market, T0 + i * DAY)
        assert h.spot == pytest.approx(dict(book.spot))
        assert all(v == 0 for v in h.futures.values())
    assert pol.step == 0


def test_dca_calendar_retrigger_restarts_from_current_position() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    k = 4
    pol = DcaFutures(k, period="2D")
    t1 = pol(book, market, T0)  # step 1 of 4: 1/4 of the way
    book = apply(book, t1, market)
    t2 = pol(book, market, T0 + DAY)  # step 2 of 4
    book = apply(book, t2, market)
    assert t2.futures["BTC-PERP"] == pytest.approx(-500.0, abs=1e-9)
    # prices move and the calendar fires again: restart from the current position (-500 BTC)
    moved = market_at(T0 + 2 * DAY, {"BTC": 66000.0, "ETH": 2500.0, "SOL": 150.0})
    x0 = dict(zip(book.contract_symbols, map(float, book.futures_notional(moved)), strict=True))
    target = naive_futures_notional(book, moved)
    t3 = pol(book, moved, T0 + 2 * DAY)
    assert pol.step == 1
    for c in target:
        assert t3.futures[c] == pytest.approx(x0[c] + (target[c] - x0[c]) / k, abs=1e-9)
    book = apply(book, t3, moved)
    for i in range(2, k + 1):
        h = pol(book, moved, T0 + 2 * DAY + pd.Timedelta(hours=i))
        for c in target:
            assert h.futures[c] == pytest.approx(x0[c] + i / k * (target[c] - x0[c]), abs=1e-9)
        book = apply(book, h, moved)
    assert h.futures == pytest.approx(target, abs=1e-9)


def test_dca_band_restarts_only_when_the_plan_is_stale() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))  # drift 10 pp > band 5 pp
    k = 4
    pol = DcaFutures(k, band=0.05)
    h = pol(book, market, T0)
    book = apply(book, h, market)
    assert max_drift(book, market) > 0.05  # half-built hedge still off target ...
    h = pol(book, market, T0 + DAY)  # ... but the plan is fine: step 2, not a restart
    assert pol.step == 2
    assert h.futures["BTC-PERP"] == pytest.approx(-500.0, abs=1e-9)
    book = apply(book, h, market)
    # SOL triples: with the committed plan SOL would sit far above target -> restart
    moved = market_at(T0 + 2 * DAY, {"BTC": 60000.0, "ETH": 2500.0, "SOL": 450.0})
    x0 = dict(zip(book.contract_symbols, map(float, book.futures_notional(moved)), strict=True))
    target = naive_futures_notional(book, moved)
    h = pol(book, moved, T0 + 2 * DAY)
    assert pol.step == 1
    for c in target:
        assert h.futures[c] == pytest.approx(x0[c] + (target[c] - x0[c]) / k, abs=1e-9)


def test_dca_rejects_bad_settings() -> None:
    with pytest.raises(ValidationError):
        DcaFutures(0, band=0.05)
    with pytest.raises(ValidationError):
        DcaFutures(3)
