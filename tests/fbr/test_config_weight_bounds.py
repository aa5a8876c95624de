"""Objective weights past any useful size are refused by name before any solve: a gamma_trade of
1e12 was answered "unbounded" and 1e308 "infeasible" (the book is feasible and bounded). Every
weight up to fbr.config_values.MAX_WEIGHT is read as given and still solves."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fbr.backtest_policies import _optimized_params
from fbr.config import load_book_file
from models.bounds import MAX_WEIGHT
from models.errors import ValidationError
from optimizer.rebalance import Rebalancer

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_example_1.toml"


def _write(tmp_path: Path, costs: dict[str, Any], tax_gamma: float | None = None) -> Path:
    doc = tomllib.loads(SEED.read_text(encoding="utf-8"))
    doc["costs"] = {"trading": True, "carry": True, "impact": True, **costs}
    if tax_gamma is not None:
        doc["solver"] = {"spot_leg": True}
        doc["tax"] = {"short_term": "30%", "long_term": "15%", "gamma": tax_gamma}
        doc["lots"] = [{"asset": a, "quantity": q, "cost_basis": 100.0, "acquired": "2024-01-01"}
                       for a, q in (("BTC", 0.1), ("ETH", 1.0), ("SOL", 10.0))]
    p = tmp_path / "b.toml"
    p.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return p


@pytest.mark.parametrize("key", ["gamma_trade", "gamma_fund", "impact_k", "cost_to_go"])
@pytest.mark.parametrize("value", [1e12, 1e308, -1.0])
def test_a_cost_weight_out_of_range_is_refused_by_name(tmp_path: Path, key: str,
                                                       value: float) -> None:
    with pytest.raises(ValidationError) as exc:
        load_book_file(_write(tmp_path, {key: value}))
    assert exc.value.field == f"costs.{key}"


def test_the_tax_weight_and_a_backtest_entry_s_weights_are_bounded_too(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as exc:
        load_book_file(_write(tmp_path, {}, tax_gamma=2 * MAX_WEIGHT))
    assert exc.value.field == "tax.gamma"
    for key in ("gamma_trade", "gamma_fund", "cost_to_go"):
        with pytest.raises(ValidationError) as exc:
            _optimized_params({key: 1e300}, "policies[0]")
        assert exc.value.field == f"policies[0].{key}"
    assert _optimized_params({"gamma_trade": MAX_WEIGHT}, "p")["gamma_trade"] == MAX_WEIGHT


def test_every_weight_at_the_bound_is_read_and_solves(tmp_path: Path) -> None:
    """All four cost weights and the tax weight at MAX_WEIGHT: read as given, and the solve is
    optimal. The cost-to-go (a penalty on the distance from target) outweighs the costs at equal
    weights, so the book is still brought near its target: TE 4.98% before, under 0.5% after."""
    costs = {k: MAX_WEIGHT for k in ("gamma_trade", "gamma_fund", "impact_k", "cost_to_go")}
    lb = load_book_file(_write(tmp_path, costs, tax_gamma=MAX_WEIGHT))
    c = lb.settings.costs
    assert (c.gamma_trade, c.gamma_fund, c.impact_k, c.cost_to_go) == (MAX_WEIGHT,) * 4
    sol = Rebalancer().solve(lb.book, lb.market, lb.risk, lb.settings)
    assert sol.status == "optimal"
    assert sol.tracking_error_before == pytest.approx(0.0498, abs=1e-4)
    assert sol.tracking_error_after < 0.005
