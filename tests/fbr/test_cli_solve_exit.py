"""``fbr solve`` on an infeasible book prints its answer, then exits with code 3 (INFEASIBLE) naming the
conflicting constraints; a liquidatable book exits 3 with the amounts; a sound book exits 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_fbr
from typer.testing import CliRunner

from fbr.cli import app
from models.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "examples" / "seed_example_1.toml").read_text()

#: The seed book with 50 USD of collateral, margin on, and BTC held within 0.1 pp of its target:
#: the 990+ USD BTC short needs 99+ USD of margin at 10x, so margin and the band conflict.
CLUSTER = """
[[constraints.clusters]]
name = "btc"
assets = ["BTC"]
band = 0.001
"""


def _book(tmp_path: Path, cash: float, margin: bool, extra: str = "") -> Path:
    text = SEED.replace("cash = 3000.0", f"cash = {cash}")
    text = text.replace("margin = false", f"margin = {'true' if margin else 'false'}")
    assert f"cash = {cash}" in text
    path = tmp_path / "book.toml"
    path.write_text(text + extra)
    return path


def test_infeasible_book_exits_3_after_the_json_answer(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["solve", "--json", str(_book(tmp_path, 50.0, True, CLUSTER))])
    assert res.exit_code == int(ExitCode.INFEASIBLE)
    out = json.loads(res.stdout)  # one JSON object: the answer itself
    assert out["status"] == "infeasible"
    assert [c["name"] for c in out["conflicts"]] == ["margin"]
    assert out["opposing_constraints"] == ["cluster_band[btc]"]
    assert out["blockers"]
    assert "margin" in res.stderr and "cluster_band[btc]" in res.stderr
    assert "no order was planned" in res.stderr and "Fix:" in res.stderr


def test_infeasible_book_exits_3_after_the_tables(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["solve", str(_book(tmp_path, 50.0, True, CLUSTER))])
    assert res.exit_code == 3
    assert "conflicting constraints" in res.stdout and "status infeasible" in res.stdout
    assert "cluster_band[btc]" in res.stderr
    text = " ".join(res.stdout.split())
    assert "Trades (futures) of the least-violation book: infeasible, not tradeable" in text
    feasible = CliRunner().invoke(app, ["solve", str(_book(tmp_path, 3000.0, True, CLUSTER))])
    assert feasible.exit_code == 0 and "least-violation" not in feasible.stdout


def test_feasible_book_exits_0(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["solve", "--json", str(_book(tmp_path, 3000.0, True, CLUSTER))])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["status"] == "optimal" and out["blockers"] == []


def test_liquidatable_book_exits_3_with_the_amounts(tmp_path: Path) -> None:
    # 10 BTC long from 61,000 at 60,000: C = 9,500 - 10,000 = -500 USD; flat 0.5% MM on 600,000
    # = 3,000 USD: add more than 3,500 USD (no position cut alone helps: C <= 0).
    extra = """
[[futures]]
symbol = "BTC-PERP"
contracts = 10.0
entry_price = 61000.0
"""
    path = _book(tmp_path, 9500.0, False, extra)
    res = CliRunner().invoke(app, ["solve", str(path)])
    assert res.exit_code == 3, res.stdout + res.stderr
    assert "liquidatable now" in res.stderr
    assert "add more than 3,500.00 USD" in res.stderr


def test_status_of_a_liquidatable_book_shows_the_margin_and_an_alert(tmp_path: Path) -> None:
    """`fbr status` still reports the account (margin ratio past 100%) and plans nothing; the
    alert carries the optimiser's amounts."""
    import json

    extra = """
[[futures]]
symbol = "BTC-PERP"
contracts = 10.0
entry_price = 61000.0
"""
    path = _book(tmp_path, 9500.0, False, extra)
    res = CliRunner().invoke(app, ["status", str(path), "--exchange", "paper", "--journal",
                                   str(tmp_path / "j.sqlite"), "--json"])
    assert res.exit_code == 0, res.stdout + res.stderr
    out = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert out["rebalance_due"] is False and out["plan"]["legs"] == []
    # the second alert: no journal yet, the book file's holdings (as solve/whatif say)
    assert len(out["alerts"]) == 2 and "liquidatable now" in out["alerts"][0]
    assert "add more than 3,500.00 USD" in out["alerts"][0]
    assert out["margin"]["margin_ratio"] is None  # infinite: collateral <= 0 with a position open
    text = CliRunner().invoke(app, ["status", str(path), "--exchange", "paper", "--journal",
                                    str(tmp_path / "j.sqlite")])
    assert text.exit_code == 0 and "alert:" in text.stdout


