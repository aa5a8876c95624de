"""benchmarks/total_cost.py --verify: a recorded table is re-checked against the code by re-running
a seeded sample of its runs; a moved metric, a changed setting and an agreeing re-run, by hand."""

from __future__ import annotations

import importlib
import math
from typing import Any

import pytest

TC = importlib.import_module("total_cost")

SETUP = {"assets": ["BTC", "ETH"], "targets": [0.5, 0.5], "start": "2022-01-01", "end": "2023-01-01",
         "nav_usd": 1e6, "windows": {"full": ["2022-01-01", "2023-01-02"]}, "taxes": ["0"],
         "reserve_yield": 0.04, "tax_rate": 0.25, "stress_move": 0.4, "bid_buffer": 0.05,
         "other_bid_buffer": 0.1, "impact_k": 0.5, "lookback_days": 180}


def _run(family: str, param: str, total: float, te: float = 0.01) -> dict[str, Any]:
    return {"family": family, "param": param, "case": "0",
            "windows": {"full": {"total_realised_bps": total, "tracking_error": te,
                                 "liquidations": 0, "note": "text is not compared"}}}


def _doc() -> dict[str, Any]:
    runs = [_run("spot", "band 0.02", 14.0), _run("spot", "cal 7D", 20.0),
            _run("fbr_hybrid", "gt 2", -3.5), _run("naive_reserve", "band 0.02", 80.0, math.nan)]
    return {"setup": SETUP, "runs": {f"0|{r['family']}|{r['param']}": r for r in runs}}


def test_sample_takes_one_run_per_family_first_then_distinct_seeded_keys() -> None:
    raw = _doc()["runs"]
    three = TC.sample_keys(raw, 3)
    assert sorted(raw[k]["family"] for k in three) == ["fbr_hybrid", "naive_reserve", "spot"]
    assert TC.sample_keys(raw, 3) == three  # seeded
    every = TC.sample_keys(raw, 10)
    assert sorted(every) == sorted(raw)  # at most every run, none twice
    assert len(TC.sample_keys(raw, 1)) == 1


def test_largest_gap_names_the_metric_that_moved() -> None:
    old = _run("spot", "band 0.02", 14.0)
    assert TC.largest_gap(old, _run("spot", "band 0.02", 14.0)) == (0.0, "-")
    gap, where = TC.largest_gap(old, _run("spot", "band 0.02", 16.1))
    assert gap == pytest.approx(2.1 / 14.0) and where.startswith("full.total_realised_bps")
    # a small figure is compared absolutely (TE 0.01 -> 0.0100001: 1e-7 of max(1, 0.01))
    gap, _ = TC.largest_gap(old, _run("spot", "band 0.02", 14.0, te=0.0100001))
    assert gap == pytest.approx(1e-7) and gap <= TC.VERIFY_RTOL
    # NaN recorded and re-run agree; a NaN on one side only is a move
    nan_old = _run("x", "y", 1.0, math.nan)
    assert TC.largest_gap(nan_old, _run("x", "y", 1.0, math.nan))[0] == 0.0
    assert TC.largest_gap(nan_old, _run("x", "y", 1.0, 0.02))[0] == math.inf


def _rerun(moved_key: str | None) -> Any:
    doc = _doc()

    def run(job: tuple[str, str, str]) -> tuple[str, dict[str, Any]]:
        family, param, case = job
        key = f"{case}|{family}|{param}"
        r = dict(doc["runs"][key])
        if key == moved_key:
            r = _run(family, param, r["windows"]["full"]["total_realised_bps"] + 0.5)
        return key, r
    return run


def test_verify_agrees_flags_a_moved_run_and_refuses_other_settings(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert TC.verify(_doc(), 4, 1, SETUP, run=_rerun(None)) == 0
    assert "0 of 4 runs moved" in capsys.readouterr().out
    assert TC.verify(_doc(), 4, 1, SETUP, run=_rerun("0|fbr_hybrid|gt 2")) == 1
    out = capsys.readouterr().out
    assert "MOVED 0|fbr_hybrid|gt 2" in out and "1 of 4 runs moved" in out
    other = dict(SETUP, nav_usd=1e7)
    assert TC.verify(_doc(), 4, 1, other, run=_rerun(None)) == 2
    assert "nav_usd" in capsys.readouterr().out
