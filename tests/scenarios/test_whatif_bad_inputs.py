"""What-if inputs that used to give nonsense: a funding shock over a huge horizon (losses now end
where the wallet is liquidated, as in the replay), and funding paid settlement by settlement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scenarios.funding_run as wi
from models.book import Book, FuturesPosition
from models.instruments import FuturesContract, MarginTiers, SpotAsset
from models.margin import LIQUIDATION_PENALTY
from models.market import MarketSnapshot
from models.risk import RiskModel
from optimizer.policies import NoRebalance
from scenarios.collateral import NO_SWEEPS
from scenarios.funding_run import funding_until_liquidation
from scenarios.market_path import MarketPath
from scenarios.replay import run_backtest
from scenarios.shocks import parse_scenario
from scenarios.whatif import run_whatif

T0 = pd.Timestamp("2025-01-01", tz="UTC")
FLAT = MarginTiers.flat(max_leverage=20.0, mmr=0.005)


def long_btc_book(cash: float = 3_000.0) -> tuple[Book, MarketSnapshot]:
    """1 BTC spot, long 1 BTC-PERP at 60,000 (mark 60,000: no uPnL), flat 0.5% maintenance."""
    contract = FuturesContract("BTC-PERP", "BTC", lot_step=0.0, min_notional=0.0, tiers=FLAT)
    book = Book(assets=(SpotAsset("BTC"),), contracts=(contract,), spot={"BTC": 1.0},
                targets={"BTC": 1.0}, cash=cash, futures={"BTC-PERP": FuturesPosition(1.0, 60_000.0)})
    market = MarketSnapshot(time=T0, spot={"BTC": 60_000.0}, mark={"BTC-PERP": 60_000.0})
    return book, market


def test_funding_over_a_huge_horizon_stops_at_liquidation() -> None:
    """+0.1% per 8 h on 60,000 long = 60 USD a settlement; surplus 3,030 - 300 = 2,730 USD:
    after 45 settlements it is 30, after 46 it is -30: liquidated then, 368 h in (the old code
    paid all 3,000,000 settlements: NAV -180 million USD). The wallet, 3,030 - 2,760 - 600 (the
    penalty) = -330, is the insurance fund's: back at 0."""
    book, market = long_btc_book(cash=3_030.0)
    risk = RiskModel.from_covariance(["BTC"], np.array([[0.25]]))
    r = run_whatif(book, market, risk, parse_scenario("spike", ["funding=+0.1%", "horizon=1000000d"]),
                   resolve=False, distances=False)
    assert r.settlements_asked == {"BTC-PERP": 3_000_000.0}
    assert r.settlements == {"BTC-PERP": 46.0}
    assert r.liquidated and r.liquidated_after_h == pytest.approx(46 * 8.0)
    assert r.pnl.funding == pytest.approx(-46 * 60.0)
    penalty = LIQUIDATION_PENALTY * 60_000.0
    assert r.liquidation_penalty == pytest.approx(penalty)
    assert r.insurance_fund == pytest.approx(330.0)
    assert r.nav_after == pytest.approx(r.nav_before - 46 * 60.0 - penalty + 330.0)
    assert r.nav_after > 0
    assert r.to_dict()["liquidated_after_hours"] == pytest.approx(368.0)

    # the replay (independent engine) over the same 8 h settlements gives the same NAV
    idx = pd.date_range(T0, periods=60, freq="8h")
    path = MarketPath(spot=pd.DataFrame({"BTC": 60_000.0}, index=idx),
                      funding=pd.DataFrame({"BTC-PERP": 0.001}, index=idx[1:]))
    bt = run_backtest(book, path, NoRebalance(), collateral=NO_SWEEPS)
    k = int(np.flatnonzero(bt.steps["liquidated"].to_numpy())[0])
    assert k == 46
    assert float(bt.steps["nav"].iloc[-1]) == pytest.approx(r.nav_after, abs=1e-9)


def test_no_contract_settles_after_the_liquidation() -> None:
    """A 4 h ETH perpetual with no position next to the long BTC one of
    test_funding_over_a_huge_horizon_stops_at_liquidation: the wallet is liquidated 368 h in
    (46 BTC settlements of 60 USD), so ETH settled floor(368 / 4) = 92 of its 6,000,000 (24 x
    1,000,000 / 4) times, not all of them (the old code kept every count of a contract that paid
    nothing). The what-if note gives each contract's count, by hand."""
    from fbr.whatif_cli import liquidation_notes

    btc = FuturesContract("BTC-PERP", "BTC", lot_step=0.0, min_notional=0.0, tiers=FLAT)
    eth = FuturesContract("ETH-PERP", "ETH", lot_step=0.0, min_notional=0.0, tiers=FLAT,
                          funding_interval_h=4.0)
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=(btc, eth),
                spot={"BTC": 1.0, "ETH": 0.0}, targets={"BTC": 1.0, "ETH": 0.0}, cash=3_030.0,
                futures={"BTC-PERP": FuturesPosition(1.0, 60_000.0)})
    market = MarketSnapshot(time=T0, spot={"BTC": 60_000.0, "ETH": 2_500.0},
                            mark={"BTC-PERP": 60_000.0, "ETH-PERP": 2_500.0})
    risk = RiskModel.from_covariance(["BTC", "ETH"], np.array([[0.25, 0.1], [0.1, 0.49]]))
    r = run_whatif(book, market, risk, parse_scenario("spike", ["funding=+0.1%", "horizon=1000000d"]),
                   resolve=False, distances=False)
    assert r.settlements_asked == {"BTC-PERP": 3_000_000.0, "ETH-PERP": 6_000_000.0}
    assert r.liquidated_after_h == pytest.approx(368.0)
    assert r.settlements == {"BTC-PERP": 46.0, "ETH-PERP": 92.0}
    assert r.pnl.funding == pytest.approx(-46 * 60.0)
    assert liquidation_notes([r]) == [
        "spike: the wallet is liquidated 368 h after the shock (funding settlements paid: "
        "BTC-PERP 46 of 3,000,000, ETH-PERP 92 of 6,000,000); losses stop there"]


