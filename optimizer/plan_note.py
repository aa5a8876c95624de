"""The plan's one-line explanation: how much of the planned trade is made now, and why.

Units: trades in USD (contracts and spot); shares in percent of the plan's gross trade.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optimizer.solution import Plan


def plan_gross(plan: Plan) -> tuple[float, float, float]:
    """(now, gross, back) in USD over the plan's contracts and spot assets j and steps h: now =
    sum_j |t_1j|, gross = sum_h sum_j |t_hj|, back = sum_j sum_{h>=2} max(-sign(t_1j) t_hj, 0),
    the later steps' trades against step 1's direction (trading it back)."""
    rows = [[*st.trades.values(), *st.spot_trades.values()] for st in plan.steps]
    keys = [[*st.trades, *(f"{a} spot" for a in st.spot_trades)] for st in plan.steps]
    sign = {k: (v >= 0.005) - (v <= -0.005) for k, v in zip(keys[0], rows[0], strict=True)}
    now = sum(abs(v) for v in rows[0])
    gross = sum(abs(v) for row in rows for v in row)
    back = sum(max(-sign.get(k, 0) * v, 0.0)
               for ks, row in zip(keys[1:], rows[1:], strict=True) for k, v in zip(ks, row, strict=True))
    return now, gross, back


def plan_note(plan: Plan) -> str:
    """Why today's trade is what it is, in one sentence: step 1's share of the plan's gross trade
    sum_h sum_j |t_hj| (USD, contracts and spot), and what later steps trade back of step 1's
    trade (see :func:`plan_gross`)."""
    now, gross, back = plan_gross(plan)
    if gross <= 0.005:
        return "the plan trades nothing: every step's costs outweigh the tracking error removed"
    if now >= gross - 0.005:
        return ("the whole planned trade is made now: waiting would carry the tracking error for "
                "longer than the trade costs")
    if back > 0.005:
        return (f"{100 * now / gross:.0f}% of the planned trade is made now and later steps trade "
                f"back {back:,.2f} USD of it: the carry (funding, basis) forecast per step or a "
                "dated contract's expiry favours holding it for now only")
    return (f"{100 * now / gross:.0f}% of the planned trade is made now and the rest spread over the "
            "later steps: splitting it costs less impact than trading at once, or the carry "
            "(funding, basis) forecast per step favours waiting")
