"""Whole numbers in input files (``fbr.config_values.whole``): TOML allows 64-bit signed integers,
but Python's reader takes any size; a larger one is refused by name, not left to overflow numpy or
pandas (a policy ``window`` of 10^30 ended "internal error: OverflowError")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fbr.cli import app
from fbr.config_values import MAX_WHOLE, whole
from models.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]


def test_the_64_bit_edge() -> None:
    assert MAX_WHOLE == 9_223_372_036_854_775_807
    assert whole(MAX_WHOLE, "x.window", 2) == MAX_WHOLE
    with pytest.raises(ValidationError) as info:
        whole(MAX_WHOLE + 1, "x.window", 2)
    assert info.value.field == "x.window" and "64-bit" in info.value.problem
    with pytest.raises(ValidationError, match="give a whole number >= 2"):
        whole(1, "x.window", 2)


def test_a_huge_policy_window_is_refused_before_any_run(tmp_path: Path) -> None:
    run = tmp_path / "run.toml"
    run.write_text(f'book = "{(ROOT / "examples" / "backtest_book.toml").as_posix()}"\n'
                   '[data]\nsource = "synthetic"\nseed = 12\ndays = 60\nstart = "2024-01-01"\n'
                   '[[policies]]\nkind = "edge_band_futures"\nband = "5%"\nscaling = "vol"\n'
                   f"window = {10**30}\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["backtest", str(run), "--json"])
    assert res.exit_code == 2, res.output
    doc = json.loads(res.stdout)
    assert doc["status"] == "error" and doc["error"].startswith("policies[0].window: is 1" + "0" * 30)
