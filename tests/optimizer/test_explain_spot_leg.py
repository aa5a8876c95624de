"""Binding explanations with the spot leg on (``optimizer.constraint_base.Constraint.predict``):
the objective's size counts the spot leg's trading cost and tax, so the explained step is in
the book's scale (it counted them as 0: 'raising the cap by 5e-12 USD ... worth 0.00 USD' on a
book whose spot leg pays about 10 USD of cost and tax)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fbr.config import load_book_file
from optimizer.rebalance import solve_rebalance

BOOK = """[book]
cash = 3000.0
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
lot_step = 0.001
[[assets]]
symbol = "ETH"
[[assets]]
symbol = "SOL"
[contract_defaults]
lot_step = 1e-8
min_notional = 0.0
leverage = 10.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
SOL = 150.0
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
SOL = 0.95
[costs]
trading = true
carry = false
impact = false
[constraints]
margin = false
[constraints.caps_usd]
BTC-PERP = 0.0
[[constraints.clusters]]
name = "btc"
assets = ["BTC"]
band = 0.0
[solver]
spot_leg = true
[tax]
short_term = "30%"
long_term = "15%"
lot_method = "hifo"
[[lots]]
asset = "BTC"
quantity = 0.07
cost_basis = 20000.0
acquired = "2022-01-05"
[[lots]]
asset = "BTC"
quantity = 0.01
cost_basis = 58000.0
acquired = "2024-03-01"
[[lots]]
asset = "BTC"
quantity = 0.02
cost_basis = 57000.0
acquired = "2023-05-31"
[[lots]]
asset = "ETH"
quantity = 1.0
cost_basis = 3000.0
acquired = "2023-08-01"
[[lots]]
asset = "SOL"
quantity = 10.0
cost_basis = 20.0
acquired = "2023-01-01"
"""


def test_the_explained_step_is_sized_on_the_whole_objective(tmp_path: Path) -> None:
    path = tmp_path / "book.toml"
    path.write_text(BOOK)
    loaded = load_book_file(path)
    sol = solve_rebalance(loaded.book, loaded.market, loaded.risk, loaded.settings)
    assert sol.spot_costs is not None
    V = sol.base
    # by hand: gamma_trade = gamma_tax = 1, so the objective is TE^2 + (fees + spread) / V + the
    # tax as the optimiser priced it / V (the futures cannot trade: their cap is 0)
    size = (sol.tracking_error_unrounded ** 2
            + (sol.spot_costs.fees + sol.spot_costs.spread + sol.spot_costs.tax_optimiser) / V)
    cap = next(b for b in sol.binding_constraints if b.name == "position_cap[BTC-PERP]")
    m = re.search(r"raising the cap by ([\d.,]+) USD .* the objective's terms now total ([\d.e-]+) "
                  r"in absolute value\)",
                  cap.explanation)
    assert m is not None, cap.explanation
    assert float(m.group(2)) == pytest.approx(size, rel=0.05)
    assert float(m.group(1).replace(",", "")) >= 1.0
