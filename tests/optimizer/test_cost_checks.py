"""Cost settings built in code are checked where the optimiser takes them (optimizer.cost_checks):
before, a negative gamma_fund or horizon_days was solved to "optimal" with the carry priced the
wrong way round, a negative impact_k too, a negative gamma_trade ended in a bare ValueError from a
Parameter write, and a NaN weight in "every solver failed"."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from test_rebalance_errors import SYMS, _market, _perps, _risk, _seed_book

from models.bounds import MAX_HORIZON_DAYS, MAX_WEIGHT
from models.errors import ValidationError
from optimizer.cost_checks import check_costs
from optimizer.rebalance import Rebalancer
from optimizer.settings import CostSettings, OptimizerSettings, SpotLegSettings

BAD = [
    ("gamma_trade", -1.0), ("gamma_trade", math.nan), ("gamma_trade", 2 * MAX_WEIGHT),
    ("gamma_fund", -1.0), ("gamma_fund", math.inf), ("impact_k", -1.0), ("impact_k", 1e12),
    ("cost_to_go", -1.0), ("cost_to_go", 1e12),
    ("horizon_days", -1.0), ("horizon_days", 0.0), ("horizon_days", MAX_HORIZON_DAYS + 1.0),
    ("horizon_days", math.nan), ("reserve_yield", -0.5), ("reserve_yield", math.inf),
]


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v}" for f, v in BAD])
def test_a_cost_setting_out_of_range_is_refused_by_name_before_a_solve(field: str,
                                                                       value: float) -> None:
    contracts = _perps(*SYMS)
    values: dict[str, object] = {field: value}
    costs = replace(CostSettings(impact=field == "impact_k"), **values)  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as exc:
        Rebalancer().solve(_seed_book(contracts), _market(contracts, funding={"BTC-PERP": 1e-4}),
                           _risk(), OptimizerSettings(costs=costs))
    assert str(exc.value).startswith(f"costs.{field}: is ")
    assert "Fix: give" in str(exc.value)


def test_the_edges_of_each_range_are_taken() -> None:
    edge = CostSettings(gamma_trade=MAX_WEIGHT, gamma_fund=0.0, impact_k=MAX_WEIGHT,
                        horizon_days=MAX_HORIZON_DAYS, reserve_yield=0.0, cost_to_go=MAX_WEIGHT)
    assert check_costs(edge) is edge
    contracts = _perps(*SYMS)
    sol = Rebalancer().solve(_seed_book(contracts), _market(contracts), _risk(),
                             OptimizerSettings(costs=edge))
    assert sol.status == "optimal"


def test_a_tax_weight_past_any_useful_size_is_refused() -> None:
    contracts = _perps(*SYMS)
    spot = SpotLegSettings(enabled=True, gamma_tax=1e12)
    with pytest.raises(ValidationError, match=r"^tax.gamma: is 1000000000000.0"):
        Rebalancer().solve(_seed_book(contracts), _market(contracts), _risk(),
                           OptimizerSettings(spot=spot))
