"""vol / spread / liquidity multipliers are bounded at x100 (``MAX_MULTIPLIER``): ``vol=x1e160``
passed the parser (finite, > 0), then the shocked covariance overflowed and ``fbr whatif`` ended with
numpy's "Eigenvalues did not converge" (no field, no fix). Now the shock is refused naming it; a
shocked covariance that still overflows (vols near 1e153) is refused naming the vol shock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fbr.cli import app
from fbr.config import load_book_file
from models.errors import ValidationError
from models.risk import RiskModel
from scenarios.applied_shocks import resolve_shocks, shock_risk
from scenarios.shocks import parse_scenario, parse_shock

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_example_1.toml"


@pytest.mark.parametrize("text", ["vol=x1e160", "vol.SOL=x101", "spread=x1000",
                                  "liquidity.BTC-PERP=1e5x"])
def test_a_multiplier_above_x100_is_refused_naming_the_shock(text: str) -> None:
    """A multiplier above x100 is refused; the field is the shock as written."""
    with pytest.raises(ValidationError) as info:
        parse_shock(text)
    assert info.value.field == f"shock {text!r}"
    assert "above x100" in info.value.problem and "(0, 100]" in info.value.fix


@pytest.mark.parametrize("text", ["vol=x100", "spread=x100", "liquidity=x0.01"])
def test_multipliers_up_to_x100_parse(text: str) -> None:
    """x100 itself (and anything in (0, 100]) is accepted."""
    assert 0 < parse_shock(text).value <= 100.0


def test_whatif_vol_x1e160_names_the_shock() -> None:
    """``fbr whatif --shock vol=x1e160``: exit 2 with a message naming vol=x1e160, not numpy's."""
    res = CliRunner().invoke(app, ["whatif", str(SEED), "--shock", "vol=x1e160", "--json"])
    assert res.exit_code == 2, res.output
    msg = json.loads(res.stdout)["error"]
    assert "vol=x1e160" in msg and "Eigenvalues" not in msg


def test_shocked_covariance_that_overflows_is_refused_naming_the_vol_shock() -> None:
    """Vols of 1e153 (variance 1e306, finite) times x100 give a variance of 1e310 (inf): refused
    naming the vol shock and the assets, before the eigen-decomposition fails."""
    loaded = load_book_file(SEED)
    symbols = loaded.book.asset_symbols
    risk = RiskModel.from_covariance(symbols, np.diag([1e306] * len(symbols)))
    applied = resolve_shocks(parse_scenario("x", ["vol=x100"]), loaded.book)
    with pytest.raises(ValidationError) as info:
        shock_risk(risk, loaded.book, applied)
    assert info.value.field == "shock vol" and "BTC" in info.value.problem
    ok = shock_risk(risk, loaded.book, resolve_shocks(parse_scenario("y", ["vol=x2"]),
                                                               loaded.book))
    assert np.all(np.isfinite(ok.covariance))
