"""Funding shocks in the what-if: a shock reaches the rate the re-solve's carry reads (the funding
forecast, when the market has one, as with ``funding_forecast = "ewma"``), and a funding shock
aimed at a dated contract (which pays no funding) is refused with a pointer to a basis shock
instead of silently changing nothing. Expected values by hand in the docstrings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fbr.cli import app
from fbr.config import LoadedBook, load_book_file
from models.errors import ValidationError
from scenarios.applied_shocks import resolve_shocks, shock_market
from scenarios.shocks import parse_scenario
from scenarios.whatif import run_whatif

# 100,000 USD of BTC spot (1 BTC at 100,000) and 50,000 cash, targets BTC/ETH 50/50, one linear
# perp per asset (8 h funding), carry on over one day (3 settlements), trading costs and margin off.
CARRY_BOOK = """[book]
name = "carry"
cash = 50000.0
[targets]
BTC = 0.5
ETH = 0.5
[spot]
BTC = 1.0
[[assets]]
symbol = "BTC"
[[assets]]
symbol = "ETH"
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 10.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 100000.0
ETH = 3000.0
[market.funding]
BTC-PERP = 0.0003
ETH-PERP = 0.0003
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
[costs]
trading = false
carry = true
horizon_days = 1
[constraints]
margin = false
"""

# Short 0.5 BTC-Q and long 10 ETH-Q, both dated (no funding), cash 20,000.
DATED_BOOK = """[book]
name = "dated"
cash = 20000.0
[targets]
BTC = 0.5
ETH = 0.5
[spot]
BTC = 1.0
[[contracts]]
symbol = "BTC-Q"
underlying = "BTC"
kind = "dated"
expiry = 2024-06-28T08:00:00Z
lot_step = 1e-8
min_notional = 0
[[contracts]]
symbol = "ETH-Q"
underlying = "ETH"
kind = "dated"
expiry = 2024-06-28T08:00:00Z
lot_step = 1e-8
min_notional = 0
[[futures]]
symbol = "BTC-Q"
contracts = -0.5
entry_price = 60600.0
[[futures]]
symbol = "ETH-Q"
contracts = 10
entry_price = 3030.0
[market]
time = 2024-06-01T00:00:00Z
[market.spot]
BTC = 60000.0
ETH = 3000.0
[market.mark]
BTC-Q = 60600.0
ETH-Q = 3030.0
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
[costs]
trading = false
carry = true
[constraints]
margin = false
"""


def _load(tmp_path: Path, text: str) -> LoadedBook:
    f = tmp_path / "book.toml"
    f.write_text(text)
    return load_book_file(f)


def test_funding_shock_moves_the_forecast_the_carry_reads(tmp_path: Path) -> None:
    """Current rates 0.03% per 8 h, forecasts 0.01% (BTC) and 0.02% (ETH); funding.ETH=+0.1%:
    ETH-PERP's rate 0.0003 + 0.001 = 0.0013 and its forecast 0.0002 + 0.001 = 0.0012, so the
    carry reads 0.0012; BTC-PERP keeps rate 0.0003 and forecast 0.0001."""
    loaded = _load(tmp_path, CARRY_BOOK)
    book = loaded.book
    market = dataclasses.replace(loaded.market,
                                 funding_forecast={"BTC-PERP": 0.0001, "ETH-PERP": 0.0002})
    shocked = shock_market(book, market, resolve_shocks(parse_scenario("f", ["funding.ETH=+0.1%"]),
                                                        book))
    assert shocked.funding_rate("ETH-PERP") == pytest.approx(0.0013, abs=1e-15)
    assert shocked.carry_rate("ETH-PERP") == pytest.approx(0.0012, abs=1e-15)
    assert shocked.funding_rate("BTC-PERP") == pytest.approx(0.0003, abs=1e-15)
    assert shocked.carry_rate("BTC-PERP") == pytest.approx(0.0001, abs=1e-15)


def test_funding_shock_moves_the_next_move_under_a_forecast(tmp_path: Path) -> None:
    """With only TE^2 + carry in the objective (no trading cost, no margin rows), the futures
    overlay solves min d' Sigma d + c' d (d in units of V = 100,000 USD invested), so
    d = -1/2 Sigma^-1 c and a change dc of the carry moves the targets by -1/2 Sigma^-1 dc x V.
    A funding shock of +0.1% per settlement on ETH over 3 settlements: dc = (0, 0.003).
    Sigma = [[0.3025, 0.2695], [0.2695, 0.49]] (vols 55% / 70%, correlation 0.7), det =
    0.3025 x 0.49 - 0.2695^2 = 0.07559475; Sigma^-1 dc = (-0.2695, 0.3025) x 0.003 / det
    = (-0.0106952, 0.0120048); dz = -1/2 x that x 100,000 = (+534.76, -600.24) USD.
    The market carries forecasts (as with funding_forecast = "ewma"), which the carry prefers:
    before the fix the shock never reached them and dz was 0."""
    loaded = _load(tmp_path, CARRY_BOOK)
    market = dataclasses.replace(loaded.market,
                                 funding_forecast={"BTC-PERP": 0.0001, "ETH-PERP": 0.0001})

    def trades(shock: str) -> dict[str, float]:
        r = run_whatif(loaded.book, market, loaded.risk, parse_scenario("f", [shock]),
                       loaded.settings, distances=False)
        assert r.next_solution is not None, r.next_error
        return {t.symbol: t.notional for t in r.next_solution.trades}

    base, shocked = trades("funding.ETH=0%"), trades("funding.ETH=+0.1%")
    det = 0.3025 * 0.49 - 0.2695**2
    dz = (-0.5 * -0.2695 * 0.003 / det * 100_000.0, -0.5 * 0.3025 * 0.003 / det * 100_000.0)
    assert dz == pytest.approx((534.76, -600.24), abs=0.01)
    assert shocked["BTC-PERP"] - base["BTC-PERP"] == pytest.approx(dz[0], abs=1.0)
    assert shocked["ETH-PERP"] - base["ETH-PERP"] == pytest.approx(dz[1], abs=1.0)


@pytest.mark.parametrize("shock", ["funding.ETH-Q=+1%", "funding.ETH=+1%"])
def test_funding_shock_on_a_dated_contract_is_refused(tmp_path: Path, shock: str) -> None:
    """ETH-Q is dated: it pays no funding (0 settlements), so a funding shock on it (or on an
    asset whose only contract is dated) would change nothing (PnL 0); it is refused, naming the
    shock and a basis shock as the fix."""
    loaded = _load(tmp_path, DATED_BOOK)
    with pytest.raises(ValidationError) as info:
        run_whatif(loaded.book, loaded.market, loaded.risk,
                   parse_scenario("x", [shock, "horizon=21"]), resolve=False, distances=False)
    err = info.value
    assert shock in err.field and "ETH-Q" in err.problem and "dated" in err.problem
    assert "basis.ETH-Q=" in err.fix


def test_dated_funding_shock_exits_2_on_the_command_line(tmp_path: Path) -> None:
    """`fbr whatif --shock funding.ETH-Q=+1%`: exit code 2 (bad input), one message naming the
    shock, ETH-Q and the basis shock to use instead."""
    f = tmp_path / "book.toml"
    f.write_text(DATED_BOOK)
    res = CliRunner().invoke(app, ["whatif", str(f), "--shock", "funding.ETH-Q=+1%", "--no-resolve",
                                   "--json"])
    assert res.exit_code == 2
    err = json.loads(res.stdout.splitlines()[0])["error"]
    assert "funding.ETH-Q=+1%" in err and "basis.ETH-Q=" in err and "Fix:" in err


def test_global_funding_shock_on_a_dated_book_still_runs(tmp_path: Path) -> None:
    """funding=+1% is aimed at every perpetual: on a dated-only book it pays nothing (0
    settlements, funding PnL 0) and is not refused (a library scenario applies to any book)."""
    loaded = _load(tmp_path, DATED_BOOK)
    r = run_whatif(loaded.book, loaded.market, loaded.risk,
                   parse_scenario("x", ["funding=+1%"]), resolve=False, distances=False)
    assert r.pnl.funding == 0.0 and r.settlements == {}
