"""A dated contract near or past its expiry in the single-period solve (optimizer.prepare):
inside ``min_days_to_expiry`` the expiry row is on by itself (the order planner and the replay
only reduce such a contract, so an answer that opened it would be sent without that leg), and a
contract held past its expiry is refused as the order planner refuses it.

The book: 0.1 BTC spot at 60,000, 5,000 USD cash, target 100% of NAV, long 0.02 BTC-Q (dated,
1 day to expiry, marked 60,500), BTC-PERP funding 1e-4 per 8 h, carry on, the defaults otherwise
(``expiry_row`` off, ``min_days_to_expiry`` 2). NAV = 6,000 + 5,000 + 0.02 x (60,500 - 61,000) =
10,990; BTC weight now (6,000 + 0.02 x 60,500) / 10,990 = 65.6%.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from executor.plan import PlanOptions, book_instruments, plan_orders, with_book_settings
from fbr.config_loader import load_book_file
from models.errors import ValidationError
from optimizer.rebalance import solve_rebalance

BOOK = """[book]
name = "dated"
cash = 5000.0
targets_base = "nav"

[targets]
BTC = 1.0

[spot]
BTC = 0.1

[[contracts]]
symbol = "BTC-PERP"
underlying = "BTC"
lot_step = 1e-8
min_notional = 0.0

[[contracts]]
symbol = "BTC-Q"
underlying = "BTC"
kind = "dated"
expiry = 2024-06-02T00:00:00Z
lot_step = 1e-8
min_notional = 0.0

[[futures]]
symbol = "BTC-Q"
contracts = 0.02
entry_price = 61000.0

[market]
time = 2024-06-01T00:00:00Z

[market.spot]
BTC = 60000.0

[market.mark]
BTC-PERP = 60000.0
BTC-Q = 60500.0

[market.funding]
BTC-PERP = 0.0001

[risk]
#

[risk.vols]
BTC = 0.55

[costs]
carry = true
impact = false
"""


def _weight(spot_btc: float, contracts: dict[str, float], marks: dict[str, float]) -> float:
    """BTC weight of NAV 10,990 (linear contracts of size 1: exposure q x mark)."""
    return (spot_btc * 60_000.0 + sum(q * marks[s] for s, q in contracts.items())) / 10_990.0


def test_the_plan_sent_moves_the_book_toward_target(tmp_path: Path) -> None:
    """Before, the solve answered a carry pair (long 27,405.79 of the perp, short 22,494 of BTC-Q):
    the planner dropped the BTC-Q opening and sent the perp leg, BTC at 304% of NAV. Now BTC-Q is
    held within [0, 0.02] and the plan moves the weight toward 100%."""
    path = tmp_path / "book.toml"
    path.write_text(BOOK)
    lb = load_book_file(path)
    assert lb.settings.constraints.min_days_to_expiry == 2.0
    assert lb.settings.constraints.expiry_row is False
    sol = solve_rebalance(lb.book, lb.market, lb.risk, lb.settings)
    q = {p.symbol: p.contracts for p in sol.target_positions}["BTC-Q"]
    assert -1e-9 <= q <= 0.02 + 1e-9, q
    opts = with_book_settings(PlanOptions(), lb.settings)
    plan = plan_orders(sol, lb.book, lb.market, book_instruments(lb.book), opts, risk=lb.risk)
    marks = dict(lb.market.mark)
    before = _weight(0.1, dict(plan.start), marks)
    after = _weight(0.1, dict(plan.reachable), marks)
    assert math.isclose(before, 7_210.0 / 10_990.0, rel_tol=1e-9)
    assert abs(after - 1.0) < abs(before - 1.0) / 2, (before, after)


def test_a_contract_held_past_its_expiry_is_refused(tmp_path: Path) -> None:
    """BTC-Q expired 16 h before the market time with 0.02 held: the exchange settled it, so the
    book is stale (before, the solve sold 0.39 BTC-Q into a new short and counted its whole basis
    as one day's carry, -179.23 USD)."""
    path = tmp_path / "book.toml"
    path.write_text(BOOK.replace("expiry = 2024-06-02T00:00:00Z", "expiry = 2024-05-31T08:00:00Z"))
    lb = load_book_file(path)
    with pytest.raises(ValidationError) as err:
        solve_rebalance(lb.book, lb.market, lb.risk, lb.settings)
    assert err.value.field == "contracts.BTC-Q.expiry"
    assert "expired" in str(err.value)
