"""fbr.render: the spot leg's trades table shows both legs of a loss harvest; the plan table
shows settlements and spot trades as rows of their own."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w
from rich.console import Console

from fbr.config import load_book_file
from fbr.render import spot_trades_table
from optimizer.rebalance import Rebalancer
from optimizer.solution import Solution

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_a_loss_harvest_shows_the_sale_and_the_buy_back(tmp_path: Path) -> None:
    """1 ETH bought at 3,000 (short-term at 30%) is worth 2,500: selling it and buying it back
    credits 0.3 x 500 = 150 USD of tax for about 5.50 of fees and spread. The table shows the
    sale (with the credit) and the buy-back as two rows, not one 'BUY 0.00' row."""
    doc = tomllib.loads((EXAMPLES / "seed_example_1.toml").read_text(encoding="utf-8"))
    doc["costs"] = {"trading": True, "carry": False, "impact": False}
    doc["solver"] = {"spot_leg": True, "round_lots": False}
    doc["tax"] = {"short_term": "30%", "long_term": "15%", "harvest_losses": True}
    doc["lots"] = [{"asset": "BTC", "quantity": 0.1, "cost_basis": 60_000.0, "acquired": "2024-03-01"},
                   {"asset": "ETH", "quantity": 1.0, "cost_basis": 3_000.0, "acquired": "2023-08-01"},
                   {"asset": "SOL", "quantity": 10.0, "cost_basis": 150.0, "acquired": "2024-03-01"}]
    path = tmp_path / "harvest.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    loaded = load_book_file(path)
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
    (eth,) = [t for t in sol.spot_trades if t.asset == "ETH"]
    assert eth.sold > 0 and eth.bought > 0 and round(eth.tax, 2) == -150.00
    console = Console(record=True, width=120)
    console.print(spot_trades_table(sol))
    rows = [line for line in console.export_text().splitlines() if "ETH" in line]
    assert len(rows) == 2
    assert "SELL" in rows[0] and "-150.00" in rows[0] and f"{-eth.sold:,.2f}" in rows[0]
    assert "BUY" in rows[1] and f"{eth.bought:,.2f}" in rows[1]


def test_a_margin_ratio_of_a_vanished_collateral_is_not_printed_as_a_figure() -> None:
    """MM 5 USD on 1.5e-9 USD of collateral (a wallet drained by funding): the ratio 3.3e9 prints
    as "> 1,000%" with the collateral, not as 333,333,333,333.33%; 5 on 300 stays 1.67%."""
    from fbr.whatif_render import ratio_text
    from models.margin import MarginState

    assert ratio_text(MarginState(1.5e-9, 0.0, 5.0, True)) == "> 1,000% (collateral 1.5e-09 USD)"
    assert ratio_text(MarginState(300.0, 0.0, 5.0, True)) == "1.67%"
    assert ratio_text(MarginState(-1.0, 0.0, 5.0, True)) == "collateral <= 0"


def test_the_solve_summary_prints_margin_shares_of_a_vanished_collateral_as_past_1000pct(
        tmp_path: Path) -> None:
    """Seed example 1 with 1e-300 USD of cash: initial margin 200 USD (notional 2,000 at 10x) and
    maintenance 10 USD are 2e302 and 1e301 of the collateral; the summary prints "> 1,000%", not
    300 digits. The shares stay figures where they are (cash 3,000: 200 / 3,000 = 6.67%)."""
    from fbr.console import margin_share_text
    from fbr.render import summary_table

    assert margin_share_text(2e302) == margin_share_text(float("inf")) == "> 1,000%"
    assert margin_share_text(10.0) == "1000.00%" and margin_share_text(None) == "-"
    assert margin_share_text(float("nan")) == "> 1,000%"
    doc = tomllib.loads((EXAMPLES / "seed_example_1.toml").read_text(encoding="utf-8"))
    rows = {}
    for cash in (1e-300, 3000.0):
        doc["book"]["cash"] = cash
        path = tmp_path / "b.toml"
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
        loaded = load_book_file(path)
        sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
        console = Console(record=True, width=80)
        console.print(summary_table(sol))
        text = console.export_text()
        rows[cash] = [line for line in text.splitlines() if "margin (USD" in line]
        assert max(len(line) for line in text.splitlines()) <= 80
    assert all("200.00 (> 1,000%)" in r or "10.00 (> 1,000%)" in r for r in rows[1e-300])
    assert "200.00 (6.67%)" in rows[3000.0][0] and "10.00 (0.33%)" in rows[3000.0][1]


def _seed_solution() -> Solution:
    """Seed example 1 solved (the solution a plan is attached to)."""
    loaded = load_book_file(EXAMPLES / "seed_example_1.toml")
    return Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)


def _plan_rows(sol: Solution) -> list[list[str]]:
    """The cells of each body row of ``sol``'s plan table, as printed 140 columns wide."""
    from fbr.render import plan_table

    console = Console(record=True, width=140)
    console.print(plan_table(sol))
    return [[c.strip() for c in line.split("│")[1:-1]] for line in
            console.export_text().splitlines() if line.startswith("│")]


