"""A what-if correlation shock that makes the correlation singular is refused, as a singular
[risk] correlation is (fbr.config_risk): `fbr whatif seed_example_1 --shock corr=1` answered the
arbitrary next move BUY 89 / 114 / 154 USD and "TE 2.75% -> 0.00%" (BTC left 10 pp over target),
since with every pair at correlation 1 whole sets of hedges tie at zero risk. corr=1@90% keeps
a tenth of the book's correlation (0.7): C' = 0.1 C + 0.9 (all ones) has smallest eigenvalue
0.1 x 0.3 = 0.03 > 0, accepted."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fbr.cli import app

SEED = str(Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml")
runner = CliRunner()


def test_a_shock_to_correlation_one_is_refused_naming_the_shock() -> None:
    res = runner.invoke(app, ["whatif", SEED, "--shock", "corr=1", "--json"])
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["status"] == "error" and doc["error"].startswith("shock corr: ")
    assert "singular" in doc["error"]


def test_a_blend_that_keeps_some_of_the_book_correlation_is_accepted() -> None:
    res = runner.invoke(app, ["whatif", SEED, "--shock", "corr=1@90%", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["status"] == "ok"
