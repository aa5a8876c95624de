"""fbr.render's plan table share ("now / plan") and one-line plan note compare step 1's trades
with the plan's GROSS trade sum_h sum_j |t_hj|, not the net: a plan whose later steps trade step
1's trade back is neither "the whole planned trade made now" nor "trades nothing"."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.console import Console

from fbr.config import load_book_file
from fbr.render import plan_note, plan_table
from optimizer.rebalance import Rebalancer
from optimizer.solution import Plan, PlanStep, Solution

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"


def _with(plan: Plan) -> Solution:
    loaded = load_book_file(SEED)
    sol = Rebalancer().solve(loaded.book, loaded.market, loaded.risk, loaded.settings)
    return replace(sol, plan=plan)


def _rows(sol: Solution) -> list[list[str]]:
    console = Console(record=True, width=140)
    console.print(plan_table(sol))
    return [[c.strip() for c in line.split("│")[1:-1]] for line in
            console.export_text().splitlines() if line.startswith("│")]


def test_a_plan_that_returns_to_zero_is_not_described_as_trading_nothing() -> None:
    # P: +1,000 now, -400 and -600 later (net 0). Gross 2,000: 1,000 / 2,000 = 50% now, and the
    # later steps trade back 400 + 600 = 1,000 USD
    sol = _with(Plan(step_days=1.0, steps=(
        PlanStep(1, {"P": 1_000.0}, {"P": 1_000.0}),
        PlanStep(2, {"P": 600.0}, {"P": -400.0}),
        PlanStep(3, {"P": 0.0}, {"P": -600.0}))))
    assert _rows(sol) == [["P", "1,000.00", "-400.00", "-600.00", "50%"]]
    note = str(plan_note(sol))
    assert "trades nothing" not in note and "whole planned trade" not in note
    assert "50% of the planned trade is made now" in note
    assert "trade back 1,000.00 USD" in note


def test_a_partly_reversed_plan_counts_the_gross_trade() -> None:
    # P: +3,000 now, -1,000 at step 2 (net +2,000: the old share read 150%, the note "whole trade
    # now"); Q: -1,000 at step 2 only. Gross 3,000 + 1,000 + 1,000 = 5,000:
    # now 3,000 / 5,000 = 60%; P's row 3,000 / 4,000 = 75%; traded back: P's 1,000 only
    sol = _with(Plan(step_days=1.0, steps=(
        PlanStep(1, {"P": 3_000.0, "Q": 0.0}, {"P": 3_000.0, "Q": 0.0}),
        PlanStep(2, {"P": 2_000.0, "Q": -1_000.0}, {"P": -1_000.0, "Q": -1_000.0}))))
    assert _rows(sol) == [["P", "3,000.00", "-1,000.00", "75%"], ["Q", "0.00", "-1,000.00", "0%"]]
    note = str(plan_note(sol))
    assert "60% of the planned trade is made now" in note
    assert "trade back 1,000.00 USD" in note


def test_the_plan_note_is_in_the_json_answer() -> None:
    """``Solution.to_dict()['plan']['note']`` is the line printed under the plan's table (before
    the fix --json carried the steps but not the note): the case above, 60% made now."""
    sol = _with(Plan(step_days=1.0, steps=(
        PlanStep(1, {"P": 3_000.0, "Q": 0.0}, {"P": 3_000.0, "Q": 0.0}),
        PlanStep(2, {"P": 2_000.0, "Q": -1_000.0}, {"P": -1_000.0, "Q": -1_000.0}))))
    plan = sol.to_dict()["plan"]
    assert isinstance(plan, dict)
    assert plan["note"] == plan_note(sol)
    assert "60% of the planned trade is made now" in plan["note"]
