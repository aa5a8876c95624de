"""Band-to-edge futures overlays (optimizer.edge_bands), each case computed by hand.

The book: BTC, ETH, SOL at 60,000 / 2,500 / 150 USD, targets 0.5 / 0.3 / 0.2, the target base V
the spot value (10,000 USD unless said otherwise). With spot 6,000 / 2,500 / 1,500 USD and no
futures the deviations are d = (+0.10, -0.05, -0.05). After a trade an asset's futures notional is
X_i' = (w*_i + sign(d_i) inner b_i) V - s_i (USD).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.synthetic import generate_history
from optimizer.baselines import realised_portfolio_vol
from optimizer.edge_bands import (
    EdgeBandFutures,
    VolScaledEdgeBandFutures,
    edge_band_policy,
    realised_asset_vols,
    vol_scaled_widths,
)
from optimizer.policies import NaiveFutures, Policy, TargetHoldings
from scenarios.backtest_result import BacktestResult
from scenarios.collateral import NO_SWEEPS
from scenarios.market_path import MarketPath
from scenarios.montecarlo import SimplePolicy
from scenarios.replay import run_backtest

SYMS = ("BTC", "ETH", "SOL")
PRICES = {"BTC": 60000.0, "ETH": 2500.0, "SOL": 150.0}
TARGETS = {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}
T0 = pd.Timestamp("2025-01-01", tz="UTC")
DAY = pd.Timedelta("1D")
USD_TOL = 1e-9


def perps(*syms: str) -> tuple[FuturesContract, ...]:
    return tuple(FuturesContract(f"{s}-PERP", s, lot_step=1e-9, min_notional=0.0) for s in syms)


def make_book(spot_usd: tuple[float, float, float], futures_usd: Mapping[str, float] | None = None,
              contracts: tuple[FuturesContract, ...] | None = None) -> tuple[Book, MarketSnapshot]:
    """The 3-asset book holding ``spot_usd`` (USD per asset) and ``futures_usd`` (USD notional per
    contract, struck at mark)."""
    cons = perps(*SYMS) if contracts is None else contracts
    market = MarketSnapshot(T0, spot=PRICES, mark={c.symbol: PRICES[c.underlying] for c in cons})
    pos = {c: FuturesPosition(x / market.mark_price(c), market.mark_price(c))
           for c, x in (futures_usd or {}).items()}
    book = Book(tuple(SpotAsset(s) for s in SYMS), cons,
                spot={s: v / PRICES[s] for s, v in zip(SYMS, spot_usd, strict=True)},
                targets=TARGETS, cash=3000.0, futures=pos)
    return book, market


def assert_futures(h: TargetHoldings, expected: Mapping[str, float]) -> None:
    assert set(h.futures) == set(expected)
    for c, x in expected.items():
        assert abs(h.futures[c] - x) <= USD_TOL, (c, h.futures[c], x)


# --- uniform widths ------------------------------------------------------------------------------


def test_inside_the_band_no_trade() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0), {"SOL-PERP": 100.0})
    # d = (0.10, -0.05, -0.04) with the +100 USD SOL long: all inside 12 pp
    h = EdgeBandFutures(0.12)(book, market, T0)
    assert_futures(h, {"BTC-PERP": 0.0, "ETH-PERP": 0.0, "SOL-PERP": 100.0})
    assert h.spot == pytest.approx(dict(book.spot), rel=0, abs=0)


def test_one_asset_outside_trades_to_the_edge_only() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    pol = EdgeBandFutures(0.07)
    h = pol(book, market, T0)
    # BTC: 0.10 > 0.07 -> (0.5 + 0.07) 10,000 - 6,000 = -300; ETH, SOL: 0.05 inside
    assert_futures(h, {"BTC-PERP": -300.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    assert pol.last_widths.tolist() == [0.07] * 3
    assert h.spot == dict(book.spot)
    # a band exactly at the deviation is inside (strict >, like NaiveFutures)
    at_edge = EdgeBandFutures(0.10)(book, market, T0)
    assert_futures(at_edge, {"BTC-PERP": 0.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})


def test_inner_fraction_interpolates_edge_and_target() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    # inner 0.5: BTC to 0.5 + 0.035 -> 5,350 - 6,000 = -650
    assert_futures(EdgeBandFutures(0.07, inner=0.5)(book, market, T0),
                   {"BTC-PERP": -650.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    for bad in (-0.1, 1.5):
        with pytest.raises(ValidationError, match="inner"):
            EdgeBandFutures(0.07, inner=bad)
    with pytest.raises(ValidationError, match="band"):
        EdgeBandFutures(0.0)


def test_inner_zero_matches_naive_on_the_assets_outside_only() -> None:
    """NaiveFutures(band=b) trades *all* assets back to target once any is outside; the per-asset
    rule with inner = 0 trades only those outside, to the same target."""
    book, market = make_book((6000.0, 2500.0, 1500.0))
    naive = NaiveFutures(band=0.07)(book, market, T0)
    edge0 = EdgeBandFutures(0.07, inner=0.0)(book, market, T0)
    # naive: w* V - s = 5,000 - 6,000, 3,000 - 2,500, 2,000 - 1,500
    assert_futures(naive, {"BTC-PERP": -1000.0, "ETH-PERP": 500.0, "SOL-PERP": 500.0})
    assert_futures(edge0, {"BTC-PERP": -1000.0, "ETH-PERP": 0.0, "SOL-PERP": 0.0})
    assert edge0.futures["BTC-PERP"] == naive.futures["BTC-PERP"]  # the same formula, bit for bit
    # with every asset outside (band 4 pp) the two agree everywhere
    assert_futures(EdgeBandFutures(0.04, inner=0.0)(book, market, T0),
                   NaiveFutures(band=0.04)(book, market, T0).futures)


def test_long_and_short_signs_and_held_positions() -> None:
    # spot 4,000 / 3,500 / 2,500 and a -200 USD SOL short: d = (-0.10, +0.05, +0.03)
    book, market = make_book((4000.0, 3500.0, 2500.0), {"SOL-PERP": -200.0})
    h = EdgeBandFutures(0.04)(book, market, T0)
    # BTC under: long to (0.5 - 0.04) 10,000 - 4,000 = +600; ETH over: short to
    # (0.3 + 0.04) 10,000 - 3,500 = -100; SOL inside (0.03): its short is kept
    assert_futures(h, {"BTC-PERP": 600.0, "ETH-PERP": -100.0, "SOL-PERP": -200.0})
    after = book.with_futures({c.symbol: h.futures[c.symbol] / market.mark_price(c.symbol)
                               for c in book.contracts}, market)
    d = after.effective_weights(market) - after.target_vector()
    np.testing.assert_allclose(d, [-0.04, 0.04, 0.03], rtol=0, atol=1e-12)


def test_routing_first_contract_and_unhedged_assets() -> None:
    """Two BTC contracts: the new exposure goes to the first, the second is closed (like
    naive_futures_notional). SOL has no contract: it stays unhedged, whatever its drift."""
    cons = (*perps("BTC", "ETH"), FuturesContract("BTC-Q", "BTC", lot_step=1e-9, min_notional=0.0))
    book, market = make_book((6000.0, 2500.0, 1500.0), {"BTC-Q": -100.0}, contracts=cons)
    # d = (0.09, -0.05, -0.05) with the -100 USD BTC-Q short; band 4 pp: all outside
    h = EdgeBandFutures(0.04)(book, market, T0)
    assert_futures(h, {"BTC-PERP": (0.5 + 0.04) * 10_000 - 6000.0, "BTC-Q": 0.0,
                       "ETH-PERP": (0.3 - 0.04) * 10_000 - 2500.0})


# --- vol-scaled widths ---------------------------------------------------------------------------


def prices_ending_at_prices(returns: np.ndarray) -> np.ndarray:
    """Prices (T+1 x 3) with simple returns ``returns`` (T x 3), the last row exactly PRICES."""
    p = [np.array([PRICES[s] for s in SYMS])]
    for r in returns[::-1]:
        p.append(p[-1] / (1.0 + r))
    return np.vstack(p[::-1])


def feed(pol: Policy, book: Book, prices: np.ndarray) -> TargetHoldings:
    """Call ``pol`` once a day at ``prices`` (rows), returning the last targets."""
    out: TargetHoldings | None = None
    cons = [c.symbol for c in book.contracts]
    for k, row in enumerate(prices):
        px = dict(zip(SYMS, map(float, row), strict=True))
        market = MarketSnapshot(T0 + k * DAY, spot=px, mark={c: px[c.split("-")[0]] for c in cons})
        out = pol(book, market, T0 + k * DAY)
    assert out is not None
    return out


def test_vol_scaled_widths_from_a_hand_computed_sigma_ratio() -> None:
    """Returns of BTC, ETH, SOL are 1, 2, 3 times one series: sigma ratio 1 : 2 : 3, mean 2, so
    b_i = b (0.5, 1, 1.5). Band 4 pp -> 2 / 4 / 6 pp: BTC (0.10) and ETH (0.05) trade, SOL
    (0.05 < 0.06) does not; uniform 4 pp would trade all three."""
    window = 10
    z = np.random.default_rng(5).normal(size=window)
    r = 0.02 * z[:, None] * np.array([1.0, 2.0, 3.0])
    prices = prices_ending_at_prices(r)
    book, _ = make_book((6000.0, 2500.0, 1500.0))
    pol = VolScaledEdgeBandFutures(0.04, window=window)
    h = feed(pol, book, prices)
    R = prices[1:] / prices[:-1] - 1.0
    sigma = np.array([np.std(R[:, i], ddof=1) for i in range(3)]) * np.sqrt(365.0)  # by hand
    assert pol.last_sigma is not None
    np.testing.assert_allclose(pol.last_sigma, sigma, rtol=1e-12)
    np.testing.assert_allclose(pol.last_sigma / pol.last_sigma[0], [1.0, 2.0, 3.0], rtol=1e-9)
    np.testing.assert_allclose(pol.last_widths, [0.02, 0.04, 0.06], rtol=1e-9)
    b = pol.last_widths
    assert_futures(h, {"BTC-PERP": (0.5 + b[0]) * 10_000 - 6000.0,
                       "ETH-PERP": (0.3 - b[1]) * 10_000 - 2500.0, "SOL-PERP": 0.0})
    assert abs(h.futures["BTC-PERP"] - (-800.0)) <= 1e-6 and abs(h.futures["ETH-PERP"] - 100.0) <= 1e-6
    uniform = EdgeBandFutures(0.04)(book, MarketSnapshot(T0, spot=PRICES, mark={
        f"{s}-PERP": p for s, p in PRICES.items()}), T0)
    assert uniform.futures["SOL-PERP"] == pytest.approx(500.0 - 400.0)
    # the per-asset vol is the portfolio vol of a unit weight
    for i in range(3):
        assert realised_asset_vols(prices, 365.0)[i] == pytest.approx(
            realised_portfolio_vol(prices, np.eye(3)[i], 365.0), rel=1e-12)


def test_vol_scaled_before_history_uses_given_vols_else_uniform() -> None:
    book, market = make_book((6000.0, 2500.0, 1500.0))
    given = VolScaledEdgeBandFutures(0.04, window=5, vols={"BTC": 0.5, "ETH": 1.0, "SOL": 1.5})
    h = given(book, market, T0)
    assert given.last_sigma is None
    np.testing.assert_allclose(given.last_widths, [0.02, 0.04, 0.06], rtol=1e-12)
    assert_futures(h, {"BTC-PERP": -800.0, "ETH-PERP": 100.0, "SOL-PERP": 0.0})
    plain = VolScaledEdgeBandFutures(0.04, window=5)
    plain(book, market, T0)
    assert plain.last_widths.tolist() == [0.04] * 3
    with pytest.raises(ValidationError, match="SOL"):
        VolScaledEdgeBandFutures(0.04, window=5, vols={"BTC": 0.5, "ETH": 1.0})(book, market, T0)
    # flat prices: mean sigma 0 -> uniform widths
    flat = VolScaledEdgeBandFutures(0.04, window=3)
    feed(flat, book, np.tile([PRICES[s] for s in SYMS], (4, 1)))
    assert flat.last_sigma is not None and flat.last_sigma.tolist() == [0.0] * 3
    assert flat.last_widths.tolist() == [0.04] * 3
    np.testing.assert_allclose(vol_scaled_widths(0.03, np.array([0.2, 0.4, 0.6])), [0.015, 0.03, 0.045])


def test_factory_and_names() -> None:
    assert type(edge_band_policy(0.02)) is EdgeBandFutures
    vol = edge_band_policy(0.02, inner=0.5, scaling="vol", window=12)
    assert isinstance(vol, VolScaledEdgeBandFutures) and vol.window == 12
    assert vol.name == "vol_edge_band_futures_0.02_w12_inner0.5"
    assert edge_band_policy(0.02).name == "edge_band_futures_0.02"
    with pytest.raises(ValidationError, match="scaling"):
        edge_band_policy(0.02, scaling="log")
    with pytest.raises(ValidationError, match="window"):
        edge_band_policy(0.02, window=10)


# --- through the backtester ----------------------------------------------------------------------


class Recording(Policy):
    """Wraps a band-to-edge policy and records its widths b_i at each call."""

    def __init__(self, inner: EdgeBandFutures) -> None:
        self.inner = inner
        self.name = inner.name
        self.widths: dict[pd.Timestamp, np.ndarray] = {}

    def __call__(self, book: Book, market: MarketSnapshot, t: pd.Timestamp) -> TargetHoldings:
        out = self.inner(book, market, t)
        self.widths[t] = self.inner.last_widths.copy()
        return out


def synthetic_case(n_days: int = 240, seed: int = 3) -> tuple[Book, MarketPath]:
    hist = generate_history(SYMS, days=n_days, seed=seed)
    cons = tuple(FuturesContract(f"{s}-PERP", s) for s in hist.symbols)
    p0 = hist.spot.iloc[0]
    book = Book(tuple(SpotAsset(s) for s in hist.symbols), cons,
                spot={"BTC": 50_000 / p0["BTC"], "ETH": 30_000 / p0["ETH"], "SOL": 20_000 / p0["SOL"]},
                targets=TARGETS, cash=20_000.0)
    return book, MarketPath.from_synthetic(hist, cons)


def traded_assets(res: BacktestResult, book: Book) -> dict[pd.Timestamp, set[str]]:
    under = {c.symbol: c.underlying for c in book.contracts}
    fut = res.trades[res.trades["kind"] == "futures"]
    out: dict[pd.Timestamp, set[str]] = {}
    for t, sym in zip(fut["time"], fut["symbol"], strict=True):
        out.setdefault(pd.Timestamp(t), set()).add(under[sym])
    return out


@pytest.mark.parametrize("make", [lambda: EdgeBandFutures(0.02),
                                  lambda: VolScaledEdgeBandFutures(0.02, window=20)],
                         ids=["uniform", "vol"])
def test_backtest_deviation_after_each_rebalance_is_the_band(
        make: Callable[[], EdgeBandFutures]) -> None:
    """Spot is never traded (no sweeps) and the base V is the spot value, so at the end of a step
    the recorded deviation of an asset just traded is exactly +-b_i; no asset ends a step outside
    its band."""
    book, path = synthetic_case()
    pol = Recording(make())
    res = run_backtest(book, path, pol, collateral=NO_SWEEPS)
    assert int(res.steps["liquidated"].sum()) == 0
    assert res.trades[res.trades["kind"] == "spot"].empty
    dev = (res.weights - res.targets[res.weights.columns])[book.asset_symbols]
    traded = traded_assets(res, book)
    assert len(traded) >= 5  # the rule really trades on this path
    n_checked = 0
    for t, assets in traded.items():
        row = dev.loc[t].to_numpy(dtype=float)
        for i, a in enumerate(book.asset_symbols):
            if a in assets:
                d, b = float(row[i]), float(pol.widths[t][i])
                assert abs(abs(d) - b) <= 1e-9, (t, a, d, b)
                n_checked += 1
    assert n_checked >= 5
    bands = np.vstack([pol.widths[pd.Timestamp(t)] for t in dev.index])
    assert float((np.abs(dev.to_numpy()) - bands).max()) <= 1e-9
    if isinstance(pol.inner, VolScaledEdgeBandFutures):  # the widths really differ by asset
        assert float(np.ptp(bands[-1])) > 1e-4


def test_montecarlo_simple_policy_kind() -> None:
    _, path = synthetic_case(n_days=10)
    pol = SimplePolicy("edge_band_futures", (("band", 0.02),))(path, {"scaling": "vol", "window": 5})
    assert isinstance(pol, VolScaledEdgeBandFutures) and pol.band == 0.02 and pol.window == 5
    assert type(SimplePolicy("edge_band_futures")(path, {"band": 0.03})) is EdgeBandFutures
