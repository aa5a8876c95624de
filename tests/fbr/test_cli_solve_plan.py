"""`fbr solve` with the planner ([solver] horizon) shows the plan, in text and in --json."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "examples" / "ten_assets.toml"


def _book(tmp_path: Path, horizon: int) -> Path:
    text = BOOK.read_text().replace("impact = false ", "impact = true ")
    text = text.replace("[solver]", f"[solver]\nhorizon = {horizon}", 1)
    out = tmp_path / "book.toml"
    out.write_text(text)
    return out


def _solve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fbr.cli", "solve", *args], capture_output=True,
                          text=True, timeout=300, cwd=BOOK.parent)


def test_solve_prints_and_returns_the_plan(tmp_path: Path) -> None:
    book = _book(tmp_path, 3)
    text = _solve(str(book))
    assert text.returncode == 0, text.stderr
    assert "Plan: 3 steps" in text.stdout and "only step 1 is sent" in text.stdout
    assert "plan:" in text.stdout
    js = _solve(str(book), "--json")
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    steps = doc["plan"]["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    # step 1's trades are the solution's trades before lot rounding: within one lot of them
    cfg = tomllib.loads(book.read_text())
    lots = {c["symbol"]: c.get("lot_step", cfg["contract_defaults"]["lot_step"])
            for c in cfg["contracts"]}
    traded = {t["symbol"]: (t["notional"], t["price"]) for t in doc["trades"]}
    checked = 0
    for sym, usd in steps[0]["trades"].items():
        notional, price = traded.get(sym, (0.0, 0.0))
        if price:
            assert notional == pytest.approx(usd, abs=lots[sym] * price + 1e-6)
            checked += 1
    assert checked >= 5


def test_single_period_solve_has_no_plan(tmp_path: Path) -> None:
    js = _solve(str(_book(tmp_path, 1)), "--json")
    assert js.returncode == 0, js.stderr
    assert "plan" not in json.loads(js.stdout)
    assert "Plan:" not in _solve(str(_book(tmp_path, 1))).stdout


@pytest.mark.parametrize(("section", "line", "words"), [
    ("[solver]", "horizon = 0", ["solver.horizon", "whole number in [1, 1000]"]),
    ("[solver]", "horizon = 1.5", ["solver.horizon", "whole number in [1, 1000]"]),
    # a typo of days for steps would compile and solve a problem 100,000 periods long
    ("[solver]", "horizon = 100000", ["solver.horizon", "whole number in [1, 1000]"]),
    ("[costs]", "cost_to_go = -1", ["costs.cost_to_go", ">= 0"]),
    ("[costs]", "cost_to_go_power = 2", ["costs.cost_to_go_power", "between 0.0 and 1.0"]),
])
def test_bad_planner_and_cost_to_go_settings_are_one_message(
        tmp_path: Path, section: str, line: str, words: list[str]) -> None:
    """The planner's and the cost-to-go's settings: exit 2, one line naming the key, its file and
    the fix, no traceback."""
    book = tmp_path / "bad.toml"
    book.write_text(BOOK.read_text().replace(section, f"{section}\n{line}", 1))
    proc = _solve(str(book))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert str(book) in err and "Fix:" in err
    for w in words:
        assert w in err


def test_a_plan_with_the_spot_leg_solves(tmp_path: Path) -> None:
    """horizon > 1 with the spot leg on (refused before): exit 0, the plan and the spot leg's
    trades in --json (spot traded at step 1, carried by the later steps)."""
    book = _book(tmp_path, 2)
    book.write_text(book.read_text().replace("[solver]", "[solver]\nspot_leg = true", 1))
    js = _solve(str(book), "--json")
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert [s["step"] for s in doc["plan"]["steps"]] == [1, 2]
    assert "spot_trades" in doc
