"""The reserve as a number to size (optimizer.reserve): a two-asset case by hand, the surplus at the
sized reserve re-checked through models.margin with the wallet replaced, the each-and-all preset,
and nothing new in the Solution with the settings off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from fbr.config import load_book_file
from models.book import Book
from models.errors import ValidationError
from models.instruments import FuturesContract, MarginTiers, SpotAsset
from models.margin import MarginModel
from models.market import MarketSnapshot
from optimizer.rebalance import Rebalancer
from optimizer.reserve import each_and_all, size_reserve, with_stress_preset
from optimizer.settings import StressScenario

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"
T0 = pd.Timestamp("2025-01-01T00:00:00Z")


def _two_assets() -> tuple[Book, MarketSnapshot, np.ndarray]:
    """BTC 2 @ 50,000 (not pledged), ETH 5 @ 2,000 pledged at 0.9, 10,000 USD cash; one flat
    bracket (mmr 1%) per perpetual; target overlay long 60,000 BTC, short 80,000 ETH."""
    tiers = MarginTiers.flat(max_leverage=20.0, mmr=0.01)
    contracts = (FuturesContract("BTCUSDT", "BTC", tiers=tiers),
                 FuturesContract("ETHUSDT", "ETH", tiers=tiers))
    book = Book(assets=(SpotAsset("BTC"), SpotAsset("ETH")), contracts=contracts,
                spot={"BTC": 2.0, "ETH": 5.0}, targets={"BTC": 0.5, "ETH": 0.5}, cash=10_000.0,
                pledged={"ETH": 0.9})
    market = MarketSnapshot(time=T0, spot={"BTC": 50_000.0, "ETH": 2_000.0},
                            mark={"BTCUSDT": 50_000.0, "ETHUSDT": 2_000.0},
                            funding={"BTCUSDT": 0.0, "ETHUSDT": 0.0})
    return book, market, np.array([60_000.0, -80_000.0])


# surplus at today's wallet (10,000) by hand: collateral(r) + g'x - sum 1% |x_j| (1 + g_j)
#   BTC -40%: 10,000 + 0.9 x 10,000 - 24,000 - (360 + 800)  = -6,160  -> R = 16,160
#   BTC +40%: 19,000 + 24,000 - (840 + 800)                 = 41,360  -> R = -31,360
#   ETH -40%: 10,000 + 0.9 x 6,000 + 32,000 - (600 + 480)   = 46,320  -> R = -36,320
#   ETH +40%: 10,000 + 0.9 x 14,000 - 32,000 - (600 + 1,120) = -11,120 -> R = 21,120 (binding)
#   all -40%: 15,400 + 8,000 - (360 + 480)                  = 22,560  -> R = -12,560
#   all +40%: 22,600 - 8,000 - (840 + 1,120)                = 12,640  -> R = -2,640
HAND = {"BTC -40%": -6_160.0, "BTC +40%": 41_360.0, "ETH -40%": 46_320.0, "ETH +40%": -11_120.0,
        "all -40%": 22_560.0, "all +40%": 12_640.0}


# initial margin at the contracts' leverage 10: (60,000 + 80,000) / 10 = 14,000; collateral
#   10,000 + 0.9 x 10,000 = 19,000: surplus 19,000 - 14,000 = 5,000 -> R = 5,000
HAND["initial margin"] = 5_000.0


def test_two_assets_by_hand() -> None:
    book, market, x = _two_assets()
    res = size_reserve(book, market, x, each_and_all(book.asset_symbols, 0.4), reserve_yield=0.04)
    assert {s.name: round(s.surplus_now, 2) for s in res.scenarios} == HAND
    assert {s.name: round(s.reserve_usd, 2) for s in res.scenarios} == {
        k: round(10_000.0 - v, 2) for k, v in HAND.items()}
    assert round(res.reserve_usd, 2) == 21_120.00
    assert res.binding == "ETH +40%"
    assert round(res.reserve_cost_usd_per_year, 2) == 844.80
    assert res.wallet_now == 10_000.0 and round(res.excess_usd, 2) == -11_120.00


def test_surplus_at_the_reserve_through_models_margin() -> None:
    """Independent arithmetic: the book with its wallet set to R, re-priced scenario by scenario
    with MarginModel.stress_surplus: 0 for the binding scenario, >= 0 for the others."""
    book, market, x = _two_assets()
    scen = each_and_all(book.asset_symbols, 0.4)
    res = size_reserve(book, market, x, scen)
    at_r = replace(book, cash=res.reserve_usd)  # no open futures: wallet = cash
    val = at_r.valuation(market)
    assert val.wallet == pytest.approx(res.reserve_usd)
    mm = MarginModel.from_contracts(book.contracts)
    B = book.exposure_matrix()
    for sc in scen:
        r = np.array([sc.returns.get(a, sc.common) for a in book.asset_symbols])
        s = mm.stress_surplus(x, at_r.stressed_collateral(val, r), r @ B)
        if sc.name == res.binding:
            assert abs(s) < 1e-6
        else:
            assert s >= -1e-9, sc.name
    assert val.collateral >= float(mm.initial(x).sum())  # the positions can be opened


def test_the_initial_margin_sets_the_reserve_at_low_leverage() -> None:
    """At leverage 2 with 5% moves the initial margin binds, not the stress rows (the reserve
    was 0 while the collateral could not open the positions). By hand: IM = 140,000 / 2 =
    70,000, pledged 0.9 x 10,000 = 9,000, so R = 61,000; every 5% scenario needs no reserve."""
    book, market, x = _two_assets()
    lev2 = tuple(replace(c, leverage=2.0) for c in book.contracts)
    book = replace(book, contracts=lev2)
    res = size_reserve(book, market, x, each_and_all(book.asset_symbols, 0.05))
    assert res.binding == "initial margin"
    assert round(res.reserve_usd, 2) == 61_000.00
    stress = [s for s in res.scenarios if s.name != "initial margin"]
    assert max(s.reserve_usd for s in stress) < 0.0


def test_no_reserve_needed_is_zero() -> None:
    book, market, _ = _two_assets()
    res = size_reserve(book, market, np.zeros(2), each_and_all(book.asset_symbols, 0.4))
    assert res.reserve_usd == 0.0 and res.binding is None and res.reserve_cost_usd_per_year == 0.0
    empty = size_reserve(book, market, np.zeros(2), ())
    assert empty.reserve_usd == 0.0 and [s.name for s in empty.scenarios] == ["initial margin"]


@pytest.mark.parametrize("assets", [("BTC",), ("BTC", "ETH"), ("BTC", "ETH", "SOL", "AVAX")])
def test_preset_builds_2n_plus_2(assets: tuple[str, ...]) -> None:
    scen = each_and_all(assets, 0.3)
    assert len(scen) == 2 * len(assets) + 2
    assert len({s.name for s in scen}) == len(scen)
    for k, a in enumerate(assets):
        down, up = scen[2 * k], scen[2 * k + 1]
        assert down == StressScenario(f"{a} -30%", {a: -0.3}, 0.0)
        assert up == StressScenario(f"{a} +30%", {a: 0.3}, 0.0)
    assert scen[-2] == StressScenario("all -30%", {}, -0.3)
    assert scen[-1] == StressScenario("all +30%", {}, 0.3)
    with pytest.raises(ValidationError):
        each_and_all(assets, 1.0)


def test_settings_off_solution_has_no_new_keys() -> None:
    loaded = load_book_file(SEED)
    off = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
    assert off.reserve is None and "reserve" not in off.to_dict()
    # the preset alone adds stress rows but no reserve keys
    cs = replace(loaded.settings.constraints, stress_preset="each_and_all")
    preset = Rebalancer().solve(loaded.book, loaded.market, loaded.risk,
                                replace(loaded.settings, constraints=cs))
    assert set(preset.to_dict()) == set(off.to_dict())
    assert len(preset.margin.stress) == 2 * len(loaded.book.asset_symbols) + 2
    assert preset.trade_vector() == pytest.approx(off.trade_vector())  # margin off: rows never bind


def test_solve_reports_the_reserve_of_its_positions() -> None:
    loaded = load_book_file(SEED)
    cs = replace(loaded.settings.constraints, stress_preset="each_and_all", size_reserve=True)
    settings = replace(loaded.settings, constraints=cs,
                       costs=replace(loaded.settings.costs, reserve_yield=0.05))
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, settings)
    assert sol.reserve is not None
    x = np.array([p.notional for p in sol.target_positions])
    scen = with_stress_preset(settings, loaded.book).constraints.stress
    paid = sol.costs.trading  # the trade's fees, spread and impact, paid from the wallet
    assert paid > 0
    again = size_reserve(loaded.book, loaded.market, x, scen, 0.05, trade_cost_usd=paid)
    assert sol.reserve.reserve_usd == pytest.approx(again.reserve_usd)
    assert sol.reserve.reserve_cost_usd_per_year == pytest.approx(0.05 * again.reserve_usd)
    # the solution's own stress surplus (before the trade's costs, the design's row) agrees:
    # R_s = wallet - (surplus_s - paid)
    by_name = {s.name: s.reserve_usd for s in sol.reserve.scenarios}
    for st in sol.margin.stress:
        assert by_name[st.name] == pytest.approx(sol.reserve.wallet_now - st.surplus + paid,
                                                 abs=1e-6)
    d = sol.to_dict()["reserve"]
    assert set(d) >= {"reserve_usd", "reserve_cost_usd_per_year", "binding_scenario"}


def test_cli_json_and_table(tmp_path: Path) -> None:
    data = tomllib.loads(SEED.read_text())
    data["constraints"] = {**data["constraints"], "size_reserve": True,
                           "stress_preset": "each_and_all", "stress_preset_move": "40%"}
    data["costs"] = {**data["costs"], "reserve_yield": "4%"}
    f = tmp_path / "reserve.toml"
    f.write_text(tomli_w.dumps(data))
    run = [sys.executable, "-m", "fbr.cli", "solve", str(f)]
    proc = subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)["reserve"]
    assert res["reserve_cost_usd_per_year"] == pytest.approx(0.04 * res["reserve_usd"])
    assert len(res["scenarios"]) == 1 + 2 * 3 + 2  # the initial-margin row and the preset
    table = subprocess.run(run, capture_output=True, text=True, timeout=120, cwd=ROOT,
                           env={**os.environ, "COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "reserve opportunity cost" in table.stdout


def test_size_reserve_needs_scenarios(tmp_path: Path) -> None:
    data = tomllib.loads(SEED.read_text())
    data["constraints"] = {**data["constraints"], "size_reserve": True}
    f = tmp_path / "noscen.toml"
    f.write_text(tomli_w.dumps(data))
    with pytest.raises(ValidationError, match="size_reserve"):
        load_book_file(f)


def _spot_leg_book(tmp_path: Path) -> Path:
    """Seed example 1's book with BTC pledged at a 50% haircut, 30,000 USD of stablecoin, a held
    SOL-PERP long, targets 20/40/40 and the futures trades capped at 100 USD: the spot leg sells
    pledged BTC to buy ETH."""
    data = tomllib.loads(SEED.read_text())
    data["book"] = {**data["book"], "cash": 30_000.0}
    data["targets"] = {"BTC": 0.2, "ETH": 0.4, "SOL": 0.4}
    data["spot"] = {"BTC": 1.0, "ETH": 1.0, "SOL": 10.0}
    data["pledged"] = {"BTC": {"bid_buffer": 0.5}}
    data["futures"] = [{"symbol": "SOL-PERP", "contracts": 300.0, "entry_price": 150.0}]
    data["costs"] = {**data["costs"], "trading": True}
    data["solver"] = {"spot_leg": True}
    data["constraints"] = {"margin": True, "stress_preset": "each_and_all", "size_reserve": True,
                           "trade_limit_usd": 100}
    f = tmp_path / "spot_leg_reserve.toml"
    f.write_text(tomli_w.dumps(data))
    return f


def test_reserve_is_sized_on_the_holdings_the_spot_trades_leave(tmp_path: Path) -> None:
    """Independent arithmetic: the holdings after the reported spot trades (units from the trades
    table; cash less their notional, fees and half spread at the book's rates), the wallet set to
    the reported reserve, each scenario re-priced with MarginModel.stress_surplus: 0 for the
    binding scenario, >= 0 for the others. Sized on the holdings before the trades (the old
    answer) the reserve is far smaller and leaves the binding scenario liquidated."""
    loaded = load_book_file(_spot_leg_book(tmp_path))
    book, market = loaded.book, loaded.market
    sol = Rebalancer().solve(book, market, loaded.risk, loaded.settings)
    assert sol.reserve is not None and sol.reserve.binding is not None
    sold = {t.asset: t.units for t in sol.spot_trades}
    assert sold["BTC"] < -0.1  # pledged BTC is sold
    spot = {a: book.spot[a] + sold.get(a, 0.0) for a in book.asset_symbols}
    gross = {t.asset: t.bought + t.sold for t in sol.spot_trades}
    rate = {a.symbol: a.fee + market.asset_half_spread(a.symbol)
            for a in book.assets}
    cash_after = (book.cash - sum(t.notional for t in sol.spot_trades)
                  - sum(rate[a] * g for a, g in gross.items()))
    after = book.evolve(spot=spot, cash=cash_after)
    x = np.array([p.notional for p in sol.target_positions])
    # the wallet at the reserve, once the futures trade's fees and spread are paid:
    # cash + uPnL = R - paid
    upnl = after.valuation(market).wallet - after.cash
    at_r = after.evolve(cash=sol.reserve.reserve_usd - upnl - sol.costs.trading)
    val = at_r.valuation(market)
    mm = MarginModel.from_contracts(book.contracts)
    B = book.exposure_matrix()
    scen = with_stress_preset(loaded.settings, book).constraints.stress
    for sc in scen:
        r = np.array([sc.returns.get(a, sc.common) for a in book.asset_symbols])
        s = mm.stress_surplus(x, at_r.stressed_collateral(val, r), r @ B)
        if sc.name == sol.reserve.binding:
            assert abs(s) < 1e-6
        else:
            assert s >= -1e-9, sc.name
    before = size_reserve(book, market, x, scen)
    assert before.reserve_usd < sol.reserve.reserve_usd - 1_000.0
