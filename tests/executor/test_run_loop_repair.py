"""The daily loop's cost gate lets a plan through that mends a broken hard margin row
(``executor.run_cycle.repair_check``), with the book and scenario of ``test_repair_due``: the plan
raises tracking error, so the gate alone holds it; the repair sends it, the paper account's
positions then keep the scenario, and one margin alert names the row. Without the scenario the
book is the optimiser's answer already: nothing to trade, no alert."""

from __future__ import annotations

import pytest
import test_run_loop as rig  # tests/executor, on sys.path (its paper venue and clock)
from exec_helpers import risk_model
from test_repair_due import PRICES, SOL_ALONE, _book, _market, _settings
from test_run_loop import Make

from optimizer.checks import hard_row_gaps
from optimizer.policies import OptimizedFutures
from optimizer.prepare import prepare
from optimizer.settings import StressScenario

# the rig's fixtures: its loop factory, and the lock folder in tmp_path (autouse)
make = rig.make
_lock_dir = rig._lock_dir


@pytest.mark.parametrize(("stress", "action"), [((SOL_ALONE,), "traded"), ((), "no_trade")])
def test_the_gate_lets_a_repair_through_and_alerts(make: Make, stress: tuple[StressScenario, ...],
                                                    action: str) -> None:
    r = make(OptimizedFutures(risk_model(), _settings(*stress)), book=_book(), prices=PRICES,
             end=rig.T0, gate=True)
    r.run()
    (cycle,) = r.cycles()
    assert cycle.action == action
    alerts = r.alerts("margin", "repairing a hard margin row")
    if action == "no_trade":
        assert alerts == [] and r.trades() == []
        return
    assert len(alerts) == 1
    assert alerts[0].text.startswith("stress[sol alone -60%] broken by 198.70 USD")
    held = _book().with_futures(r.positions(), _market())
    d = prepare(held, _market(), risk_model(), _settings(SOL_ALONE))
    assert hard_row_gaps(d, d.z0 * d.V)["stress[sol alone -60%]"] <= 1e-6 * d.V


def test_a_repair_is_not_repeated_at_an_unchanged_market(make: Make) -> None:
    """Four daily cycles at constant prices, no funding: the first mends the 198.70 USD breach; its
    fills' fees (5 bp of the traded notional) leave the row short by about those fees, inside the
    band of what trading the positions costs, so the later cycles hold (the loop repaired again
    for the 0.34 USD its own fees made)."""
    r = make(OptimizedFutures(risk_model(), _settings(SOL_ALONE)), book=_book(), prices=PRICES,
             end=rig.T0 + 3 * rig.DAY, gate=True)
    r.run()
    actions = [c.action for c in r.cycles()]
    assert actions.count("traded") == 1 and actions[0] == "traded", actions
    assert len(r.alerts("margin", "repairing a hard margin row")) == 1
