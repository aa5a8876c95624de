"""`fbr execute` prints the solution's notes as `fbr solve` does (a review of the commands'
agreement): a plan whose own fees leave no margin surplus in one of the book's stress scenarios
had the note only in `--json`, while `fbr solve` printed it and `fbr execute` sends that trade.

The book: 1 BTC of spot at 60,000 against 50/50 BTC/ETH, 2,000 USD wallet, 20x, one scenario
ETH -10%. By hand the plan sells about 0.316 BTC and buys about 7.29 ETH (37,190 USD gross):
(5 + 1) bp of it is 22.31 USD, more than the scenario's surplus before costs, which the stress row
holds at about 0 (DESIGN.md's row counts collateral before the trade's costs)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fbr.cli import app

BOOK = """
[book]
name = "stress edge"
cash = 2000.0
[targets]
BTC = 0.5
ETH = 0.5
[spot]
BTC = 1.0
[contract_defaults]
lot_step = 0.001
min_notional = 5.0
leverage = 20
[market]
time = 2024-06-01T00:00:00Z
mark_from_spot = true
[market.spot]
BTC = 60000.0
ETH = 2500.0
[risk]
basis_risk = false
correlation = 0.7
[risk.vols]
BTC = 0.55
ETH = 0.70
[costs]
carry = false
[[constraints.stress]]
name = "eth drop"
returns = { ETH = "-10%" }
"""


def test_execute_prints_the_solutions_note_on_a_stress_scenario(tmp_path: Path) -> None:
    book = tmp_path / "book.toml"
    book.write_text(BOOK, encoding="utf-8")
    runner = CliRunner()
    solve = runner.invoke(app, ["solve", str(book)], env={"COLUMNS": "200"})
    assert solve.exit_code == 0, solve.output
    note = next(line for line in solve.stdout.splitlines()
                if line.startswith("note:") and "eth drop" in line)
    assert "fees" in note
    ex = runner.invoke(app, ["execute", str(book)], env={"COLUMNS": "200"})
    assert ex.exit_code == 0, ex.output
    assert note in ex.stdout.splitlines()
