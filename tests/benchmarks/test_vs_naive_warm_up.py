"""benchmarks/vs_naive.warm_up_note: the one sentence total_cost.py and instruments.py print when
a data folder's history starts too late for the risk model's warm-up (by hand)."""

from __future__ import annotations

import importlib


def test_the_warm_up_note_says_where_the_run_starts_and_only_when_it_moved() -> None:
    vn = importlib.import_module("vs_naive")
    assert vn.warm_up_note("2023-01-01", "2023-01-01", 180) is None
    assert vn.warm_up_note("2023-01-01T00:00", "2023-06-30", 180) == (
        "the data's spot history begins too late for a 180-day risk model at 2023-01-01: the run "
        "starts at 2023-06-30 instead (the warm-up)")