def test_the_plan_table_shows_a_settlement_as_its_own_row() -> None:
    """A plan whose dated contract settles before step 3: the table shows the contract's trades
    (none at step 3) and a separate 'settles at expiry (no order)' row with -x_2 at step 3; the
    share of the plan traded now counts trades only."""
    from dataclasses import replace

    from fbr.render import plan_note
    from optimizer.solution import Plan, PlanStep

    sol = _seed_solution()
    plan = Plan(step_days=1.0, steps=(
        PlanStep(1, {"Q": -9_000.0, "P": 0.0}, {"Q": -1_000.0, "P": 0.0}),
        PlanStep(2, {"Q": -9_000.0, "P": -4_000.0}, {"Q": 0.0, "P": -4_000.0}),
        PlanStep(3, {"Q": 0.0, "P": -9_000.0}, {"Q": 0.0, "P": -5_000.0}, {"Q": 9_000.0})))
    rows = _plan_rows(replace(sol, plan=plan))
    assert rows == [["P", "0.00", "-4,000.00", "-5,000.00", "0%"],
                    ["Q", "-1,000.00", "0.00", "0.00", "100%"],
                    ["Q settles at expiry (no order)", "", "", "9,000.00", ""]]
    assert plan_note(replace(sol, plan=plan)) is not None
    assert "10% of the planned trade is made now" in str(plan_note(replace(sol, plan=plan)))


def test_the_plan_table_shows_the_spot_trades_per_step() -> None:
    """A plan that sells 3,000 USD of BTC spot now and 1,000 next step and shorts 1,000 USD of a
    perpetual now: one row per asset's spot trades after the contracts' with the share made now
    (75%), and the plan note counts spot and futures together (4,000 of 5,000 now: 80%)."""
    from dataclasses import replace

    from fbr.render import plan_note
    from optimizer.solution import Plan, PlanStep

    sol = _seed_solution()
    plan = Plan(step_days=1.0, steps=(
        PlanStep(1, {"P": -1_000.0}, {"P": -1_000.0}, spot_trades={"BTC": -3_000.0, "ETH": 0.0}),
        PlanStep(2, {"P": -1_000.0}, {"P": 0.0}, spot_trades={"BTC": -1_000.0, "ETH": 0.0})))
    rows = _plan_rows(replace(sol, plan=plan))
    assert rows == [["P", "-1,000.00", "0.00", "100%"],
                    ["BTC spot", "-3,000.00", "-1,000.00", "75%"]]
    assert plan.total_spot_trades() == {"BTC": -4_000.0, "ETH": 0.0}
    assert "80% of the planned trade is made now" in str(plan_note(replace(sol, plan=plan)))
    assert plan.to_dict()["steps"][1]["spot_trades"] == {"BTC": -1_000.0, "ETH": 0.0}  # type: ignore[index]
