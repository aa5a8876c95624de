"""Bounds on the cost settings past which a value is no setting but a typo or an overflow: the
optimiser refuses them (:mod:`optimizer.cost_checks`, whatever built the settings) and so does the
book-file reader, by the file's keys (:mod:`fbr.config_values`, :mod:`fbr.config_settings`)."""

from __future__ import annotations

import math

from models.errors import ValidationError

#: The largest weight an objective term may take (gamma_trade, gamma_fund, tax.gamma,
#: cost_to_go, impact_k). The terms they weigh are costs in fractions of the base (1e-5 .. 1e-2)
#: set against a squared tracking error (1e-6 .. 1e-2): at a gamma_trade of 1e4 the test books
#: already trade nothing (at a cost_to_go of 1e6 they go to target), and past about 1e11 the
#: objective's coefficients leave the solvers' range (a gamma_trade of 1e12 was reported
#: "unbounded", 1e308 "infeasible"). Every term at 1e6 together still solves to optimality.
MAX_WEIGHT = 1e6

#: The longest carry horizon (days) a book may give: ten years. A carry of a funding rate held
#: longer is no forecast, and a horizon of 1e308 days overflows the objective's coefficients.
MAX_HORIZON_DAYS = 3_650


def finite_number(value: object) -> bool:
    """True for a finite int or float (not a bool, not nan or +-inf)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_weight(value: float, path: str) -> float:
    """An objective term's weight: a finite number in [0, MAX_WEIGHT], else
    :class:`ValidationError` naming ``path``."""
    finite = finite_number(value)
    if not (finite and 0.0 <= value <= MAX_WEIGHT):
        past = ", past any useful weight" if finite and value > MAX_WEIGHT else ""
        raise ValidationError(path, f"is {value!r}{past}",
                              f"give a weight in [0, {MAX_WEIGHT:g}] (the trade-off against TE^2 "
                              "is already all one way at about 1e4)")
    return float(value)
