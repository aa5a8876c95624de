"""``fbr solve`` on a book with a number past any useful size (a cost weight, a vol, a USD limit)
ends in one clear line naming the field and the fix, exit 2 (BAD_INPUT), no traceback; before the
bounds these were answered "unbounded", "infeasible" or "every solver failed"."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import run_fbr

from models.errors import ExitCode

SEED = (Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml").read_text()


@pytest.mark.parametrize(("edit", "field"), [
    (lambda t: t.replace("[costs]\n", "[costs]\ngamma_trade = 1e12\n"), "costs.gamma_trade"),
    (lambda t: re.sub(r"(?m)^BTC = 0\.55$", "BTC = 1e300", t), "risk.vols.BTC"),
    (lambda t: t.replace("[constraints]\n", "[constraints]\nmargin_buffer_usd = 1e308\n"),
     "constraints.margin_buffer_usd"),
])
def test_a_number_past_any_useful_size_is_one_clear_line(tmp_path: Path, edit: Callable[[str], str],
                                                         field: str) -> None:
    path = tmp_path / "book.toml"
    text = edit(SEED)
    assert text != SEED
    path.write_text(text)
    res = run_fbr("solve", str(path))
    assert res.returncode == ExitCode.BAD_INPUT, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: ") and "Fix: " in lines[0]
    assert "Traceback" not in res.stderr + res.stdout
