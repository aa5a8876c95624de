"""The planner speed benchmark runs (issue 12's re-solve ratio is measured by it): a tiny path
through the same code, so a change of the engines' internals cannot leave the script broken
unnoticed (it was, once: it read a field the cvxpy adapter had taken over)."""

from __future__ import annotations

import planner_speed


def test_a_tiny_planner_path_runs_and_matches_the_native_solver() -> None:
    run = planner_speed.run_path(3, 2, 2, seed=7)
    s = run.summary()
    # two steps of 3 contracts: at least z_h, a_h and u_h per step
    assert s["variables"] >= 2 * 3 * 3 and s["constraint_rows"] > 0
    assert len(run.fbr_ms) == len(run.native_ms) == 2 and s["failed_days"] == 0
    assert s["max_dz"] <= 1e-6  # fbr's engine and native PIQP give the same positions
