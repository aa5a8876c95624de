"""The cost settings' coefficients, checked where the optimiser takes them (:func:`check_costs`, at
the start of :func:`optimizer.prepare.prepare`): settings built in code pass here as well as those
read from a book file (whose reader refuses the same values first, by the file's keys).

- the weights gamma_trade, gamma_fund and impact_k: finite, in [0, MAX_WEIGHT]. A negative one
  turns its cost into a reward: a negative gamma_fund or horizon prices the carry the wrong way
  round (the book "earns" the funding it pays), and was solved to "optimal";
- the carry horizon: finite, in (0, MAX_HORIZON_DAYS] days;
- the reserve's yield: finite, >= 0 (a fraction a year).
"""

from __future__ import annotations

from models.bounds import MAX_HORIZON_DAYS, check_weight, finite_number
from models.errors import ValidationError
from optimizer.settings import CostSettings


def check_costs(costs: CostSettings) -> CostSettings:
    """``costs`` when its weights, horizon and reserve yield are in range (module doc), else
    :class:`ValidationError` naming the first field out of it."""
    for name, value in (("gamma_trade", costs.gamma_trade), ("gamma_fund", costs.gamma_fund),
                        ("impact_k", costs.impact_k)):
        check_weight(value, f"costs.{name}")
    h = costs.horizon_days
    if not (finite_number(h) and 0.0 < h <= MAX_HORIZON_DAYS):
        raise ValidationError("costs.horizon_days", f"is {h!r}",
                              f"give the carry horizon in days, > 0 and at most "
                              f"{MAX_HORIZON_DAYS:,} (ten years)")
    if not (finite_number(costs.reserve_yield) and costs.reserve_yield >= 0.0):
        raise ValidationError("costs.reserve_yield", f"is {costs.reserve_yield!r}",
                              "give the reserve's yearly yield as a fraction >= 0, e.g. 0.04")
    return costs
