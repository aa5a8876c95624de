"""`fbr execute` / `fbr status` wiring: an infeasible book exits 3 on every exchange (dry run
included) with no plan; the book file's `constraints.min_days_to_expiry` reaches the order planner;
the plan's warnings are printed; `--json` output is strict JSON (non-finite numbers as null)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
from typer.testing import CliRunner

import executor.status as status_mod
from fbr.cli import app
from fbr.console import json_ready
from models.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "examples" / "seed_example_1.toml").read_text()
runner = CliRunner()

#: BTC held within 0.1 pp of its target: with 50 USD of collateral and margin on, the 990+ USD BTC
#: short needs 99+ USD of initial margin at 10x, so margin and the band conflict
#: (tests/fbr/test_cli_solve_exit.py).
CLUSTER = """
[[constraints.clusters]]
name = "btc"
assets = ["BTC"]
band = 0.001
"""

#: The seed book's contracts with BTC as a dated future expiring 3 days after the market time
#: (2024-06-01T00:00Z); marks from spot. The seed answer shorts 1,000 USD of it (an opening leg).
DATED = """
[[contracts]]
symbol = "BTC-240604"
underlying = "BTC"
kind = "dated"
expiry = 2024-06-04T00:00:00Z

[[contracts]]
symbol = "ETH-PERP"
underlying = "ETH"

