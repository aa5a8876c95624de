"""The library scenario funding-spike-week ("funding +0.3% per 8 h on every perpetual for a week")
on a book with an 8 h, a 4 h and a 1 h perpetual: a week for every contract, and +0.3% per 8 h
whatever the interval. Expected values by hand:

  positions (``--with-solution``, costs and margin off): targets BTC/ETH/SOL 50/30/20 of the
  10,000 USD invested; spot 6,000 / 2,500 / 1,500 USD, so BTC-PERP -1,000, ETH-PERP +500 and
  SOL-PERP +500 USD
  rates per settlement: BTC-PERP 1e-4 (8 h), ETH-PERP -2e-4 (4 h), SOL-PERP 3e-4 (1 h)
  a week = 168 h = 21 / 42 / 168 settlements; +0.3% per 8 h = +0.3% / +0.15% / +0.0375% per
  settlement, 21 x 0.3% = 6.3% of notional over the week for each contract
  paid = -1000 x 21 x (1e-4 + 0.003) + 500 x 42 x (-2e-4 + 0.0015) + 500 x 168 x (3e-4 + 0.000375)
       = -65.1 + 27.3 + 56.7 = 18.9 USD  -> funding PnL -18.9 USD

The old library file (["funding=+0.3%", "horizon=21"]) gave 21 settlements of every contract
(3.5 days of the 4 h one, 21 hours of the 1 h one) at +0.3% each: +1.05 USD.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fbr.cli import app
from fbr.config import load_book_file
from models.errors import ValidationError
from scenarios.applied_shocks import resolve_shocks
from scenarios.library import hypothetical_scenarios
from scenarios.shocks import format_shock, parse_scenario, parse_shock

MIXED = """[book]
name = "mixed"
cash = 3000.0
targets_base = "invested"
[targets]
BTC = 0.50
ETH = 0.30
SOL = 0.20
[spot]
BTC = 0.1
ETH = 1.0
SOL = 10.0
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 10
[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"
funding_interval_h = 4
[[contracts]]
symbol = "SOL-PERP"
underlying = "SOL"
funding_interval_h = 1
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
SOL = 150.0
[market.funding]
BTC-PERP = 0.0001
ETH-PERP = -0.0002
SOL-PERP = 0.0003
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95
[costs]
trading = false
carry = true
impact = false
gamma_fund = 1e-9
horizon_days = 1
[constraints]
margin = false
"""


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.toml"
    path.write_text(MIXED)
    return path


def _spike_week_doc(book: Path) -> dict[str, Any]:
    res = CliRunner().invoke(app, ["whatif", str(book), "--scenario", "funding-spike-week",
                                   "--with-solution", "--no-resolve", "--json"])
    assert res.exit_code == 0, res.output
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def _spike_week(book: Path) -> dict[str, Any]:
    [scenario] = _spike_week_doc(book)["scenarios"]
    out: dict[str, Any] = scenario
    return out


def test_spike_week_lasts_a_week_for_every_interval(mixed: Path) -> None:
    s = _spike_week(mixed)
    assert s["settlements"] == {"BTC-PERP": 21.0, "ETH-PERP": 42.0, "SOL-PERP": 168.0}
    assert s["settlements_asked"] == s["settlements"]


def test_spike_week_funding_pnl_by_hand(mixed: Path) -> None:
    """-18.9 USD on the round positions; the solution's positions are rounded to 1e-8 contracts
    (BTC-PERP -1000.0002 USD), so the exact figure is the same sum on the notionals it reports."""
    doc = _spike_week_doc(mixed)
    [s] = doc["scenarios"]
    paid = (-1000 * 21 * (1e-4 + 0.003) + 500 * 42 * (-2e-4 + 0.0015)
            + 500 * 168 * (3e-4 + 0.000375))
    assert paid == pytest.approx(18.9, abs=1e-12)
    assert s["pnl"]["funding"] == pytest.approx(-18.9, abs=1e-3)
    x = {p["symbol"]: p["notional"] for p in doc["solution"]["target_positions"]}
    rate = {"BTC-PERP": 1e-4 + 0.003, "ETH-PERP": -2e-4 + 0.0015, "SOL-PERP": 3e-4 + 0.000375}
    n = {"BTC-PERP": 21, "ETH-PERP": 42, "SOL-PERP": 168}
    exact = sum(n[c] * rate[c] * x[c] for c in n)
    assert s["pnl"]["funding"] == pytest.approx(-exact, rel=1e-9)
    assert s["nav_after"] == pytest.approx(s["nav_before"] - exact, rel=1e-12)


def test_the_shock_per_8h_is_scaled_to_each_interval(mixed: Path) -> None:
    """df_j = 0.3% x h_j / 8: 0.3%, 0.15%, 0.0375% per settlement; x n_j = 6.3% for each."""
    book = load_book_file(mixed).book
    [sc] = [s for s in hypothetical_scenarios() if s.name == "funding-spike-week"]
    applied = resolve_shocks(sc, book)
    assert list(applied.funding_add) == pytest.approx([0.003, 0.0015, 0.000375], rel=1e-12)
    assert list(applied.settlements) == [21.0, 42.0, 168.0]
    assert list(applied.funding_add * applied.settlements) == pytest.approx([0.063] * 3, rel=1e-12)


def test_a_plain_funding_shock_stays_per_settlement(mixed: Path) -> None:
    """``funding=+0.3%`` (no unit) adds 0.3% at every settlement whatever the interval; a
    targeted shock per day (``/1d``) is 0.9% / 24 x 4 = 0.15% per 4 h settlement of ETH-PERP."""
    book = load_book_file(mixed).book
    plain = resolve_shocks(parse_scenario("x", ["funding=+0.3%", "horizon=7d"]), book)
    assert list(plain.funding_add) == pytest.approx([0.003] * 3, rel=1e-12)
    mixed_sc = parse_scenario("y", ["funding=+0.3%", "funding.ETH-PERP=+0.9%/1d"])
    applied = resolve_shocks(mixed_sc, book)
    assert list(applied.funding_add) == pytest.approx([0.003, 0.0015, 0.003], rel=1e-12)
    assert list(applied.settlements) == [1.0, 1.0, 1.0]  # no horizon: one settlement


def test_per_duration_grammar_and_round_trip() -> None:
    s = parse_shock("funding.ETH=+0.3%/8h")
    assert (s.target, s.per_hours) == ("ETH", 8.0) and s.value == pytest.approx(0.003)
    assert parse_shock("funding=5bp/1d").per_hours == 24.0
    assert parse_shock("funding=+0.1%").per_hours is None
    for text in ["funding=+0.3%/8h", "funding.ETH-PERP=-2bp/1d", "funding=+0.1%"]:
        s = parse_shock(text)
        again = parse_shock(format_shock(s))
        assert (again.target, again.per_hours) == (s.target, s.per_hours)
        assert again.value == pytest.approx(s.value, rel=1e-12)
    assert format_shock(parse_shock("funding=+0.3%/1w")) == "funding=+0.3%/168h"


@pytest.mark.parametrize(("text", "needle"), [
    ("funding=+0.3%/0h", "per '0h'"),
    ("funding=+0.3%/8", "per '8'"),
    ("funding=+0.3%/", "per ''"),
    ("funding=+100%/8h", r"funding change of '\+100%'"),
    ("BTC=-30%/8h", "has the value"),
])
def test_bad_per_duration_is_one_clear_error(text: str, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        parse_shock(text)


def test_library_file_reads_as_documented() -> None:
    [sc] = [s for s in hypothetical_scenarios() if s.name == "funding-spike-week"]
    funding = next(s for s in sc.shocks if s.key == "funding")
    horizon = next(s for s in sc.shocks if s.key == "horizon")
    assert funding.value == pytest.approx(0.003) and funding.per_hours == 8.0
    assert horizon.hours == 168.0 and math.isnan(horizon.value)
    assert "per 8 h" in sc.description and "week" in sc.description
