"""The tracking-error band overlay (``optimizer.te_band``) by hand.

Book: 1 BTC at 60,000 and 10 ETH at 3,000 (spot 60,000 + 30,000, no futures), targets 50/50, so
V = 90,000 and d = (+1/6, -1/6). Sigma = diag(0.04, 0.09) (vols 20% and 30%):
TE(d) = sqrt((0.04 + 0.09) / 36) = sqrt(0.0036111) = 0.0600925.

- band 0.07: TE <= band, nothing trades;
- band 0.03, inner 1: r = 0.03 / 0.0600925 = 0.499230, X' = -(1 - r) d V = -(0.500770)(+15,000)
  = -7,511.55 on BTC-PERP and +7,511.55 on ETH-PERP; the book after has TE exactly 0.03;
- inner 0: back to target, X' = -d V = -15,000 / +15,000.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.book import Book, FuturesPosition
from models.errors import ValidationError
from models.instruments import FuturesContract, SpotAsset
from models.market import MarketSnapshot
from models.risk import RiskModel, tracking_error
from optimizer.te_band import TrackingErrorBandFutures

T = pd.Timestamp("2025-01-01", tz="UTC")
RISK = RiskModel.from_covariance(["BTC", "ETH"], np.diag([0.04, 0.09]))
BTC_PERP, ETH_PERP = FuturesContract("BTC-PERP", "BTC"), FuturesContract("ETH-PERP", "ETH")
TE0 = float(np.sqrt(0.13 / 36))


def book(contracts: tuple[FuturesContract, ...] = (BTC_PERP, ETH_PERP),
         futures: dict[str, FuturesPosition] | None = None) -> Book:
    return Book((SpotAsset("BTC"), SpotAsset("ETH")), contracts, spot={"BTC": 1.0, "ETH": 10.0},
                targets={"BTC": 0.5, "ETH": 0.5}, cash=20_000.0, futures=futures or {})


def market(contracts: tuple[FuturesContract, ...] = (BTC_PERP, ETH_PERP)) -> MarketSnapshot:
    px = {"BTC": 60_000.0, "ETH": 3_000.0}
    return MarketSnapshot(time=T, spot=px, mark={c.symbol: px[c.underlying] for c in contracts})


def te_after(b: Book, m: MarketSnapshot, futures: dict[str, float]) -> float:
    after = b.with_futures({c.symbol: futures[c.symbol] / m.mark_price(c.symbol)
                            for c in b.contracts}, m)
    d = after.effective_weights(m) - after.target_vector()
    return tracking_error(d, RISK.covariance)


def test_the_hand_figures_hold() -> None:
    b, m = book(), market()
    assert b.base(m) == pytest.approx(90_000.0)
    d = b.effective_weights(m) - b.target_vector()
    assert tracking_error(d, RISK.covariance) == pytest.approx(TE0)
    assert abs(TE0 - 0.0600925) < 1e-7


def test_inside_the_band_nothing_trades() -> None:
    pol = TrackingErrorBandFutures(RISK, 0.07)
    out = pol(book(), market(), T)
    assert out.futures == {"BTC-PERP": 0.0, "ETH-PERP": 0.0}
    assert out.spot == {"BTC": 1.0, "ETH": 10.0}
    assert pol.last_te == pytest.approx(TE0)


def test_outside_the_band_it_trades_to_the_edge() -> None:
    b, m = book(), market()
    out = TrackingErrorBandFutures(RISK, 0.03)(b, m, T)
    r = 0.03 / TE0
    assert r == pytest.approx(0.499230, abs=1e-6)
    assert out.futures["BTC-PERP"] == pytest.approx(-(1 - r) * 15_000.0)
    assert out.futures["BTC-PERP"] == pytest.approx(-7_511.55, abs=0.01)
    assert out.futures["ETH-PERP"] == pytest.approx(7_511.55, abs=0.01)
    assert out.spot == {"BTC": 1.0, "ETH": 10.0}
    assert te_after(b, m, out.futures) == pytest.approx(0.03, rel=1e-12)


def test_inner_zero_trades_back_to_target() -> None:
    b, m = book(), market()
    out = TrackingErrorBandFutures(RISK, 0.03, inner=0.0)(b, m, T)
    assert out.futures == pytest.approx({"BTC-PERP": -15_000.0, "ETH-PERP": 15_000.0})
    assert te_after(b, m, out.futures) == pytest.approx(0.0, abs=1e-12)


def test_held_futures_count_and_a_second_contract_is_closed() -> None:
    """Short 0.1 BTC-PERP (-6,000) and long 0.05 BTC-Q (+3,000): BTC's exposure -3,000, so
    d = ((60,000 - 3,000) / 90,000 - 0.5, -1/6) = (0.13333, -0.16667), TE =
    sqrt(0.04 x 0.017778 + 0.09 x 0.027778) = sqrt(0.0032111) = 0.056667; band 0.03:
    r = 0.529412 and BTC's exposure becomes -3,000 - (1 - r) 0.13333 x 90,000 = -8,647.06, all on
    BTC-PERP; BTC-Q closes."""
    q = FuturesContract("BTC-Q", "BTC")
    contracts = (BTC_PERP, q, ETH_PERP)
    b = book(contracts, {"BTC-PERP": FuturesPosition(-0.1, 60_000.0),
                         "BTC-Q": FuturesPosition(0.05, 60_000.0)})
    m = market(contracts)
    d = np.array([57_000.0 / 90_000.0 - 0.5, -1 / 6])
    te = float(np.sqrt(0.04 * d[0] ** 2 + 0.09 * d[1] ** 2))
    assert te == pytest.approx(0.056667, abs=1e-6)
    out = TrackingErrorBandFutures(RISK, 0.03)(b, m, T)
    r = 0.03 / te
    assert out.futures["BTC-PERP"] == pytest.approx(-3_000.0 - (1 - r) * d[0] * 90_000.0)
    assert out.futures["BTC-PERP"] == pytest.approx(-8_647.06, abs=0.01)
    assert out.futures["BTC-Q"] == 0.0
    assert out.futures["ETH-PERP"] == pytest.approx(-(1 - r) * d[1] * 90_000.0)


def test_an_asset_without_a_contract_keeps_its_deviation() -> None:
    """Only ETH-PERP: ETH moves to r d_ETH, BTC's +1/6 stays; TE after is
    sqrt(0.04 / 36 + 0.09 (r / 6)^2), above the band."""
    contracts = (ETH_PERP,)
    b, m = book(contracts), market(contracts)
    out = TrackingErrorBandFutures(RISK, 0.03)(b, m, T)
    r = 0.03 / TE0
    assert out.futures == pytest.approx({"ETH-PERP": (1 - r) * 15_000.0})
    assert te_after(b, m, out.futures) == pytest.approx(np.sqrt(0.04 / 36 + 0.09 * (r / 6) ** 2))


def test_a_risk_model_per_time_is_read_at_each_call() -> None:
    seen: list[pd.Timestamp] = []

    def risk_at(t: pd.Timestamp) -> RiskModel:
        seen.append(t)
        return RISK

    TrackingErrorBandFutures(risk_at, 0.03)(book(), market(), T)
    assert seen == [T]


@pytest.mark.parametrize(("band", "inner", "field"), [
    (0.0, 1.0, "policy.band"), (-0.01, 1.0, "policy.band"), (float("nan"), 1.0, "policy.band"),
    (0.01, 1.5, "policy.inner")])
def test_bad_parameters_name_their_field(band: float, inner: float, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        TrackingErrorBandFutures(RISK, band, inner)
    assert exc.value.field == field