[[contracts]]
symbol = "SOL-PERP"
underlying = "SOL"
"""


def _book(tmp_path: Path, text: str, name: str = "book.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _infeasible(tmp_path: Path) -> Path:
    text = SEED.replace("cash = 3000.0", "cash = 50.0").replace("margin = false", "margin = true")
    assert "cash = 50.0" in text and "margin = true" in text
    return _book(tmp_path, text + CLUSTER)


def _dated(tmp_path: Path, min_days: float | None) -> Path:
    text = SEED
    if min_days is not None:
        text = text.replace("margin = false", f"margin = false\nmin_days_to_expiry = {min_days}")
        assert "min_days_to_expiry" in text
    return _book(tmp_path, text + DATED, f"dated_{min_days}.toml")


def _strict(text: str) -> Any:
    """json.loads refusing NaN / Infinity / -Infinity."""
    def refuse(token: str) -> NoReturn:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


# --- 1. an infeasible book: exit 3, the conflicting constraints named, no plan --------------------

@pytest.mark.parametrize("exchange", ["dry-run", "paper"])
def test_an_infeasible_book_exits_3_naming_the_conflict_on_every_exchange(
        tmp_path: Path, exchange: str) -> None:
    journal = tmp_path / "j.sqlite"
    res = runner.invoke(app, ["execute", str(_infeasible(tmp_path)), "--exchange", exchange,
                              "--journal", str(journal), "--json"])
    assert res.exit_code == int(ExitCode.INFEASIBLE), res.output
    out = _strict(res.stdout)
    assert out["status"] == "error" and out["exit_code"] == 3
    assert "plan" not in out  # no order was planned
    for text in (out["error"], res.stderr):
        assert "no order was planned" in text
        assert "margin" in text and "cluster_band[btc]" in text and "Fix:" in text


def test_an_infeasible_book_in_text_mode_prints_no_plan(tmp_path: Path) -> None:
    res = runner.invoke(app, ["execute", str(_infeasible(tmp_path))])
    assert res.exit_code == 3
    assert "Plan " not in res.stdout and "cluster_band[btc]" in res.stderr


def test_the_same_book_with_enough_collateral_is_planned(tmp_path: Path) -> None:
    text = SEED.replace("margin = false", "margin = true") + CLUSTER  # 3,000 USD of collateral
    res = runner.invoke(app, ["execute", str(_book(tmp_path, text)), "--json"])
    assert res.exit_code == 0, res.output
    assert _strict(res.stdout)["plan"]["legs"]


# --- 2. constraints.min_days_to_expiry reaches the planner ----------------------------------------

def _btc_legs(plan: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    legs = [leg for leg in plan["legs"] if leg["symbol"] == "BTC-240604"]
    dropped = [d for d in plan["dropped"] if d["symbol"] == "BTC-240604"]
    return legs, dropped


def test_the_book_files_min_days_to_expiry_keeps_the_opening_out(tmp_path: Path) -> None:
    # 3 days to expiry: the default (2 days) opens the BTC short; within a 5-day setting the
    # solve itself holds the contract where it is (the expiry row is on by itself there), so no
    # leg is sent and none has to be dropped
    default = _strict(runner.invoke(app, ["execute", str(_dated(tmp_path, None)), "--json"]).stdout)
    legs, dropped = _btc_legs(default["plan"])
    assert [leg["notional"] for leg in legs] == [pytest.approx(-1000.0, abs=0.01)] and not dropped
    res = runner.invoke(app, ["execute", str(_dated(tmp_path, 5)), "--json"])
    assert res.exit_code == 0, res.output
    legs, dropped = _btc_legs(_strict(res.stdout)["plan"])
    assert not legs and not dropped


def test_the_book_files_min_days_to_expiry_reaches_the_paper_execution_and_status(
        tmp_path: Path) -> None:
    book = str(_dated(tmp_path, 5))
    journal = str(tmp_path / "j.sqlite")
    st = _strict(runner.invoke(app, ["status", book, "--exchange", "paper", "--journal", journal,
                                     "--json"]).stdout)
    legs, dropped = _btc_legs(st["plan"])
    assert not legs and not dropped
    res = runner.invoke(app, ["execute", book, "--exchange", "paper", "--journal", journal,
                              "--json"])
    out = _strict(res.stdout)
    legs, dropped = _btc_legs(out["plan"])
    assert not legs and not dropped
    assert out["report"]["positions"].get("BTC-240604", 0.0) == 0.0


def test_a_smaller_setting_than_the_default_lets_the_leg_through(tmp_path: Path) -> None:
    text = SEED.replace("margin = false", "margin = false\nmin_days_to_expiry = 0.5")
    text += DATED.replace("2024-06-04T00:00:00Z", "2024-06-02T00:00:00Z")  # 1 day left
    out = _strict(runner.invoke(app, ["execute", str(_book(tmp_path, text)), "--json"]).stdout)
    legs, dropped = _btc_legs(out["plan"])
    assert len(legs) == 1 and not dropped


# --- 3. the plan's warnings are printed -----------------------------------------------------------

def _coarse(tmp_path: Path) -> Path:
    """Lot steps of 10 coins: every target of the seed answer rounds to 0 (BTC 10 x 60,000 USD)."""
    text = SEED.replace("lot_step = 1e-8", "lot_step = 10.0")
    assert "lot_step = 10.0" in text
    return _book(tmp_path, text + "\n[solver]\nround_lots = false\n", "coarse.toml")


def test_a_plan_warning_is_printed_in_text_mode(tmp_path: Path) -> None:
    book = str(_coarse(tmp_path))
    out = _strict(runner.invoke(app, ["execute", book, "--json"]).stdout)
    (warning,) = out["plan"]["warnings"]
    assert warning.startswith("lot rounding removed the whole solution")
    res = runner.invoke(app, ["execute", book])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())  # undo rich's line wrapping
    assert "warning: lot rounding removed the whole solution" in text
    assert "BTC-PERP trade -1,000.00 USD -> 0.00 USD" in text


def test_a_plan_warning_is_printed_by_status_even_without_legs(tmp_path: Path) -> None:
    res = runner.invoke(app, ["status", str(_coarse(tmp_path)), "--exchange", "paper",
                              "--journal", str(tmp_path / "j.sqlite")])
    assert res.exit_code == 0, res.output
    assert "warning: lot rounding removed the whole solution" in " ".join(res.stdout.split())


def test_a_warning_with_rich_markup_is_printed_literally(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from fbr.execute_render import _print_warnings

    con = Console(width=200, force_terminal=False)
    _print_warnings(["[bold]not markup[/bold] at [red]"], con)
    assert "warning: [bold]not markup[/bold] at [red]" in capsys.readouterr().out


# --- 4. strict JSON: non-finite numbers become null ----------------------------------------------

def test_json_ready_turns_non_finite_numbers_into_null() -> None:
    raw = {"a": math.inf, "b": -math.inf, "c": math.nan, "d": 1.5, "e": [np.float64(np.inf), 2],
           "f": (np.float32(np.nan), np.int64(3)), "g": {"h": np.array([1.0, np.inf])},
           "i": None, "j": "inf", "k": True}
    assert json_ready(raw) == {"a": None, "b": None, "c": None, "d": 1.5, "e": [None, 2],
                               "f": [None, 3], "g": {"h": [1.0, None]}, "i": None, "j": "inf",
                               "k": True}
    assert _strict(json.dumps(json_ready(raw), allow_nan=False))["a"] is None


def test_status_json_with_an_infinite_margin_ratio_is_strict_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # collateral <= 0 with a position open: models.margin gives an infinite margin ratio and
    # initial utilisation; `fbr status --json` writes them as null
    real = status_mod.margin_view

    def over_margined(book: Any, market: Any) -> status_mod.MarginView:
        m = real(book, market)
        return status_mod.MarginView(collateral=-500.0, initial=m.initial,
                                     maintenance=m.maintenance, margin_ratio=math.inf,
                                     initial_utilisation=math.inf, liquidation_move_down=0.0,
                                     liquidation_move_up=0.0)

    monkeypatch.setattr(status_mod, "margin_view", over_margined)
    res = runner.invoke(app, ["status", str(_book(tmp_path, SEED)), "--exchange", "paper",
                              "--journal", str(tmp_path / "j.sqlite"), "--json"])
    assert res.exit_code == 0, res.output
    assert "Infinity" not in res.stdout and "NaN" not in res.stdout
    out = _strict(res.stdout)
    assert out["margin"]["margin_ratio"] is None and out["margin"]["initial_utilisation"] is None
    assert out["margin"]["collateral"] == -500.0


def test_execute_json_is_strict_json(tmp_path: Path) -> None:
    out = _strict(runner.invoke(app, ["execute", str(_book(tmp_path, SEED)), "--json"]).stdout)
    assert out["status"] == "ok" and out["plan"]["warnings"] == []
