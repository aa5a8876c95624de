"""Rows whose dual is at solver precision are not reported as binding (``Binding.holds_back``).

An interior-point solver (Clarabel here: the vol cap makes the book conic) leaves a small positive
dual on every inequality row, also on rows far inside their bounds. Seed example 1 with every part
on, a stress preset, a crash scenario, a gross leverage cap, a vol cap and a funding budget, all
loose: the stress surpluses are thousands of USD (re-checked from the solution's own margin
figures), the leverage far under its cap. None of these rows may appear in the table's
"binding constraints" panel or in the what-if's next move; ``--json`` keeps them with
``holds_back`` false. A cluster band that binds (ten_assets.toml) stays reported, ``holds_back``
true, with its explanation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_helpers import KITCHEN_SINK as LOOSE_BOOK
from typer.testing import CliRunner

from fbr.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LOOSE = ("stress[crash]", "stress[all -40%]", "stress[BTC -40%]", "stress[SOL +40%]",
         "gross_leverage", "vol_cap", "funding_budget")
runner = CliRunner()



def _loose_book(tmp_path: Path) -> Path:
    path = tmp_path / "loose.toml"
    path.write_text(LOOSE_BOOK, encoding="utf-8")
    return path


def _solve_json(path: Path) -> dict[str, Any]:
    res = runner.invoke(app, ["solve", str(path), "--json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_loose_rows_are_flagged_and_left_out_of_the_table(tmp_path: Path) -> None:
    path = _loose_book(tmp_path)
    doc = _solve_json(path)
    assert doc["solver"] == "CLARABEL"
    # the rows are loose by the solution's own figures: thousands of USD of stress surplus,
    # gross exposure under 1.5x
    assert min(s["surplus"] for s in doc["margin"]["stress"]) > 1_000.0
    assert doc["leverage"]["gross"] < 1.2
    flagged = {b["name"]: b for b in doc["binding_constraints"]}
    # the solver leaves duals above the report's floor on some of them (not vacuous) ...
    assert len(set(LOOSE) & set(flagged)) >= 3, flagged
    for name in set(LOOSE) & set(flagged):  # ... at its precision
        assert flagged[name]["holds_back"] is False, flagged[name]
        assert "holds nothing back" in flagged[name]["explanation"]
    table = runner.invoke(app, ["solve", str(path)], terminal_width=100)
    assert table.exit_code == 0, table.output
    assert "binding constraints" not in table.output and "holds nothing back" not in table.output
    whatif = runner.invoke(app, ["whatif", str(path), "--shock", "BTC=-5%", "--json"])
    assert whatif.exit_code == 0, whatif.output
    nxt = json.loads(whatif.stdout)["scenarios"][0]["next"]
    assert nxt is not None and not set(nxt["binding_constraints"]) & set(LOOSE), nxt


def test_a_binding_band_is_still_reported() -> None:
    doc = _solve_json(EXAMPLES / "ten_assets.toml")
    band = [b for b in doc["binding_constraints"] if b["name"] == "cluster_band[alts]"]
    assert len(band) == 1 and band[0]["holds_back"] is True
    assert band[0]["explanation"].startswith("cluster_band[alts] binds: widening the band by")
    table = runner.invoke(app, ["solve", str(EXAMPLES / "ten_assets.toml")], terminal_width=100)
    assert "binding constraints" in table.output and "cluster_band[alts] binds" in table.output
