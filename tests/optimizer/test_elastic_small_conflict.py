"""An infeasible book that misses feasibility by a hair still names the constraint it relaxed
(``optimizer.elastic``): a funding budget of 0 USD against a short BTC perpetual that pays funding
(rate -0.01% per 8 h: shorts pay) and a trade limit 1 USD short of closing it. By hand: the most
the book can close leaves -1 USD of BTC-PERP, whose carry over the 1-day horizon (3 settlements) is
3 x 0.0001 x 1 = 0.0003 USD over the budget; in weights of the 1,000,000 USD base 3e-10, below the
1e-7 that names a conflict when a larger slack exists. The answer named nothing (and listed the
budget as 'binding against' nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.config import load_book_file
from optimizer.rebalance import solve_rebalance

BOOK = """[book]
cash = 100000.0
[targets]
BTC = 1.0
[spot]
BTC = 10.0
[[futures]]
symbol = "BTC-PERP"
contracts = -1.0
entry_price = 100000.0
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 100000.0
[market.funding]
BTC-PERP = -0.0001
[risk]
basis_risk = false
[risk.vols]
BTC = 0.5
[costs]
trading = false
[constraints]
margin = false
funding_budget_usd = 0.0
trade_limit_usd = 99999.0
"""


def test_a_hairline_infeasibility_names_its_constraint(tmp_path: Path) -> None:
    path = tmp_path / "book.toml"
    path.write_text(BOOK)
    loaded = load_book_file(path)
    sol = solve_rebalance(loaded.book, loaded.market, loaded.risk, loaded.settings)
    assert sol.status == "infeasible" and not sol.orderable
    (conflict,) = sol.conflicts
    assert conflict.name == "funding_budget" and conflict.unit == "USD"
    assert conflict.violation == pytest.approx(0.0003, rel=1e-3)