# --- usage errors through the real entry point (python -m fbr.cli: fbr.cli.main) --------------

@pytest.mark.parametrize(("args", "error"), [
    (["solve", "--json"], "Missing argument 'book'."),
    (["whatif", "examples/seed_example_1.toml", "--exchange", "foo", "--json"],
     "Invalid value for '--exchange': 'foo' is not one of 'dry-run', 'paper', 'binanceusdm'."),
    (["solve", "--json", "examples/seed_example_1.toml", "--bogus"], "No such option: --bogus"),
])
def test_a_usage_error_with_json_is_one_json_line(args: list[str], error: str) -> None:
    """With --json a click usage error is the README's one line on stdout, exit code 2 (it was
    click's boxed message on stderr and nothing on stdout)."""

    res = run_fbr(*args, timeout=120.0)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout.splitlines() == [json.dumps({"status": "error", "exit_code": 2,
                                                   "error": error})]
    assert res.stderr.strip() == f"error: {error}"


def test_a_usage_error_without_json_keeps_clicks_message() -> None:

    res = run_fbr("solve", timeout=120.0)
    assert res.returncode == 2 and res.stdout == ""
    assert "Usage: fbr solve" in res.stderr and "Missing argument 'book'." in res.stderr


def test_exit_codes_through_the_entry_point_with_json(tmp_path: Path) -> None:
    """The --json path keeps every other exit code: 3 for an infeasible book (after its JSON
    answer), 0 for a sound one."""

    res = run_fbr("solve", "--json", str(_book(tmp_path, 50.0, True, CLUSTER)), timeout=120.0)
    assert res.returncode == 3 and json.loads(res.stdout)["status"] == "infeasible"
    res = run_fbr("solve", "--json", str(_book(tmp_path, 3000.0, True, CLUSTER)), timeout=120.0)
    assert res.returncode == 0 and json.loads(res.stdout)["status"] == "optimal"


def test_no_solver_answering_a_feasible_book_is_one_message(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every solver of the main problem fails and the elastic re-solve relaxes nothing (the book
    is feasible): ``fbr solve --json`` prints one error document naming the solvers, and the text
    form one line on stderr, no traceback."""
    from optimizer.problem import HedgeProblem, SolverFailedError

    def fail(self: HedgeProblem, solvers: tuple[object, ...] = ()) -> object:
        raise SolverFailedError("every solver failed (CLARABEL: solver_error, SCS: solver_error)")

    monkeypatch.setattr(HedgeProblem, "solve", fail)
    book = _book(tmp_path, 3000.0, False)
    res = CliRunner().invoke(app, ["solve", str(book), "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code != 0 and doc["status"] == "error"
    assert "every solver failed (CLARABEL: solver_error, SCS: solver_error)" in doc["error"]
    text = CliRunner().invoke(app, ["solve", str(book)])
    assert text.exit_code == res.exit_code and "Traceback" not in text.output
    assert "error: every solver failed" in " ".join(text.output.split())


@pytest.mark.parametrize("verdict", ["infeasible", "unbounded"])
def test_a_solver_verdict_the_book_refutes_is_one_message(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         verdict: str) -> None:
    """The solvers call a feasible book with margin on 'infeasible' or 'unbounded': the
    least-violation check (infeasible) or the book's structure (unbounded: no carry, and margin
    on) refutes it, and ``fbr solve`` ends in one error naming why, in --json and as one line on
    stderr, no traceback."""
    import math

    from optimizer.engines import RawResult
    from optimizer.problem import HedgeProblem, SolveOutcome

    def says(self: HedgeProblem, solvers: tuple[object, ...] = ()) -> SolveOutcome:
        return SolveOutcome(RawResult(None, verdict, "CLARABEL", 0.0, 0, math.nan),
                            (("CLARABEL", verdict),))

    monkeypatch.setattr(HedgeProblem, "solve", says)
    book = _book(tmp_path, 3000.0, True)
    why = ("a least-violation check finds a book that meets every constraint"
           if verdict == "infeasible" else "the solver reports the book unbounded, yet ")
    res = CliRunner().invoke(app, ["solve", str(book), "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code != 0 and doc["status"] == "error" and why in doc["error"]
    text = CliRunner().invoke(app, ["solve", str(book)])
    assert text.exit_code == res.exit_code and "Traceback" not in text.output
    assert why in " ".join(text.output.split())
