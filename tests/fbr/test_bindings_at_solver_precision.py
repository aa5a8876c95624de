"""Rows whose dual is at solver precision are not reported as binding (``Binding.holds_back``).

An interior-point solver (Clarabel here: the vol cap makes the book conic) leaves a small positive
dual on every inequality row, also on rows far inside their bounds. Seed example 1 with every part
on, a stress preset, a crash scenario, a gross leverage cap, a vol cap and a funding budget, all
loose: the stress surpluses are thousands of USD (re-checked from the solution's own margin
figures), the leverage far under its cap. None of these rows may appear in the table's
"binding constraints" panel or in the what-if's next move; ``--json`` keeps them with
``holds_back`` false. A cluster band that binds (ten_assets.toml) stays reported, ``holds_back``
true, with its explanation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from fbr.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LOOSE = ("stress[crash]", "stress[all -40%]", "stress[BTC -40%]", "stress[SOL +40%]",
         "gross_leverage", "vol_cap", "funding_budget")
runner = CliRunner()

#: Every part on (spot leg with tax lots, pledged spot, a dated future, impact, reserve cost,
#: stress preset), every limit loose.
LOOSE_BOOK = """[book]
name = "kitchen sink"
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

[[assets]]
symbol = "BTC"
fee = 0.001
lot_step = 0.00001
[[assets]]
symbol = "ETH"
[[assets]]
symbol = "SOL"

[contract_defaults]
lot_step = 0.001
min_notional = 5.0
leverage = 10.0
tiers = [
  { max_notional = 50000, max_leverage = 125, mmr = 0.004, cum = 0 },
  { max_notional = 250000, max_leverage = 100, mmr = 0.005, cum = 50 },
  { max_notional = inf, max_leverage = 50, mmr = 0.01, cum = 1300 },
]

[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
[[contracts]]
symbol = "BTC-0627"
underlying = "BTC"
kind = "dated"
expiry = 2024-06-28T08:00:00Z
[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"
[[contracts]]
symbol = "SOL-PERP"
underlying = "SOL"

[[futures]]
symbol = "BTC-PERP"
contracts = -0.005
entry_price = 59000.0

[pledged]
BTC = { bid_buffer = 0.05, quantity = 0.05 }
ETH = 0.9

[market]
time = 2024-06-01T00:00:00Z

[market.spot]
BTC = 60000.0
ETH = 2500.0
SOL = 150.0

[market.mark]
BTC-PERP = 60010.0
BTC-0627 = 60500.0
ETH-PERP = 2501.0
SOL-PERP = 150.1

[market.funding]
BTC-PERP = 0.0001
ETH-PERP = 0.0002
SOL-PERP = -0.0001

[market.adv]
BTC-PERP = 1e9
BTC-0627 = 1e7
ETH-PERP = 5e8
SOL-PERP = 2e8

[risk]
correlation = 0.7

[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95

[costs]
trading = true
impact = true
carry = true
gamma_trade = 2.0
horizon_days = 3.0
reserve_cost = true
cost_to_go = 5.0
cost_to_go_power = 0.4

[constraints]
margin = true
margin_buffer_usd = 100.0
margin_buffer_fraction = "10%"
max_gross_leverage = 1.5
default_cap_usd = 50000.0
vol_cap = 0.9
funding_budget_usd = 50.0
trade_limit_usd = 20000.0
stress_preset = "each_and_all"
min_days_to_expiry = 2
expiry_row = true

[[constraints.stress]]
name = "crash"
common = "-30%"

[[constraints.clusters]]
name = "majors"
assets = ["BTC", "ETH"]
band = 0.02

[solver]
spot_leg = true
horizon = 1

[tax]
short_term = "30%"
long_term = "15%"
long_term_days = 365
futures = "25%"
lot_method = "hifo"
harvest_losses = true

[[lots]]
asset = "BTC"
quantity = 0.04
cost_basis = 20000.0
acquired = 2022-01-05
[[lots]]
asset = "BTC"
quantity = 0.06
cost_basis = 58000.0
acquired = 2024-03-01
[[lots]]
asset = "ETH"
quantity = 1.0
cost_basis = 3000.0
acquired = 2023-08-01
[[lots]]
asset = "SOL"
quantity = 10.0
cost_basis = 20.0
acquired = 2023-01-01
"""


def _loose_book(tmp_path: Path) -> Path:
    path = tmp_path / "loose.toml"
    path.write_text(LOOSE_BOOK, encoding="utf-8")
    return path


def _solve_json(path: Path) -> dict[str, Any]:
    res = runner.invoke(app, ["solve", str(path), "--json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_loose_rows_are_flagged_and_left_out_of_the_table(tmp_path: Path) -> None:
    path = _loose_book(tmp_path)
    doc = _solve_json(path)
    assert doc["solver"] == "CLARABEL"
    # the rows are loose by the solution's own figures: thousands of USD of stress surplus,
    # gross exposure under 1.5x
    assert min(s["surplus"] for s in doc["margin"]["stress"]) > 1_000.0
    assert doc["leverage"]["gross"] < 1.2
    flagged = {b["name"]: b for b in doc["binding_constraints"]}
    # the solver leaves duals above the report's floor on some of them (not vacuous) ...
    assert len(set(LOOSE) & set(flagged)) >= 3, flagged
    for name in set(LOOSE) & set(flagged):  # ... at its precision
        assert flagged[name]["holds_back"] is False, flagged[name]
        assert "holds nothing back" in flagged[name]["explanation"]
    table = runner.invoke(app, ["solve", str(path)], terminal_width=100)
    assert table.exit_code == 0, table.output
    assert "binding constraints" not in table.output and "holds nothing back" not in table.output
    whatif = runner.invoke(app, ["whatif", str(path), "--shock", "BTC=-5%", "--json"])
    assert whatif.exit_code == 0, whatif.output
    nxt = json.loads(whatif.stdout)["scenarios"][0]["next"]
    assert nxt is not None and not set(nxt["binding_constraints"]) & set(LOOSE), nxt


def test_a_binding_band_is_still_reported() -> None:
    doc = _solve_json(EXAMPLES / "ten_assets.toml")
    band = [b for b in doc["binding_constraints"] if b["name"] == "cluster_band[alts]"]
    assert len(band) == 1 and band[0]["holds_back"] is True
    assert band[0]["explanation"].startswith("cluster_band[alts] binds: widening the band by")
    table = runner.invoke(app, ["solve", str(EXAMPLES / "ten_assets.toml")], terminal_width=100)
    assert "binding constraints" in table.output and "cluster_band[alts] binds" in table.output
