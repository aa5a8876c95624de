"""Real quarterly marks in replays (issue 11, build 5, item 2).

``models.io.load_quarterly_closes`` reads ``quarterly_1d/<PAIR>_<YYMMDD>.csv.gz`` (daily klines,
bar open time; delivery 08:00 UTC on YYMMDD) and stamps each close when it is known (open + 1 day;
the delivery-day bar at 08:00). ``scenarios.quarterly_basis.with_quarterly_marks`` marks a path's dated
contracts at a real close (``"real"``), at a real close's basis under a day old carried to the
step's spot (``"real_ffill"``), else at the fitted term structure (``"modelled"``), and labels each
mark in ``MarketPath.mark_source``. Core tests on small hand-made files; the real files under
``../shared/data`` are checked by the ``shared_data`` tests (skipped when absent).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.errors import ValidationError
from models.instruments import ContractKind, FuturesContract
from models.io import default_data_dir, load_quarterly_closes, quarterly_delivery, quarterly_files
from scenarios.dated_basis import BasisModel, with_dated_marks
from scenarios.market_path import MarketPath
from scenarios.quarterly_basis import (
    MODELLED,
    REAL,
    REAL_FFILL,
    BasisTermStructure,
    fit_quarterly_term_structure,
    quarterly_basis_samples,
    with_quarterly_marks,
)

DELIVERY = pd.Timestamp("2025-01-10 08:00", tz="UTC")
Q = FuturesContract("BTC-250110", "BTC", kind=ContractKind.DATED,
                    expiry=datetime(2025, 1, 10, 8, tzinfo=UTC))
PERP = FuturesContract("BTC-PERP", "BTC")
#: bar open day -> close; 2025-01-07 is missing (a gap), 2025-01-10 is the delivery-day bar
CLOSES = {"2025-01-05": 120.0, "2025-01-06": 121.0, "2025-01-08": 130.0, "2025-01-09": 131.0,
          "2025-01-10": 140.0}
TERM = BasisTermStructure(a=0.0365)  # P = S (1 + 1e-4 x days to expiry)


def _write(path: Path, rows: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"timestamp": [f"{d}T00:00:00Z" for d in rows],
                          "open": list(rows.values()), "high": list(rows.values()),
                          "low": list(rows.values()), "close": list(rows.values())})
    frame.to_csv(path, index=False, compression="gzip")


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    _write(tmp_path / "quarterly_1d" / "BTCUSDT_250110.csv.gz", CLOSES)
    return tmp_path


def spot_at(k: int) -> float:
    return 100.0 + k


def path8h() -> MarketPath:
    idx = pd.date_range("2025-01-01", "2025-01-12", freq="8h", tz="UTC")
    return MarketPath(spot=pd.DataFrame({"BTC": [spot_at(k) for k in range(len(idx))]}, index=idx))


def test_loader_stamps_closes_when_known(data_dir: Path) -> None:
    assert quarterly_delivery("250110") == DELIVERY
    assert list(quarterly_files(data_dir, "BTCUSDT")) == [DELIVERY]
    assert quarterly_files(data_dir, "ETHUSDT") == {}
    s = load_quarterly_closes(data_dir, "BTCUSDT", DELIVERY)
    expected = [pd.Timestamp(t, tz="UTC") for t in
                ("2025-01-06", "2025-01-07", "2025-01-09", "2025-01-10", "2025-01-10 08:00")]
    assert list(s.index) == expected
    assert s.tolist() == list(CLOSES.values())
    assert load_quarterly_closes(data_dir, "BTCUSDT", DELIVERY + pd.Timedelta(days=91)).empty


def test_loader_refuses_rows_after_delivery(tmp_path: Path) -> None:
    _write(tmp_path / "quarterly_1d" / "BTCUSDT_250110.csv.gz", {**CLOSES, "2025-01-11": 141.0})
    with pytest.raises(ValidationError, match="after the delivery"):
        load_quarterly_closes(tmp_path, "BTCUSDT", DELIVERY)


def test_marks_real_ffill_and_modelled_by_hand(data_dir: Path) -> None:
    path = path8h()
    out, term = with_quarterly_marks(path, (PERP, Q), data_dir, term=TERM)
    assert term is TERM
    assert out.mark is not None and out.mark_source is not None
    assert list(out.mark_source.columns) == ["BTC-250110"]  # the perp is not dated: no label
    idx = path.spot.index
    mark, src = out.mark["BTC-250110"], out.mark_source["BTC-250110"]

    def k(t: str) -> int:
        loc = idx.get_loc(pd.Timestamp(t, tz="UTC"))
        assert isinstance(loc, int)  # a unique index: one position, not a slice or mask
        return loc

    def tau(t: str) -> float:
        return (DELIVERY - pd.Timestamp(t, tz="UTC")).total_seconds() / 86400.0

    # before the first close: modelled, S (1 + 1e-4 tau)
    t = "2025-01-05 16:00"
    assert src.iloc[k(t)] == MODELLED
    assert mark.iloc[k(t)] == pytest.approx(spot_at(k(t)) * (1 + 1e-4 * tau(t)), rel=1e-14)
    # a real close at its stamp
    assert src.iloc[k("2025-01-06")] == REAL and mark.iloc[k("2025-01-06")] == 120.0
    # 8 h and 16 h later: that close's basis on the step's spot
    for t in ("2025-01-06 08:00", "2025-01-06 16:00"):
        assert src.iloc[k(t)] == REAL_FFILL
        assert mark.iloc[k(t)] == pytest.approx(
            spot_at(k(t)) * 120.0 / spot_at(k("2025-01-06")), rel=1e-14)
    # the missing bar (open 2025-01-07): the 2025-01-07 close is exactly a day old at 2025-01-08
    # 00:00, so not carried: modelled until the next close
    assert src.iloc[k("2025-01-07")] == REAL and mark.iloc[k("2025-01-07")] == 121.0
    assert src.iloc[k("2025-01-07 16:00")] == REAL_FFILL
    assert src.iloc[k("2025-01-08")] == MODELLED
    assert src.iloc[k("2025-01-09")] == REAL and mark.iloc[k("2025-01-09")] == 130.0
    # the delivery-day close at 08:00, then spot (modelled, tau = 0) after expiry
    assert src.iloc[k("2025-01-10")] == REAL and mark.iloc[k("2025-01-10")] == 131.0
    assert src.iloc[k("2025-01-10 08:00")] == REAL and mark.iloc[k("2025-01-10 08:00")] == 140.0
    for t in ("2025-01-10 16:00", "2025-01-12"):
        assert src.iloc[k(t)] == MODELLED and mark.iloc[k(t)] == spot_at(k(t))
    assert set(src) == {REAL, REAL_FFILL, MODELLED}


def test_contract_without_a_file_is_modelled(data_dir: Path) -> None:
    other = FuturesContract("BTC-250411", "BTC", kind=ContractKind.DATED,
                            expiry=datetime(2025, 4, 11, 8, tzinfo=UTC))
    out, _ = with_quarterly_marks(path8h(), (other,), data_dir, term=TERM)
    assert out.mark is not None and out.mark_source is not None
    assert set(out.mark_source["BTC-250411"]) == {MODELLED}
    expected = BasisModel.constant({"BTC": TERM.a}).dated_price(other, path8h().spot["BTC"])
    np.testing.assert_allclose(out.mark["BTC-250411"], expected, rtol=1e-14)


def test_an_expiry_with_the_file_s_date_but_not_its_time_is_refused(data_dir: Path) -> None:
    """``expiry = 2025-01-10`` (a bare date: 00:00 UTC) for the contract whose file delivers at
    08:00: its real closes were left out and every mark modelled; now one message gives the time."""
    bare = FuturesContract("BTC-250110", "BTC", kind=ContractKind.DATED,
                           expiry=datetime(2025, 1, 10, tzinfo=UTC))
    with pytest.raises(ValidationError, match='give expiry = "2025-01-10T08:00:00Z"') as info:
        with_quarterly_marks(path8h(), (bare,), data_dir, term=TERM)
    assert info.value.field == "contracts.BTC-250110.expiry"


def test_term_structure_fit_recovers_a_line() -> None:
    days = np.array([3.0, 10.0, 30.0, 60.0, 90.0, 120.0])
    basis = 0.12 - 2e-4 * days
    basis[0] = 5.0  # under MIN_FIT_DAYS: left out
    fit = BasisTermStructure.fit(days, basis)
    assert fit.a == pytest.approx(0.12, abs=1e-12) and fit.slope == pytest.approx(-2e-4, abs=1e-14)
    assert fit.n == 5 and fit.rmse == pytest.approx(0.0, abs=1e-12)
    assert fit.median == pytest.approx(0.12 - 2e-4 * 60.0)
    flat = BasisTermStructure.fit(np.array([30.0, 30.0]), np.array([0.1, 0.2]))
    assert flat.slope == 0.0 and flat.a == pytest.approx(0.15)
    with pytest.raises(ValidationError, match="no observation"):
        BasisTermStructure.fit(np.array([1.0]), np.array([0.1]))
    assert float(fit.price(np.array([100.0]), np.array([-5.0]))[0]) == 100.0  # at or past expiry


def test_samples_pair_closes_with_same_time_spot(data_dir: Path) -> None:
    spot = {"2025-01-04": 100.0, "2025-01-05": 100.0, "2025-01-06": 110.0, "2025-01-07": 110.0,
            "2025-01-08": 125.0, "2025-01-09": 130.0, "2025-01-10": 140.0}
    _write(data_dir / "spot_1d" / "BTC.csv.gz", spot)
    obs = quarterly_basis_samples(data_dir, ["BTC", "ETH"])
    # closes of the bars opening 01-05, 01-06, 01-08, 01-09 (the delivery-day bar has no match)
    assert list(obs["time"]) == [pd.Timestamp(t, tz="UTC") for t in
                                 ("2025-01-06", "2025-01-07", "2025-01-09", "2025-01-10")]
    np.testing.assert_allclose(obs["basis"], [0.2, 121 / 110 - 1, 130 / 125 - 1, 131 / 130 - 1])
    np.testing.assert_allclose(obs["days"], [4 + 1 / 3, 3 + 1 / 3, 1 + 1 / 3, 1 / 3])
    np.testing.assert_allclose(obs["basis_annual"], obs["basis"] * 365 / obs["days"])


def test_off_by_default_paths_are_unchanged() -> None:
    """No mark_source unless asked; with_dated_marks (the basis-model marks) is as it was."""
    path = path8h()
    assert path.mark_source is None
    out = with_dated_marks(path, (Q,), BasisModel.constant({"BTC": 0.0365}))
    assert out.mark_source is None
    with pytest.raises(ValidationError, match="mark_source"):
        MarketPath(spot=path.spot, mark_source=pd.DataFrame(index=path.spot.index[:-1]))


# --- the real files -----------------------------------------------------------------------------

def _shared() -> Path:
    """The shared data folder (a ``shared_data`` test only: tests/conftest.py skips those when
    ../shared/data is absent, so a missing folder here is a failure)."""
    data = default_data_dir()
    assert data is not None and (data / "quarterly_1d").is_dir(), "../shared/data/quarterly_1d"
    return data


def _dated(u: str, code: str) -> FuturesContract:
    t = quarterly_delivery(code)
    return FuturesContract(f"{u}-{code}", u, kind=ContractKind.DATED, expiry=t.to_pydatetime())


@pytest.mark.shared_data
def test_real_files_fit_a_sane_term_structure() -> None:
    data = _shared()
    assert len(quarterly_files(data, "BTCUSDT")) == 8 and len(quarterly_files(data, "ETHUSDT")) == 8
    fit = fit_quarterly_term_structure(data, ["BTC", "ETH"])
    # README: the median basis per contract is +0.8% .. +4.3% over a quarter, i.e. ~5-17% a year
    assert 0.03 < fit.a < 0.25 and 0.03 < fit.median < 0.25
    assert abs(fit.slope) * 90 < 0.1 and fit.n > 2000 and math.isfinite(fit.rmse)


@pytest.mark.shared_data
def test_real_marks_on_an_8h_path() -> None:
    data = _shared()
    cons = (PERP, _dated("BTC", "230929"), _dated("BTC", "231229"))
    path = MarketPath.from_data(data, cons, start="2023-07-01", end="2023-10-05", step="8h")
    out, _ = with_quarterly_marks(path, cons, data)
    assert out.mark is not None and out.mark_source is not None
    for c in cons[1:]:
        assert c.expiry is not None  # dated contracts
        real = load_quarterly_closes(data, "BTCUSDT", pd.Timestamp(c.expiry))
        src = out.mark_source[c.symbol]
        at = src.index[src == REAL]
        np.testing.assert_array_equal(out.mark.loc[at, c.symbol], real.reindex(at))
        times = src.index
        assert isinstance(times, pd.DatetimeIndex)
        off_midnight = src.loc[times.hour != 0]
        assert (off_midnight == REAL).sum() == (1 if c.symbol == "BTC-230929" else 0)  # delivery
    src2 = out.mark_source["BTC-231229"]
    listed = pd.Timestamp("2023-08-19", tz="UTC")  # first close of the file (bar open 08-18)
    assert set(src2.loc[src2.index < listed]) == {MODELLED}
    assert set(src2.loc[src2.index >= listed]) <= {REAL, REAL_FFILL}
    assert out.mark_source.loc[pd.Timestamp("2023-09-29 08:00", tz="UTC"), "BTC-230929"] == REAL
    # the perp keeps its real mark
    assert path.mark is not None
    np.testing.assert_array_equal(out.mark["BTC-PERP"], path.mark["BTC-PERP"])
