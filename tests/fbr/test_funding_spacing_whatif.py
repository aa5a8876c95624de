"""`fbr whatif` on a `[market] source = "data"` book counts the settlements `fbr solve` counts: the
market's measured spacing (MarketSnapshot.funding_interval_h, fbr/config_market.py) where it
differs from the contract's `funding_interval_h`, not the book's interval, so the two commands
agree on one state (scenarios.applied_shocks.settlement_hours).

A small data folder in tmp_path: BTC settles every 8 h, SOL every 4 h, while the book states
8 h for both (the default). The book holds short 0.05 BTC-PERP and long 10 SOL-PERP; no mark
files, so marks are spot (60,000 and 100 USD). Expected values by hand with pandas / numpy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_fbr

from fbr.whatif_cli import load_whatif_book
from optimizer.carry import _carry_per_horizon
from scenarios.shocks import parse_scenario
from scenarios.whatif import run_whatif

SPOT = {"BTC": 60_000.0, "SOL": 100.0}
#: signed contracts held (1 contract = 1 unit of the underlying)
HELD = {"BTC-PERP": -0.05, "SOL-PERP": 10.0}
AT = pd.Timestamp("2024-03-02T00:00Z")


def _write_data(root: Path) -> Path:
    """spot_1d of BTC and SOL (flat); funding of BTC every 8 h and SOL every 4 h, distinct rates
    per settlement; no mark files."""
    days = pd.date_range("2024-01-01", "2024-03-30", freq="1D", tz="UTC")
    (root / "spot_1d").mkdir(parents=True)
    (root / "funding").mkdir()
    for sym, px in SPOT.items():
        pd.DataFrame({"timestamp": days, "open": px, "high": px, "low": px, "close": px,
                      "volume": 1.0, "quote_volume": px}).to_csv(root / "spot_1d" / f"{sym}.csv.gz",
                                                                  index=False)
    for sym, freq, base in (("BTC", "8h", 1e-4), ("SOL", "4h", 3e-4)):
        times = pd.date_range("2024-01-01", "2024-03-10", freq=freq, tz="UTC", inclusive="left")
        rates = base + 1e-6 * (np.arange(len(times)) % 7)
        pd.DataFrame({"timestamp": times, "funding_rate": rates}).to_csv(
            root / "funding" / f"{sym}.csv.gz", index=False)
    return root


def _write_book(path: Path, data_dir: Path) -> Path:
    """A BTC/SOL book on the data folder holding :data:`HELD`; carry on, trading and margin off."""
    futures = "".join(f'[[futures]]\nsymbol = "{s}"\ncontracts = {q}\nentry_price = '
                      f'{SPOT[s.split("-")[0]]}\n' for s, q in HELD.items())
    path.write_text(f"""[book]
name = "spacing whatif"
cash = 5000.0
[targets]
BTC = 0.5
SOL = 0.5
[spot]
BTC = 0.2
SOL = 20.0
{futures}[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
[market]
source = "data"
data_dir = "{data_dir.as_posix()}"
time = {AT.strftime("%Y-%m-%dT%H:%M:%SZ")}
[risk]
correlation = 0.7
basis_risk = false
[risk.vols]
BTC = 0.6
SOL = 0.9
[costs]
trading = false
carry = true
[constraints]
margin = false
""", encoding="utf-8")
    return path


def _last_rate(root: Path, asset: str) -> float:
    """The last settlement at or before :data:`AT` in the funding file (pandas alone)."""
    raw = pd.read_csv(root / "funding" / f"{asset}.csv.gz")
    s = pd.Series(raw["funding_rate"].to_numpy(), index=pd.to_datetime(raw["timestamp"], utc=True))
    return float(s.loc[s.index <= AT].iloc[-1])


def _hand_funding_a_day(data: Path) -> float:
    """USD received in a day: - sum_j n_j r_j x_j with n = 3 (BTC, 8 h) and 6 (SOL, 4 h)."""
    x = {s: q * SPOT[s.split("-")[0]] for s, q in HELD.items()}
    return -(3 * _last_rate(data, "BTC") * x["BTC-PERP"] + 6 * _last_rate(data, "SOL") * x["SOL-PERP"])


@pytest.fixture
def book(tmp_path: Path) -> tuple[Path, Path]:
    data = _write_data(tmp_path / "data")
    return _write_book(tmp_path / "book.toml", data), data


def test_whatif_s_day_of_funding_is_six_sol_settlements_as_solve_s_carry(
        book: tuple[Path, Path]) -> None:
    """horizon=1d: SOL-PERP pays 6 settlements (the data's 4 h), BTC-PERP 3; the funding equals
    the hand figure and minus the carry the optimiser assumes for the same positions over one day
    (carry' x); the book's 8 h would give 3 SOL settlements."""
    path, data = book
    loaded, _ = load_whatif_book(path)
    assert dict(loaded.market.funding_interval_h) == {"SOL-PERP": 4.0}
    assert all(c.funding_interval_h == 8.0 for c in loaded.book.contracts)
    r = run_whatif(loaded.book, loaded.market, loaded.risk, parse_scenario("day", ["horizon=1d"]),
                   loaded.settings, resolve=False, distances=False)
    assert r.settlements == {"BTC-PERP": 3.0, "SOL-PERP": 6.0}
    hand = _hand_funding_a_day(data)
    assert r.pnl.funding == pytest.approx(hand, rel=1e-12)
    x = loaded.book.futures_notional(loaded.market)
    solve_day = -float(_carry_per_horizon(loaded.book, loaded.market, 1.0) @ x)
    assert r.pnl.funding == pytest.approx(solve_day, rel=1e-12)


def test_a_funding_shock_per_8h_is_half_of_it_per_4h_settlement(book: tuple[Path, Path]) -> None:
    """funding.SOL=+0.08%/8h on the data's 4 h settlements: +0.04% per settlement, six a day:
    SOL-PERP pays 6 x (r + 4e-4) x 1,000 USD (the book's 8 h: 3 x (r + 8e-4) x 1,000)."""
    path, data = book
    loaded, _ = load_whatif_book(path)
    sc = parse_scenario("spike", ["funding.SOL=+0.08%/8h", "horizon=1d"])
    r = run_whatif(loaded.book, loaded.market, loaded.risk, sc, loaded.settings, resolve=False,
                   distances=False)
    x_btc, x_sol = HELD["BTC-PERP"] * SPOT["BTC"], HELD["SOL-PERP"] * SPOT["SOL"]
    hand = -(3 * _last_rate(data, "BTC") * x_btc + 6 * (_last_rate(data, "SOL") + 4e-4) * x_sol)
    assert r.pnl.funding == pytest.approx(hand, rel=1e-12)


def test_whatif_json_reports_the_measured_settlements(book: tuple[Path, Path]) -> None:
    """The real entry point: ``fbr whatif BOOK --shock horizon=1d --json``."""
    path, data = book
    res = run_fbr("whatif", str(path), "--shock", "horizon=1d", "--no-resolve", "--json")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    (sc,) = doc["scenarios"]
    assert sc["settlements"] == {"BTC-PERP": 3.0, "SOL-PERP": 6.0}
    assert sc["pnl"]["funding"] == pytest.approx(_hand_funding_a_day(data), rel=1e-12)
