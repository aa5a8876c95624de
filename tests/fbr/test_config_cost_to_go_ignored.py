"""[costs] cost_to_go_power without a positive cost_to_go (kappa 0: the cost-to-go term is off)
would be ignored: refused with one ValidationError, as the EWMA forecaster's keys are without
funding_forecast = "ewma" (fbr.config_settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbr.config import load_book_file
from models.errors import ValidationError

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"


def _book(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "b.toml"
    p.write_text(SEED.read_text().replace("[costs]\n", "[costs]\n" + extra + "\n", 1))
    return p


@pytest.mark.parametrize("extra", ["cost_to_go_power = 0.4", "cost_to_go = 0\ncost_to_go_power = 0.4"])
def test_cost_to_go_power_without_kappa_is_refused(tmp_path: Path, extra: str) -> None:
    with pytest.raises(ValidationError) as err:
        load_book_file(_book(tmp_path, extra))
    e = err.value
    assert e.field == "costs.cost_to_go_power"
    assert "would be ignored" in str(e) and "cost_to_go" in str(e)


def test_cost_to_go_power_with_kappa_is_read(tmp_path: Path) -> None:
    cfg = load_book_file(_book(tmp_path, "cost_to_go = 30\ncost_to_go_power = 0.4"))
    costs = cfg.settings.costs
    assert (costs.cost_to_go, costs.cost_to_go_power) == (30.0, 0.4)