def test_funding_run_caps_every_contract_at_the_liquidation() -> None:
    """Payments 0 (4 h), 5, 5 (8 h) USD and a dated future (0 settlements); S_0 = 295 USD:
    10 USD per 8 h, so S goes below 0 at the 30th 8 h settlement (295 - 300 = -5), 240 h in.
    Every perpetual is capped there: 60, 30, 30; the dated one stays 0."""
    run = funding_until_liquidation(np.array([0.0, 5.0, 5.0, 0.0]),
                                    np.array([100.0, 100.0, 100.0, 0.0]),
                                    np.array([4.0, 8.0, 8.0, 8.0]), 295.0, True)
    assert run.liquidated_after_h == pytest.approx(240.0)
    np.testing.assert_array_equal(run.settled, [60.0, 30.0, 30.0, 0.0])
    assert run.paid == pytest.approx(300.0)


def test_short_horizon_and_surviving_book_pay_every_settlement() -> None:
    book, market = long_btc_book(cash=50_000.0)
    risk = RiskModel.from_covariance(["BTC"], np.array([[0.25]]))
    r = run_whatif(book, market, risk, parse_scenario("s", ["funding=+0.1%", "horizon=21"]),
                   resolve=False, distances=False)
    assert not r.liquidated and r.liquidated_after_h is None
    assert r.settlements == {"BTC-PERP": 21.0}
    assert r.pnl.funding == pytest.approx(-21 * 60.0)


def test_price_move_alone_liquidates_before_any_funding() -> None:
    book, market = long_btc_book()
    risk = RiskModel.from_covariance(["BTC"], np.array([[0.25]]))
    r = run_whatif(book, market, risk, parse_scenario("crash", ["BTC=-10%", "funding=+0.1%",
                                                                "horizon=30"]),
                   resolve=False, distances=False)
    assert r.liquidated and r.liquidated_after_h == 0.0
    assert r.pnl.funding == 0.0 and r.settlements == {}


def brute_force(payments: np.ndarray, counts: np.ndarray, hours: np.ndarray,
                surplus0: float) -> tuple[float | None, np.ndarray]:
    """Reference: walk every settlement time one by one."""
    events = sorted({h * k for h, n in zip(hours, counts, strict=True) for k in range(1, int(n) + 1)})
    cum = 0.0
    for tau in events:
        paid = np.minimum(np.floor(tau / hours + 1e-9), counts)
        cum = float(payments @ paid)
        if surplus0 - cum < 0:
            return tau, paid
    return None, counts.astype(float)


@pytest.mark.parametrize("chunk", [7, 1_000_000])
def test_mixed_intervals_and_signs_match_a_brute_force_walk(chunk: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wi, "FUNDING_CHUNK", chunk)
    rng = np.random.default_rng(3)
    for _ in range(40):
        payments = rng.normal(0.0, 10.0, 3) + np.array([5.0, 0.0, 0.0])
        hours = rng.choice([1.0, 4.0, 8.0], 3)
        counts = rng.integers(0, 60, 3).astype(float)
        s0 = float(rng.uniform(0.0, 300.0))
        tau, paid = brute_force(payments, counts, hours, s0)
        run = funding_until_liquidation(payments, counts, hours, s0, True)
        assert run.liquidated_after_h == (None if tau is None else pytest.approx(tau))
        np.testing.assert_allclose(run.settled, paid)
        assert run.paid == pytest.approx(float(payments @ paid))


@pytest.mark.parametrize("reader", ["spot", "quote_volume"])
def test_truncated_gzip_names_the_file(tmp_path, reader: str) -> None:  # type: ignore[no-untyped-def]
    """A .csv.gz cut short (an interrupted copy) raised a bare EOFError naming nothing."""
    import gzip

    from models.errors import ValidationError
    from models.io import load_spot_closes
    from scenarios.read_history import _quote_volume

    folder = tmp_path / "spot_1d"
    folder.mkdir()
    f = folder / "BTC.csv.gz"
    rows = "".join(f"2024-01-{d:02d}T00:00:00Z,1,1,1,{100 + d},1,{100 + d}\n" for d in range(1, 29))
    with gzip.open(f, "wt") as fh:
        fh.write("timestamp,open,high,low,close,volume,quote_volume\n" + rows * 50)
    f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(ValidationError) as info:
        if reader == "spot":
            load_spot_closes(tmp_path, ["BTC"])
        else:
            _quote_volume(f)
    msg = str(info.value)
    assert str(f) in msg and "EOFError" in msg and "Fix:" in msg
